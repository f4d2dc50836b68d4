"""Inpainting: the app's overhead around the pipeline, and cropping vs. running the whole photo.

Both run the tiny random SD 1.5 inpainting pipeline from ``tests.tiny_models`` on the CPU (real
weights cannot be had here): the overhead row compares ``core.operations.inpaint`` with a bare pipeline call
at the same size and steps; the crop row compares the crop strategy with the whole 12 MP photo
scaled to the engine's resolution and back, counting pixels changed outside the mask.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.timing import best_of
from core import masks
from core.engines.diffusion import DiffusionEngine
from core.operations.inpaint import InpaintParams, inpaint
from core.region import engine_size
from tests.helpers import SD15

STEPS = 10


def _photo(size: tuple[int, int]) -> Image.Image:
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([xx * 255 // size[0], yy * 255 // size[1], (xx + yy) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _disk(size: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


def _bare(engine: DiffusionEngine, image: Image.Image, mask: np.ndarray) -> Image.Image:
    import torch

    return engine.pipe(
        prompt="a bench", image=image, mask_image=Image.fromarray(mask.astype(np.uint8) * 255, "L"),
        height=image.height, width=image.width, num_inference_steps=STEPS, guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(0),
    ).images[0]


def run(quick: bool = False) -> list[dict]:
    from tests.tiny_models import build_sd15_inpaint

    repeat = 2 if quick else 5
    with tempfile.TemporaryDirectory() as folder:
        engine = DiffusionEngine.load(SD15, build_sd15_inpaint(Path(folder)))

    # Overhead: a 512×512 photo whose crop is the whole photo, so both fill 512×512.
    size = (512, 512)
    photo = _photo(size)
    mask = _disk(size, (256, 256), 200)
    # No negative prompt, as in the bare call (the params' default has one).
    params = InpaintParams(prompt="a bench", negative_prompt="", steps=STEPS, seed=0, padding=64, color_match=True)
    ours = best_of(lambda: inpaint(photo, mask, params, engine), repeat)
    bare = best_of(lambda: _bare(engine, photo, mask), repeat)
    # The same split measured inside one call: the app's own stages vs the pipeline's.
    timings = inpaint(photo, mask, params, engine).timings
    pipeline = timings.get("denoise", 0.0) + timings.get("decode", 0.0)
    own = timings["total"] - pipeline
    rows = [
        {"name": f"inpaint 512×512, {STEPS} steps: core.operations.inpaint, whole call", "ms": ours,
         "reference": "bare pipeline call, same size and steps", "reference_ms": bare},
        {"name": f"inpaint 512×512: app's own stages (crop, resize, paste, blend) = "
                 f"{100 * own / pipeline:.1f} % of the pipeline (target < 10 %)",
         "ms": own, "reference": "pipeline stages in the same call", "reference_ms": pipeline},
    ]

    # Crop strategy on 12 MP with a small mask.
    big = (4000, 3000)
    photo = _photo(big)
    mask = _disk(big, (1200, 900), 120)
    result = inpaint(photo, mask, params, engine)
    crop_ms = best_of(lambda: inpaint(photo, mask, params, engine), repeat)
    original = np.asarray(photo)
    outside = ~masks.grow(mask, params.mask_blur)  # beyond the soft edge
    changed_crop = int((np.asarray(result.images[0]) != original).any(axis=-1)[outside].sum())
    work = engine_size(big, engine.native_resolution)

    def whole() -> Image.Image:
        small = photo.resize(work, Image.LANCZOS)
        small_mask = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize(work, Image.NEAREST)
        filled = _bare(engine, small, np.asarray(small_mask) > 0)
        return filled.resize(big, Image.LANCZOS)

    whole_ms = best_of(whole, repeat)
    changed_whole = int((np.asarray(whole()) != original).any(axis=-1)[outside].sum())
    rows.append({"name": f"inpaint 12 MP, small mask: crop ({changed_crop:,} px changed beyond the soft edge)",
                 "ms": crop_ms, "reference": f"whole photo at {work[0]}×{work[1]} ({changed_whole:,} px changed there)",
                 "reference_ms": whole_ms})
    return rows
