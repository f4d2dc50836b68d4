"""Session-state keys and accessors: the one place that knows how a user's work is stored.

Session state holds small per-user data only: the current photo, its mask history and widget
values. Models never live here (see ``ui/resources.py``).
"""
from __future__ import annotations

import streamlit as st
from PIL import Image

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from core import masks
from core.images import LoadedImage, content_hash
from core.masks import MaskDocument
from core.operations.fields import defaults
from core.operations.inpaint import InpaintParams
from core.operations.relight import RelightParams

_INPAINT = defaults(InpaintParams)
_RELIGHT = defaults(RelightParams)

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
SEGMENT_STEP = "segment_step"  # 0 = smallest object at the clicks, +1 = next larger, ...
SEGMENT_QUERY = "segment_query"  # the text last searched for
SEGMENT_RESULT = "segment_result"  # (inputs, core.segment.SegmentResult) of the last answer
INPAINT_RESULT = "inpaint_result"  # core.operations.inpaint.InpaintResult of the last generation
RELIGHT_RESULT = "relight_result"  # core.operations.relight.RelightResult or, lit inpainting, core.operations.inpaint.InpaintResult
RELIGHT_PREVIEW = "relight_preview"  # (photo id, mask revision, core.light.PreviewCache)
BATCH_RECIPE = "batch_recipe"  # core.recipe.Recipe saved from a result with "Use for a batch"
BATCH_JOB = "batch_job"  # ui.batch_job.BatchJob of this session's latest batch
BASE_HISTORY = "base_history"  # earlier versions of the photo (LoadedImage), oldest first
MAX_BASE_HISTORY = 10

# Widget values that must survive a page switch (Streamlit drops the state of widgets that a run
# does not draw), with their defaults.
MASK_TOOL = "mask_tool"
BRUSH_SIZE = "brush_size"
CANVAS_WIDTH = "canvas_width"
GROW_PREVIEW = "grow_preview"
FEATHER_INNER = "feather_inner"
FEATHER_OUTER = "feather_outer"
ISLAND_AREA = "island_area"
SEGMENT_MODE = "segment_mode"
SEGMENT_LABEL = "segment_label"
SEGMENT_TEXT = "segment_text"
SEGMENT_TOP_K = "segment_top_k"
SEGMENT_BACKEND = "segment_backend"
SEGMENT_MODEL = "segment_model"
SEGMENT_IMGSZ = "segment_imgsz"
SEGMENT_CONF = "segment_conf"
SEGMENT_IOU = "segment_iou"
SEGMENT_RETINA = "segment_retina"
SEGMENT_CLIP_TO_BOX = "segment_clip_to_box"
INPAINT_ENGINE = "inpaint_engine"
INPAINT_PROMPT = "inpaint_prompt"
INPAINT_NEGATIVE = "inpaint_negative"
INPAINT_PRESET = "inpaint_preset"
INPAINT_VARIANTS = "inpaint_variants"
INPAINT_SEED = "inpaint_seed"
INPAINT_RANDOM_SEED = "inpaint_random_seed"
INPAINT_GUIDANCE = "inpaint_guidance"
INPAINT_STEPS = "inpaint_steps"
INPAINT_STRENGTH = "inpaint_strength"
INPAINT_SCHEDULER = "inpaint_scheduler"
INPAINT_PADDING = "inpaint_padding"
INPAINT_BLEND = "inpaint_blend"
INPAINT_COLOR_MATCH = "inpaint_color_match"
INPAINT_INVERT = "inpaint_invert"
INPAINT_CHOICE = "inpaint_choice"
LIGHT_PRESET = "light_preset"
LIGHT_AZIMUTH = "light_azimuth"
LIGHT_ELEVATION = "light_elevation"
LIGHT_INTENSITY = "light_intensity"
LIGHT_AMBIENT = "light_ambient"
LIGHT_USE_TEMPERATURE = "light_use_temperature"
LIGHT_TEMPERATURE = "light_temperature"
LIGHT_COLOR = "light_color"
RELIGHT_ACTION = "relight_action"
RELIGHT_PROMPT = "relight_prompt"
RELIGHT_NEGATIVE = "relight_negative"
RELIGHT_VARIANTS = "relight_variants"
RELIGHT_SEED = "relight_seed"
RELIGHT_RANDOM_SEED = "relight_random_seed"
RELIGHT_MODE = "relight_mode"
RELIGHT_DETAIL = "relight_detail"
RELIGHT_STEPS = "relight_steps"
RELIGHT_GUIDANCE = "relight_guidance"
RELIGHT_DENOISE = "relight_denoise"
RELIGHT_HIGHRES = "relight_highres"
RELIGHT_HIGHRES_SCALE = "relight_highres_scale"
RELIGHT_HIGHRES_DENOISE = "relight_highres_denoise"
RELIGHT_CHOICE = "relight_choice"
LIT_ENGINE = "lit_engine"
LIT_START = "lit_start"
LIT_STRENGTH = "lit_strength"
RECIPE_SELECTION = "recipe_selection"
RECIPE_SEED_POLICY = "recipe_seed_policy"
RECIPE_NAME = "recipe_name"
BATCH_RECIPE_SOURCE = "batch_recipe_source"
PERSISTENT_WIDGETS = {
    MASK_TOOL: "Paint",
    BRUSH_SIZE: 30,
    CANVAS_WIDTH: 800,
    GROW_PREVIEW: 0,
    FEATHER_INNER: _INPAINT["mask_blur_inside"],
    FEATHER_OUTER: _INPAINT["mask_blur"],
    ISLAND_AREA: 100,
    SEGMENT_MODE: "Click",
    SEGMENT_LABEL: "Include",
    SEGMENT_TEXT: "",
    SEGMENT_TOP_K: 3,
    SEGMENT_BACKEND: "FastSAM",
    SEGMENT_MODEL: "FastSAM-s",
    SEGMENT_IMGSZ: 1024,
    SEGMENT_CONF: 0.4,
    SEGMENT_IOU: 0.9,
    SEGMENT_RETINA: True,
    SEGMENT_CLIP_TO_BOX: False,
    INPAINT_ENGINE: None,
    INPAINT_PROMPT: "",
    INPAINT_NEGATIVE: _INPAINT["negative_prompt"],
    INPAINT_PRESET: "Quality",
    INPAINT_VARIANTS: _INPAINT["variants"],
    INPAINT_SEED: 42,
    INPAINT_RANDOM_SEED: False,
    INPAINT_GUIDANCE: _INPAINT["guidance_scale"],
    INPAINT_STEPS: _INPAINT["steps"],
    INPAINT_STRENGTH: _INPAINT["strength"],
    INPAINT_SCHEDULER: "default",
    INPAINT_PADDING: _INPAINT["padding"],
    INPAINT_BLEND: _INPAINT["blend"],
    INPAINT_COLOR_MATCH: _INPAINT["color_match"],
    INPAINT_INVERT: _INPAINT["invert_mask"],
    INPAINT_CHOICE: 0,
    LIGHT_PRESET: None,
    LIGHT_AZIMUTH: 135,
    LIGHT_ELEVATION: 30,
    LIGHT_INTENSITY: 1.0,
    LIGHT_AMBIENT: 0.35,
    LIGHT_USE_TEMPERATURE: True,
    LIGHT_TEMPERATURE: 5500,
    LIGHT_COLOR: "#ffffff",
    RELIGHT_ACTION: "relight",
    RELIGHT_PROMPT: _RELIGHT["prompt"],
    RELIGHT_NEGATIVE: _RELIGHT["negative_prompt"],
    RELIGHT_VARIANTS: _RELIGHT["variants"],
    RELIGHT_SEED: 12345,
    RELIGHT_RANDOM_SEED: False,
    RELIGHT_MODE: _RELIGHT["mode"],
    RELIGHT_DETAIL: _RELIGHT["detail_transfer"],
    RELIGHT_STEPS: _RELIGHT["steps"],
    RELIGHT_GUIDANCE: _RELIGHT["guidance"],
    RELIGHT_DENOISE: _RELIGHT["denoise"],
    RELIGHT_HIGHRES: False,
    RELIGHT_HIGHRES_SCALE: 1.5,
    RELIGHT_HIGHRES_DENOISE: _RELIGHT["highres_denoise"],
    RELIGHT_CHOICE: 0,
    LIT_ENGINE: None,
    LIT_START: "current",
    LIT_STRENGTH: 0.75,
    RECIPE_SELECTION: "mask",
    RECIPE_SEED_POLICY: "fixed",
    RECIPE_NAME: "",
    BATCH_RECIPE_SOURCE: "session",
}


# Per-photo values that every page may read, with their empty defaults (set_photo resets them).
SESSION_DEFAULTS = {SEGMENT_POINTS: list, SEGMENT_BOX: lambda: None, SEGMENT_STEP: int, SEGMENT_QUERY: str,
                    BASE_HISTORY: list}


def init_session() -> None:
    """Give persistent widgets their defaults once, and keep their values across pages; make sure
    the per-photo values exist (a session whose state the server dropped starts clean)."""
    for key, default in PERSISTENT_WIDGETS.items():
        # Re-assigning detaches the value from the widget, so it outlives a page without it.
        st.session_state[key] = st.session_state.get(key, default)
    for key, make in SESSION_DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = make()


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
    st.session_state[GROW_PREVIEW] = 0
    clear_segment_prompt()
    st.session_state.pop(INPAINT_RESULT, None)
    st.session_state.pop(RELIGHT_RESULT, None)
    st.session_state[BASE_HISTORY] = []
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
    st.session_state.pop(SEGMENT_RESULT, None)
    bump_canvas(SEGMENT_CANVAS_VERSION)


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


def base_history() -> list[LoadedImage]:
    return st.session_state.get(BASE_HISTORY, [])


def use_as_base(rgb: Image.Image) -> None:
    """Continue editing from ``rgb`` (an edit of the current photo): the current photo goes into
    the history; transparency, colour profile, EXIF and the mask carry over."""
    current = photo()
    history = base_history() + [current]
    st.session_state[BASE_HISTORY] = history[-MAX_BASE_HISTORY:]
    _replace_pixels(replace(current, rgb=_with_info(rgb, current)))


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
    st.session_state[PHOTO] = loaded
    st.session_state[PHOTO_ID] = content_hash(loaded.rgb)
    st.session_state[DISPLAY_CACHE] = {}
    st.session_state.pop(MASK_PREVIEW, None)
    st.session_state.pop(MASK_FILES, None)
    st.session_state.pop(SEGMENT_RESULT, None)
    bump_canvas()
    bump_canvas(SEGMENT_CANVAS_VERSION)


def selection_options() -> dict[str, tuple[str, Callable[[np.ndarray], Any]]]:
    """The ways the current edit's region can be described in a recipe.

    kind → (label, make), ``make(mask)`` building the ``core.recipe.Selection`` from the mask the
    edit used. Always the mask itself, each photo's mask file and the whole photo; also the
    Segment page's text, clicks or box when there are any, relative to the photo's size.
    """
    from core.recipe import Selection

    width, height = photo().size
    options: dict[str, tuple[str, Callable[[np.ndarray], Any]]] = {
        "mask": ("This mask, scaled to each photo", Selection.from_mask)
    }
    query = st.session_state.get(SEGMENT_QUERY, "")
    if query:
        options["text"] = (f"The object named “{query}”", lambda _: Selection(kind="text", text=query))
    points = st.session_state.get(SEGMENT_POINTS) or []
    if any(label == 1 for *_, label in points):
        relative = tuple((x / width, y / height, label) for x, y, label in points)
        step = st.session_state.get(SEGMENT_STEP, 0)
        options["points"] = ("The object at the same clicks",
                             lambda _: Selection(kind="points", points=relative, step=step))
    box = st.session_state.get(SEGMENT_BOX)
    if box is not None:
        x0, y0, x1, y1 = box
        relative_box = (x0 / width, y0 / height, x1 / width, y1 / height)
        options["box"] = ("The object in the same box", lambda _: Selection(kind="box", box=relative_box))
    options["mask_file"] = ("Each photo's own mask file", lambda _: Selection(kind="mask_file"))
    options["whole"] = ("The whole photo", lambda _: Selection(kind="whole"))
    return options


def relight_preview_cache():
    """The light preview's precomputed photo copy and subject normals, rebuilt when either changes."""
    from core.light import PreviewCache

    document = mask_document()
    key = (photo_id(), document.revision)
    cached = st.session_state.get(RELIGHT_PREVIEW)
    if cached is None or cached[:2] != key:
        mask = document.mask if document.mask.any() else None
        cached = (*key, PreviewCache.build(np.asarray(photo().rgb), mask))
        st.session_state[RELIGHT_PREVIEW] = cached
    return cached[2]
