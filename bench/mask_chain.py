"""Canvas → mask → grow → feather on a 12-megapixel photo.

Compared side by side with the obvious implementation: nearest-neighbour upscaling of the canvas
with PIL, ``cv2.dilate`` with an elliptical kernel and a Gaussian blur over the whole photo.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from bench.timing import best_of
from core import masks

IMAGE_SIZE = (4000, 3000)
CANVAS_SIZE = (800, 600)
GROW_PX = 8
FEATHER_INNER, FEATHER_OUTER = 4, 12


def _stroke_canvas() -> np.ndarray:
    """A brush stroke like a person paints over an object: a thick curve across a third of the canvas."""
    rgba = np.zeros((CANVAS_SIZE[1], CANVAS_SIZE[0], 4), np.uint8)
    t = np.linspace(0, 1, 60)
    points = np.stack([250 + 250 * t, 300 + 120 * np.sin(t * 6)], axis=1).astype(np.int32)
    cv2.polylines(rgba, [points], False, (255, 0, 80, 153), thickness=30, lineType=cv2.LINE_AA)
    return rgba


def _reference_chain(rgba: np.ndarray) -> np.ndarray:
    alpha = Image.fromarray(rgba[:, :, 3]).resize(IMAGE_SIZE, Image.NEAREST)
    mask = (np.asarray(alpha) >= 64).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * GROW_PX + 1, 2 * GROW_PX + 1))
    grown = cv2.dilate(mask, kernel)
    sigma = (FEATHER_INNER + FEATHER_OUTER) / 4
    return cv2.GaussianBlur(grown.astype(np.float32), (0, 0), sigma)


def run(quick: bool = False) -> list[dict]:
    repeat = 3 if quick else 10
    rgba = _stroke_canvas()
    geometry = masks.CanvasGeometry.fit(IMAGE_SIZE, CANVAS_SIZE)

    mask = masks.canvas_to_mask(rgba, geometry)
    grown = masks.grow(mask, GROW_PX)
    steps = {
        "canvas → mask": best_of(lambda: masks.canvas_to_mask(rgba, geometry), repeat),
        f"grow {GROW_PX} px": best_of(lambda: masks.grow(mask, GROW_PX), repeat),
        f"feather {FEATHER_INNER}/{FEATHER_OUTER} px": best_of(
            lambda: masks.feather(grown, FEATHER_INNER, FEATHER_OUTER), repeat
        ),
    }

    def chain() -> None:
        masks.feather(masks.grow(masks.canvas_to_mask(rgba, geometry), GROW_PX), FEATHER_INNER, FEATHER_OUTER)

    total = best_of(chain, repeat)
    reference = best_of(lambda: _reference_chain(rgba), repeat)
    rows = [
        {"name": f"mask chain 12 MP: {step}", "ms": ms, "reference": None, "reference_ms": None}
        for step, ms in steps.items()
    ]
    rows.append(
        {
            "name": "mask chain 12 MP: whole chain (target < 150 ms)",
            "ms": total,
            "reference": "PIL nearest + cv2.dilate + GaussianBlur",
            "reference_ms": reference,
        }
    )
    return rows
