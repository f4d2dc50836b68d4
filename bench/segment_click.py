"""Click → mask after the everything pass, on a 1024-px photo with 100+ candidate masks.

The first pass runs the tiny random FastSAM checkpoint from ``tests.tiny_models`` (real weights
cannot be had here; prompt answering depends on the number and size of candidates, not on the
weights). The reference is FastSAM's own point rule measured in the same run: the union of every
candidate containing the point, over the full (N, H, W) stack of masks it keeps, brought to the
photo's resolution like ours.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.timing import best_of
from core.engines.fastsam import FastSAMEngine, FastSAMSettings
from core.images import content_hash
from core.segment import CandidateSet, SegmentPrompt
from core.segmenter import Segmenter

IMAGE_SIZE = (1024, 768)


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.integers(0, IMAGE_SIZE[0]), rng.integers(0, IMAGE_SIZE[1])
        r = int(rng.integers(20, 150))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def _synthetic_candidates(image_size: tuple[int, int], count: int = 150) -> CandidateSet:
    """Candidates like a real everything pass's: a few large regions, many medium and small ones."""
    rng = np.random.default_rng(1)
    width, height = min(image_size[0], 1024), min(image_size[1], 768)
    yy, xx = np.mgrid[0:height, 0:width]
    masks = []
    for i in range(count):
        radius = width * (0.45 if i < 5 else 0.15 if i < 40 else 0.04) * rng.uniform(0.5, 1.0)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        masks.append((xx - cx) ** 2 + ((yy - cy) * 1.2) ** 2 <= radius**2)
    return CandidateSet.from_masks(np.stack(masks), rng.uniform(0.4, 1.0, count), image_size)


def _click_rows(label: str, segmenter: Segmenter, image: Image.Image, candidates: CandidateSet,
                settings: FastSAMSettings, repeat: int) -> list[dict]:
    """Time a click at the point covered by the most candidates, against FastSAM's union rule."""
    image_id = content_hash(image)
    segmenter.candidate_cache.put((image_id, settings), candidates)
    coverage = np.zeros((candidates.work_size[1], candidates.work_size[0]), np.int32)
    for i in range(len(candidates)):
        coverage += candidates.mask(i)
    y, x = np.unravel_index(int(np.argmax(coverage)), coverage.shape)
    scale_x = image.width / candidates.work_size[0]
    scale_y = image.height / candidates.work_size[1]
    point = ((x + 0.5) * scale_x, (y + 0.5) * scale_y)
    prompt = SegmentPrompt(points=((*point, 1),))
    click = best_of(lambda: segmenter.segment(image, image_id, prompt, settings), repeat)
    stepped = SegmentPrompt(points=((*point, 1), (5.5, 5.5, 0)), step=2)
    stepped_ms = best_of(lambda: segmenter.segment(image, image_id, stepped, settings), repeat)
    stack = np.stack([candidates.mask(i) for i in range(len(candidates))])
    reference_ms = best_of(lambda: candidates.to_image(stack[stack[:, y, x]].any(axis=0)), repeat)
    return [
        {"name": f"{label}: click → mask ({int(coverage[y, x])} candidates under it)", "ms": click,
         "reference": "FastSAM's rule: union of all masks at the point", "reference_ms": reference_ms},
        {"name": f"{label}: click, step 2 larger, exclude click", "ms": stepped_ms, "reference": None,
         "reference_ms": None},
    ]


def run(quick: bool = False) -> list[dict]:
    from tests.helpers import manager_with
    from tests.tiny_models import build_fastsam

    repeat = 5 if quick else 30
    with tempfile.TemporaryDirectory() as folder:
        engine = FastSAMEngine.load(build_fastsam(Path(folder)))
    segmenter = Segmenter(manager_with(fastsam=engine))
    segmenter.engine("fastsam")
    settings = FastSAMSettings(imgsz=1024)
    image = _photo()

    first_pass = best_of(lambda: engine.everything(image, settings), 1 if quick else 3)
    tiny = engine.everything(image, settings)
    synthetic = _synthetic_candidates(image.size)
    big_photo = image.resize((4000, 3000))
    rows = [
        {"name": f"segment 1024×768: everything pass (tiny random FastSAM, {len(tiny)} masks)",
         "ms": first_pass, "reference": None, "reference_ms": None},
    ]
    rows += _click_rows(f"segment 1024×768, {len(tiny)} tiny-FastSAM candidates", segmenter, image, tiny,
                        settings, repeat)
    rows += _click_rows(f"segment 1024×768, {len(synthetic)} realistic candidates (target < 30 ms)", segmenter,
                        image, synthetic, settings, repeat)
    big_candidates = _synthetic_candidates(big_photo.size)
    rows += _click_rows(f"segment 12 MP photo, {len(big_candidates)} candidates, mask at 12 MP", segmenter,
                        big_photo, big_candidates, settings, repeat)
    return rows
