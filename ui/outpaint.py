"""The Inpaint page's "Extend canvas" widgets: how much to add (pixels per side, or an aspect ratio
and where the photo sits) and a live preview of the new canvas, made at display size."""
from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw

from core.canvas import ANCHORS, ASPECTS, Canvas, CanvasError, extend_by, extend_to, prefill
from core.errors import UserError
from core.operations.outpaint import OutpaintParams
from ui import forms, session
from ui.generation import sampling_inputs

BY_PIXELS, BY_ASPECT = "By pixels", "To an aspect ratio"
PREVIEW_WIDTH = 480
ANCHOR_LABELS = {"centre": "Centre", "left": "Left", "right": "Right", "top": "Top", "bottom": "Bottom",
                 "top-left": "Top left", "top-right": "Top right", "bottom-left": "Bottom left",
                 "bottom-right": "Bottom right"}


def extension_inputs() -> dict[str, Any]:
    """The extension's widgets; its fields of ``OutpaintParams`` (left, right, top, bottom, aspect, anchor)."""
    by = st.segmented_control("Extend", [BY_ASPECT, BY_PIXELS], key=forms.OUTPAINT_BY, required=True)
    if by == BY_PIXELS:
        columns = st.columns(4)
        sides = {}
        for column, (side, key) in zip(columns, (("left", forms.OUTPAINT_LEFT), ("right", forms.OUTPAINT_RIGHT),
                                                 ("top", forms.OUTPAINT_TOP), ("bottom", forms.OUTPAINT_BOTTOM))):
            sides[side] = int(column.number_input(f"{side.title()} (px)", 0, 8192, step=16, key=key))
        return {**sides, "aspect": "", "anchor": "centre"}
    aspect_col, anchor_col = st.columns(2)
    aspect = aspect_col.selectbox("Aspect ratio", list(ASPECTS), key=forms.OUTPAINT_ASPECT)
    anchor = anchor_col.selectbox("Photo at", list(ANCHORS), key=forms.OUTPAINT_ANCHOR,
                                  format_func=ANCHOR_LABELS.get,
                                  help="Where the photo sits on the new canvas; the rest is generated.")
    return {"left": 0, "right": 0, "top": 0, "bottom": 0, "aspect": aspect, "anchor": anchor}


def plan(extension: dict[str, Any], size: tuple[int, int]) -> tuple[Canvas | None, str]:
    """The canvas ``extension`` makes for a photo of ``size``, or (None, what to change)."""
    try:
        if extension["aspect"]:
            return extend_to(size, extension["aspect"], extension["anchor"]), ""
        sides = {side: extension[side] for side in ("left", "right", "top", "bottom")}
        return extend_by(size, **sides), ""
    except CanvasError as error:
        return None, str(error)


def _preview(canvas: Canvas) -> Image.Image:
    """The photo on the new canvas at display width: the border's first fill (what the engine
    starts from), the photo's edge outlined."""
    width, height = canvas.size
    scale = min(1.0, PREVIEW_WIDTH / width)

    def scaled(value: int) -> int:
        return max(0, round(value * scale))

    small = Canvas(max(1, scaled(canvas.width)), max(1, scaled(canvas.height)), scaled(canvas.left),
                   scaled(canvas.top), scaled(canvas.right), scaled(canvas.bottom))
    shown = session.display_copy(small.width)
    if shown.size != (small.width, small.height):
        shown = shown.resize((small.width, small.height))
    pixels = np.asarray(shown)
    image = Image.fromarray(prefill(pixels, small), "RGB")
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = small.photo_box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 64, 160), width=2)
    return image


def canvas_preview(canvas: Canvas) -> None:
    """Show the new canvas (recomputed only when the photo or the canvas changes)."""
    key = (session.photo_id(), canvas)
    cached = st.session_state.get(session.OUTPAINT_PREVIEW)
    if cached is None or cached[0] != key:
        cached = (key, _preview(canvas))
        st.session_state[session.OUTPAINT_PREVIEW] = cached
    width, height = canvas.size
    st.image(cached[1], caption=f"New canvas {width}×{height} px (the photo is outlined; the border shows the "
                                "first fill the engine starts from)")


def settings(size: tuple[int, int], **common: Any) -> tuple[Canvas | None, OutpaintParams | None]:
    """The Extend canvas settings below the ones every generation shares (``common``: prompt,
    negative_prompt, seed, variants, engine, reference): the extension, the soft seam, the crops'
    overlap, colour matching. Returns the canvas for a photo of ``size`` and the params, each None
    (with what to change shown) when they cannot be made."""
    extension = extension_inputs()
    canvas, problem = plan(extension, size)
    feather = st.slider("Soft seam into the photo (px)", 0, 128, key=forms.OUTPAINT_FEATHER,
                        help="The photo beyond this band stays exactly as it is.")
    with st.expander("More settings"):
        steps, guidance = sampling_inputs(forms.INPAINT_STEPS, forms.INPAINT_GUIDANCE)
        strength = st.slider("Strength", 0.05, 1.0, step=0.05, key=forms.OUTPAINT_STRENGTH,
                             help="Below 1 the engine starts from the first fill, so the colours and light of the "
                                  "photo's edges carry on; 1 starts from noise.")
        overlap = st.slider("Overlap of the crops along the border (px)", 0, 256, step=8, key=forms.OUTPAINT_OVERLAP,
                            help="A large border is generated in crops of the engine's size, outward from the "
                                 "photo; each reaches this far into what is already there.")
        color_match = st.toggle("Match colours to the photo", key=forms.INPAINT_COLOR_MATCH)
    if problem:
        st.warning(problem, icon=":material/info:")
        return None, None
    try:
        return canvas, OutpaintParams(guidance_scale=guidance, steps=steps, strength=strength, mask_blur=feather,
                                      padding=overlap,
                                      color_match=color_match, **common, **extension)
    except UserError as error:
        st.error(str(error))
        return canvas, None
