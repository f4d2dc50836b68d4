"""Click → mask with SAM 2.1 from the photo's cached embedding, against the same click recomputing it.

A SAM 2 selection runs the Hiera vision encoder once per photo (``Sam2Engine.embed``) and only the
prompt encoder and mask decoder per click (``segment``, ``proposals``). The reference is the same
click answered the way a pipeline without the cache answers it, measured in the same run: embed the
photo again, then decode. Both give the same mask (checked before timing).

The figures come from the tiny random SAM 2.1 of ``tests.tiny_sam2`` (64 px inputs: real weights
cannot be had here, and a click's cost does not depend on the weights). Without ``quick``, the same
rows follow for a random model of the real Hiera-S's size (1024 px inputs, 12 Hiera blocks, a
256-wide decoder), where the encoder's share of a click is the real one.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.timing import best_of
from core.engines.sam2 import Sam2Engine

IMAGE_SIZE = (1024, 768)
ONE_POINT = dict(points=[(400.0, 300.0, 1)])
POINTS_AND_BOX = dict(points=[(400.0, 300.0, 1), (150.0, 120.0, 0)], box=(100.0, 80.0, 700.0, 600.0))


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.integers(0, IMAGE_SIZE[0]), rng.integers(0, IMAGE_SIZE[1])
        r = int(rng.integers(20, 150))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def _hiera_small_sized() -> Sam2Engine:
    """A random SAM 2.1 shaped like ``facebook/sam2.1-hiera-small`` (its weights cannot be had here)."""
    import torch
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    config = Sam2Config(vision_config=dict(
        model_type="sam2_vision_model",
        backbone_config=dict(model_type="sam2_hiera_det_model", blocks_per_stage=[1, 2, 11, 2],
                             global_attention_blocks=[7, 10, 13]),
    ))
    torch.manual_seed(0)
    processor = Sam2Processor(image_processor=Sam2ImageProcessor())  # 1024 x 1024, as the real ones
    return Sam2Engine(Sam2Model(config).eval(), processor, "random Hiera-S-sized SAM 2.1")


def _rows(label: str, engine: Sam2Engine, image: Image.Image, repeat: int) -> list[dict]:
    embedding = engine.embed(image)
    for prompt in (ONE_POINT, POINTS_AND_BOX):  # the cache changes the speed, not the answer
        cached, _ = engine.segment(embedding, **prompt)
        recomputed, _ = engine.segment(engine.embed(image), **prompt)
        assert np.array_equal(cached, recomputed), "the cached embedding gives another mask"

    embed_ms = best_of(lambda: engine.embed(image), repeat)
    rows = [{"name": f"{label}: embed the photo (vision encoder, once per photo)", "ms": embed_ms,
             "reference": None, "reference_ms": None, "unit": "ms"}]
    for what, prompt in (("one click", ONE_POINT), ("2 clicks + box", POINTS_AND_BOX)):
        click_ms = best_of(lambda: engine.segment(embedding, **prompt), repeat)
        recompute_ms = best_of(lambda: engine.segment(engine.embed(image), **prompt), repeat)
        rows.append({"name": f"{label}: {what} → mask from the cached embedding", "ms": click_ms,
                     "reference": "the same click recomputing the embedding", "reference_ms": recompute_ms,
                     "unit": "ms"})
    proposals_ms = best_of(lambda: engine.proposals(embedding, **ONE_POINT), repeat)
    rows.append({"name": f"{label}: one click → 3 proposals (Bigger / Smaller) from the cache", "ms": proposals_ms,
                 "reference": None, "reference_ms": None, "unit": "ms"})
    return rows


def run(quick: bool = False) -> list[dict]:
    from tests.tiny_sam2 import build_sam2

    image = _photo()
    with tempfile.TemporaryDirectory() as folder:
        engine = Sam2Engine.load(build_sam2(Path(folder)))
        rows = _rows("SAM 2.1 click 1024×768 (tiny random, 64 px input)", engine, image, 5 if quick else 30)
    if not quick:
        rows += _rows("SAM 2.1 click 1024×768 (random, Hiera-S-sized, 1024 px input)", _hiera_small_sized(),
                      image, 3)
    return rows
