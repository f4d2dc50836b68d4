"""Relighting preview on a 1-megapixel photo: one slider move, and the full-size shading.

The page builds a ``PreviewCache`` (downscale, normals, soft edge) once per photo and mask, then
renders on every slider move; the reference measured alongside is the one-off ``preview()``, which
downscales and computes the normals again each time.
"""
from __future__ import annotations

import numpy as np

from bench.timing import best_of
from core import light as relight

IMAGE_SIZE = (1152, 864)
MAX_SIDE = 1024


def _photo() -> tuple[np.ndarray, np.ndarray]:
    """A textured photo with a subject: an upright ellipse (a head and shoulders) over a third of it."""
    width, height = IMAGE_SIZE
    rng = np.random.default_rng(0)
    image = rng.integers(40, 220, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((xx - width / 2) / (width / 5)) ** 2 + ((yy - height * 0.55) / (height / 2.5)) ** 2 <= 1.0
    return image, mask


def run(quick: bool = False) -> list[dict]:
    repeat = 5 if quick else 20
    image, mask = _photo()
    azimuths = iter(range(0, 360 * 1000, 7))

    def slider_move() -> relight.LightParams:
        return relight.LightParams(azimuth=next(azimuths), elevation=25, color=(255, 214, 170))

    cache = relight.PreviewCache.build(image, mask, max_side=MAX_SIDE)
    render = best_of(lambda: cache.render(slider_move()), repeat)
    one_off = best_of(lambda: relight.preview(image, mask, slider_move(), max_side=MAX_SIDE), repeat)
    build = best_of(lambda: relight.PreviewCache.build(image, mask, max_side=MAX_SIDE), repeat)
    shade = best_of(lambda: relight.shade(image, mask, slider_move()), repeat)
    return [
        {"name": "relight preview 1 MP: cache build (per mask)", "ms": build, "reference": None, "reference_ms": None},
        {
            "name": "relight preview 1 MP: slider move (target < 100 ms)",
            "ms": render,
            "reference": "preview() recomputing normals each move",
            "reference_ms": one_off,
        },
        {"name": "relight shade() 1 MP full size", "ms": shade, "reference": None, "reference_ms": None},
    ]
