"""Extend the canvas (outpainting): add pixels around a photo and generate what is there.

The new border is just a mask on an enlarged canvas (``core.canvas``): the photo is placed on the
canvas, the border is pre-filled from the photo's edges (extended, then blurred at several
scales) so the engine has colours and light to continue, and then the border is regenerated crop
by crop through the inpainting path (:func:`core.operations.inpaint.fill_crop`: the engine's native
size, paste-back through a soft edge, colour match). Crops go outward from the photo and overlap,
each seeing what the ones before it made. The seam is feathered ``mask_blur`` px into the photo;
every photo pixel beyond that lies bit-identical at its new offset.

Without a model (OpenCV's engines) nothing can be generated: the border is the pre-fill itself, and
the engine fills a band along the photo's edge that fades into the pre-fill; every photo pixel is
kept, and the result's notes say that nothing was generated.

Seeds: variant i uses seed + i, as inpainting does; within a variant the first crop uses the
variant's seed and each further crop a seed derived from it (so neighbouring crops do not repeat
one texture), and a variant's pixels follow from its seed alone.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from core import masks
from core.blend import seam_delta_e
from core.canvas import ANCHORS, Canvas, CanvasError, extend_by, extend_to, parse_aspect, plan_tiles, prefill
from core.engines.base import CancelCheck, InpaintEngine, InpaintError, ProgressCallback
from core.operations.fields import MAX_SEED, check, resolve_seeds, setting
from core.operations.inpaint import InpaintParams, InpaintResult, fill_crop, reference_sha256

MAX_EXTENSION = 8192


@dataclass(frozen=True)
class OutpaintParams(InpaintParams):
    """An inpainting edit (engine, prompts, sampling, seeds, variants, blending) of the new border
    of an enlarged canvas: ``left``/``right``/``top``/``bottom`` px, or ``aspect`` ("16:9", …) with
    the photo at ``anchor``. ``mask_blur`` is the feather into the photo; ``padding`` how far each
    crop reaches into the photo and into the crops before it."""

    strength: float = setting(0.95, label="Strength", low=0, high=1, above_low=True,
                              help="below 1 starts from the pre-filled border, so the colours and light "
                                   "of the photo's edges carry on (0.95: only those); 1 starts from noise")
    padding: int = setting(64, label="Overlap", low=0, high=1024, unit="px", flag="--overlap",
                           help="how far each crop along the border reaches into the photo and its "
                                "neighbours, px")
    mask_blur: int = setting(32, label="Feather", low=0, high=256, unit="px", flag="--feather",
                             help="soft seam, px into the photo; the photo beyond it is kept exactly")
    invert_mask: bool = setting(False, label="Invert mask", option=False, help="not used when extending")
    mode: str = setting("fill", label="Mode", choices=("fill",), option=False,
                        help="extending fills the border from the prompt")
    left: int = setting(0, label="Left", low=0, high=MAX_EXTENSION, unit="px",
                        help="pixels to add on the left")
    right: int = setting(0, label="Right", low=0, high=MAX_EXTENSION, unit="px",
                         help="pixels to add on the right")
    top: int = setting(0, label="Top", low=0, high=MAX_EXTENSION, unit="px",
                       help="pixels to add at the top")
    bottom: int = setting(0, label="Bottom", low=0, high=MAX_EXTENSION, unit="px",
                          help="pixels to add at the bottom")
    aspect: str = setting("", label="Aspect ratio",
                          help="extend to this aspect ratio instead of by pixels: "
                               "1:1, 4:3, 3:4, 3:2, 2:3, 16:9, 9:16")
    anchor: str = setting("centre", label="Anchor", choices=ANCHORS,
                          help="where the photo sits on a canvas of that aspect ratio")

    def __post_init__(self) -> None:
        check(self, InpaintError)
        if self.invert_mask:
            raise InpaintError("Extending the canvas regenerates the new border; it cannot invert a mask.")
        sides = (self.left, self.right, self.top, self.bottom)
        if self.aspect:
            parse_aspect(self.aspect)
            if any(sides):
                raise InpaintError("Give either the pixels to add on each side or an aspect ratio, not both.")
        elif not any(sides):
            raise InpaintError("Nothing to extend: give the pixels to add on at least one side, or an aspect "
                               "ratio (e.g. 16:9).")

    def canvas(self, size: tuple[int, int]) -> Canvas:
        """The enlarged canvas for a photo of ``size``; CanvasError when it cannot be made."""
        if self.aspect:
            return extend_to(size, self.aspect, self.anchor)
        return extend_by(size, self.left, self.right, self.top, self.bottom)

    def describe_extension(self) -> str:
        if self.aspect:
            return f"to {self.aspect} ({self.anchor})"
        named = (("left", self.left), ("right", self.right), ("top", self.top), ("bottom", self.bottom))
        return ", ".join(f"{name} {value} px" for name, value in named if value)


@dataclass
class OutpaintResult(InpaintResult):
    """An inpainting result on the enlarged canvas; ``canvas`` says where the photo is on it and
    ``mask`` is the border that was generated. ``crops`` are the crops along the border."""

    canvas: Canvas | None = None

    def metadata(self, index: int) -> dict[str, Any]:
        return {**super().metadata(index), "action": "outpaint", "canvas": self.canvas.to_dict()}


def _needed(tiles: list, region: np.ndarray) -> list:
    """The crops that still have pixels of ``region`` to fill when their turn comes (each crop fills
    all of its box that is left)."""
    left, needed = region.copy(), []
    for x0, y0, x1, y1 in tiles:
        if left[y0:y1, x0:x1].any():
            needed.append((x0, y0, x1, y1))
            left[y0:y1, x0:x1] = False
    return needed


def _fade(border: np.ndarray, width: int) -> np.ndarray:
    """Weights (float32, canvas size): 1 at the photo's edge falling to 0 ``width`` px out into the border."""
    import cv2

    distance = cv2.distanceTransform(border.astype(np.uint8), cv2.DIST_L2, 5)
    return np.where(border, np.clip(1.0 - (distance - 0.5) / width, 0.0, 1.0), 0.0).astype(np.float32)


def _model_free(engine: InpaintEngine) -> bool:
    """Whether ``engine`` runs without a model (OpenCV's fills: its catalog entry needs no model file)."""
    entry = getattr(engine, "entry", None)
    return entry is not None and entry.kind == "removal" and not entry.roles


def tile_seed(seed: int, tile: int) -> int:
    """The seed of crop ``tile`` of a variant whose seed is ``seed`` (the first crop: ``seed``)."""
    if tile == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:tile:{tile}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


def outpaint(
    image: Image.Image,
    params: OutpaintParams,
    engine: InpaintEngine,
    *,
    reference_image: Image.Image | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> OutpaintResult:
    """Extend ``image`` as ``params`` say and generate the new border with ``engine``.

    Raises InpaintError / CanvasError (a UserError) for an extension that cannot be made,
    Cancelled when ``should_cancel`` says so. ``progress`` receives (steps done, total steps) over
    every crop of every variant.
    """
    # 1. Plan the canvas and pre-fill its border.
    if image.mode != "RGB":
        raise InpaintError(f"The photo must be RGB (got {image.mode}).")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    canvas = params.canvas(image.size)
    filled = prefill(np.asarray(image), canvas)
    border = canvas.border_mask()
    timings["prefill"] = (time.perf_counter() - started) * 1000

    # 2. Plan the crops along the border.
    stage = time.perf_counter()
    seeds = resolve_seeds(params.seed, params.variants)
    used = replace(params, seed=seeds[0])
    if reference_image is not None:
        used = replace(used, reference_sha256=reference_sha256(reference_image))
    overlap = max(params.padding, params.mask_blur + 8)
    model_free = _model_free(engine)
    # Without a model the pre-fill is the border: the engine fills a band of it next to the photo
    # (``mask_blur`` wide), which fades from the engine's fill at the photo's edge to the pre-fill.
    band = max(params.mask_blur, 8)
    region = masks.grow(~border, band) & border if model_free else border
    fill_params = (replace(params, mask_blur=0, mask_blur_inside=0, color_match=False)
                   if model_free else params)
    fade = _fade(border, band) if model_free else None
    tiles = _needed(plan_tiles(canvas, region, engine.native_resolution, overlap), region)
    timings["crop"] = (time.perf_counter() - stage) * 1000
    notes: list[str] = []
    if len(tiles) > 1:
        notes.append(f"The border was generated in {len(tiles)} overlapping crops of at most "
                     f"{engine.native_resolution} px, the engine's native size, "
                     "going outward from the photo.")

    # 3. Each variant on its own: crop after crop, each seeing what the ones before it made.
    outputs = []
    runs = len(seeds) * len(tiles)
    for variant, seed in enumerate(seeds):
        output, todo = filled.copy(), region.copy()
        for number, box in enumerate(tiles):
            x0, y0, x1, y1 = box
            done_before = variant * len(tiles) + number

            def tile_progress(step: int, total: int, done_before: int = done_before) -> None:
                if progress is not None:
                    progress(done_before * total + min(step, total), runs * total)

            (crop,) = fill_crop(output, todo, box, fill_params, [tile_seed(seed, number)], engine, timings,
                                notes, reference_image=reference_image, progress=tile_progress,
                                should_cancel=should_cancel)
            if fade is not None:
                weight = fade[y0:y1, x0:x1, None]
                crop = np.round(crop * weight + output[y0:y1, x0:x1] * (1.0 - weight)).astype(np.uint8)
            output[y0:y1, x0:x1] = crop
            todo[y0:y1, x0:x1] = False
        outputs.append(output)

    # 4. Measure the seam and report.
    stage = time.perf_counter()
    seams = [seam_delta_e(output, filled, border) for output in outputs]
    timings["measure"] = (time.perf_counter() - stage) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    if model_free:
        notes.append("No diffusion model was used, so nothing new was generated: the new border is the "
                     "photo's edges extended outward and blurred (its colours and light, no detail), "
                     f"smoothed along the photo's edge by {engine.title}. Choose a diffusion engine to "
                     "generate the border from a prompt.")
    elif not getattr(engine, "supports_prompt", True):
        notes.append(f"{engine.title} takes no prompt: it filled the new border from the photo's "
                     "surroundings. Choose a diffusion engine to generate it from a prompt.")
    return OutpaintResult(
        images=[Image.fromarray(output, "RGB") for output in outputs],
        seeds=seeds,
        params=used,
        engine=engine.name,
        model_id=engine.model_id,
        seam_delta_e=seams,
        timings=timings,
        crops=tiles,
        notes=notes,
        mask=border,
        reference_image=reference_image,
        canvas=canvas,
    )


__all__ = ["CanvasError", "OutpaintParams", "OutpaintResult", "outpaint", "tile_seed"]
