"""Relight: light the subject from any direction (IC-Light, or shading without it), previewed live,
or fill the mask so that its lighting follows that direction."""
import streamlit as st

from core.errors import UserError
from core.light import PRESETS, LightParams, color_from_temperature
from core.operations import Edit
from core.operations.inpaint import InpaintParams
from core.operations.lit_fill import FILL_STARTS
from core.operations.relight import RelightParams
from ui import forms, previews, resources, session
from ui.generation import paste_inputs, prompt_inputs, run_edit, sampling_inputs, seed_inputs, show_cancelled
from ui.model_downloads import model_link
from ui.page import engine_server_notice, require_photo, setup_page
from ui.results import show_result

ACTIONS = {"relight": "Relight the subject", "fill": "Fill the mask, lit"}
MODES = {"subject": "Keep the background", "whole": "Relight the whole photo"}

setup_page("Relight", ":material/light_mode:")
st.title("Relight")
engine_server_notice()
require_photo()
loaded = session.photo()
document = session.mask_document()
has_subject = document.mask.any()
relighter = resources.catalog().engine_names(("relight",))[0]
missing = resources.manager().missing(relighter)
fill_engines = [name for name in resources.engines("diffusion") if resources.catalog().engine(name)[0].can("strength")]


def apply_preset() -> None:
    name = st.session_state[forms.LIGHT_PRESET]
    if name in PRESETS:
        st.session_state[forms.LIGHT_AZIMUTH], st.session_state[forms.LIGHT_ELEVATION] = (
            int(value) for value in PRESETS[name]
        )


if missing:
    st.info(
        "Generating with IC-Light needs " + " and ".join(f"{s.role.title} ({s.configured})" for s in missing)
        + ", not on this machine; set " + " and ".join(s.role.setting for s in missing) + " to local "
        "copies. Meanwhile **Apply shading** relights the subject with the preview's shading.",
        icon=":material/info:",
    )
    model_link(missing[0].role.name)
if not has_subject:
    st.warning("No subject is selected: the preview lights the whole photo. Select the subject (or paint "
               "the region to fill) to relight it.", icon=":material/info:")
    st.page_link("pages/1_Segment.py", label="Select the subject", icon=":material/ads_click:")

controls_col, preview_col = st.columns([1.4, 2], gap="large")
with controls_col:
    st.segmented_control("Light from", list(PRESETS), key=forms.LIGHT_PRESET, on_change=apply_preset,
                         format_func=lambda name: "Back" if name == "back-light" else name.capitalize())
    azimuth = st.slider("Direction (°, 0 = from the right, 90 = from the top)", 0, 359, key=forms.LIGHT_AZIMUTH)
    elevation = st.slider("Height (°, 0 = grazing, 90 = frontal, below 0 = behind)", -90, 90,
                          key=forms.LIGHT_ELEVATION)
    intensity = st.slider("Intensity", 0.0, 2.0, step=0.05, key=forms.LIGHT_INTENSITY)
    ambient = st.slider("Ambient light", 0.0, 1.0, step=0.05, key=forms.LIGHT_AMBIENT)
    if st.toggle("Colour temperature", key=forms.LIGHT_USE_TEMPERATURE):
        kelvin = st.slider("Temperature (K)", 1900, 12000, step=100, key=forms.LIGHT_TEMPERATURE)
        color = color_from_temperature(kelvin)
    else:
        hex_color = st.color_picker("Light colour", key=forms.LIGHT_COLOR)
        color = tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    light, notes = LightParams.clamped(azimuth=azimuth, elevation=elevation, intensity=intensity,
                                       ambient=ambient, color=color)
    for note in notes:
        st.caption(note)

    st.divider()
    action = st.segmented_control("Action", list(ACTIONS), key=forms.RELIGHT_ACTION, required=True,
                                  format_func=ACTIONS.get)
    edit, problem = None, None
    if action == "relight":
        prompt, negative = prompt_inputs(
            forms.RELIGHT_PROMPT, forms.RELIGHT_NEGATIVE, label="Lighting prompt",
            placeholder="The light and the mood, e.g. “warm sunset light, soft shadows”")
        mode = st.radio("Background", list(MODES), key=forms.RELIGHT_MODE, format_func=MODES.get, horizontal=True)
        detail = st.toggle("Keep the subject's detail", key=forms.RELIGHT_DETAIL,
                           help="Restore the original's fine texture and identity under the new light.")
        variants = st.slider("Variants", 1, 4, key=forms.RELIGHT_VARIANTS)
        seed = seed_inputs(forms.RELIGHT_SEED, forms.RELIGHT_RANDOM_SEED)
        with st.expander("More settings"):
            steps, guidance = sampling_inputs(forms.RELIGHT_STEPS, forms.RELIGHT_GUIDANCE)
            denoise = st.slider("Denoise", 0.05, 1.0, step=0.05, key=forms.RELIGHT_DENOISE,
                                help="How much of the light's start is regenerated; IC-Light uses 0.9.")
            highres = st.toggle("Second, high-resolution pass", key=forms.RELIGHT_HIGHRES)
            scale = st.slider("Scale", 1.1, 2.0, step=0.1, key=forms.RELIGHT_HIGHRES_SCALE, disabled=not highres)
            highres_denoise = st.slider("Denoise of the second pass", 0.1, 1.0, step=0.05,
                                        key=forms.RELIGHT_HIGHRES_DENOISE, disabled=not highres)
        try:
            params = RelightParams(prompt=prompt, negative_prompt=negative, steps=steps, guidance=guidance,
                                   denoise=denoise, seed=seed, variants=variants, mode=mode, detail_transfer=detail,
                                   highres_scale=scale if highres else 1.0, highres_denoise=highres_denoise)
            edit = Edit("relight", params, light=light)
        except UserError as error:
            problem = str(error)

        generate_col, shade_col = st.columns(2)
        generate = generate_col.button("Generate", type="primary", width="stretch",
                                       disabled=bool(missing) or not has_subject or problem is not None,
                                       help="Relight with IC-Light." if not missing else "Needs the IC-Light models.")
        apply = shade_col.button("Apply shading", width="stretch", disabled=not has_subject,
                                 type="secondary" if not missing else "primary",
                                 help="Relight the subject at full resolution with this light (no model needed).")
    else:
        if not fill_engines:
            sd15 = resources.first_model("diffusion", "strength")
            st.info(f"Filling with light needs an inpainting model that keeps part of what is there "
                    f"({sd15.configured}), not on this machine; "
                    f"set {sd15.role.setting} to a local copy.", icon=":material/info:")
        if st.session_state[forms.LIT_ENGINE] not in fill_engines:
            st.session_state[forms.LIT_ENGINE] = fill_engines[0] if fill_engines else None
        engine_name = st.selectbox("Engine", fill_engines, key=forms.LIT_ENGINE, disabled=not fill_engines,
                                   format_func=resources.engine_title)
        prompt, negative = prompt_inputs(forms.INPAINT_PROMPT, forms.INPAINT_NEGATIVE,
                                         placeholder="What should be there, e.g. “a stone wall”")
        start = st.radio("Start from", list(FILL_STARTS), key=forms.LIT_START, format_func=FILL_STARTS.get)
        strength = st.slider("Strength", 0.05, 0.95, step=0.05, key=forms.LIT_STRENGTH,
                             help="Lower keeps more of the lit start (its lighting); higher invents more.")
        variants = st.slider("Variants", 1, 4, key=forms.INPAINT_VARIANTS)
        seed = seed_inputs(forms.INPAINT_SEED, forms.INPAINT_RANDOM_SEED)
        with st.expander("More settings (shared with the Inpaint page)"):
            steps, guidance = sampling_inputs(forms.INPAINT_STEPS, forms.INPAINT_GUIDANCE)
            padding, blur_outside, blur_inside, blend_mode, color_match = paste_inputs()
        try:
            params = InpaintParams(
                prompt=prompt, negative_prompt=negative, guidance_scale=guidance, steps=steps, strength=strength,
                seed=seed, variants=variants, padding=padding, mask_blur=blur_outside, mask_blur_inside=blur_inside,
                blend=blend_mode, color_match=color_match, engine=engine_name or InpaintParams().engine,
            )
            edit = Edit("lit_fill", params, light=light, start=start) if engine_name else None
        except UserError as error:
            problem = str(error)

        generate = st.button("Fill with this light", type="primary", width="stretch",
                             disabled=not fill_engines or not has_subject or problem is not None)
        apply = False
    if problem:
        st.error(problem)

    if generate and edit is not None:
        result = run_edit(edit, loaded.rgb, document.mask, "Relighting" if action == "relight" else "Filling")
        if result is not None:
            st.session_state[session.RELIGHT_RESULT] = result
            st.session_state[forms.RELIGHT_CHOICE] = 0
    else:
        show_cancelled()
    if apply:
        result = run_edit(Edit("shade", RelightParams(variants=1), light=light), loaded.rgb, document.mask, "Shading")
        if result is not None:
            st.session_state[session.RELIGHT_RESULT] = result
            st.session_state[forms.RELIGHT_CHOICE] = 0

with preview_col:
    st.image(previews.relight_preview_cache().render(light), caption="Live preview of the light")
    result = st.session_state.get(session.RELIGHT_RESULT)
    if result is not None:
        used = LightParams.from_dict(result.metadata(0)["light"])
        where = f"light from {used.azimuth:.0f}°, height {used.elevation:.0f}°"
        engine = getattr(result, "engine", "iclight")
        if engine == "shading":
            footer = "Shading (no model)"
        else:
            title = "IC-Light" if engine == "iclight" else f"{resources.engine_title(engine)}, lit fill"
            footer = resources.made_by(engine, result.model_id, title)
        show_result(
            result, choice_key=forms.RELIGHT_CHOICE, file_suffix="relit", key_prefix="relight", footer=footer,
            describe=lambda i: f"#{i + 1} · seed {result.seeds[i]} · {where}" if engine != "shading" else where,
        )
