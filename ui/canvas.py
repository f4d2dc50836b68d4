"""The drawing canvas over the photo, converting what is painted into image-resolution masks.

The canvas shows a downscaled copy of the photo with the current mask tinted over it. Each stroke
is handed back as a mask at the photo's full resolution; the caller adds it to the mask history
and bumps the canvas version, so the canvas remounts empty over the updated overlay (the mask
itself lives in session state, which also survives page switches that reset the canvas).
"""
from __future__ import annotations

import numpy as np
from streamlit_drawable_canvas import st_canvas

from core.masks import CanvasGeometry, canvas_to_mask, overlay
from ui import state

STROKE_COLORS = {"Paint": "rgba(255, 0, 80, 0.6)", "Erase": "rgba(40, 120, 255, 0.6)"}
MAX_CANVAS_HEIGHT = 900


def canvas_size(image_size: tuple[int, int], width: int) -> tuple[int, int]:
    """The canvas size showing the whole photo ``width`` px wide (narrower for tall photos)."""
    image_width, image_height = image_size
    width = min(width, max(1, round(MAX_CANVAS_HEIGHT * image_width / image_height)))
    return width, max(1, round(width * image_height / image_width))


def mask_canvas(alpha: np.ndarray, *, tool: str, brush: int, width: int) -> np.ndarray | None:
    """Draw the canvas over the current photo tinted by ``alpha``; return a new stroke's mask.

    ``alpha`` is the mask to show (bool or soft float, full resolution). ``brush`` is in screen
    pixels. Returns None until something is painted; the returned mask is bool at full resolution.
    """
    loaded = state.photo()
    size = canvas_size(loaded.size, width)
    background = overlay(state.display_copy(size[0]), alpha)
    result = st_canvas(
        stroke_width=brush,
        stroke_color=STROKE_COLORS[tool],
        background_image=background,
        background_image_fit="contain",
        drawing_mode="freedraw",
        width=size[0],
        height=size[1],
        return_image_data=True,
        key=f"mask_canvas_{state.canvas_version()}",
    )
    drawing = result.image_data
    if drawing is None:
        return None
    if result.background_fit:
        geometry = CanvasGeometry.from_background_fit(result.background_fit, loaded.size, size)
    else:
        geometry = CanvasGeometry.fit(loaded.size, size)
    stroke = canvas_to_mask(drawing, geometry)
    return stroke if stroke.any() else None
