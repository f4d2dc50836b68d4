"""Put generated pixels back into a photo without visible seams.

Contract: images are uint8 H×W×3 arrays in R, G, B order; a mask is a bool H×W array, True = the
edited region; a soft alpha is a float32 H×W array in [0, 1], 1 = fully generated. Every function
checks that the sizes of its inputs match and raises ``ValueError`` saying which one does not.
Pixels that a function promises to keep are copied from the original, never round-tripped through
floats, so they stay bit-identical.

Colour statistics are measured in CIE Lab (D65, sRGB gamma), as OpenCV computes it from float RGB
in [0, 1]: L in 0..100, a and b signed. Colour differences are ΔE76, the Euclidean distance in
Lab; a ΔE of about 2 is the smallest difference most people notice side by side.

Callers pass the crop around the mask (what the inpainting model saw), not the whole photo: every
function is correct for any size, but Poisson cloning costs a Fourier solve over the mask's box.
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from core.masks import bounding_box, check_mask, grow, shrink

BlendMode = Literal["feather", "poisson"]
BLEND_MODES: tuple[BlendMode, ...] = ("feather", "poisson")

STD_RATIO_RANGE = (0.5, 2.0)
"""Bounds of the contrast scale in :func:`match_colors`: a ring is never flattened or stretched
by more than a factor of 2, whatever its statistics say (a thin ring over an edge can say a lot)."""

_MIN_RING_STD = 0.5
"""Lab units. A generated ring flatter than this has no contrast to measure, so only its mean
is matched (scaling by σ_orig / σ_gen would divide by almost nothing)."""

_OPENCV_CLONE_EROSION = 3
"""seamlessClone erodes its mask by this many pixels (three 3×3 passes) before taking the source
gradients there; pixels in the eroded-away band get the destination's gradients."""

_MAX_EDGE_PAD = 256
"""Most pixels of mirrored photo added beyond an image edge that the mask touches (see
:func:`poisson_paste`); bounds the cost for masks that reach across the whole crop."""


# --- checks ---------------------------------------------------------------------------------


def _check_image(image: np.ndarray, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be a uint8 H×W×3 RGB array, got {image.dtype} {image.shape}.")
    if shape is not None and image.shape[:2] != shape:
        raise ValueError(f"{name} is {_size(image.shape)} but the original is {_size(shape)}.")
    return image


def _check_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = check_mask(mask)
    if mask.shape != shape:
        raise ValueError(f"The mask is {_size(mask.shape)} but the original is {_size(shape)}.")
    return mask


def _check_alpha(alpha: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    alpha = np.asarray(alpha)
    if alpha.ndim != 2 or not (np.issubdtype(alpha.dtype, np.floating) or alpha.dtype == bool):
        raise ValueError(f"The alpha must be a float H×W array, got {alpha.dtype} {alpha.shape}.")
    if alpha.shape != shape:
        raise ValueError(f"The alpha is {_size(alpha.shape)} but the original is {_size(shape)}.")
    alpha = alpha.astype(np.float32, copy=False)
    if not np.all((alpha >= 0.0) & (alpha <= 1.0)):
        raise ValueError("The alpha must lie in [0, 1] (and hold no NaN).")
    return alpha


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}×{shape[0]}"


# --- colour ---------------------------------------------------------------------------------


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (float32, L in 0..100, a/b signed) of uint8 RGB pixels.

    ``rgb``'s last axis is R, G, B: an image H×W×3 or a list of pixels N×3; the result has the
    same shape.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"to_lab needs uint8 RGB pixels (last axis 3), got {rgb.dtype} {rgb.shape}.")
    pixels = rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.astype(np.float32, copy=False), cv2.COLOR_Lab2RGB)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def delta_e76(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray | float:
    """ΔE76 (Euclidean distance in Lab) between Lab colours, along the last axis.

    Two single colours give a float; arrays of colours give an array of distances.
    """
    difference = np.asarray(lab_a, dtype=np.float64) - np.asarray(lab_b, dtype=np.float64)
    distance = np.linalg.norm(difference, axis=-1)
    return float(distance) if distance.ndim == 0 else distance


# --- pasting --------------------------------------------------------------------------------


def feather_paste(original: np.ndarray, generated: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-composite ``generated`` over ``original`` through the soft ``alpha``.

    Where alpha == 0 the result is the original, bit for bit (only pixels with alpha > 0 are
    written); where alpha == 1 it is the generated pixel; in between, the rounded linear blend.
    """
    original = _check_image(original, "The original")
    generated = _check_image(generated, "The generated image", original.shape[:2])
    alpha = _check_alpha(alpha, original.shape[:2])
    result = original.copy()
    edited = alpha > 0
    weight = alpha[edited][:, None]
    mixed = generated[edited] * weight + original[edited] * (1.0 - weight)
    result[edited] = np.round(mixed).astype(np.uint8)
    return result


def poisson_paste(
    original: np.ndarray,
    generated: np.ndarray,
    mask: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
) -> np.ndarray:
    """Poisson-clone the generated content into the original over the mask (OpenCV NORMAL_CLONE).

    Inside the mask the result keeps the generated image's gradients (its texture and detail)
    while its colours shift smoothly to meet the original at the mask's edge, which hides seams
    and overall colour casts. The cloned image is then pasted over the mask, or, when ``alpha``
    is given, alpha-composited with :func:`feather_paste` (so a feathered edge stays soft).
    Pixels outside the mask (outside ``alpha > 0`` when alpha is given) are bit-identical to the
    original: seamlessClone also shifts pixels near the mask, and those are put back.

    Details of OpenCV's seamlessClone that this handles:

    - It erodes the mask by 3 px before taking the generated gradients. The mask is grown by 2 px
      first, so the generated gradients cover all but the mask's outermost pixel; that pixel keeps
      the original's gradient, so a step the generator left exactly on the mask's edge is not
      copied into the result.
    - It ignores the image's outermost pixels (the boundary of its solve). Where the mask touches
      an image edge, the three images are padded with their mirror image beyond that edge (up to
      256 px) and the result is cropped back. The mirrored problem is symmetric about the edge,
      so the edge behaves as a free boundary: nothing pulls the colours there towards the
      original. When the mask reaches more than 256 px in from the edge, the padded photo's rim
      does pull, weakly, at pixels near that edge.
    - A mask covering the whole image has no edge to blend across: the generated image is pasted
      as it is. An empty mask returns a copy of the original.

    Cost: one Fourier Poisson solve over the box of the (padded) mask: on two CPU cores about
    0.1 s for a 600² box, 0.45 s for 1024², 1.1 s for a mask touching every edge of a 1024² crop
    (solved padded to 1536²).
    """
    # 1. Check inputs
    original = _check_image(original, "The original")
    generated = _check_image(generated, "The generated image", original.shape[:2])
    mask = _check_mask(mask, original.shape[:2])
    if alpha is not None:
        alpha = _check_alpha(alpha, original.shape[:2])
    if not mask.any():
        return original.copy()

    # 2. Clone
    cloned = generated if mask.all() else _seamless_clone(original, generated, mask)

    # 3. Paste, keeping every pixel outside the edit
    if alpha is not None:
        return feather_paste(original, cloned, alpha)
    result = original.copy()
    result[mask] = cloned[mask]
    return result


def _seamless_clone(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone of ``generated`` into ``original`` at the same position, edges mirrored."""
    clone_mask = grow(mask, _OPENCV_CLONE_EROSION - 1)
    top, bottom, left, right = _edge_pads(clone_mask)

    def mirror(image: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT)

    source, destination = mirror(generated), mirror(original)
    region = mirror(clone_mask.astype(np.uint8) * 255)
    # OpenCV zeroes the mask's outermost pixels (and then writes into the mask it is given);
    # doing it here keeps the box below equal to the one OpenCV computes.
    region[[0, -1], :] = 0
    region[:, [0, -1]] = 0
    x0, y0, x1, y1 = bounding_box(region > 0)
    # OpenCV places the source's mask box at (centre - size // 2): this centre puts it in place.
    centre = (x0 + (x1 - x0) // 2, y0 + (y1 - y0) // 2)
    cloned = cv2.seamlessClone(source, destination, region, centre, cv2.NORMAL_CLONE)
    height, width = mask.shape
    return cloned[top : top + height, left : left + width]


def _edge_pads(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Mirror padding (top, bottom, left, right) for each image edge that ``mask`` touches.

    A side is padded by the mask's reach from that edge plus one, so the mirrored mask stays
    off the padded image's outermost pixels (capped at ``_MAX_EDGE_PAD``); untouched sides get 0.
    """
    height, width = mask.shape
    x0, y0, x1, y1 = bounding_box(mask)
    reaches = (
        (y0 == 0, y1),
        (y1 == height, height - y0),
        (x0 == 0, x1),
        (x1 == width, width - x0),
    )
    top, bottom, left, right = (min(reach + 1, _MAX_EDGE_PAD) if touches else 0 for touches, reach in reaches)
    return top, bottom, left, right


# --- colour matching ------------------------------------------------------------------------


def match_colors(
    generated: np.ndarray,
    original: np.ndarray,
    mask: np.ndarray,
    *,
    ring_width: int = 16,
) -> np.ndarray:
    """Shift the generated image's colour and tone to match the original around the mask.

    The ring is the pixels outside the mask within ``ring_width`` px of it: there both images
    show the same place, so their difference is the generator's colour cast. Per Lab channel,
    with μ and σ the ring's mean and standard deviation,
    ``lab' = (lab − μ_gen) · clip(σ_orig / σ_gen, 0.5, 2) + μ_orig``; the ratio is 1 where the
    generated ring is flat (σ_gen < 0.5). This is applied to the generated pixels in the mask and
    in the ring (where a feathered paste can show them), so the ring's statistics then match the
    original's; pixels farther out are returned unchanged. A mask with no ring (empty, or covering
    everything) returns a copy of ``generated``.

    Returns the adjusted generated image (uint8 H×W×3).
    """
    original = _check_image(original, "The original")
    generated = _check_image(generated, "The generated image", original.shape[:2])
    mask = _check_mask(mask, original.shape[:2])
    if ring_width < 1:
        raise ValueError(f"The ring width must be at least 1 px, got {ring_width}.")
    reach = grow(mask, ring_width)
    ring = reach & ~mask
    if not ring.any():
        return generated.copy()

    x0, y0, x1, y1 = bounding_box(reach)
    window = np.s_[y0:y1, x0:x1]
    generated_lab = to_lab(generated[window])
    ring_in_window = ring[window]
    generated_ring = generated_lab[ring_in_window]
    original_ring = to_lab(original[window][ring_in_window])

    generated_std = generated_ring.std(axis=0)
    ratio = np.clip(original_ring.std(axis=0) / np.maximum(generated_std, _MIN_RING_STD), *STD_RATIO_RANGE)
    ratio = np.where(generated_std < _MIN_RING_STD, 1.0, ratio)
    adjusted_lab = (generated_lab - generated_ring.mean(axis=0)) * ratio + original_ring.mean(axis=0)

    result = generated.copy()
    reach_in_window = reach[window]
    result[window][reach_in_window] = _lab_to_rgb(adjusted_lab)[reach_in_window]
    return result


# --- measuring ------------------------------------------------------------------------------


def seam_delta_e(result: np.ndarray, original: np.ndarray, mask: np.ndarray, *, width: int = 4) -> float:
    """How visible the seam along the mask's edge is, as a ΔE76 colour difference.

    Compares the mean Lab colour of ``result`` just inside the edge (mask pixels within ``width``
    px of it) with the mean Lab colour of ``original`` just outside (unmasked pixels within
    ``width`` px). 0 means the edit meets its surroundings at the same average colour; above
    about 2 a difference is noticeable, above 10 it is obvious. Returns 0.0 for an empty mask
    or one covering everything (there is no edge).

    Limits: it compares averages over the whole edge, so a seam that is too bright on one side
    and too dark on the other can cancel out, and a mismatch in texture or sharpness at an equal
    mean colour does not count. It also assumes the edit should continue what surrounds it: a
    new object deliberately different from its background scores high without a seam. Mask
    pixels at the image's edge are not counted as inside the seam (the photo continues there).
    """
    original = _check_image(original, "The original")
    result = _check_image(result, "The result", original.shape[:2])
    mask = _check_mask(mask, original.shape[:2])
    if width < 1:
        raise ValueError(f"The seam width must be at least 1 px, got {width}.")
    inner = mask & ~shrink(mask, width)
    outer = grow(mask, width) & ~mask
    if not inner.any() or not outer.any():
        return 0.0
    inside_colour = to_lab(result[inner]).mean(axis=0, dtype=np.float64)
    outside_colour = to_lab(original[outer]).mean(axis=0, dtype=np.float64)
    return delta_e76(inside_colour, outside_colour)


# --- entry point ----------------------------------------------------------------------------


def blend(
    original: np.ndarray,
    generated: np.ndarray,
    mask: np.ndarray,
    alpha: np.ndarray,
    *,
    mode: BlendMode = "feather",
    color_match: bool = False,
) -> tuple[np.ndarray, float]:
    """Put ``generated`` back into ``original``: the one call that pasting code makes.

    ``mask`` is the edited region (bool), ``alpha`` its soft version (float32, e.g.
    ``core.masks.feather(mask, inner, outer)``). With ``color_match`` the generated image is
    first matched to the original in a 16-px ring around the mask (:func:`match_colors`; alpha
    reaching farther out than that blends unmatched pixels). ``mode`` "feather" alpha-composites
    (:func:`feather_paste`); "poisson" clones the generated content over the mask and then
    composites through the alpha (:func:`poisson_paste`). Pixels where alpha == 0 are
    bit-identical to the original in every mode.

    Returns the result (uint8 H×W×3) and its seam score against the original
    (:func:`seam_delta_e`).
    """
    # 1. Check inputs
    original = _check_image(original, "The original")
    generated = _check_image(generated, "The generated image", original.shape[:2])
    mask = _check_mask(mask, original.shape[:2])
    alpha = _check_alpha(alpha, original.shape[:2])
    if mode not in BLEND_MODES:
        raise ValueError(f"Unknown blend mode {mode!r}; choose one of {', '.join(BLEND_MODES)}.")

    # 2. Match colours
    if color_match:
        generated = match_colors(generated, original, mask)

    # 3. Paste
    if mode == "feather":
        result = feather_paste(original, generated, alpha)
    else:
        result = poisson_paste(original, generated, mask, alpha=alpha)

    # 4. Measure the seam
    return result, seam_delta_e(result, original, mask)
