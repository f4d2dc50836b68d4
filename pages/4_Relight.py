"""Relight: light the subject from any direction, previewed live while the sliders move."""
import numpy as np
import streamlit as st
from PIL import Image

from core.images import encode_image
from core.relight import PRESETS, LightParams, color_from_temperature, shade
from ui import resources, state
from ui.page import require_photo, setup_page

setup_page("Relight", ":material/light_mode:")
st.title("Relight")
require_photo()
loaded = state.photo()
document = state.mask_document()
statuses = {status.role.name: status for status in resources.statuses()}
has_subject = document.mask.any()


def apply_preset() -> None:
    name = st.session_state[state.LIGHT_PRESET]
    if name in PRESETS:
        st.session_state[state.LIGHT_AZIMUTH], st.session_state[state.LIGHT_ELEVATION] = (
            int(value) for value in PRESETS[name]
        )


missing = [statuses[role] for role in ("iclight", "iclight_base") if not statuses[role].available]
if missing:
    st.info(
        "Generating with IC-Light needs " + " and ".join(f"{s.role.title} ({s.configured})" for s in missing)
        + ", not on this machine; set " + " and ".join(s.role.setting for s in missing) + " to local "
        "copies. Meanwhile **Apply shading** relights the subject with the preview's shading.",
        icon=":material/info:",
    )
if not has_subject:
    st.warning("No subject is selected: the preview lights the whole photo. Select the subject to "
               "relight it.", icon=":material/info:")
    st.page_link("pages/1_Segment.py", label="Select the subject", icon=":material/ads_click:")

controls_col, preview_col = st.columns([1.4, 2], gap="large")
with controls_col:
    st.segmented_control("Light from", list(PRESETS), key=state.LIGHT_PRESET, on_change=apply_preset,
                         format_func=lambda name: "Back" if name == "back-light" else name.capitalize())
    azimuth = st.slider("Direction (°, 0 = from the right, 90 = from the top)", 0, 359, key=state.LIGHT_AZIMUTH)
    elevation = st.slider("Height (°, 0 = grazing, 90 = frontal, below 0 = behind)", -90, 90,
                          key=state.LIGHT_ELEVATION)
    intensity = st.slider("Intensity", 0.0, 2.0, step=0.05, key=state.LIGHT_INTENSITY)
    ambient = st.slider("Ambient light", 0.0, 1.0, step=0.05, key=state.LIGHT_AMBIENT)
    if st.toggle("Colour temperature", key=state.LIGHT_USE_TEMPERATURE):
        kelvin = st.slider("Temperature (K)", 1900, 12000, step=100, key=state.LIGHT_TEMPERATURE)
        color = color_from_temperature(kelvin)
    else:
        hex_color = st.color_picker("Light colour", key=state.LIGHT_COLOR)
        color = tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    params, notes = LightParams.clamped(azimuth=azimuth, elevation=elevation, intensity=intensity,
                                        ambient=ambient, color=color)
    for note in notes:
        st.caption(note)
    apply = st.button("Apply shading", type="primary", disabled=not has_subject, width="stretch",
                      help="Relight the subject at full resolution with this light (no model needed).")

if apply:
    relit = Image.fromarray(shade(np.asarray(loaded.rgb), document.mask, params), "RGB")
    png = encode_image(relit, format="PNG", alpha=loaded.alpha, icc_profile=loaded.icc_profile, exif=loaded.exif,
                       params={"action": "relight", "light": params.to_dict(), "engine": "shading"})
    st.session_state[state.RELIGHT_RESULT] = (params, relit, png)

with preview_col:
    st.image(state.relight_preview_cache().render(params), caption="Live preview of the light")
    result = st.session_state.get(state.RELIGHT_RESULT)
    if result is not None:
        used, relit, png = result
        before_col, after_col = st.columns(2)
        before_col.image(state.display_copy(480), caption="Before")
        after_col.image(relit.resize((480, max(1, round(480 * relit.height / relit.width)))),
                        caption=f"After · light from {used.azimuth:.0f}°, height {used.elevation:.0f}°")
        base_col, back_col = st.columns(2)
        base_col.button("Use as new base", on_click=state.use_as_base, args=(relit,), width="stretch",
                        key="relight_use_as_base")
        back_col.button(f"Step back ({len(state.base_history())})", on_click=state.step_back, width="stretch",
                        disabled=not state.base_history(), key="relight_step_back")
        stem = (loaded.name or "photo").rsplit(".", 1)[0]
        st.download_button("Download PNG", png, file_name=f"{stem}-relit.png", mime="image/png",
                           on_click="ignore", key="download_relit")
