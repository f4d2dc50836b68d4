"""The user's session data: the current photo, its mask and history, the selection being made, the
latest results, and per-session caches derived from them. Each page's form values live apart, in
``ui.forms``.

Session state holds small per-user data only; models never live here (see ``ui/resources.py``).
"""
from __future__ import annotations

import uuid
from dataclasses import replace

import streamlit as st
from PIL import Image

from core.canvas import fit_alpha
from core.images import LoadedImage, content_hash
from core.masks import MaskDocument, layer_edit
from ui import forms

PHOTO = "photo"  # core.images.LoadedImage
PHOTO_ID = "photo_id"  # content hash of the photo's pixels
PHOTO_SOURCE = "photo_source"  # the upload's file id or the example's name, so each is read once
MASK = "mask"  # core.masks.MaskDocument for the current photo
DISPLAY_CACHE = "display_cache"  # (photo id, width) → downscaled copy shown on screen
MASK_PREVIEW = "mask_preview"  # (inputs, (mask, soft mask)) of the last preview computed
MASK_FILES = "mask_files"  # (inputs, (mask PNG, soft mask PNG)) of the last downloads prepared
MASK_CANVAS_VERSION = "mask_canvas_version"  # bumped to give the canvas a fresh, empty drawing
SEGMENT_CANVAS_VERSION = "segment_canvas_version"
SEGMENT_POINTS = "segment_points"  # [(x, y, label)] in photo pixels, label 1 include / 0 exclude
SEGMENT_BOX = "segment_box"  # (x0, y0, x1, y1) in photo pixels, or None
SEGMENT_STEP = "segment_step"  # Bigger / Smaller: +1 = one size larger, -1 = smaller (see SegmentPrompt.step)
SEGMENT_EXAMPLES = "segment_examples"  # [((x0, y0, x1, y1), label)] example boxes for SAM 3, label 1 like / 0 not
SEGMENT_QUERY = "segment_query"  # the text last searched for
SEGMENT_RESULT = "segment_result"  # (inputs, core.segment.SegmentResult) of the last answer
SEGMENT_CANCELLED = "segment_cancelled"  # the inputs of the selection last cancelled while it waited
INPAINT_REFERENCE = "inpaint_reference"  # (file name, RGB image) of the reference picture, or None
INPAINT_RESULT = "inpaint_result"  # core.operations.inpaint.InpaintResult of the last generation
OUTPAINT_RESULT = "outpaint_result"  # core.operations.outpaint.OutpaintResult of the last canvas extension
OUTPAINT_PREVIEW = "outpaint_preview"  # (inputs, preview image) of the Extend canvas preview
RELIGHT_RESULT = "relight_result"  # core.operations.relight.RelightResult or, lit inpainting, core.operations.inpaint.InpaintResult
RELIGHT_PREVIEW = "relight_preview"  # (photo id, mask revision, core.light.PreviewCache)
BATCH_RECIPE = "batch_recipe"  # core.recipe.Recipe saved from a result with "Use for a batch"
BATCH_JOB = "batch_job"  # ui.batch_job.BatchJob of this session's latest batch
BASE_HISTORY = "base_history"  # earlier versions of the photo (LoadedImage), oldest first
QUEUE_OWNER = "queue_owner"  # this session's id as the owner of its batch jobs in the models' queues
MASKS_BY_SIZE = "masks_by_size"  # (width, height) → the MaskDocument last used at that size (a canvas extended)
MAX_BASE_HISTORY = 10


# Per-photo values that every page may read, with their empty defaults (set_photo resets them).
SESSION_DEFAULTS = {SEGMENT_POINTS: list, SEGMENT_BOX: lambda: None, SEGMENT_STEP: int, SEGMENT_QUERY: str,
                    SEGMENT_EXAMPLES: list, BASE_HISTORY: list}


def init_session() -> None:
    """Make sure the per-photo values exist (a session whose state the server dropped starts clean)."""
    for key, make in SESSION_DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = make()


def owner() -> str:
    """This session's id as the owner of its batch jobs (only the owner may move a job in the order)."""
    if QUEUE_OWNER not in st.session_state:
        st.session_state[QUEUE_OWNER] = uuid.uuid4().hex
    return st.session_state[QUEUE_OWNER]


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
    st.session_state.pop(MASK_FILES, None)
    st.session_state[forms.GROW_PREVIEW] = 0
    clear_segment_prompt()
    st.session_state.pop(INPAINT_RESULT, None)
    st.session_state.pop(OUTPAINT_RESULT, None)
    st.session_state.pop(RELIGHT_RESULT, None)
    st.session_state[BASE_HISTORY] = []
    st.session_state.pop(MASKS_BY_SIZE, None)
    bump_canvas()


def mask_document() -> MaskDocument | None:
    return st.session_state.get(MASK)


def canvas_version(key: str = MASK_CANVAS_VERSION) -> int:
    return st.session_state.get(key, 0)


def bump_canvas(key: str = MASK_CANVAS_VERSION) -> None:
    """Give a drawing canvas a new key, so it mounts empty over the updated background."""
    st.session_state[key] = canvas_version(key) + 1


def clear_segment_prompt() -> None:
    """Forget the clicks, box, step and text of the selection being made."""
    st.session_state[SEGMENT_POINTS] = []
    st.session_state[SEGMENT_BOX] = None
    st.session_state[SEGMENT_STEP] = 0
    st.session_state[SEGMENT_QUERY] = ""
    st.session_state[SEGMENT_EXAMPLES] = []
    st.session_state.pop(SEGMENT_RESULT, None)
    st.session_state.pop(SEGMENT_CANCELLED, None)
    bump_canvas(SEGMENT_CANVAS_VERSION)


def cancel_segment(inputs: tuple) -> None:
    """Cancel the selection of ``inputs`` (photo id, prompt, settings) waiting for its model: the
    page leaves it unanswered until the selection changes (or Find is pressed again)."""
    st.session_state[SEGMENT_CANCELLED] = inputs


def display_copy(width: int) -> Image.Image | None:
    """The current photo scaled to ``width`` pixels wide for the screen (cached per session)."""
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
        cache[key] = rgb if width == rgb.width else rgb.resize((width, height), Image.LANCZOS, reducing_gap=2.0)
    return cache[key]


def base_history() -> list[LoadedImage]:
    return st.session_state.get(BASE_HISTORY, [])


def use_as_base(rgb: Image.Image, canvas=None) -> None:
    """Continue editing from ``rgb`` (an edit of the current photo): the current photo goes into
    the history; transparency, colour profile, EXIF and the mask carry over. ``canvas``: where the
    current photo lies on ``rgb`` when it is a larger canvas (``core.canvas.Canvas``): the
    transparency and the mask move with the photo, the new border opaque and unselected."""
    current = photo()
    history = base_history() + [current]
    st.session_state[BASE_HISTORY] = history[-MAX_BASE_HISTORY:]
    if canvas is not None and current.size != (canvas.width, canvas.height):
        canvas = None  # a result of an earlier version of the photo: there is nothing to move
    mask = mask_document().mask if canvas is not None and mask_document() is not None else None
    alpha = fit_alpha(current.alpha, canvas)
    if alpha is not None and alpha.size != rgb.size:
        alpha = None  # the transparency of another size of the photo does not fit this one
    if canvas is not None:  # a fresh mask on the new canvas, not one kept from an earlier visit
        st.session_state.get(MASKS_BY_SIZE, {}).pop(canvas.size, None)
    _replace_pixels(replace(current, rgb=_with_info(rgb, current), alpha=alpha))
    if mask is not None and mask.any():
        mask_document().apply(layer_edit("add", canvas.place(mask, fill=False), "the mask, on the extended canvas"))


def step_back() -> None:
    """Return to the version of the photo before the last "use as new base"."""
    history = base_history()
    if history:
        st.session_state[BASE_HISTORY] = history[:-1]
        _replace_pixels(history[-1])


def _with_info(rgb: Image.Image, like: LoadedImage) -> Image.Image:
    rgb = rgb.copy()
    rgb.info = dict(like.rgb.info)
    return rgb


def _replace_pixels(loaded: LoadedImage) -> None:
    document = mask_document()
    if document is None or document.size != loaded.size:  # a canvas extended, or stepped back from one:
        kept = st.session_state.setdefault(MASKS_BY_SIZE, {})  # the mask of each size comes back with it
        if document is not None:
            kept[document.size] = document
        st.session_state[MASK] = kept.pop(loaded.size, None) or MaskDocument(loaded.size)
    st.session_state[PHOTO] = loaded
    st.session_state[PHOTO_ID] = content_hash(loaded.rgb)
    st.session_state[DISPLAY_CACHE] = {}
    st.session_state.pop(MASK_PREVIEW, None)
    st.session_state.pop(MASK_FILES, None)
    st.session_state.pop(SEGMENT_RESULT, None)
    bump_canvas()
    bump_canvas(SEGMENT_CANVAS_VERSION)
