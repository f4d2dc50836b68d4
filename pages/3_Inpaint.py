"""Inpaint: regenerate the masked region from a prompt, or extend the canvas and generate the new
border; compare variants, continue from one."""
from dataclasses import replace

import streamlit as st

from core.catalog import SCHEDULERS
from core.errors import UserError
from core.images import read_image
from core.operations import Edit
from core.operations.inpaint import InpaintParams
from ui import forms, resources, session
from ui import outpaint as extend_canvas
from ui.generation import paste_inputs, prompt_inputs, run_edit, sampling_inputs, seed_inputs, show_cancelled
from ui.model_downloads import model_link
from ui.page import engine_server_notice, require_photo, setup_page
from ui.results import show_result

FILL_TASK, EXTEND_TASK = "Fill the mask", "Extend canvas"
PRESETS = {"Quality": {forms.INPAINT_STEPS: 40, forms.INPAINT_GUIDANCE: 7.5},
           "Fast": {forms.INPAINT_STEPS: 15, forms.INPAINT_GUIDANCE: 6.0}}

setup_page("Inpaint", ":material/auto_fix_high:")
st.title("Inpaint")
engine_server_notice()
require_photo()
loaded = session.photo()
document = session.mask_document()
extending = st.segmented_control("Task", [FILL_TASK, EXTEND_TASK], key=forms.INPAINT_TASK, required=True,
                                 label_visibility="collapsed") == EXTEND_TASK


def apply_preset() -> None:
    for key, value in PRESETS.get(st.session_state[forms.INPAINT_PRESET], {}).items():
        st.session_state[key] = value


catalog = resources.catalog()
diffusion = resources.engines("diffusion")
removal = resources.engines("removal")
engines = diffusion + removal


def apply_engine_preset() -> None:
    """An engine comes with its own step count and guidance (a few-step variant's, FLUX's)."""
    name = st.session_state[forms.INPAINT_ENGINE]
    steps, guidance = catalog.defaults(name)
    if "+" in name or (steps, guidance) != catalog.defaults("sd15"):
        st.session_state[forms.INPAINT_STEPS] = steps
        st.session_state[forms.INPAINT_GUIDANCE] = guidance
        st.session_state[forms.INPAINT_PRESET] = "Custom"


def engine_label(name: str) -> str:
    """The engine picker's entry: what the engine does, then its name."""
    entry = catalog.engine(name)[0]
    does = "Remove" if entry.kind == "removal" else "Fill or instruct" if entry.can("instruction") else "Fill"
    return f"{does} · {resources.engine_title(name)}"


def read_reference() -> None:
    upload = st.session_state.get("inpaint_reference_upload")
    if upload is None:  # the upload was removed: so is its error (a reference already taken is kept)
        st.session_state.pop("inpaint_reference_error", None)
        return
    try:
        image = read_image(upload, name=upload.name).rgb
    except UserError as error:
        st.session_state["inpaint_reference_error"] = str(error)  # the earlier reference is kept
        return
    st.session_state[session.INPAINT_REFERENCE] = (upload.name, image)
    st.session_state.pop("inpaint_reference_error", None)


if st.session_state[forms.INPAINT_ENGINE] not in engines:
    st.session_state[forms.INPAINT_ENGINE] = engines[0]
    apply_engine_preset()
for note in resources.memory_notes():
    st.info(note, icon=":material/memory:")
if not diffusion and not resources.memory_notes() and not resources.engine_server_problem():
    sd15 = resources.first_model("diffusion")
    st.info(f"No diffusion model is on this machine ({sd15.configured}), so the region can be removed "
            f"(filled from its surroundings) but not regenerated from a prompt. To generate, fetch "
            f"{sd15.role.title} on a machine with internet with `python -m core models download "
            f"{sd15.role.name}` (add `--dir DIR` to copy it here), then set {sd15.role.setting} to the local "
            "copy. The home page's model table lists every model and the command that fetches it.",
            icon=":material/info:")
    model_link(sd15.role.name)
if not extending and not document.mask.any():
    st.warning("The mask is empty: select an object or paint the region to change first.",
               icon=":material/info:")
    st.page_link("pages/1_Segment.py", label="Select an object", icon=":material/ads_click:")

settings_col, result_col = st.columns([2, 3], gap="large")
with settings_col:
    name = st.selectbox("Engine", engines, key=forms.INPAINT_ENGINE, format_func=engine_label,
                        on_change=apply_engine_preset)
    entry = catalog.engine(name)[0]
    st.caption(" · ".join(part for part in (entry.speed, f"licence: {entry.licence}" if entry.licence else "") if part))
    instruct = False
    if entry.can("instruction") and not extending:
        instruct = st.segmented_control(
            "Mode", ["Describe what should be there", "Say what to change"], key=forms.INPAINT_MODE,
            required=True) == "Say what to change"
    prompt, negative = prompt_inputs(
        forms.INPAINT_PROMPT, forms.INPAINT_NEGATIVE,
        placeholder="What the wider scene shows, e.g. “a sandy beach at sunset” (or leave it empty)" if extending
        else "What to change, e.g. “make the jacket red”" if instruct else
        "What should be there, e.g. “a wooden bench in the sun”",
        prompt_disabled=not entry.can("prompt"), negative_disabled=not entry.can("negative_prompt"))
    reference = None
    if entry.can("reference_image"):
        st.file_uploader("Reference image (optional): a picture of what to put there", key="inpaint_reference_upload",
                         type=["png", "jpg", "jpeg", "webp"], on_change=read_reference)
        if "inpaint_reference_error" in st.session_state:
            st.error(st.session_state["inpaint_reference_error"])
        reference = st.session_state.get(session.INPAINT_REFERENCE)
        if reference is not None:
            thumb_col, clear_col = st.columns([1, 2])
            thumb_col.image(reference[1], width=96)
            clear_col.caption(f"Reference: {reference[0]}")
            if clear_col.button("No reference"):
                st.session_state[session.INPAINT_REFERENCE] = reference = None
    st.segmented_control("Preset", list(PRESETS) + ["Custom"], key=forms.INPAINT_PRESET,
                         on_change=apply_preset, required=True)
    variants = st.slider("Variants", 1, 4, key=forms.INPAINT_VARIANTS)
    seed = seed_inputs(forms.INPAINT_SEED, forms.INPAINT_RANDOM_SEED)
    if extending:
        canvas, outpaint_params = extend_canvas.settings(
            loaded.size, prompt=prompt, negative_prompt=negative, seed=seed, engine=name,
            variants=1 if entry.kind == "removal" else variants,  # a remover makes the same fill for every seed
            reference=reference[0] if reference else "")
        if st.button("Generate", type="primary", width="stretch", key="outpaint_generate",
                     disabled=outpaint_params is None or canvas is None):
            result = run_edit(Edit("outpaint", outpaint_params, reference_image=reference[1] if reference else None),
                              loaded.rgb, None)
            if result is not None:
                st.session_state[session.OUTPAINT_RESULT] = result
                st.session_state[forms.OUTPAINT_CHOICE] = 0
        else:
            show_cancelled()
    else:
        invert = st.toggle("Keep the subject, regenerate the background (invert the mask)", key=forms.INPAINT_INVERT)
        with st.expander("More settings"):
            steps, guidance = sampling_inputs(forms.INPAINT_STEPS, forms.INPAINT_GUIDANCE)
            strength = st.slider("Strength", 0.05, 1.0, step=0.05, key=forms.INPAINT_STRENGTH,
                                 help="1 ignores what is under the mask; lower keeps more of it.")
            schedulers = list(SCHEDULERS) if entry.can("scheduler") else ["default"]
            if st.session_state[forms.INPAINT_SCHEDULER] not in schedulers:
                st.session_state[forms.INPAINT_SCHEDULER] = schedulers[0]
            scheduler = st.selectbox("Scheduler", schedulers, key=forms.INPAINT_SCHEDULER,
                                     disabled=not entry.can("scheduler"))
            padding, blur_outside, blur_inside, blend_mode, color_match = paste_inputs()

        params, problem = None, None
        try:
            params = InpaintParams(
                prompt=prompt, negative_prompt=negative, guidance_scale=guidance, steps=steps, strength=strength,
                seed=seed, variants=variants,
                scheduler=None if scheduler == "default" else scheduler, padding=padding, mask_blur=blur_outside,
                mask_blur_inside=blur_inside, blend=blend_mode, color_match=color_match, invert_mask=invert,
                engine=name, mode="instruct" if instruct else "fill", reference=reference[0] if reference else "",
            )
        except UserError as error:
            problem = str(error)
            st.error(problem)

        # A removal engine chosen: Generate would do what Remove object does, so only Remove object shows
        # (with that engine). Else both, removal with the best remover: the catalog lists them best first:
        # LaMa, MI-GAN, OpenCV.
        removing = entry.kind == "removal"
        remover = name if removing else removal[0]
        remove_help = f"Fill the region from its surroundings ({resources.engine_title(remover)}), no prompt needed."
        if removing:
            generate = False
            remove = st.button("Remove object", type="primary", width="stretch", disabled=not document.mask.any(),
                               help=remove_help)
        else:
            generate_col, remove_col = st.columns(2)
            generate = generate_col.button("Generate", type="primary", width="stretch",
                                           disabled=params is None or not document.mask.any())
            remove = remove_col.button("Remove object", width="stretch", disabled=not document.mask.any(),
                                       help=remove_help)
            remove_col.caption(f"with {resources.engine_title(remover)}")
        if not catalog.engines[removal[0]].roles:
            learned = resources.first_model("removal")
            st.caption(f"Removal uses OpenCV, a smooth fill that suits small regions: {learned.role.title} is not on "
                       f"this machine. Get it with `python -m core models download {learned.role.name}` (about "
                       f"{learned.role.size_gb * 1000:.0f} MB, runs on a CPU), or set {learned.role.setting}.")
            model_link(learned.role.name)

        if generate or remove:
            edit = (Edit("inpaint", params, reference_image=reference[1] if reference else None) if generate else
                    Edit("remove", replace(params or InpaintParams(), engine=remover, variants=1, prompt="", mode="fill",
                                           reference="")))
            result = run_edit(edit, loaded.rgb, document.mask)
            if result is not None:
                st.session_state[session.INPAINT_RESULT] = result
                st.session_state[forms.INPAINT_CHOICE] = 0
        else:
            show_cancelled()

with result_col:
    if extending:
        if canvas is not None:
            extend_canvas.canvas_preview(canvas)
        result = st.session_state.get(session.OUTPAINT_RESULT)
        if result is not None:
            show_result(
                result, choice_key=forms.OUTPAINT_CHOICE, file_suffix="extended", key_prefix="outpaint",
                describe=lambda i: f"#{i + 1} · seed {result.seeds[i]} · {result.images[i].width}×"
                                   f"{result.images[i].height}",
                footer=resources.made_by(result.engine, result.model_id),
            )
        st.stop()
    result = st.session_state.get(session.INPAINT_RESULT)
    if result is None:
        st.caption("Variants appear here. Everything outside the mask's soft edge stays exactly as it was.")
    else:
        show_result(
            result, choice_key=forms.INPAINT_CHOICE, file_suffix="inpainted", key_prefix="inpaint",
            describe=lambda i: f"#{i + 1} · seed {result.seeds[i]} · seam ΔE {result.seam_delta_e[i]:.1f}",
            footer=resources.made_by(result.engine, result.model_id),
        )
