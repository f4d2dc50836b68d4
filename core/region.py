"""Region work, once for every engine and operation: which boxes of a photo to regenerate, at what
size an engine fills them, and measuring the seam after pasting back.

A mask is split into regions far enough apart to be filled separately; each region's crop (mask box
plus context padding, multiples of 8, clamped to the photo) is scaled to the engine's native
resolution (:func:`engine_size`), filled, scaled back and pasted through a soft edge
(``core.blend``). Pixels outside the soft edge are never written.

Contracts: masks are bool H×W (True = regenerate); boxes are ``(x0, y0, x1, y1)`` in photo pixels.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from core import masks
from core.blend import seam_delta_e
from core.masks import Box


def work_size(engine, crop_size: tuple[int, int]) -> tuple[int, int]:
    """The size ``engine`` fills a crop of ``crop_size`` at: what its own ``work_size`` says where it
    has one (fixed sizes when its UNet is compiled), else :func:`engine_size` at its native
    resolution (not upscaling small crops when its ``upscales_small_crops`` is False)."""
    if hasattr(engine, "work_size"):
        width, height = engine.work_size(crop_size)
        return int(width), int(height)
    return engine_size(crop_size, engine.native_resolution, upscale=getattr(engine, "upscales_small_crops", True))


def plan_crops(mask: np.ndarray, padding: int, multiple: int = 8) -> list[Box]:
    """The boxes to regenerate: one per group of mask regions whose padded boxes overlap.

    Regions far apart get their own crop (a small crop each instead of one huge one); regions
    whose context overlaps are filled together so they see each other.
    """
    mask = masks.check_mask(mask)
    height, width = mask.shape
    found = masks.bounding_box(mask)
    if found is None:
        return []
    # Regions are labelled inside the mask's box only: on a 12 MP photo with a small object that is
    # a fraction of the work of labelling the whole frame.
    left, top, right, bottom = found
    inside = np.ascontiguousarray(mask[top:bottom, left:right])
    count, _, stats, _ = cv2.connectedComponentsWithStats(inside.view(np.uint8), connectivity=8)
    boxes = [
        _padded(
            (left + int(s[cv2.CC_STAT_LEFT]), top + int(s[cv2.CC_STAT_TOP]),
             left + int(s[cv2.CC_STAT_LEFT] + s[cv2.CC_STAT_WIDTH]), top + int(s[cv2.CC_STAT_TOP] + s[cv2.CC_STAT_HEIGHT])),
            padding, width, height,
        )
        for s in stats[1:count]
    ]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _overlap(boxes[i], boxes[j]):
                    boxes[i] = _union(boxes[i], boxes.pop(j))
                    merged = True
                    break
            if merged:
                break
    return [_snap(box, width, height, multiple) for box in sorted(boxes, key=lambda b: (b[1], b[0]))]


def _padded(box: Box, padding: int, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0 - padding), max(0, y0 - padding), min(width, x1 + padding), min(height, y1 + padding)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _snap(box: Box, width: int, height: int, multiple: int) -> Box:
    region = np.zeros((height, width), dtype=bool)
    region[box[1] : box[3], box[0] : box[2]] = True
    return masks.crop_box(region, padding=0, multiple=multiple)


def engine_size(
    crop_size: tuple[int, int], native: int, multiple: int = 8, *, upscale: bool = True
) -> tuple[int, int]:
    """The size a crop is filled at: about ``native``² pixels, the crop's aspect, multiples of 8.

    The long side is capped at twice the native resolution (very long thin crops), and neither
    side goes below 64 px. ``upscale=False`` keeps a smaller crop at its own size (for engines
    that gain nothing from more pixels, like OpenCV's).
    """
    width, height = crop_size
    scale = native / math.sqrt(width * height)
    scale = min(scale, 2 * native / max(width, height))
    if not upscale:
        scale = min(scale, 1.0)

    def side(length: int) -> int:
        return max(64, int(round(length * scale / multiple)) * multiple)

    return side(width), side(height)


def seam_score(original: np.ndarray, output: np.ndarray, mask: np.ndarray, crops: list[Box]) -> float:
    """The seam ΔE over the regenerated crops (mask-weighted mean)."""
    values, weights = [], []
    for x0, y0, x1, y1 in crops:
        crop_mask = mask[y0:y1, x0:x1]
        values.append(seam_delta_e(output[y0:y1, x0:x1], original[y0:y1, x0:x1], crop_mask))
        weights.append(int(crop_mask.sum()))
    return float(np.average(values, weights=weights)) if sum(weights) else 0.0
