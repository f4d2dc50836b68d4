"""Pictures for the Segment page: the selection over the photo, and text-match thumbnails."""
from __future__ import annotations

import numpy as np
from PIL import Image

from core.masks import bounding_box, overlay
from core.segment import SegmentPrompt
from ui import session
from ui.canvas import draw_prompt

SELECTION_COLOR = (0, 190, 255)


def selection_picture(width: int, selection: np.ndarray | None, prompt: SegmentPrompt) -> Image.Image:
    """The photo ``width`` px wide with the current mask faintly, the selection, clicks and box."""
    loaded = session.photo()
    picture = session.display_copy(width)
    document = session.mask_document()
    if document.mask.any():
        picture = overlay(picture, document.mask, opacity=0.25, outline=False)
    if selection is not None:
        picture = overlay(picture, selection, color=SELECTION_COLOR, opacity=0.45)
    return draw_prompt(picture, loaded.size, list(prompt.points), prompt.box, list(prompt.examples))


def thumbnail(mask: np.ndarray, size: int = 160) -> Image.Image:
    """The part of the photo around ``mask`` with the mask tinted, about ``size`` px wide."""
    loaded = session.photo()
    x0, y0, x1, y1 = bounding_box(mask) or (0, 0, *loaded.size)
    margin_x, margin_y = (x1 - x0) // 8 + 1, (y1 - y0) // 8 + 1
    box = (max(0, x0 - margin_x), max(0, y0 - margin_y), min(loaded.size[0], x1 + margin_x),
           min(loaded.size[1], y1 + margin_y))
    crop = loaded.rgb.crop(box)
    crop_mask = mask[box[1] : box[3], box[0] : box[2]]
    scale = size / max(crop.size)
    small = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    return overlay(crop.resize(small, Image.BILINEAR), crop_mask, color=SELECTION_COLOR, opacity=0.45)
