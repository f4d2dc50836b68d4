"""An enlarged canvas around a photo (outpainting): where the photo sits, the new border, a first
fill of that border, and the crops along it that an engine regenerates.

The geometry is a :class:`Canvas`: the photo's size and the pixels added on each side. It is made
from pixel counts (:func:`extend_by`) or from an aspect ratio and where the photo is anchored
(:func:`extend_to`). :func:`prefill` gives the border a first fill from the photo's own edges
(extended outward, then blurred at several scales, coarse to fine, as Fooocus does before
diffusion) so an engine has colours and light to continue; :func:`plan_tiles` lists the crops, each
at most an engine's native size, that cover the border, starting next to the photo and overlapping
each other so every crop sees context that is already there.

Contracts: photos are uint8 H×W×3 RGB arrays; masks bool H×W (True = the new border); boxes
``(x0, y0, x1, y1)`` in canvas pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from core.errors import UserError
from core.masks import Box

ASPECTS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "3:2": (3, 2), "2:3": (2, 3),
    "16:9": (16, 9), "9:16": (9, 16),
}
ANCHORS = ("centre", "left", "right", "top", "bottom", "top-left", "top-right", "bottom-left", "bottom-right")
MAX_SIDE = 16384
"""Largest width or height of an enlarged canvas, px."""


class CanvasError(UserError):
    """An extension that cannot be made; the message says what to change."""


@dataclass(frozen=True)
class Canvas:
    """A photo of ``width`` × ``height`` with ``left``, ``top``, ``right``, ``bottom`` px added."""

    width: int
    height: int
    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """The enlarged canvas's (width, height)."""
        return self.width + self.left + self.right, self.height + self.top + self.bottom

    @property
    def offset(self) -> tuple[int, int]:
        """Where the photo's top-left corner lands on the canvas."""
        return self.left, self.top

    @property
    def photo_box(self) -> Box:
        """The photo's box on the canvas."""
        return self.left, self.top, self.left + self.width, self.top + self.height

    def border_mask(self) -> np.ndarray:
        """True on the new border, False on the photo (canvas size)."""
        width, height = self.size
        mask = np.ones((height, width), bool)
        x0, y0, x1, y1 = self.photo_box
        mask[y0:y1, x0:x1] = False
        return mask

    def place(self, pixels: np.ndarray, fill: int = 0) -> np.ndarray:
        """``pixels`` (the photo's size, any channels) on the canvas, ``fill`` on the border."""
        pixels = np.asarray(pixels)
        if pixels.shape[:2] != (self.height, self.width):
            raise CanvasError(f"The image is {pixels.shape[1]}×{pixels.shape[0]} but the canvas was "
                              f"planned for {self.width}×{self.height}.")
        width, height = self.size
        out = np.full((height, width, *pixels.shape[2:]), fill, dtype=pixels.dtype)
        x0, y0, x1, y1 = self.photo_box
        out[y0:y1, x0:x1] = pixels
        return out

    def describe(self) -> str:
        named = (("left", self.left), ("right", self.right), ("top", self.top), ("bottom", self.bottom))
        sides = [f"{name} {value}" for name, value in named if value]
        width, height = self.size
        return f"{self.width}×{self.height} → {width}×{height} ({', '.join(sides)} px)"

    def to_dict(self) -> dict[str, int]:
        return {"source": [self.width, self.height], "size": list(self.size), "offset": list(self.offset)}


def _check_photo_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise CanvasError(f"The photo is {width}×{height}: there is nothing to extend.")
    return width, height


def _checked(canvas: Canvas) -> Canvas:
    width, height = canvas.size
    if max(width, height) > MAX_SIDE:
        raise CanvasError(f"The new canvas would be {width}×{height} px; the most is {MAX_SIDE} px a side. "
                          "Extend by less.")
    return canvas


def extend_by(size: tuple[int, int], left: int = 0, right: int = 0, top: int = 0, bottom: int = 0) -> Canvas:
    """The canvas adding ``left``, ``right``, ``top``, ``bottom`` px to a photo of ``size``."""
    width, height = _check_photo_size(size)
    sides = {"left": left, "right": right, "top": top, "bottom": bottom}
    for name, value in sides.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise CanvasError(f"{name}: give the pixels to add as a whole number of 0 or more "
                              f"(got {value!r}).")
    if not any(sides.values()):
        raise CanvasError("Nothing to extend: give the pixels to add on at least one side, "
                          "or an aspect ratio.")
    return _checked(Canvas(width, height, int(left), int(top), int(right), int(bottom)))


def parse_aspect(aspect: str) -> tuple[int, int]:
    """``"16:9"`` → (16, 9); CanvasError listing the ratios for anything else."""
    if aspect not in ASPECTS:
        raise CanvasError(f"Aspect ratio {aspect!r} is not offered; use one of {', '.join(ASPECTS)}.")
    return ASPECTS[aspect]


def _split(extra: int, anchor: str, before: str, after: str) -> tuple[int, int]:
    """``extra`` px over the two sides of one axis: the photo anchored at ``before`` gets them all
    after it."""
    if before in anchor:
        return 0, extra
    if after in anchor:
        return extra, 0
    return extra // 2, extra - extra // 2


def extend_to(size: tuple[int, int], aspect: str, anchor: str = "centre") -> Canvas:
    """The smallest canvas of ratio ``aspect`` ("16:9", …) containing a photo of ``size``, with the
    photo placed at ``anchor`` ("centre", "left", "top-right", …). The canvas grows along one axis
    only; its other side is the photo's. CanvasError when the photo already has that ratio."""
    width, height = _check_photo_size(size)
    ratio_w, ratio_h = parse_aspect(aspect)
    if anchor not in ANCHORS:
        raise CanvasError(f"Anchor {anchor!r} is not offered; use one of {', '.join(ANCHORS)}.")
    if width * ratio_h < height * ratio_w:  # narrower than the ratio: add width
        extra = math.ceil(height * ratio_w / ratio_h) - width
        left, right = _split(extra, anchor, "left", "right")
        top = bottom = 0
    else:
        extra = math.ceil(width * ratio_h / ratio_w) - height
        top, bottom = _split(extra, anchor, "top", "bottom")
        left = right = 0
    if extra <= 0:
        raise CanvasError(f"The photo ({width}×{height}) is already {aspect}: choose another ratio, "
                          "or extend by pixels.")
    return _checked(Canvas(width, height, left, top, right, bottom))


# --- the first fill --------------------------------------------------------------------------------

# (box-filter size, repeats), coarse to fine: Fooocus's schedule for its pre-diffusion fill.
PREFILL_SIDE = 768
"""Longest side of the working copy that :func:`prefill` blurs."""
_FILL_SCHEDULE = ((512, 2), (256, 2), (128, 4), (64, 4), (33, 8), (15, 8), (5, 16), (3, 16))


def _box_blur(pixels: np.ndarray, size: int) -> np.ndarray:
    """A box blur of ``size`` px; large ones on a pyramid level (same look, a fraction of the work)."""
    levels = 0
    while size >> levels > 32 and min(pixels.shape[:2]) >> (levels + 1) >= 8:
        levels += 1
    if levels == 0:
        return cv2.blur(pixels, (size, size), borderType=cv2.BORDER_REFLECT)
    small = pixels
    for _ in range(levels):
        small = cv2.pyrDown(small)
    kernel = max(1, (size >> levels) | 1)
    small = cv2.blur(small, (kernel, kernel), borderType=cv2.BORDER_REFLECT)
    for _ in range(levels):
        small = cv2.pyrUp(small)
    return cv2.resize(small, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_LINEAR)


def prefill(photo: np.ndarray, canvas: Canvas) -> np.ndarray:
    """The canvas with the photo in place and the border filled from the photo's edges.

    The photo's outermost pixels are extended outward (``cv2.copyMakeBorder``, replicate), then
    the canvas is blurred with box filters from coarse to fine, putting the photo's pixels back
    after each pass: far from the photo the fill is a smooth continuation of its colours and light,
    near it the fill meets the edge at the edge's own colours. Large canvases are blurred at a
    working size of at most :data:`PREFILL_SIDE` px (the fill is context for the engine, which
    regenerates it) and scaled back. Every pixel is filled (no holes), and the photo's pixels are
    copied, bit-identical.
    """
    photo = np.asarray(photo)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise CanvasError(f"The photo must be uint8 RGB (got {photo.dtype} {photo.shape}).")
    if photo.shape[:2] != (canvas.height, canvas.width):
        raise CanvasError(f"The photo is {photo.shape[1]}×{photo.shape[0]} but the canvas was planned for "
                          f"{canvas.width}×{canvas.height}.")
    filled = cv2.copyMakeBorder(photo, canvas.top, canvas.bottom, canvas.left, canvas.right,
                                cv2.BORDER_REPLICATE)
    border = canvas.border_mask()
    width, height = canvas.size
    scale = min(1.0, PREFILL_SIDE / max(width, height))
    work, known = filled, ~border
    if scale < 1.0:
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        work = cv2.resize(filled, size, interpolation=cv2.INTER_AREA)
        # A working pixel is kept as known only where it is all photo.
        known = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 1.0
    keep = work[known]
    reach = max(canvas.left, canvas.right, canvas.top, canvas.bottom) * scale
    for size, repeats in _FILL_SCHEDULE:
        size = max(3, int(size * scale) | 1)
        if size > 2 * reach + 3:  # a blur much wider than the border only averages the photo itself
            continue
        for _ in range(repeats):
            work = _box_blur(work, size)
            work[known] = keep
    if scale < 1.0:
        work = cv2.resize(work, (width, height), interpolation=cv2.INTER_LINEAR)
    np.copyto(filled, work, where=border[:, :, None])
    return filled


# --- the crops along the border ----------------------------------------------------------------------


def _axis_starts(length: int, low: int, high: int, size: int, overlap: int) -> list[int]:
    """Starts of crops of ``size`` covering ``[0, length)``: chains going outward from the photo's
    span ``[low, high)`` (the first crop of each reaching ``overlap`` px into the photo, each next
    one ``overlap`` px into the one before) and an even row over the span itself."""
    if size >= length:
        return [0]
    stride = max(1, size - overlap)
    starts: set[int] = set()
    span = high - low
    if span <= size:
        starts.add(min(max(0, low + span // 2 - size // 2), length - size))
    else:
        count = math.ceil((span - size) / stride) + 1
        starts.update(low + round(i * (span - size) / (count - 1)) for i in range(count))
    start = low + min(overlap, span) - size  # outward before the photo
    while True:
        starts.add(max(0, start))
        if start <= 0:
            break
        start -= stride
    end = high - min(overlap, span) + size  # outward after it
    while True:
        starts.add(min(length, end) - size)
        if end >= length:
            break
        end += stride
    return sorted(starts)


def plan_tiles(canvas: Canvas, mask: np.ndarray, tile: int, overlap: int) -> list[Box]:
    """The crops (at most ``tile`` px a side) that cover every True pixel of ``mask`` (the border to
    regenerate, canvas size), in the order to fill them: nearest the photo first, then outward.

    Crops next to the photo reach ``overlap`` px into it; crops farther out overlap the ones
    before them by at least ``overlap`` px, so each sees context already filled.
    """
    width, height = canvas.size
    if mask.shape != (height, width):
        raise CanvasError(f"The mask is {mask.shape[1]}×{mask.shape[0]} but the canvas is "
                          f"{width}×{height}.")
    if tile < 8:
        raise CanvasError(f"Crops of {tile} px are too small.")
    overlap = max(0, min(overlap, tile // 2))
    tile_w, tile_h = min(tile, width), min(tile, height)
    x0, y0, x1, y1 = canvas.photo_box
    xs = _axis_starts(width, x0, x1, tile_w, overlap)
    ys = _axis_starts(height, y0, y1, tile_h, overlap)
    boxes = [(x, y, x + tile_w, y + tile_h) for y in ys for x in xs
             if mask[y : y + tile_h, x : x + tile_w].any()]

    def distance(box: Box) -> tuple[int, int, int]:
        dx = max(0, x0 - box[2], box[0] - x1)
        dy = max(0, y0 - box[3], box[1] - y1)
        return dx + dy, box[1], box[0]

    return sorted(boxes, key=distance)


def fit_alpha(alpha: Image.Image | None, canvas: Canvas | None) -> Image.Image | None:
    """A photo's alpha (mode L) for a result on ``canvas``: in place, the new border opaque.
    ``alpha`` itself when there is no canvas (the result is the photo's size) or no alpha."""
    if alpha is None or canvas is None:
        return alpha
    return Image.fromarray(canvas.place(np.asarray(alpha), fill=255), "L")
