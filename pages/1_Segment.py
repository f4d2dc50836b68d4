"""Segment: select an object by clicking it, drawing a box around it, or naming it."""
import numpy as np
import streamlit as st

from core import masks
from core.errors import ModelUnavailable
from core.segment import FastSAMSettings, SegmentError, SegmentPrompt
from ui import forms, resources, session
from ui.canvas import canvas_size, prompt_canvas
from ui.page import require_photo, setup_page
from ui.segment_view import selection_picture, thumbnail

BACKENDS = {"FastSAM": "fastsam", "SAM (refine)": "sam", "GrabCut": "grabcut"}
FASTSAM_MODELS = {"FastSAM-s": "fastsam", "FastSAM-x": "fastsam_x"}
CANVAS_WIDTH = 800

setup_page("Segment", ":material/ads_click:")
st.title("Segment")
require_photo()
loaded = session.photo()
photo_id = session.photo_id()
segmenter = resources.segmenter()
available = {status.role.name: status for status in resources.statuses()}


def step_by(delta: int) -> None:
    st.session_state[session.SEGMENT_STEP] = max(0, st.session_state[session.SEGMENT_STEP] + delta)


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
        with banner, st.spinner(f"Finding every object with {model} (once per photo)…"):
            segmenter.candidates(loaded.rgb, photo_id, settings)
    except ModelUnavailable:
        pass  # remembered by the segmenter and explained below
fastsam_ready = fastsam_status.available and segmenter.error(settings.model) is None
with banner:
    if BACKENDS[backend] != "grabcut" and not fastsam_ready:
        reason = segmenter.error(settings.model) or (
            f"{fastsam_status.role.title} is not on this machine ({fastsam_status.configured}). Download "
            f"it on a machine with internet and set {fastsam_status.role.setting} to its local path."
        )
        st.warning(f"{reason} Clicks and boxes use GrabCut instead.", icon=":material/info:")
    if BACKENDS[backend] == "sam" and not available["sam"].available:
        st.warning(f"SAM is not on this machine ({available['sam'].configured}); clicks use FastSAM. "
                   f"Set {available['sam'].role.setting} to a local copy.", icon=":material/info:")
    text_ready = available["clip"].available and fastsam_ready
    if mode == "Text" and not text_ready:
        missing = available["clip"] if not available["clip"].available else fastsam_status
        st.warning(f"Selecting by text needs {missing.role.title}, which is not available "
                   f"({missing.configured}). Set {missing.role.setting} to a local copy; clicking and "
                   "boxes still work.", icon=":material/info:")

with controls_col:
    if mode == "Text":
        with st.form("text_prompt", border=False):
            text = st.text_input("What is it?", key=forms.SEGMENT_TEXT, placeholder="e.g. the cat's nose",
                                 disabled=not text_ready)
            top_k = st.number_input("Candidates to show", 1, 8, key=forms.SEGMENT_TOP_K)
            if st.form_submit_button("Find", disabled=not text_ready):
                st.session_state[session.SEGMENT_QUERY] = text
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
)

result, error = None, None
if not prompt.is_empty:
    inputs = (photo_id, prompt, settings)
    cached = st.session_state.get(session.SEGMENT_RESULT)
    if cached is not None and cached[0] == inputs:
        result = cached[1]
    else:
        try:
            result = segmenter.segment(loaded.rgb, photo_id, prompt, settings)
        except SegmentError as failure:
            error = str(failure)
        else:
            st.session_state[session.SEGMENT_RESULT] = (inputs, result)

selection = None
if result is not None and result.masks:
    if prompt.text:
        picks = [i for i in range(len(result.masks))
                 if st.session_state.get(f"pick_{query}_{i}", i == 0)]
        if picks:
            selection = np.logical_or.reduce([result.masks[i] for i in picks])
    else:
        selection = result.mask

with controls_col:
    levels = result.levels if result is not None else 0
    smaller_col.button("Smaller", on_click=step_by, args=(-1,), width="stretch",
                       disabled=prompt.step <= 0 or bool(prompt.text))
    bigger_col.button("Bigger", on_click=step_by, args=(1,), width="stretch",
                      disabled=prompt.step >= levels - 1 or bool(prompt.text))

with canvas_col:
    size = canvas_size(loaded.size, CANVAS_WIDTH)
    picture = selection_picture(size[0], selection, prompt)
    if mode == "Text":
        st.image(picture)
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
    elif result is not None:
        if result.message:
            st.warning(result.message, icon=":material/info:")
        if selection is not None:
            timing = " · ".join(f"{stage} {ms:.0f} ms" for stage, ms in result.timings.items())
            level = f" · size {prompt.step + 1} of {levels}" if levels > 1 else ""
            st.caption(f"Selected {selection.mean():.1%} of the photo with {result.backend}{level} · {timing}")
    else:
        hint = {"Click": "Click on the object to select it.", "Box": "Drag a box around the object.",
                "Text": "Type what the object is and press Find."}[mode]
        st.caption(hint)

    if prompt.text and result is not None and result.masks:
        columns = st.columns(len(result.masks))
        for i, column in enumerate(columns):
            with column:
                st.image(thumbnail(result.masks[i]))
                st.checkbox(f"{result.scores[i]:.0%} · similarity {result.similarities[i]:.2f}",
                            value=i == 0, key=f"pick_{query}_{i}")

    label = f"segment: “{prompt.text}”" if prompt.text else "segment: box" if prompt.box else "segment: clicks"
    add_col, subtract_col, replace_col = st.columns(3)
    for column, kind, caption in ((add_col, "add", "Add to mask"), (subtract_col, "subtract", "Subtract from mask"),
                                  (replace_col, "replace", "Replace mask")):
        column.button(caption, on_click=send_to_mask, args=(kind, selection, label), disabled=selection is None,
                      width="stretch", type="primary" if kind == "add" else "secondary")
    sent = st.session_state.pop("segment_sent", None)
    if sent:
        st.success(f"{sent} the mask.", icon=":material/check:")
        st.page_link("pages/2_Mask.py", label="See it on the Mask page", icon=":material/brush:")
