"""Mask algebra: canvas strokes to image-resolution masks, morphology, feathering, layered history.

Contract: a mask is a ``numpy`` bool array of shape (H, W) at the photo's full resolution, True =
the region to change. A soft mask (feathered alpha) is float32 (H, W) in [0, 1], 1 = fully edited.
Boxes are ``(x0, y0, x1, y1)`` in image pixels with exclusive ends, like Python slices.

Morphology works on Euclidean distance transforms restricted to the mask's neighbourhood, so its
cost follows the mask's extent rather than the photo's size or the radius; growing by ``r`` is
exactly a dilation by a disk of radius ``r`` (the ideal elliptical kernel).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from core.errors import UserError

Box = tuple[int, int, int, int]


class MaskError(UserError):
    """A mask that cannot be used as given; the message says why and what to do."""


def check_mask(mask: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``mask`` as a bool (H, W) array, checking it matches ``size`` = (width, height)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MaskError(f"A mask must be a 2-D array, got shape {mask.shape}.")
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        raise MaskError(
            f"The mask is {mask.shape[1]}×{mask.shape[0]} but the photo is {size[0]}×{size[1]}."
        )
    return mask if mask.dtype == bool else mask > 0


def empty_mask(size: tuple[int, int]) -> np.ndarray:
    """An all-False mask for a photo of ``size`` = (width, height)."""
    return np.zeros((size[1], size[0]), dtype=bool)


# --- canvas → image -------------------------------------------------------------------------


@dataclass(frozen=True)
class CanvasGeometry:
    """Where the photo sits on a drawing canvas.

    ``canvas = image * scale + offset`` for both axes, with coordinates measured from the
    top-left corner of pixels (pixel ``i`` covers ``[i, i + 1)``). ``image_size`` is the full
    resolution of the photo, not of the downscaled copy shown behind the canvas.
    """

    image_size: tuple[int, int]
    canvas_size: tuple[int, int]
    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0

    @classmethod
    def fit(cls, image_size: tuple[int, int], canvas_size: tuple[int, int]) -> CanvasGeometry:
        """The photo stretched over the whole canvas."""
        return cls(image_size, canvas_size, canvas_size[0] / image_size[0], canvas_size[1] / image_size[1])

    @classmethod
    def from_background_fit(
        cls, fit: dict, image_size: tuple[int, int], canvas_size: tuple[int, int]
    ) -> CanvasGeometry:
        """From the canvas component's ``background_fit`` report.

        The component reports the scale of the background it was given (``natural_width`` wide,
        usually a downscaled copy); this folds in the ratio between that copy and the photo.
        """
        ratio_x = fit["natural_width"] / image_size[0]
        ratio_y = fit["natural_height"] / image_size[1]
        return cls(
            image_size,
            canvas_size,
            fit["scale_x"] * ratio_x,
            fit["scale_y"] * ratio_y,
            fit["offset_x"],
            fit["offset_y"],
        )

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """Canvas coordinates → image coordinates."""
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """Image coordinates → canvas coordinates."""
        return x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y


def canvas_to_mask(rgba: np.ndarray, geometry: CanvasGeometry, *, min_alpha: int = 64) -> np.ndarray:
    """Rasterise what was painted on the canvas into a mask at the photo's full resolution.

    ``rgba`` is the canvas drawing (H_c, W_c, 4) uint8, background excluded; a canvas pixel counts
    as painted where its alpha is at least ``min_alpha`` (anti-aliased stroke edges are partial).
    Every image pixel samples the canvas at its own centre (bilinear), so strokes land where they
    were drawn at any zoom, aspect or letterbox offset.
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise MaskError(f"Expected an RGBA canvas drawing, got shape {rgba.shape}.")
    alpha = np.ascontiguousarray(rgba[:, :, 3])
    mask = empty_mask(geometry.image_size)
    painted = bounding_box(alpha > 0)
    if painted is None:
        return mask
    # Only image pixels under the painted canvas area (plus one pixel for interpolation) are sampled.
    width, height = geometry.image_size
    left, top = geometry.to_image(painted[0], painted[1])
    right, bottom = geometry.to_image(painted[2], painted[3])
    x0, y0 = max(0, int(np.floor(left)) - 1), max(0, int(np.floor(top)) - 1)
    x1, y1 = min(width, int(np.ceil(right)) + 1), min(height, int(np.ceil(bottom)) + 1)
    if x0 >= x1 or y0 >= y1:
        return mask
    # Image pixel x samples the canvas at its centre: scale * (x + 0.5) + offset - 0.5.
    sx, sy = geometry.scale_x, geometry.scale_y
    matrix = np.array(
        [
            [sx, 0.0, geometry.offset_x + sx * (x0 + 0.5) - 0.5],
            [0.0, sy, geometry.offset_y + sy * (y0 + 0.5) - 0.5],
        ]
    )
    sampled = cv2.warpAffine(
        alpha,
        matrix,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    mask[y0:y1, x0:x1] = sampled >= min_alpha
    return mask


# --- morphology -----------------------------------------------------------------------------


def bounding_box(mask: np.ndarray) -> Box | None:
    """The tight box around the True pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _expand(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    x0, y0, x1, y1 = box
    height, width = shape
    return max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)


def distance_inside(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of every True pixel to the nearest False pixel (image edges don't count)."""
    return cv2.distanceTransform(region.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate by a disk of radius ``pixels`` (negative shrinks)."""
    if pixels < 0:
        return shrink(mask, -pixels)
    mask = check_mask(mask)
    box = bounding_box(mask)
    if pixels == 0 or box is None:
        return mask.copy()
    x0, y0, x1, y1 = _expand(box, pixels + 1, mask.shape)
    out = mask.copy()
    region = mask[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = distance_inside(~region) <= pixels
    return out


def shrink(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Erode by a disk of radius ``pixels``; the photo's edges do not erode the mask."""
    if pixels < 0:
        return grow(mask, -pixels)
    mask = check_mask(mask)
    box = bounding_box(mask)
    if pixels == 0 or box is None:
        return mask.copy()
    x0, y0, x1, y1 = _expand(box, 1, mask.shape)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = distance_inside(mask[y0:y1, x0:x1]) > pixels
    return out


def feather(mask: np.ndarray, inner: float = 0.0, outer: float = 0.0) -> np.ndarray:
    """Soft alpha falling from 1 to 0 across the mask's edge.

    The ramp starts ``inner`` pixels inside the edge and ends ``outer`` pixels outside it
    (smoothstep): only pixels within ``outer`` px of the mask (``grow(mask, outer)``) get any
    alpha. With ``inner=0`` every masked pixel stays at 1; with ``outer=0`` every unmasked pixel
    stays at 0, so nothing outside the mask can change.
    """
    mask = check_mask(mask)
    if inner < 0 or outer < 0:
        raise MaskError("Feather widths must be zero or positive.")
    alpha = mask.astype(np.float32)
    box = bounding_box(mask)
    if box is None or inner + outer == 0:
        return alpha
    x0, y0, x1, y1 = _expand(box, int(np.ceil(outer)) + 1, mask.shape)
    region = mask[y0:y1, x0:x1]
    # Signed distance from the edge, positive inside; pixel centres sit half a pixel off it.
    outside = distance_inside(~region)
    signed = np.where(region, distance_inside(region) - 0.5, 0.5 - outside)
    ramp = np.clip((signed + outer) / (inner + outer), 0.0, 1.0)
    ramp[outside > outer] = 0.0  # exactly grow(mask, outer), not half a pixel more
    alpha[y0:y1, x0:x1] = ramp * ramp * (3.0 - 2.0 * ramp)
    return alpha


def invert(mask: np.ndarray) -> np.ndarray:
    """Swap edited and kept regions (edit the background instead of the subject)."""
    return ~check_mask(mask)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every unmasked region that does not touch the photo's edge."""
    mask = check_mask(mask)
    background = (~mask).view(np.uint8)
    _, labels = cv2.connectedComponents(background, connectivity=4)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, edge_labels[edge_labels > 0])
    return ~outside


def remove_islands(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop connected masked regions smaller than ``min_area`` pixels."""
    mask = check_mask(mask)
    if min_area <= 1:
        return mask.copy()
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def crop_box(mask: np.ndarray, padding: int = 32, multiple: int = 8) -> Box | None:
    """The mask's box grown by ``padding``, with sides snapped to multiples of ``multiple``.

    Sides are grown to the next multiple (then shifted inward at the photo's edges) rather than
    cut, so the box always contains the padded mask; where the grown side would not fit in the
    photo, that side is the whole photo (and may not be a multiple). None for an empty mask.
    """
    mask = check_mask(mask)
    box = bounding_box(mask)
    if box is None:
        return None
    height, width = mask.shape
    x0, y0, x1, y1 = _expand(box, padding, mask.shape)
    x0, x1 = _snap_span(x0, x1, width, multiple)
    y0, y1 = _snap_span(y0, y1, height, multiple)
    return x0, y0, x1, y1


def _snap_span(start: int, end: int, limit: int, multiple: int) -> tuple[int, int]:
    length = -(-(end - start) // multiple) * multiple
    if length > limit:
        return 0, limit
    start = min(start, limit - length)
    return start, start + length


# --- files ----------------------------------------------------------------------------------

MaskSource = Literal["auto", "luminance", "alpha", "alpha_inverted"]


def mask_from_image(
    image: Image.Image,
    size: tuple[int, int],
    *,
    alpha: Image.Image | None = None,
    source: MaskSource = "auto",
    resize: bool = False,
    name: str = "The mask",
) -> np.ndarray:
    """Read a mask from an image file's pixels.

    ``alpha`` is the file's transparency as an L image when it was split off (see
    ``core.images.LoadedImage``); otherwise the image's own alpha channel, if any, is used.
    ``luminance``: white (> 127) = edit. ``alpha``: opaque = edit. ``alpha_inverted``: transparent
    = edit (the convention of some editing APIs). ``auto``: alpha when there is a non-opaque
    alpha, else luminance. A size different from ``size`` is an error unless ``resize`` is True
    (nearest-neighbour, so the mask stays binary).
    """
    if alpha is None and (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
    if source == "auto":
        source = "alpha" if alpha is not None and np.asarray(alpha).min() < 255 else "luminance"
    if source in ("alpha", "alpha_inverted"):
        if alpha is None:
            raise MaskError(f"{name} has no transparency; choose 'white = edit' instead.")
        band = alpha
    else:
        band = image.convert("L")
    if band.size != tuple(size):
        if not resize:
            raise MaskError(
                f"{name} is {band.size[0]}×{band.size[1]} but the photo is {size[0]}×{size[1]}. "
                "Upload a mask of the same size, or choose to resize it to the photo."
            )
        band = band.resize(tuple(size), Image.NEAREST)
    mask = np.asarray(band) > 127
    return ~mask if source == "alpha_inverted" else mask


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A grayscale PNG of a hard (bool) or soft (float) mask: white = edit."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        pixels = mask.astype(np.uint8) * 255
    else:
        pixels = np.round(np.clip(mask, 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def overlay(
    image: Image.Image,
    alpha: np.ndarray,
    *,
    color: tuple[int, int, int] = (255, 0, 80),
    opacity: float = 0.5,
    outline: bool = True,
) -> Image.Image:
    """The photo with the mask tinted over it (and its edge outlined), for display.

    ``alpha`` is a bool mask or a float soft mask at the photo's size or at the size of
    ``image`` when that is a downscaled preview.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    alpha = np.asarray(alpha)
    if alpha.shape != rgb.shape[:2]:
        alpha = cv2.resize(alpha.astype(np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_AREA)
    weight = (alpha.astype(np.float32) * opacity)[:, :, None]
    out = rgb * (1.0 - weight) + np.asarray(color, dtype=np.float32) * weight
    if outline:
        hard = (alpha >= 0.5).astype(np.uint8)
        edge = cv2.morphologyEx(hard, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        out[edge] = color
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


# --- layered history ------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedMask:
    """A mask stored as its bounding box's bits (one bit per pixel), to keep history small."""

    shape: tuple[int, int]
    box: Box | None
    bits: bytes = b""

    @classmethod
    def pack(cls, mask: np.ndarray) -> PackedMask:
        box = bounding_box(mask)
        if box is None:
            return cls(mask.shape, None)
        x0, y0, x1, y1 = box
        return cls(mask.shape, box, np.packbits(mask[y0:y1, x0:x1]).tobytes())

    def unpack(self) -> np.ndarray:
        mask = np.zeros(self.shape, dtype=bool)
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            count = (y1 - y0) * (x1 - x0)
            bits = np.unpackbits(np.frombuffer(self.bits, dtype=np.uint8), count=count)
            mask[y0:y1, x0:x1] = bits.reshape(y1 - y0, x1 - x0).astype(bool)
        return mask


EditKind = Literal[
    "add", "subtract", "replace", "grow", "shrink", "invert", "fill_holes", "remove_islands", "clear"
]
_LAYER_KINDS = ("add", "subtract", "replace")


@dataclass(frozen=True)
class MaskEdit:
    """One step of a mask's history: a layer combined with the mask, or an operation on it."""

    kind: EditKind
    label: str
    layer: PackedMask | None = None
    amount: int = 0

    def apply(self, mask: np.ndarray) -> np.ndarray:
        if self.kind in _LAYER_KINDS:
            layer = self.layer.unpack()
            if self.kind == "add":
                return mask | layer
            if self.kind == "subtract":
                return mask & ~layer
            return layer
        if self.kind == "grow":
            return grow(mask, self.amount)
        if self.kind == "shrink":
            return shrink(mask, self.amount)
        if self.kind == "invert":
            return invert(mask)
        if self.kind == "fill_holes":
            return fill_holes(mask)
        if self.kind == "remove_islands":
            return remove_islands(mask, self.amount)
        return np.zeros_like(mask)


def layer_edit(kind: Literal["add", "subtract", "replace"], layer: np.ndarray, label: str) -> MaskEdit:
    """A layer step: ``add`` unions, ``subtract`` erases, ``replace`` starts over from the layer."""
    return MaskEdit(kind, label, layer=PackedMask.pack(check_mask(layer)))


def operation_edit(kind: EditKind, amount: int = 0) -> MaskEdit:
    """An operation step on the whole mask, labelled for the history list."""
    labels = {
        "grow": f"grow {amount} px",
        "shrink": f"shrink {amount} px",
        "invert": "invert",
        "fill_holes": "fill holes",
        "remove_islands": f"remove islands < {amount} px",
        "clear": "clear",
    }
    if kind not in labels:
        raise MaskError(f"Unknown mask operation {kind!r}.")
    return MaskEdit(kind, labels[kind], amount=amount)


@dataclass
class MaskDocument:
    """A photo's mask as an ordered history of edits, with undo and redo.

    The current mask is the fold of every edit over an empty mask. History beyond
    ``max_history`` edits is squashed into a base layer, so memory stays bounded; undo reaches
    back ``max_history`` steps.
    """

    size: tuple[int, int]
    max_history: int = 64
    _base: PackedMask | None = None
    _edits: list[MaskEdit] = field(default_factory=list)
    _redo: list[MaskEdit] = field(default_factory=list)
    _current: np.ndarray | None = None
    _revision: int = 0

    @property
    def revision(self) -> int:
        """A number that changes whenever the mask does (to key derived results like previews)."""
        return self._revision

    @property
    def mask(self) -> np.ndarray:
        """The current mask (bool, H×W). Do not modify it in place."""
        if self._current is None:
            mask = self._base.unpack() if self._base is not None else empty_mask(self.size)
            for edit in self._edits:
                mask = edit.apply(mask)
            self._current = mask
        return self._current

    @property
    def history(self) -> list[str]:
        """Labels of the edits that make up the current mask, oldest first."""
        return [edit.label for edit in self._edits]

    @property
    def can_undo(self) -> bool:
        return bool(self._edits)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def apply(self, edit: MaskEdit) -> None:
        """Add ``edit`` on top of the history (clearing what could be redone)."""
        if edit.layer is not None and edit.layer.shape != (self.size[1], self.size[0]):
            raise MaskError(
                f"The layer is {edit.layer.shape[1]}×{edit.layer.shape[0]} "
                f"but the photo is {self.size[0]}×{self.size[1]}."
            )
        mask = edit.apply(self.mask)
        self._edits.append(edit)
        self._redo.clear()
        if len(self._edits) > self.max_history:
            squashed = self._base.unpack() if self._base is not None else empty_mask(self.size)
            squashed = self._edits.pop(0).apply(squashed)
            self._base = PackedMask.pack(squashed)
        self._current = mask
        self._revision += 1

    def undo(self) -> bool:
        """Step back one edit; False when there is nothing to undo."""
        if not self._edits:
            return False
        self._redo.append(self._edits.pop())
        self._current = None
        self._revision += 1
        return True

    def redo(self) -> bool:
        """Re-apply the last undone edit; False when there is nothing to redo."""
        if not self._redo:
            return False
        edit = self._redo.pop()
        self._current = edit.apply(self.mask)
        self._edits.append(edit)
        self._revision += 1
        return True
