"""Lighting-aware inpainting: regenerate a region so that its lighting follows a chosen light.

The inpainting engine starts from the region's current pixels (or, to replace what is there,
from an OpenCV removal fill), shaded by the light: the light map laid over the region's box makes
the side facing the light brighter and the far side darker, tinted by the light's colour. With a
strength below 1 the diffusion keeps that start's low frequencies (its shading) and invents the
detail, so the new content is lit from the chosen direction. Everything else goes through
:func:`core.operations.inpaint.inpaint` unchanged (crops, native resolution, soft-edge paste): every pixel
outside the mask's soft edge stays exactly as it was.

Contract as in ``core.light``: uint8 RGB arrays (or an RGB PIL image for the photo), bool
masks, True = the region to regenerate.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from core import masks
from core.engines.base import CancelCheck, InpaintError, ProgressCallback
from core.engines.opencv_inpaint import OpenCVInpaint
from core.light import DEFAULT_EDGE_PX, LightParams, light_map
from core.operations.inpaint import InpaintParams, InpaintResult, inpaint

FillStart = Literal["current", "removal"]
FILL_STARTS: dict[str, str] = {
    "current": "What is there now",
    "removal": "The region removed (filled from around it)",
}
DEFAULT_STRENGTH = 0.75


def light_gain(mask: np.ndarray, light: LightParams) -> np.ndarray:
    """Per-pixel RGB gain (H, W, 3) float32 of ``light`` over the mask's bounding box, 1 elsewhere.

    The light map of the box's size (its gradient runs across the region, brighter on the side the
    light comes from) divided by its mean over the mask, so the region keeps its average
    brightness and takes the light's contrast; times the light's colour relative to its mean
    (a warm light warms without darkening); times ``0.5 + 0.5 · intensity`` (1 at intensity 1).
    """
    mask = masks.check_mask(mask)
    gain = np.ones((*mask.shape, 3), np.float32)
    box = masks.bounding_box(mask)
    if box is None:
        return gain
    x0, y0, x1, y1 = box
    level = light_map((x1 - x0, y1 - y0), light)
    level = level / max(float(level[mask[y0:y1, x0:x1]].mean()), 1e-6)
    tint = light.tint / max(float(light.tint.mean()), 1e-6)
    gain[y0:y1, x0:x1] = level[:, :, None] * tint * (0.5 + 0.5 * light.intensity)
    return gain


def lit_start(
    image: np.ndarray,
    mask: np.ndarray,
    light: LightParams,
    *,
    start: FillStart = "current",
    edge: float = DEFAULT_EDGE_PX,
) -> np.ndarray:
    """``image`` with the masked region's initial fill shaded by ``light``; uint8 (H, W, 3).

    ``start``: "current" shades the region's own pixels; "removal" first fills the region from
    its surroundings (OpenCV Telea), for content that should replace what is there. The shading
    fades in over ``edge`` px inside the mask's edge; pixels outside the mask are copied,
    bit-identical.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InpaintError(f"The photo must be uint8 RGB (got {image.dtype}, shape {image.shape}).")
    height, width = image.shape[:2]
    try:
        mask = masks.check_mask(mask, (width, height))
    except masks.MaskError as error:
        raise InpaintError(str(error)) from error
    if start not in FILL_STARTS:
        raise InpaintError(f"The fill must start from {' or '.join(map(repr, FILL_STARTS))} (got {start!r}).")
    base = image
    if start == "removal" and mask.any():
        # The removal fill covers a few px beyond the edge, so no trace of the old edge is propagated in.
        removal = InpaintParams(engine="telea", variants=1, seed=0, mask_blur=4, color_match=False, padding=16)
        base = np.asarray(inpaint(Image.fromarray(image, "RGB"), mask, removal, OpenCVInpaint("telea")).images[0])
    alpha = masks.feather(mask, inner=edge)
    shaded = base.astype(np.float32) * light_gain(mask, light)
    blended = image + alpha[:, :, None] * (shaded - image)
    out = image.copy()
    out[mask] = np.clip(blended[mask] + 0.5, 0.0, 255.0).astype(np.uint8)
    return out


def light_aware_inpaint(
    image: Image.Image,
    mask: np.ndarray,
    light: LightParams,
    params: InpaintParams,
    engine,
    *,
    start: FillStart = "current",
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> InpaintResult:
    """Regenerate ``mask`` of ``image`` with ``engine`` starting from :func:`lit_start`.

    ``params.strength`` must be below 1 (at 1 the engine starts from noise and the light would be
    ignored) and the engine must take a strength. The result is :func:`core.operations.inpaint.inpaint`'s,
    with the light and the start recorded in its metadata. Raises InpaintError saying what to change.
    """
    if not getattr(engine, "supports_strength", True):
        raise InpaintError(
            f"{engine.title} cannot start from a lit fill; choose a diffusion engine for lighting-aware inpainting."
        )
    if params.strength >= 1:
        raise InpaintError(
            "Lighting-aware inpainting needs a strength below 1 (at 1 the shaded start is ignored); "
            f"{DEFAULT_STRENGTH} keeps the lighting and leaves room for new detail."
        )
    if image.mode != "RGB":
        raise InpaintError(f"The photo must be RGB (got {image.mode}).")
    region = ~mask if params.invert_mask else mask
    started = lit_start(np.asarray(image), region, light, start=start)
    result = inpaint(Image.fromarray(started, "RGB"), mask, params, engine, progress=progress,
                     should_cancel=should_cancel)
    result.extra = {"light": light.to_dict(), "start": start}
    result.notes.append(
        f"Lighting-aware: started from {FILL_STARTS[start].lower()}, lit from {light.azimuth:.0f}° at height "
        f"{light.elevation:.0f}°, strength {params.strength:g}."
    )
    return result

