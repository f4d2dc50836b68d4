"""Session-state keys and accessors: the one place that knows how a user's work is stored.

Session state holds small per-user data only: the current photo, its mask history and widget
values. Models never live here (see ``ui/resources.py``).
"""
from __future__ import annotations

import streamlit as st
from PIL import Image

import numpy as np

from core import masks
from core.images import LoadedImage, content_hash
from core.masks import MaskDocument

PHOTO = "photo"  # core.images.LoadedImage
PHOTO_ID = "photo_id"  # content hash of the photo's pixels
PHOTO_SOURCE = "photo_source"  # the upload's file id or the example's name, so each is read once
MASK = "mask"  # core.masks.MaskDocument for the current photo
DISPLAY_CACHE = "display_cache"  # (photo id, width) → downscaled copy shown on screen
MASK_PREVIEW = "mask_preview"  # (inputs, (mask, soft mask)) of the last preview computed
MASK_CANVAS_VERSION = "mask_canvas_version"  # bumped to give the canvas a fresh, empty drawing

# Widget values that must survive a page switch (Streamlit drops the state of widgets that a run
# does not draw), with their defaults.
MASK_TOOL = "mask_tool"
BRUSH_SIZE = "brush_size"
CANVAS_WIDTH = "canvas_width"
GROW_PREVIEW = "grow_preview"
FEATHER_INNER = "feather_inner"
FEATHER_OUTER = "feather_outer"
ISLAND_AREA = "island_area"
PERSISTENT_WIDGETS = {
    MASK_TOOL: "Paint",
    BRUSH_SIZE: 30,
    CANVAS_WIDTH: 800,
    GROW_PREVIEW: 0,
    FEATHER_INNER: 0,
    FEATHER_OUTER: 8,
    ISLAND_AREA: 100,
}


def init_session() -> None:
    """Give persistent widgets their defaults once, and keep their values across pages."""
    for key, default in PERSISTENT_WIDGETS.items():
        # Re-assigning detaches the value from the widget, so it outlives a page without it.
        st.session_state[key] = st.session_state.get(key, default)


def photo() -> LoadedImage | None:
    return st.session_state.get(PHOTO)


def photo_id() -> str | None:
    return st.session_state.get(PHOTO_ID)


def photo_source() -> str | None:
    return st.session_state.get(PHOTO_SOURCE)


def set_photo(loaded: LoadedImage, source: str) -> None:
    """Make ``loaded`` the current photo, with a new empty mask. The previous work is replaced."""
    st.session_state[PHOTO] = loaded
    st.session_state[PHOTO_ID] = content_hash(loaded.rgb)
    st.session_state[PHOTO_SOURCE] = source
    st.session_state[MASK] = MaskDocument(loaded.size)
    st.session_state[DISPLAY_CACHE] = {}
    st.session_state.pop(MASK_PREVIEW, None)
    st.session_state[GROW_PREVIEW] = 0
    bump_canvas()


def mask_document() -> MaskDocument | None:
    return st.session_state.get(MASK)


def canvas_version() -> int:
    return st.session_state.get(MASK_CANVAS_VERSION, 0)


def bump_canvas() -> None:
    """Give the drawing canvas a new key, so it mounts empty over the updated mask."""
    st.session_state[MASK_CANVAS_VERSION] = canvas_version() + 1


def display_copy(width: int) -> Image.Image | None:
    """The current photo downscaled to ``width`` pixels wide for the screen (cached per session)."""
    loaded = photo()
    if loaded is None:
        return None
    cache: dict = st.session_state.setdefault(DISPLAY_CACHE, {})
    key = (photo_id(), width)
    if key not in cache:
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        rgb = loaded.rgb
        height = max(1, round(rgb.height * width / rgb.width))
        cache[key] = rgb if width >= rgb.width else rgb.resize((width, height), Image.LANCZOS, reducing_gap=2.0)
    return cache[key]


def mask_preview(grow_px: int, inner: int, outer: int) -> tuple[np.ndarray, np.ndarray]:
    """The current mask grown by ``grow_px`` (not yet applied) and its feathered alpha.

    Recomputed only when the mask or one of the values changes, not on every rerun.
    """
    document = mask_document()
    key = (photo_id(), document.revision, grow_px, inner, outer)
    cached = st.session_state.get(MASK_PREVIEW)
    if cached is None or cached[0] != key:
        mask = masks.grow(document.mask, grow_px) if grow_px else document.mask
        cached = (key, (mask, masks.feather(mask, inner, outer)))
        st.session_state[MASK_PREVIEW] = cached
    return cached[1]
