"""``inpaint-studio`` / ``python -m core``: the same edit as the app, with clear errors and exit codes."""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import masks
from core import cli
from core.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, main
from core.images import read_params

ROOT = Path(__file__).resolve().parent.parent
SIZE = (240, 160)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)).save(photo, quality=95)
    mask = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    mask[50:100, 80:150] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    return photo, mask_path, mask > 0


def test_inpaint_with_the_tiny_sd15_writes_every_variant(files, tmp_path, tiny_models, monkeypatch, capsys):
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_SD15_INPAINT", str(tiny_models["sd15_inpaint"]))
    photo, mask_path, mask = files
    out = tmp_path / "out" / "result.png"
    code = main(["inpaint", str(photo), "--mask", str(mask_path), "--prompt", "a bench", "--out", str(out),
                 "--steps", "2", "--variants", "2", "--seed", "5", "--mask-blur", "4"])
    assert code == EXIT_OK
    second = out.with_name("result-2.png")
    assert out.exists() and second.exists()
    original = np.asarray(Image.open(photo).convert("RGB"))
    band = masks.grow(mask, 4)
    for path, seed in ((out, 5), (second, 6)):
        image = np.asarray(Image.open(path).convert("RGB"))
        assert image.shape == original.shape
        assert np.array_equal(image[~band], original[~band])
        assert read_params(path.read_bytes())["params"]["seed"] == seed
    printed = capsys.readouterr()
    assert "seed 5" in printed.out and re.search(r"step (\d+)/\1\n", printed.err)
    assert "Loading" not in printed.err  # the libraries' own progress bars are off


def test_removal_needs_no_model_and_runs_as_a_real_command(files, tmp_path):
    photo, mask_path, mask = files
    out = tmp_path / "removed.jpg"
    result = subprocess.run(
        [sys.executable, "-m", "core", "inpaint", str(photo), "--mask", str(mask_path), "--engine", "telea",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert Image.open(out).size == SIZE and Image.open(out).format == "JPEG"


@pytest.mark.parametrize(
    "change, code, words",
    [
        (lambda a, t: a.__setitem__(1, str(t / "missing.jpg")), EXIT_BAD_INPUT, "missing.jpg"),
        (lambda a, t: a.__setitem__(a.index("--out") + 1, str(t / "out.gif")), EXIT_BAD_INPUT, ".png, .jpg or .webp"),
        (lambda a, t: a.extend(["--steps", "0"]), EXIT_BAD_INPUT, "Steps must be"),
        (lambda a, t: a.extend(["--engine", "dalle"]), EXIT_BAD_INPUT, "Unknown engine"),
        (lambda a, t: a.extend(["--engine", "sdxl"]), EXIT_FAILED, "INPAINT_STUDIO_MODEL_SDXL_INPAINT"),
    ],
)
def test_bad_input_is_one_clear_line_and_an_exit_code(files, tmp_path, monkeypatch, capsys, change, code, words):
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_SDXL_INPAINT", str(tmp_path / "no-sdxl"))
    photo, mask_path, _ = files
    args = ["inpaint", str(photo), "--mask", str(mask_path), "--engine", "telea", "--out", str(tmp_path / "o.png")]
    change(args, tmp_path)
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err and "Traceback" not in err


def test_a_mask_of_another_size_is_refused_unless_resized(files, tmp_path, capsys):
    photo, _, _ = files
    small = tmp_path / "small-mask.png"
    Image.new("L", (120, 80), 255).save(small)
    args = ["inpaint", str(photo), "--mask", str(small), "--engine", "telea", "--out", str(tmp_path / "o.png")]
    assert main(args) == EXIT_BAD_INPUT
    assert "120×80 but the photo is 240×160" in capsys.readouterr().err
    assert main(args + ["--resize-mask"]) == EXIT_OK


def test_removal_with_lama_from_the_command_line(files, tmp_path, tiny_models, monkeypatch):
    photo, mask_path, mask = files
    out = tmp_path / "removed.png"
    env = {**os.environ, "INPAINT_STUDIO_MODEL_LAMA": str(tiny_models["lama"])}
    result = subprocess.run(
        [sys.executable, "-m", "core", "inpaint", str(photo), "--mask", str(mask_path), "--engine", "lama",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == EXIT_OK, result.stderr
    removed, original = np.asarray(Image.open(out).convert("RGB")), np.asarray(Image.open(photo).convert("RGB"))
    assert removed.shape == original.shape and not np.array_equal(removed[mask], original[mask])
    missing = subprocess.run(
        [sys.executable, "-m", "core", "inpaint", str(photo), "--mask", str(mask_path), "--engine", "migan",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**env, "INPAINT_STUDIO_MODEL_MIGAN": str(tmp_path / "nowhere.pt")},
    )
    assert missing.returncode == EXIT_FAILED and "models download migan" in missing.stderr


def test_without_an_engine_the_best_diffusion_engine_here_is_used(files, tmp_path, monkeypatch, capsys):
    from core.catalog import BUILTIN

    photo, mask_path, _ = files
    for key in list(os.environ):
        if key.startswith("INPAINT_STUDIO_MODEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "no-models"))
    assert main(["inpaint", str(photo), "--mask", str(mask_path), "--out", str(tmp_path / "o.png")]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "No diffusion model is on this machine" in err and "--engine telea" in err
    assert BUILTIN.engine_names(("diffusion",), variants=False)[0] == "flux2_klein"  # what auto prefers


def test_png_output_uses_the_png_compression_setting(files, tmp_path, monkeypatch):
    photo, mask_path, _ = files
    written = {}
    for level in ("0", "9"):
        monkeypatch.setenv("INPAINT_STUDIO_PNG_COMPRESSION", level)
        out = tmp_path / f"level{level}.png"
        assert main(["inpaint", str(photo), "--mask", str(mask_path), "--engine", "telea", "--out", str(out)]) == EXIT_OK
        written[level] = out
    assert written["0"].stat().st_size > written["9"].stat().st_size
    assert np.array_equal(np.asarray(Image.open(written["0"])), np.asarray(Image.open(written["9"])))
    monkeypatch.setenv("INPAINT_STUDIO_PNG_COMPRESSION", "11")
    out = tmp_path / "refused.png"
    assert main(["inpaint", str(photo), "--mask", str(mask_path), "--engine", "telea", "--out", str(out)]) \
        == EXIT_BAD_INPUT
    assert not out.exists()


def run_removal(photo, mask_path, out, *extra) -> int:
    return main(["inpaint", str(photo), "--mask", str(mask_path), "--engine", "telea", "--out", str(out), *extra])


def test_a_jpg_of_a_jpeg_keeps_its_unchanged_blocks_and_format_chooses_others(files, tmp_path, capsys):
    import jpeglib

    photo, mask_path, mask = files
    kept = tmp_path / "kept.jpg"
    assert run_removal(photo, mask_path, kept) == EXIT_OK  # --format auto: the .jpg of a JPEG keeps its blocks
    assert "re-encoded" in capsys.readouterr().err
    before, after = jpeglib.read_dct(str(photo)), jpeglib.read_dct(str(kept))
    changed = (before.Y != after.Y).any(axis=(2, 3))
    # The mask (rows 50-99, columns 80-149) and its 8-pixel soft edge lie in 16-pixel MCUs 2-6 × 4-9.
    assert changed.any() and not changed[:4].any() and not changed[14:].any()
    assert not changed[:, :8].any() and not changed[:, 20:].any()
    assert np.array_equal(before.qt, after.qt)

    plain = tmp_path / "plain.jpg"
    assert run_removal(photo, mask_path, plain, "--format", "jpeg", "--quality", "70") == EXIT_OK
    assert "every pixel changes slightly" in capsys.readouterr().err
    assert plain.stat().st_size < kept.stat().st_size  # quality 70 of noise: much smaller
    webp = tmp_path / "out.webp"
    assert run_removal(photo, mask_path, webp, "--format", "webp") == EXIT_OK
    assert Image.open(webp).format == "WEBP"
    written, source = np.asarray(Image.open(webp).convert("RGB")), np.asarray(Image.open(photo).convert("RGB"))
    assert np.array_equal(written[:40], source[:40]) and np.array_equal(written[110:], source[110:])  # lossless
    assert not np.array_equal(written[mask], source[mask])


@pytest.mark.parametrize(
    "extra, out_name, words",
    [
        (["--format", "gif"], "o.png", "--format 'gif' is not an output format: choose one of auto, png, jpeg-keep"),
        (["--format", "png"], "o.jpg", "--format png writes .png files, but --out"),
        (["--quality", "0", "--format", "jpeg"], "o.jpg", "--quality 0: give a whole number from 1 to 100"),
        (["--format", "jpeg-keep"], "o.jpg", "is a PNG file: use --format png, jpeg or webp"),
    ],
)
def test_bad_format_options_are_one_clear_line(files, tmp_path, capsys, extra, out_name, words):
    photo, mask_path, _ = files
    if "jpeg-keep" in extra:  # a PNG photo
        photo = tmp_path / "photo.png"
        Image.open(files[0]).save(photo)
    out = tmp_path / out_name
    assert run_removal(photo, mask_path, out, *extra) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err and "Traceback" not in err
    assert not out.exists()


# --- the installed command ------------------------------------------------------------------------

SCRIPT = "inpaint-studio"


def _installed() -> importlib.metadata.Distribution | None:
    """The project as installed in this environment, or None. The checkout itself is left out of the
    search: an editable install leaves inpaint_studio.egg-info there, which is no installation."""
    elsewhere = [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT]
    return next(iter(importlib.metadata.distributions(name="inpaint-studio", path=elsewhere)), None)


def test_the_console_script_entry_point_resolves_to_a_function_that_exits_with_main_s_code(
        files, tmp_path, monkeypatch, capsys):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][SCRIPT]
    distribution = _installed()
    if distribution is not None:  # what pip wrote into the environment must say the same
        (entry,) = [e for e in distribution.entry_points if e.group == "console_scripts" and e.name == SCRIPT]
        assert entry.value == declared
    module, _, attribute = declared.partition(":")
    target = getattr(importlib.import_module(module), attribute)
    assert target is cli.script

    monkeypatch.setattr(sys, "argv", [SCRIPT, "--help"])
    with pytest.raises(SystemExit) as exited:
        target()
    assert exited.value.code == EXIT_OK
    assert capsys.readouterr().out.startswith(f"usage: {SCRIPT} ")
    photo, mask_path, _ = files
    monkeypatch.setattr(sys, "argv", [SCRIPT, "inpaint", str(tmp_path / "missing.jpg"), "--mask", str(mask_path),
                                      "--out", str(tmp_path / "o.png")])
    with pytest.raises(SystemExit) as exited:
        target()
    assert exited.value.code == EXIT_BAD_INPUT  # main's code becomes the process's exit status
    assert "missing.jpg" in capsys.readouterr().err


def _script_path() -> Path:
    for candidate in (Path(sysconfig.get_path("scripts")) / SCRIPT, Path(sys.executable).parent / SCRIPT):
        if candidate.exists():
            return candidate
    found = shutil.which(SCRIPT)
    assert found, f"inpaint-studio is installed but its command is neither next to {sys.executable} nor on PATH"
    return Path(found)


@pytest.mark.skipif(_installed() is None, reason="the project is not installed in this environment, so there is "
                    "no inpaint-studio command to run (`make test` installs it: pip install --no-deps -e .)")
def test_inpaint_studio_help_is_python_m_core_help_from_any_folder(tmp_path):
    script = _script_path()
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("PYTHONPATH", None)
    # From an unrelated folder, with nothing on the path: the installed command finds the app by itself.
    alone = subprocess.run([str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert alone.returncode == EXIT_OK, alone.stderr
    assert alone.stdout.startswith(f"usage: {SCRIPT} ")
    # This checkout's code both ways (an editable install may point at another checkout of the app).
    env["PYTHONPATH"] = str(ROOT)
    for command in ([], ["inpaint"], ["batch"], ["models"]):
        installed = subprocess.run([str(script), *command, "--help"], cwd=tmp_path, env=env, capture_output=True,
                                   text=True, timeout=120)
        module = subprocess.run([sys.executable, "-m", "core", *command, "--help"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert installed.returncode == module.returncode == EXIT_OK, installed.stderr + module.stderr
        assert installed.stdout.replace(f"usage: {SCRIPT}", "usage: python -m core") == module.stdout
