"""The benchmark suite runs end to end (``--quick``): a smoke test, with no timing assertions."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(1500)
def test_every_benchmark_runs_and_writes_its_rows(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("INPAINT_STUDIO_MODEL")}
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--results", str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=1400, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (written,) = tmp_path.glob("bench-*.json")
    data = json.loads(written.read_text())
    names = " | ".join(row["name"] for row in data["rows"])
    for expected in ("mask chain", "click", "inpaint 512×512", "inpaint 12 MP", "relight preview",
                     "runner's own work", "batch on Ray", "import every core module", "first render of pages/5_Batch.py",
                     "peak memory", "sdxl UNet FLOPs per step"):
        assert expected in names, f"no row for {expected!r} in: {names}"
    for row in data["rows"]:
        assert math.isfinite(row["ms"]) and row["ms"] >= 0, row
    assert "benchmark" in result.stdout and "machine:" in result.stdout
