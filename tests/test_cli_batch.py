"""``python -m core batch``: a recipe over a folder as a real command, its exit codes (0 all done,
1 some failed, 2 bad arguments), its summary, resume, and the Ray engine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.batch import MANIFEST, MANIFEST_CSV
from core.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from tests.helpers import remove_recipe, scenario_folder, write_photo, write_photos

ROOT = Path(__file__).resolve().parent.parent


def batch(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "core", "batch", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "clean.json"
    path.write_text(remove_recipe().to_json())
    return path


def assert_one_clear_line(result: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


def test_the_issues_folder_exits_1_with_a_summary_and_a_manifest(tmp_path, recipe):
    folder = scenario_folder(tmp_path / "photos")
    result = batch("--recipe", recipe, "--input", folder, "--output", tmp_path / "out")
    assert result.returncode == EXIT_FAILED, result.stderr
    assert "Traceback" not in result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("12 files: 10 done, 2 failed") and str(tmp_path / "out") in summary
    assert "broken.jpg: FAILED" in result.stderr and "notes.png: FAILED" in result.stderr
    assert "[12/12]" in result.stderr
    data = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert data["counts"] == {"done": 10, "failed": 2, "skipped": 0, "cancelled": 0}
    assert (tmp_path / "out" / MANIFEST_CSV).exists()
    # By default (--format auto) a JPEG stays a JPEG, with only the edited blocks re-encoded; a PNG stays a PNG.
    written = sorted(path.name for path in (tmp_path / "out").iterdir() if path.suffix in (".png", ".jpg"))
    assert written == [f"p{i:02d}.{'png' if i % 2 else 'jpg'}" for i in range(10)]
    assert "note: re-encoded" in result.stderr


def test_a_folder_of_good_photos_exits_0_and_resume_only_adds_the_new_one(tmp_path, recipe):
    folder, output = tmp_path / "photos", tmp_path / "out"
    write_photos(folder, 2)
    first = batch("--recipe", recipe, "--input", folder, "--output", output)
    assert first.returncode == EXIT_OK, first.stderr
    assert first.stdout.strip().splitlines()[-1].startswith("2 files: 2 done in")
    made = {path.name: path.stat().st_mtime_ns for path in output.iterdir() if path.suffix in (".png", ".jpg")}
    assert sorted(made) == ["p00.jpg", "p01.png"]

    write_photo(folder / "p02.jpg", (96, 72), 2)
    again = batch("--recipe", recipe, "--input", folder, "--output", output, "--resume")
    assert again.returncode == EXIT_OK, again.stderr
    assert again.stdout.strip().splitlines()[-1].startswith("3 files: 3 done (2 from an earlier run)")
    assert {name: (output / name).stat().st_mtime_ns for name in made} == made  # not written again
    assert (output / "p02.jpg").exists()
    assert [row["status"] for row in json.loads((output / MANIFEST).read_text())["items"]] == ["done"] * 3


@pytest.mark.parametrize(
    "problem, words",
    [
        ("not json", "is not valid JSON"),
        ("unknown kind", "selection.kind: unknown 'lasso'"),
        ("version 4", "version: this app reads recipe versions 1 to 3 (got 4)"),
        ("missing recipe", "cannot be read"),
    ],
)
def test_a_bad_recipe_exits_2_with_one_line(tmp_path, recipe, problem, words):
    folder = tmp_path / "photos"
    write_photos(folder, 1)
    data = json.loads(recipe.read_text())
    if problem == "not json":
        recipe.write_text("{\"version\": 2,")
    elif problem == "unknown kind":
        data["selection"]["kind"] = "lasso"
        recipe.write_text(json.dumps(data))
    elif problem == "version 4":
        data["version"] = 4
        recipe.write_text(json.dumps(data))
    else:
        recipe = tmp_path / "nowhere.json"
    result = batch("--recipe", recipe, "--input", folder, "--output", tmp_path / "out")
    assert_one_clear_line(result, EXIT_BAD_INPUT, words)
    assert str(recipe.name) in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_inputs_and_arguments_exit_2(tmp_path, recipe):
    folder = tmp_path / "photos"
    write_photos(folder, 1)
    missing = batch("--recipe", recipe, "--input", tmp_path / "missing", "--output", tmp_path / "out")
    assert_one_clear_line(missing, EXIT_BAD_INPUT, "no such folder or zip file")
    inside = batch("--recipe", recipe, "--input", folder, "--output", folder / "results")
    assert_one_clear_line(inside, EXIT_BAD_INPUT, "must not be inside the input folder")
    workers = batch("--recipe", recipe, "--input", folder, "--output", tmp_path / "out", "--workers", "2")
    assert_one_clear_line(workers, EXIT_BAD_INPUT, "need --engine ray")
    assert not (tmp_path / "out").exists()
    fmt = batch("--recipe", recipe, "--input", folder, "--output", tmp_path / "out", "--format", "tiff")
    assert_one_clear_line(fmt, EXIT_BAD_INPUT, "--format 'tiff' is not an output format: choose one of auto, png")
    quality = batch("--recipe", recipe, "--input", folder, "--output", tmp_path / "out", "--format", "jpeg",
                    "--quality", "101")
    assert_one_clear_line(quality, EXIT_BAD_INPUT, "--quality 101: give a whole number from 1 to 100")
    assert not (tmp_path / "out").exists()
    no_output = batch("--recipe", recipe, "--input", folder)
    assert no_output.returncode == EXIT_BAD_INPUT and "--output" in no_output.stderr  # argparse's usage error


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_ray_engine_runs_the_same_command(tmp_path, recipe):
    pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-distributed.txt")
    folder = tmp_path / "photos"
    write_photos(folder, 2)
    result = batch("--recipe", recipe, "--input", folder, "--output", tmp_path / "out", "--engine", "ray",
                   timeout=540)
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("2 files: 2 done in")
    data = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert data["engine"] == "ray" and data["counts"]["done"] == 2
    local = batch("--recipe", recipe, "--input", folder, "--output", tmp_path / "local")
    assert local.returncode == EXIT_OK, local.stderr
    for name in ("p00.jpg", "p01.png"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
