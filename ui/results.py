"""Per-session views of generated results: thumbnails and download files, made once per result."""
from __future__ import annotations

import json

import streamlit as st
from PIL import Image

from core.images import encode_image
from core.inpaint import InpaintResult
from ui import state

RESULT_VIEWS = "result_views"  # {(result id, variant, what): image or bytes} for the last result


def _cached(result: InpaintResult, key: tuple, make):
    views = st.session_state.get(RESULT_VIEWS)
    if views is None or views.get("result") is not id(result):
        views = {"result": id(result)}
        st.session_state[RESULT_VIEWS] = views
    if key not in views:
        views[key] = make()
    return views[key]


def variant_view(result: InpaintResult, index: int, width: int) -> Image.Image:
    """Variant ``index`` scaled to ``width`` px for the screen."""
    image = result.images[index]

    def make() -> Image.Image:
        height = max(1, round(image.height * width / image.width))
        return image.resize((width, height), Image.LANCZOS, reducing_gap=2.0)

    return _cached(result, (index, "view", width), make)


def variant_png(result: InpaintResult, index: int) -> bytes:
    """Variant ``index`` as a PNG at full size, with the photo's alpha, profile, EXIF and the edit's
    parameters embedded."""
    loaded = state.photo()

    def make() -> bytes:
        return encode_image(result.images[index], format="PNG", alpha=loaded.alpha,
                            icc_profile=loaded.icc_profile, exif=loaded.exif, params=result.metadata(index))

    return _cached(result, (index, "png"), make)


def recipe_json(result: InpaintResult, index: int) -> str:
    """The edit that made variant ``index``, replayable on another photo with its own mask."""
    return json.dumps({"version": 1, "app": "inpaint-studio", **result.metadata(index)}, indent=2)
