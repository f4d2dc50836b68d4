"""Each page's form values: the widget keys and their defaults, kept across page switches.

Streamlit drops the state of widgets that a run does not draw; :func:`keep_values` re-assigns each
value on every run, so a setting outlives a visit to another page. The defaults of the operations'
settings come from their params' field metadata (``core.operations.fields``), the one source the
command line and recipes use too; only the number of variants differs (:data:`PAGE_VARIANTS`).
"""
from __future__ import annotations

import streamlit as st

from core.operations.fields import defaults
from core.operations.inpaint import InpaintParams
from core.operations.outpaint import OutpaintParams
from core.operations.relight import RelightParams

_INPAINT = defaults(InpaintParams)
_RELIGHT = defaults(RelightParams)
_OUTPAINT = defaults(OutpaintParams)
# The one page default that is not the params' own: a page offers a pair of variants to choose
# from, where a script or a recipe makes one image unless asked for more.
PAGE_VARIANTS = 2

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
SEGMENT_REFINER = "segment_refiner"
SEGMENT_MIN_SCORE = "segment_min_score"
SEGMENT_EXAMPLE_LABEL = "segment_example_label"
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
INPAINT_MODE = "inpaint_mode"
INPAINT_TASK = "inpaint_task"
OUTPAINT_BY = "outpaint_by"
OUTPAINT_LEFT = "outpaint_left"
OUTPAINT_RIGHT = "outpaint_right"
OUTPAINT_TOP = "outpaint_top"
OUTPAINT_BOTTOM = "outpaint_bottom"
OUTPAINT_ASPECT = "outpaint_aspect"
OUTPAINT_ANCHOR = "outpaint_anchor"
OUTPAINT_FEATHER = "outpaint_feather"
OUTPAINT_OVERLAP = "outpaint_overlap"
OUTPAINT_STRENGTH = "outpaint_strength"
OUTPAINT_CHOICE = "outpaint_choice"
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
DEFAULTS = {
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
    SEGMENT_REFINER: "sam2",
    SEGMENT_MIN_SCORE: 0.5,
    SEGMENT_EXAMPLE_LABEL: "Like this",
    INPAINT_ENGINE: None,
    INPAINT_PROMPT: "",
    INPAINT_MODE: "Describe what should be there",
    INPAINT_NEGATIVE: _INPAINT["negative_prompt"],
    INPAINT_PRESET: "Quality",
    INPAINT_VARIANTS: PAGE_VARIANTS,
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
    INPAINT_TASK: "Fill the mask",
    OUTPAINT_BY: "To an aspect ratio",
    OUTPAINT_LEFT: 0,
    OUTPAINT_RIGHT: 256,
    OUTPAINT_TOP: 0,
    OUTPAINT_BOTTOM: 0,
    OUTPAINT_ASPECT: "16:9",
    OUTPAINT_ANCHOR: _OUTPAINT["anchor"],
    OUTPAINT_FEATHER: _OUTPAINT["mask_blur"],
    OUTPAINT_OVERLAP: _OUTPAINT["padding"],
    OUTPAINT_STRENGTH: _OUTPAINT["strength"],
    OUTPAINT_CHOICE: 0,
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
    RELIGHT_VARIANTS: PAGE_VARIANTS,
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


def keep_values() -> None:
    """Give every form value its default once, and keep it across pages."""
    for key, default in DEFAULTS.items():
        # Re-assigning detaches the value from the widget, so it outlives a page without it.
        st.session_state[key] = st.session_state.get(key, default)
