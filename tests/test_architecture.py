"""The shape of the code: the import rules hold (and a broken one is caught), and a new engine is one
catalog entry plus its module, found by the command line, `models list` and the Inpaint page."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from core import catalog
from core.cli import EXIT_OK, main
from tests.conftest import ROOT
from tests.helpers import TIMEOUT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=folder, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(folder)})


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_import_rule_fails_the_contracts(tmp_path):
    for package in ("core", "ui"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    engine = tmp_path / "core" / "engines" / "grabcut.py"
    engine.write_text(engine.read_text() + "\nfrom core.operations import inpaint  # an engine reaching up\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "core.engines.grabcut -> core.operations" in result.stdout


def test_pages_never_import_engines():
    for page in [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        imported = [node.module for node in ast.walk(ast.parse(page.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module]
        assert not [name for name in imported if name.startswith("core.engines")], page.name


# --- a new engine: one module plus one catalog entry -----------------------------------------------


def with_extra_engine(monkeypatch, tmp_path) -> Path:
    """The test catalog module configured, and its model file on disk; the file's path."""
    model = tmp_path / "flat-colour.json"
    model.write_text(json.dumps({"colour": [255, 0, 255]}))
    monkeypatch.setenv("INPAINT_STUDIO_CATALOG_MODULES", "tests.extra_catalog")
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_FLAT_COLOUR", str(model))
    return model


def test_an_extra_engine_is_offered_by_the_command_line_and_models_list(monkeypatch, tmp_path, capsys):
    with_extra_engine(monkeypatch, tmp_path)
    try:
        main(["inpaint", "--help"])
    except SystemExit:
        pass
    help_text = " ".join(capsys.readouterr().out.split())
    assert "flat = Flat colour fill" in help_text and "navier_stokes, flat (" in help_text
    assert main(["models", "list"]) == EXIT_OK
    listed = capsys.readouterr().out
    assert any(line.startswith("flat_colour") and "present" in line for line in listed.splitlines())
    assert "flat (Flat colour fill, removal, needs flat_colour)" in listed

    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(np.full((96, 128, 3), 40, np.uint8)).save(photo)
    region = np.zeros((96, 128), np.uint8)
    region[30:60, 40:90] = 255
    Image.fromarray(region).save(mask)
    out = tmp_path / "out.png"
    assert main(["inpaint", str(photo), "--mask", str(mask), "--out", str(out), "--engine", "flat",
                 "--mask-blur", "0", "--no-color-match"]) == EXIT_OK
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert (pixels[35:55, 45:85] == (255, 0, 255)).all()
    assert (pixels[:20] == 40).all()


def test_an_extra_engine_is_in_the_inpaint_pages_engine_list(app_without_models, tmp_path):
    from tests.helpers import inpaint_page
    from ui import forms

    with_extra_engine(app_without_models, tmp_path)
    at = inpaint_page()
    assert not at.exception
    options = at.selectbox(key=forms.INPAINT_ENGINE).options
    assert "Remove · Flat colour fill" in options  # a removal engine, grouped as one
    assert catalog.current().engine("flat")[0].engine == "tests.extra_catalog:FlatColourFill"


def test_a_catalog_module_that_cannot_be_imported_is_a_message_on_every_page(app_without_models):
    from streamlit.testing.v1 import AppTest

    app_without_models.setenv("INPAINT_STUDIO_CATALOG_MODULES", "no_such_module_of_engines")
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any("INPAINT_STUDIO_CATALOG_MODULES" in error.value and "no_such_module_of_engines" in error.value
               for error in at.error)
