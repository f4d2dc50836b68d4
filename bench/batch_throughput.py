"""Batch: photos per second, locally and on Ray, and the runner's own cost per photo.

32 photos (512×384, a disk to repaint) through an inpainting recipe with the tiny random SD 1.5
pipeline from ``tests.tiny_models`` on the CPU (real weights cannot be had here). The overhead
row splits each photo's time, measured inside the same run, into the pipeline (denoise and
decode) and everything else the batch does for it: reading and decoding the file, selecting the
region, cropping, resizing, pasting, measuring the seam, encoding and writing the PNG, and the
manifest. The Ray row runs the same recipe on a local Ray instance with one actor (2 CPUs here),
start-up included, against the local runner in the same run.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from core import batch
from core.batch import BatchModels
from core.operations.inpaint import InpaintParams
from core.recipe import Action, Recipe, Selection
from tests.helpers import SD15, manager_with

COUNT = 32
SIZE = (512, 384)
STEPS = 10


def _photos(folder: Path, count: int) -> None:
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    for index in range(count):
        rgb = np.stack([(xx + index * 7) % 256, yy * 255 // SIZE[1], np.full_like(xx, 40 + index)], axis=-1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"photo{index:02d}.png")


def _recipe() -> Recipe:
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    mask = (xx - 256) ** 2 + (yy - 192) ** 2 <= 100**2
    params = InpaintParams(prompt="a stone", negative_prompt="", steps=STEPS, seed=0, padding=32)
    return Recipe(Selection.from_mask(mask), Action("inpaint", params), name="bench")


def run(quick: bool = False) -> list[dict]:
    from core.engines.diffusion import DiffusionEngine
    from tests.tiny_models import build_sd15_inpaint

    count = 8 if quick else COUNT
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = build_sd15_inpaint(folder / "model")
        engine = DiffusionEngine.load(SD15, model)
        inputs = folder / "inputs"
        inputs.mkdir()
        _photos(inputs, count)
        recipe = _recipe()
        models = BatchModels(manager_with(sd15=engine))
        batch.run(recipe, inputs, folder / "warm-up", models=models)  # first-call costs out of the figures

        started = time.perf_counter()
        local = batch.run(recipe, inputs, folder / "local", models=models)
        local_s = time.perf_counter() - started
        if local.counts["done"] != count:
            raise RuntimeError(f"the local batch failed: {local.counts}")
        pipeline = sum(r["timings"].get("edit.denoise", 0) + r["timings"].get("edit.decode", 0) for r in local.rows)
        own = local_s * 1000 - pipeline  # everything but the pipeline, manifest writes included
        rows.append({
            "name": f"batch of {count} at {SIZE[0]}×{SIZE[1]}, per photo: runner's own work = "
                    f"{100 * own / pipeline:.1f} % of the pipeline (target < 10 %)",
            "ms": own / count, "reference": "pipeline (denoise + decode) per photo, same run",
            "reference_ms": pipeline / count,
        })
        rows.append({"name": f"batch local: {count / local_s:.2f} photos/s (ms per photo)", "ms": local_s * 1000 / count,
                     "reference": None, "reference_ms": None})

        try:
            import ray  # noqa: F401
        except ImportError:
            rows.append({"name": "batch on Ray: not installed (pip install -r requirements-distributed.txt)",
                         "ms": 0.0, "reference": None, "reference_ms": None})
            return rows
        from core.batch_ray import run_ray

        saved = {key: os.environ.get(key) for key in ("INPAINT_STUDIO_MODEL_SD15_INPAINT", "INPAINT_STUDIO_DEVICE")}
        os.environ["INPAINT_STUDIO_MODEL_SD15_INPAINT"] = str(model)
        os.environ["INPAINT_STUDIO_DEVICE"] = "cpu"
        try:
            started = time.perf_counter()
            distributed = run_ray(recipe, inputs, folder / "ray", num_cpus=2, workers=1)
            ray_s = time.perf_counter() - started
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        same = all(
            (folder / "ray" / name).read_bytes() == (folder / "local" / name).read_bytes()
            for row in local.rows for name in row["outputs"]
        )
        rows.append({
            "name": f"batch on Ray, 1 actor, start-up included: {count / ray_s:.2f} photos/s "
                    f"(ms per photo; outputs {'identical' if same else 'DIFFERENT'}, {distributed.counts['done']} done)",
            "ms": ray_s * 1000 / count, "reference": "local runner, same recipe, ms per photo",
            "reference_ms": local_s * 1000 / count,
        })
    return rows

