"""Segment: select an object by clicking it, drawing a box around it, or naming it."""
import contextlib
from functools import partial

import numpy as np
import streamlit as st

from core import masks
from core.errors import ModelUnavailable, UserError
from core.segment import FastSAMSettings, SegmentPrompt
from ui import forms, resources, session
from ui.canvas import canvas_size, prompt_canvas
from ui.model_downloads import model_link
from ui.page import require_photo, setup_page
from ui.segment_view import selection_picture, thumbnail
from ui.waiting import QueueWait

BACKENDS = {"FastSAM": "fastsam", "SAM (refine)": "sam", "GrabCut": "grabcut"}
FASTSAM_MODELS = {"FastSAM-s": "fastsam", "FastSAM-x": "fastsam_x"}
CANVAS_WIDTH = 800
# What to say when an answer selects nothing and the segmenter gave no reason (each backend
# usually does: FastSAM, SAM and GrabCut say what they missed and what to try).
NOTHING_SELECTED = {
    "Click": "Nothing was selected there. Try another spot on the object, a box around it, or another model "
             "under *Model and settings* (SAM refines objects FastSAM misses), or paint the region on the "
             "Mask page.",
    "Box": "Nothing was selected in that box. Draw it tighter around the object, click on the object "
           "instead, or try another model under *Model and settings*, or paint the region on the Mask page.",
    "Text": "Nothing was found. Try another word, or click on the object or box it instead.",
}
# What to say when the selection was cancelled while it waited for its model (it stays unanswered).
CANCELLED = {
    "Click": "Selection cancelled. Click again to select, or Clear selection to start over.",
    "Box": "Selection cancelled. Draw the box again to select.",
    "Text": "Selection cancelled. Press Find again to search.",
}

setup_page("Segment", ":material/ads_click:")
st.title("Segment")
require_photo()
loaded = session.photo()
photo_id = session.photo_id()
segmenter = resources.segmenter()
catalog = resources.catalog()
available = {status.role.name: status for status in resources.statuses()}
refiners = catalog.answering("clicks")
concepts = [name for name in catalog.answering("concepts")
            if all(available[role].available for role in catalog.roles_of(name))]
concept = concepts[0] if concepts else None  # SAM 3: every instance of a text or of example boxes


def step_by(delta: int) -> None:
    """Bigger / Smaller: one size up or down from the answer shown (the buttons stop at the ends)."""
    st.session_state[session.SEGMENT_STEP] = st.session_state[session.SEGMENT_STEP] + delta


def loading_spinner(prompt: SegmentPrompt):
    """A spinner naming the model that is about to load for ``prompt`` (nothing when it is loaded)."""
    if prompt.is_concept and concept is not None:
        return resources.loading(concept)
    if prompt.backend == "sam" and prompt.refiner in present_refiners:
        return resources.loading(prompt.refiner)
    return contextlib.nullcontext()


def set_picks(keys: list[str], value: bool) -> None:
    for key in keys:
        st.session_state[key] = value


def show_instances(result, keys: list[str], per_row: int = 4) -> None:
    """The instances found, as thumbnails to pick one, several or all of."""
    all_col, none_col, _ = st.columns([1, 1, 2])
    all_col.button(f"Select all {len(keys)}", on_click=set_picks, args=(keys, True), width="stretch")
    none_col.button("Select none", on_click=set_picks, args=(keys, False), width="stretch")
    for start in range(0, len(keys), per_row):
        for i, column in zip(range(start, min(start + per_row, len(keys))), st.columns(per_row)):
            with column:
                st.image(thumbnail(result.masks[i]))
                similarity = f" · similarity {result.similarities[i]:.2f}" if result.similarities else ""
                st.checkbox(f"#{i + 1} · {result.scores[i]:.0%}{similarity}", key=keys[i])


def send_to_mask(kind: str, selection: np.ndarray, label: str) -> None:
    session.mask_document().apply(masks.layer_edit(kind, selection, label))
    st.session_state["segment_sent"] = {"add": "Added to", "subtract": "Subtracted from",
                                        "replace": "Replaced"}[kind]


banner = st.container()
canvas_col, controls_col = st.columns([3, 1], gap="medium")

with controls_col:
    mode = st.segmented_control("Select by", ["Click", "Box", "Text"], key=forms.SEGMENT_MODE, required=True)
    if mode == "Click":
        st.segmented_control("Clicks", ["Include", "Exclude"], key=forms.SEGMENT_LABEL, required=True,
                             help="Include: part of the object. Exclude: not part of it.")
    with st.expander("Model and settings"):
        backend = st.radio("Answer clicks and boxes with", list(BACKENDS), key=forms.SEGMENT_BACKEND,
                           help="FastSAM finds every object once per photo, then answers instantly. "
                                "SAM refines objects FastSAM missed. GrabCut needs no model.")
        present_refiners = [name for name in refiners if catalog.roles_of(name)
                            and all(available[role].available for role in catalog.roles_of(name))]
        if st.session_state[forms.SEGMENT_REFINER] not in present_refiners and present_refiners:
            st.session_state[forms.SEGMENT_REFINER] = present_refiners[0]
        refiner = st.selectbox("Refine with", present_refiners or refiners[:1], key=forms.SEGMENT_REFINER,
                               format_func=resources.engine_title, disabled=not present_refiners,
                               help="The SAM that answers clicks and boxes when refining: SAM 2.1 by default.")
        model = st.selectbox("FastSAM model", list(FASTSAM_MODELS), key=forms.SEGMENT_MODEL)
        imgsz = st.select_slider("Detail (image size)", [512, 640, 768, 1024, 1280, 1536], key=forms.SEGMENT_IMGSZ)
        conf = st.slider("Confidence", 0.05, 0.95, step=0.05, key=forms.SEGMENT_CONF)
        iou = st.slider("Overlap (IoU) threshold", 0.3, 0.95, step=0.05, key=forms.SEGMENT_IOU)
        retina = st.toggle("Masks at full detail", key=forms.SEGMENT_RETINA)
        clip_to_box = st.toggle("Cut the box's object to the box", key=forms.SEGMENT_CLIP_TO_BOX)

settings = FastSAMSettings(model=FASTSAM_MODELS[model], imgsz=imgsz, conf=conf, iou=iou, retina_masks=retina)
fastsam_status = available[settings.model]
if fastsam_status.available and BACKENDS[backend] != "grabcut" and not segmenter.has_candidates(photo_id, settings):
    try:
        waiting = QueueWait(banner.empty(), resources.engine_title, "segment_candidates")
        with banner, st.spinner(f"Finding every object with {model} (once per photo)…"):
            segmenter.candidates(loaded.rgb, photo_id, settings, on_wait=waiting)
        waiting.done()
    except ModelUnavailable:
        pass  # remembered by the segmenter and explained below
    except UserError:
        pass  # FastSAM's queue is full: a click says so
fastsam_ready = fastsam_status.available and segmenter.error(settings.model) is None
with banner:
    if BACKENDS[backend] != "grabcut" and not fastsam_ready:
        reason = segmenter.error(settings.model) or (
            f"{fastsam_status.role.title} is not on this machine ({fastsam_status.configured}). Download "
            f"it on a machine with internet and set {fastsam_status.role.setting} to its local path."
        )
        st.warning(f"{reason} Clicks and boxes use GrabCut instead.", icon=":material/info:")
        model_link(fastsam_status.role.name)
    if BACKENDS[backend] == "sam" and not present_refiners:
        best = available[catalog.roles_of(refiners[0])[0]]
        st.warning(f"No SAM is on this machine ({best.role.title}: {best.configured}); clicks use FastSAM. "
                   f"Get it with `python -m core models download {best.role.name}` or set {best.role.setting} "
                   "to a local copy.", icon=":material/info:")
        model_link(best.role.name)
    text_ready = concept is not None or (available["clip"].available and fastsam_ready)
    if mode == "Text" and not text_ready:
        missing = available["clip"] if not available["clip"].available else fastsam_status
        st.warning(f"Selecting by text needs SAM 3, or {missing.role.title}, which is not available "
                   f"({missing.configured}). Set {missing.role.setting} to a local copy; clicking and "
                   "boxes still work.", icon=":material/info:")
        model_link(missing.role.name)
    elif mode == "Text":
        sam3 = catalog.roles_of(catalog.answering("concepts")[0])[0] if catalog.answering("concepts") else None
        if concept is not None:
            st.caption(f"Text selection: **{resources.engine_title(concept)}** finds every instance of what you "
                       "name, or of the objects you box as examples (green: like this, red: not like this).")
        elif sam3 is not None:
            st.caption(f"Text selection: **CLIP** ranks FastSAM's objects, one object at a time. "
                       f"{available[sam3].role.title} finds every instance (“all the windows”): get it with "
                       f"`python -m core models download {sam3}` (gated: accept its licence on the hub first) "
                       f"or set {available[sam3].role.setting}.")

with controls_col:
    if mode == "Text":
        with st.form("text_prompt", border=False):
            text = st.text_input("What is it?", key=forms.SEGMENT_TEXT, placeholder="e.g. window, logo, the cat",
                                 disabled=not text_ready)
            if concept is not None:
                st.slider("Minimum score", 0.0, 1.0, step=0.05, key=forms.SEGMENT_MIN_SCORE,
                          help="Instances SAM 3 scores lower are left out; lower it to find more.")
            else:
                st.number_input("Candidates to show", 1, 8, key=forms.SEGMENT_TOP_K)
            if st.form_submit_button("Find", disabled=not text_ready):
                st.session_state[session.SEGMENT_QUERY] = text
                st.session_state.pop(session.SEGMENT_CANCELLED, None)
        if concept is not None:
            st.segmented_control("Example boxes", ["Like this", "Not like this"], key=forms.SEGMENT_EXAMPLE_LABEL,
                                 required=True, help="Drag boxes on the photo around objects like (or unlike) "
                                 "the ones to select; with or without a text.")
    smaller_col, bigger_col = st.columns(2)
    st.button("Clear selection", on_click=session.clear_segment_prompt, width="stretch")

query = st.session_state[session.SEGMENT_QUERY] if mode == "Text" else ""
prompt = SegmentPrompt(
    points=tuple(st.session_state[session.SEGMENT_POINTS]) if mode != "Text" else (),
    box=st.session_state[session.SEGMENT_BOX] if mode != "Text" else None,
    text=query,
    top_k=int(st.session_state[forms.SEGMENT_TOP_K]),
    backend=BACKENDS[backend],
    step=st.session_state[session.SEGMENT_STEP],
    clip_to_box=clip_to_box,
    refiner=refiner,
    examples=tuple(st.session_state[session.SEGMENT_EXAMPLES]) if mode == "Text" and concept else (),
    min_score=float(st.session_state[forms.SEGMENT_MIN_SCORE]),
)

# While the models run for others, the selection waits its turn: the banner says where it stands,
# with a Cancel button (the selection is then left unanswered until it changes).
result, error, cancelled = None, None, False
if not prompt.is_empty:
    inputs = (photo_id, prompt, settings)
    cached = st.session_state.get(session.SEGMENT_RESULT)
    if cached is not None and cached[0] == inputs:
        result = cached[1]
    elif st.session_state.get(session.SEGMENT_CANCELLED) == inputs:
        cancelled = True
    else:
        waiting = QueueWait(banner.empty(), resources.engine_title, "segment_cancel",
                            on_cancel=partial(session.cancel_segment, inputs))
        try:
            with loading_spinner(prompt):
                result = segmenter.segment(loaded.rgb, photo_id, prompt, settings, on_wait=waiting)
        except UserError as failure:  # a prompt that cannot be answered (SegmentError), a full queue
            error = str(failure)
        else:
            st.session_state[session.SEGMENT_RESULT] = (inputs, result)
        waiting.done()

# The instances of a concept: each a checkbox; SAM 3's all picked at first, CLIP's best one.
pick_keys: list[str] = []
if result is not None and prompt.is_concept:
    answer_id = abs(hash((photo_id, prompt)))
    pick_keys = [f"pick_{answer_id}_{i}" for i in range(len(result.masks))]
    for i, key in enumerate(pick_keys):
        st.session_state.setdefault(key, i == 0 or result.backend in concepts)

selection = None
if result is not None and result.masks:
    if prompt.is_concept:
        picks = [i for i, key in enumerate(pick_keys) if st.session_state[key]]
        if picks:
            selection = np.logical_or.reduce([result.masks[i] for i in picks])
    else:
        selection = result.mask

with controls_col:
    levels = result.levels if result is not None else 0
    level = result.level if result is not None else 0
    smaller_col.button("Smaller", on_click=step_by, args=(-1,), width="stretch",
                       disabled=level <= 0 or prompt.is_concept)
    bigger_col.button("Bigger", on_click=step_by, args=(1,), width="stretch",
                      disabled=level >= levels - 1 or prompt.is_concept)

with canvas_col:
    size = canvas_size(loaded.size, CANVAS_WIDTH)
    picture = selection_picture(size[0], selection, prompt)
    if mode == "Text" and concept is None:
        st.image(picture)
    elif mode == "Text":
        like = 1 if st.session_state[forms.SEGMENT_EXAMPLE_LABEL] == "Like this" else 0
        _, new_box = prompt_canvas(picture, mode="rect", label=like, labelled_boxes=True)
        if new_box is not None:
            st.session_state[session.SEGMENT_EXAMPLES] = st.session_state[session.SEGMENT_EXAMPLES] + [(new_box, like)]
            session.bump_canvas(session.SEGMENT_CANVAS_VERSION)
            st.rerun()
    else:
        label = 1 if st.session_state[forms.SEGMENT_LABEL] == "Include" else 0
        new_points, new_box = prompt_canvas(picture, mode="point" if mode == "Click" else "rect", label=label)
        if new_points or new_box:
            st.session_state[session.SEGMENT_POINTS] = st.session_state[session.SEGMENT_POINTS] + new_points
            if new_box is not None:
                st.session_state[session.SEGMENT_BOX] = new_box
            st.session_state[session.SEGMENT_STEP] = 0
            session.bump_canvas(session.SEGMENT_CANVAS_VERSION)
            st.rerun()

    if error:
        st.error(error)
    elif cancelled:
        st.info(CANCELLED[mode], icon=":material/info:")
    elif result is not None:
        if result.message:
            st.warning(result.message, icon=":material/info:")
        elif not result.masks:
            st.warning(NOTHING_SELECTED[mode], icon=":material/info:")
        if result.fallback:
            st.info(result.fallback, icon=":material/info:")
        if selection is not None:
            timing = " · ".join(f"{stage} {ms:.0f} ms" for stage, ms in result.timings.items())
            size_level = f" · size {level + 1} of {levels}" if levels > 1 else ""
            engine = f"{catalog.title(result.backend)} ({result.backend})" if result.backend in catalog.engines \
                else result.backend
            st.caption(f"Selected {selection.mean():.1%} of the photo with {engine}{size_level} · {timing}")
    else:
        hint = {"Click": "Click on the object to select it.", "Box": "Drag a box around the object.",
                "Text": "Type what the object is and press Find"
                        + (", or drag boxes around examples." if concept else ".")}[mode]
        st.caption(hint)

    if prompt.is_concept and result is not None and result.masks:
        show_instances(result, pick_keys)

    label = (f"segment: “{prompt.text}”" if prompt.text else "segment: examples" if prompt.examples
             else "segment: box" if prompt.box else "segment: clicks")
    add_col, subtract_col, replace_col = st.columns(3)
    for column, kind, caption in ((add_col, "add", "Add to mask"), (subtract_col, "subtract", "Subtract from mask"),
                                  (replace_col, "replace", "Replace mask")):
        column.button(caption, on_click=send_to_mask, args=(kind, selection, label), disabled=selection is None,
                      width="stretch", type="primary" if kind == "add" else "secondary")
    sent = st.session_state.pop("segment_sent", None)
    if sent:
        st.success(f"{sent} the mask.", icon=":material/check:")
        st.page_link("pages/2_Mask.py", label="See it on the Mask page", icon=":material/brush:")
