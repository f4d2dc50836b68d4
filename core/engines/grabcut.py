"""OpenCV GrabCut seeded by clicks and a box: the selection that works without any model weights.

GrabCut fits two colour models (Gaussian mixtures), one to the pixels marked as object and one to
the pixels marked as background, and then cuts the photo along colour edges between them, repeating
both steps ``iterations`` times. Marks are either definite (never relabelled) or probable (the
starting guess, which the cut may change). A prompt becomes marks like this:

- a box: outside it definite background, inside it probable object;
- clicks without a box: around the positive clicks (their bounding box grown by
  :data:`POINTS_MARGIN` of the photo's long side) probable object, everywhere else probable
  background; afterwards only the selected regions that touch a positive click are kept, since a
  click means "this object", not "everything of this colour";
- a positive click: a small disk (:data:`POINT_RADIUS` of the long side) of definite object;
- a negative click: such a disk of definite background, plus the patch of similar colour around it
  (see :data:`NEGATIVE_TOLERANCE`).

Positive disks are drawn last, so a click on the object always stays selected.

GrabCut runs on a copy whose long side is at most ``max_side`` (its cost grows with the pixel
count), and the mask is brought back to the photo's size with smooth edges.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from core.masks import empty_mask
from core.segment import SegmentError, SegmentPrompt

# Sizes as fractions of the work copy's long side, so a prompt means the same at any resolution.
POINT_RADIUS = 0.01
POINTS_MARGIN = 0.12

# Each colour model is a mixture of this many Gaussians, initialised by k-means: each side needs at
# least this many marked pixels or cv2.grabCut raises.
GMM_COMPONENTS = 5
RANDOM_SEED = 0

# A negative click excludes the patch of similar colour around it, not just a dot: a few pixels
# weigh next to nothing in the background's colour model, so a dot alone leaves the rest of that
# patch selected. The patch is flood-filled on a lightly blurred copy (so noise does not stop it),
# within a per-channel tolerance of the clicked colour and a reach (fraction of the long side).
NEGATIVE_SMOOTHING = 1.5
NEGATIVE_TOLERANCE = 20
NEGATIVE_REACH = 0.15


def grabcut_select(
    image: Image.Image, prompt: SegmentPrompt, *, max_side: int = 512, iterations: int = 3
) -> tuple[np.ndarray, str]:
    """Select the object that ``prompt``'s clicks and box point at, with GrabCut.

    ``image`` is the photo (converted to RGB); ``prompt`` is in its pixel coordinates, and its
    text is not used. Clicks outside the photo are ignored and the box is clamped to it.

    Returns a bool mask at the photo's full size (True = selected) and a message for the person,
    empty when something was selected. A prompt with clicks or a box that leaves nothing to seed
    from (only negative clicks, clicks all outside the photo, a box over the whole photo) returns
    an empty mask and a message saying what to do. Raises SegmentError for a prompt with neither
    clicks nor a box, and for a box with no area inside the photo.
    """
    # 1. Check the prompt.
    if prompt.box is None and not prompt.points:
        reason = "GrabCut cannot select by text; " if prompt.text else ""
        raise SegmentError(reason + "click on the object or drag a box around it.")
    checked = prompt.checked_for(image.size)
    nothing = empty_mask(image.size)
    if checked.box is None and not checked.positive:
        if prompt.positive:
            return nothing, "The clicks on the object lie outside the photo; click on the object itself."
        return nothing, (
            "There is nothing to select from: click on the object (not only on what to exclude) "
            "or drag a box around it."
        )

    # 2. Work on a copy small enough to be quick.
    scale = min(1.0, max_side / max(image.size))
    work_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    work_image = image.convert("RGB")
    if work_size != image.size:
        work_image = work_image.resize(work_size, Image.BILINEAR, reducing_gap=2.0)
    # GrabCut's colour models do not depend on channel order, so the RGB array goes in as it is.
    work = np.asarray(work_image)

    # 3. Mark the seeds.
    seeds = _seeds(work, checked, image.size)
    object_pixels = np.count_nonzero((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD))
    background_pixels = seeds.size - object_pixels
    if background_pixels < GMM_COMPONENTS:
        tighter = "draw the box tighter around the object" if checked.box else "drag a box around the object"
        return nothing, f"GrabCut needs some background to learn from: {tighter} or click on the background."
    if object_pixels < GMM_COMPONENTS:
        return nothing, "The box is too small to select anything in; drag a larger box around the object."

    # 4. Cut.
    background_model = np.zeros((1, 65), np.float64)
    object_model = np.zeros((1, 65), np.float64)
    # The colour models start from k-means++, drawn from OpenCV's (per-thread) random generator:
    # seeding it makes the same prompt give the same mask, so a saved recipe replays exactly.
    cv2.setRNGSeed(RANDOM_SEED)
    cv2.grabCut(work, seeds, None, background_model, object_model, iterations, cv2.GC_INIT_WITH_MASK)
    selected = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    if checked.box is None:
        clicks = [_to_work(x, y, image.size, work_size) for x, y in checked.positive]
        selected = _regions_touching(selected, clicks)
    if not selected.any():
        return nothing, "GrabCut found no object in the box; click on the object, or draw the box around it."

    # 5. Back to the photo's size.
    if work_size == image.size:
        return selected, ""
    upscaled = cv2.resize(selected.astype(np.float32), image.size, interpolation=cv2.INTER_LINEAR)
    return upscaled >= 0.5, ""


def _seeds(work: np.ndarray, prompt: SegmentPrompt, image_size: tuple[int, int]) -> np.ndarray:
    """GrabCut's initial labels (uint8, the size of ``work``) for a prompt checked against the photo's
    ``image_size``."""
    height, width = work.shape[:2]
    work_size = (width, height)
    long_side = max(work_size)
    seeds = np.full((height, width), cv2.GC_PR_BGD, np.uint8)
    if prompt.box is not None:
        seeds[:] = cv2.GC_BGD
        x0, y0 = _to_work(prompt.box[0], prompt.box[1], image_size, work_size)
        x1, y1 = _to_work_end(prompt.box[2], prompt.box[3], image_size, work_size)
        seeds[y0:y1, x0:x1] = cv2.GC_PR_FGD
    else:
        points = np.array([_to_work(x, y, image_size, work_size) for x, y in prompt.positive])
        margin = round(POINTS_MARGIN * long_side)
        x0, y0 = np.maximum(points.min(axis=0) - margin, 0)
        x1, y1 = points.max(axis=0) + margin + 1
        seeds[y0:y1, x0:x1] = cv2.GC_PR_FGD
    radius = max(2, round(POINT_RADIUS * long_side))
    if prompt.negative:
        smooth = cv2.GaussianBlur(work, (0, 0), NEGATIVE_SMOOTHING)
        reach = max(radius, round(NEGATIVE_REACH * long_side))
        for x, y in prompt.negative:
            centre = _to_work(x, y, image_size, work_size)
            seeds[_similar_patch(smooth, centre, reach)] = cv2.GC_BGD
            cv2.circle(seeds, centre, radius, int(cv2.GC_BGD), thickness=-1)
    for x, y in prompt.positive:
        cv2.circle(seeds, _to_work(x, y, image_size, work_size), radius, int(cv2.GC_FGD), thickness=-1)
    return seeds


def _similar_patch(smooth: np.ndarray, centre: tuple[int, int], reach: int) -> np.ndarray:
    """The pixels connected to ``centre`` whose colour in ``smooth`` is within
    :data:`NEGATIVE_TOLERANCE` of the centre's, no farther than ``reach`` pixels from it (bool,
    the size of ``smooth``)."""
    height, width = smooth.shape[:2]
    x, y = centre
    x0, y0 = max(0, x - reach), max(0, y - reach)
    x1, y1 = min(width, x + reach + 1), min(height, y + reach + 1)
    filled = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)  # floodFill wants a 1-pixel border
    tolerance = (NEGATIVE_TOLERANCE,) * 3
    # 4-connected, compared with the clicked colour (not with each neighbour), writing 1 into ``filled``.
    flags = 4 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    cv2.floodFill(smooth[y0:y1, x0:x1].copy(), filled, (x - x0, y - y0), 0, tolerance, tolerance, flags)
    within = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.circle(within, (x - x0, y - y0), reach, 1, thickness=-1)
    patch = np.zeros((height, width), dtype=bool)
    patch[y0:y1, x0:x1] = (filled[1:-1, 1:-1] > 0) & (within > 0)
    return patch


def _to_work(x: float, y: float, image_size: tuple[int, int], work_size: tuple[int, int]) -> tuple[int, int]:
    """The work pixel containing photo point (x, y)."""
    return (
        min(work_size[0] - 1, int(x * work_size[0] / image_size[0])),
        min(work_size[1] - 1, int(y * work_size[1] / image_size[1])),
    )


def _to_work_end(
    x: float, y: float, image_size: tuple[int, int], work_size: tuple[int, int]
) -> tuple[int, int]:
    """A box's exclusive end (x, y) in work pixels: the first work pixel past it."""
    return (
        max(1, int(np.ceil(x * work_size[0] / image_size[0]))),
        max(1, int(np.ceil(y * work_size[1] / image_size[1]))),
    )


def _regions_touching(mask: np.ndarray, points: list[tuple[int, int]]) -> np.ndarray:
    """The connected regions of ``mask`` (8-connected) that contain one of ``points`` (x, y)."""
    _, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    touched = [labels[y, x] for x, y in points if labels[y, x] > 0]
    return np.isin(labels, touched)
