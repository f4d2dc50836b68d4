"""Per-session previews that follow the mask: the Mask page's grown and feathered mask and its
download files, and the Relight page's light preview; each recomputed only when its inputs change."""
from __future__ import annotations

import numpy as np
import streamlit as st

from core import masks
from core.light import PreviewCache
from ui.session import MASK_FILES, MASK_PREVIEW, RELIGHT_PREVIEW, mask_document, photo, photo_id


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


def mask_files(grow_px: int, inner: int, outer: int) -> tuple[bytes, bytes]:
    """PNG files of the previewed mask and its soft version, encoded once per change.

    Encoded up front rather than on click: the same bytes give the same download link on every
    rerun, so a click that races a rerun still downloads.
    """
    document = mask_document()
    key = (photo_id(), document.revision, grow_px, inner, outer)
    cached = st.session_state.get(MASK_FILES)
    if cached is None or cached[0] != key:
        mask, soft = mask_preview(grow_px, inner, outer)
        cached = (key, (masks.encode_mask_png(mask), masks.encode_mask_png(soft)))
        st.session_state[MASK_FILES] = cached
    return cached[1]


def relight_preview_cache():
    """The light preview's precomputed photo copy and subject normals, rebuilt when either changes."""
    document = mask_document()
    key = (photo_id(), document.revision)
    cached = st.session_state.get(RELIGHT_PREVIEW)
    if cached is None or cached[:2] != key:
        mask = document.mask if document.mask.any() else None
        cached = (*key, PreviewCache.build(np.asarray(photo().rgb), mask))
        st.session_state[RELIGHT_PREVIEW] = cached
    return cached[2]
