"""Drawing canvases over the photo: painting masks, and clicking or boxing objects to select.

A canvas shows a downscaled copy of the photo with the current state drawn into it (the mask's
tint, the selection, the clicks). What the person draws is handed back in the photo's full-
resolution coordinates; the caller stores it in session state and bumps the canvas version, so
the canvas remounts empty over the updated picture. Session state, not the canvas, is the source
of truth, which also survives page switches (that reset the canvas).
"""
from __future__ import annotations

import inspect

import numpy as np
from PIL import Image, ImageDraw
from streamlit_drawable_canvas import st_canvas

from core.masks import CanvasGeometry, canvas_to_mask
from ui import session

STROKE_COLORS = {"Paint": "rgba(255, 0, 80, 0.6)", "Erase": "rgba(40, 120, 255, 0.6)"}
POINT_COLORS = {1: "#00c853", 0: "#ff1744"}  # include, exclude
BOX_COLOR = "#ffd600"
MAX_CANVAS_HEIGHT = 900
_ORIGIN = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}


def _no_toolbar() -> dict:
    """The argument hiding the canvas's own toolbar, where this version of st_canvas has one.

    Its upload, undo, redo and bin act on the transient drawing, which the app takes over (and
    clears) as soon as a stroke, click or box arrives; the pages' own buttons (Undo, Redo and Clear
    on the Mask page, Clear selection on the Segment page) do those jobs on the real state. So no
    canvas here needs it. streamlit-drawable-canvas 0.13 has no such argument (its toolbar shows on
    every canvas that is not ``disabled``, inside the component's shadow root, out of reach of the
    page's CSS); older and future versions that take ``display_toolbar`` get it.
    """
    try:
        parameters = inspect.signature(st_canvas).parameters
    except (TypeError, ValueError):
        return {}
    return {"display_toolbar": False} if "display_toolbar" in parameters else {}


def canvas_size(image_size: tuple[int, int], width: int) -> tuple[int, int]:
    """The canvas size showing the whole photo ``width`` px wide (narrower for tall photos)."""
    image_width, image_height = image_size
    width = min(width, max(1, round(MAX_CANVAS_HEIGHT * image_width / image_height)))
    return width, max(1, round(width * image_height / image_width))


def _geometry(result, image_size: tuple[int, int], size: tuple[int, int]) -> CanvasGeometry:
    if result.background_fit:
        return CanvasGeometry.from_background_fit(result.background_fit, image_size, size)
    return CanvasGeometry.fit(image_size, size)


def mask_canvas(background: Image.Image, *, tool: str, brush: int) -> np.ndarray | None:
    """A painting canvas over ``background`` (the photo with the mask drawn in, at canvas size).

    ``brush`` is in screen pixels. Returns the painted stroke as a bool mask at the photo's full
    resolution, or None until something is painted.
    """
    result = st_canvas(
        stroke_width=brush,
        stroke_color=STROKE_COLORS[tool],
        background_image=background,
        background_image_fit="contain",
        drawing_mode="freedraw",
        width=background.width,
        height=background.height,
        return_image_data=True,
        key=f"mask_canvas_{session.canvas_version()}",
        **_no_toolbar(),
    )
    drawing = result.image_data
    if drawing is None:
        return None
    stroke = canvas_to_mask(drawing, _geometry(result, session.photo().size, background.size))
    return stroke if stroke.any() else None


def prompt_canvas(
    background: Image.Image, *, mode: str, label: int, labelled_boxes: bool = False
) -> tuple[list[tuple[float, float, int]], tuple[float, float, float, float] | None]:
    """A canvas for clicks (``mode="point"``) or a box (``mode="rect"``) over ``background``.

    Returns the new clicks as ``(x, y, label)`` and the newest box ``(x0, y0, x1, y1)``, both in
    the photo's pixels (empty / None until something is drawn). ``labelled_boxes``: boxes are drawn
    in the label's colour (example boxes: like this / not like this).
    """
    result = st_canvas(
        stroke_width=2,
        stroke_color=POINT_COLORS[label] if mode == "point" or labelled_boxes else BOX_COLOR,
        fill_color="rgba(255, 214, 0, 0.15)" if mode == "rect" else POINT_COLORS[label],
        background_image=background,
        background_image_fit="contain",
        drawing_mode=mode,
        point_display_radius=5,
        width=background.width,
        height=background.height,
        key=f"segment_canvas_{session.canvas_version(session.SEGMENT_CANVAS_VERSION)}",
        **_no_toolbar(),
    )
    objects = (result.json_data or {}).get("objects", [])
    if not objects:
        return [], None
    geometry = _geometry(result, session.photo().size, background.size)
    points, box = [], None
    for obj in objects:
        kind = str(obj.get("type", "")).lower()  # Fabric 7 says "Circle", older versions "circle"
        width = obj.get("width", 0) * obj.get("scaleX", 1)
        height = obj.get("height", 0) * obj.get("scaleY", 1)
        if kind == "circle":
            # Fabric's box of a circle includes its stroke; its centre is the click.
            outer = 2 * obj.get("radius", 0) * obj.get("scaleX", 1) + obj.get("strokeWidth", 0)
            cx = obj.get("left", 0) + (0.5 - _ORIGIN[obj.get("originX", "left")]) * outer
            cy = obj.get("top", 0) + (0.5 - _ORIGIN[obj.get("originY", "top")]) * outer
            points.append((*geometry.to_image(cx, cy), label))
        elif kind == "rect":
            left = obj.get("left", 0) - _ORIGIN[obj.get("originX", "left")] * width
            top = obj.get("top", 0) - _ORIGIN[obj.get("originY", "top")] * height
            box = (*geometry.to_image(left, top), *geometry.to_image(left + width, top + height))
    return points, box


def draw_prompt(
    image: Image.Image,
    image_size: tuple[int, int],
    points: list[tuple[float, float, int]],
    box: tuple[float, float, float, float] | None,
    examples: list[tuple[tuple[float, float, float, float], int]] = (),
) -> Image.Image:
    """``image`` (a display copy of a photo of ``image_size``) with the clicks, box and example boxes
    (green: like this, red: not like this) drawn on."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    scale_x, scale_y = image.width / image_size[0], image.height / image_size[1]
    for (x0, y0, x1, y1), color in [*(((box), BOX_COLOR),) * (box is not None),
                                    *((example, POINT_COLORS[label]) for example, label in examples)]:
        draw.rectangle((x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y), outline=color, width=3)
    for x, y, label in points:
        cx, cy, r = x * scale_x, y * scale_y, 6
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=POINT_COLORS[label], outline="white", width=2)
    return out
