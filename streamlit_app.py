"""Home: choose the photo to edit, and see which models and device the app is using."""
import streamlit as st

from ui import resources, session
from ui.image_picker import image_picker
from ui.page import setup_page

settings = setup_page("Home", "🎨")

st.title("Inpaint Studio")
st.write(
    "Edit a photo region by region. Choose a photo, select an object on the **Segment** page by clicking "
    "it, boxing it or naming it, and refine the region on the **Mask** page. On the **Inpaint** page, "
    "regenerate the region from a prompt, a reference picture or an instruction (“make the jacket red”), "
    "as the chosen engine allows, remove the object, or extend the canvas beyond the photo's edges; on the "
    "**Relight** page, light the subject from another direction; on the **Batch** page, replay a saved edit "
    "(a recipe) over many photos; on the **Models** page, download the models. Everything outside the "
    "region you edit stays exactly as it was."
)

image_picker(settings)

loaded = session.photo()
if loaded is not None:
    st.image(session.display_copy(min(900, loaded.size[0])), caption=f"{loaded.name or 'Photo'} · {loaded.describe()}")
    st.page_link("pages/1_Segment.py", label="Next: select an object", icon=":material/ads_click:")
    st.page_link("pages/2_Mask.py", label="…or paint the mask", icon=":material/brush:")

st.subheader("Models and device")
_, offline = resources.settings()
st.caption(
    f"Device: **{resources.device().summary}** · "
    + ("offline: models load from local files only" if offline else "online")
)
fetch = resources.model_fetch()
if fetch is not None and fetch.running:
    busy = [role for role, what in fetch.state.items() if what in ("waiting", "fetching")]
    st.info(f"Fetching models in the background ({', '.join(busy)}); each is used as soon as it is here "
            "(this panel updates within 30 s of a reload).", icon=":material/download:")
if fetch is not None:
    for role, what in fetch.state.items():
        if what.startswith("failed"):
            st.warning(f"Fetching {role} {what}.", icon=":material/error:")
in_use = resources.in_use()
st.markdown("\n".join(f"- **{task}**: {what}" for task, what in in_use))
rows = [
    {
        "Model": status.role.title,
        "Used to": status.role.purpose,
        "Status": "available" if status.available else "missing",
        "Where": str(status.path) if status.available else status.configured,
        "Fallback in use": "" if status.available else status.role.fallback,
        "Licence": status.role.licence,
        "Setting": status.role.setting,
        "To get it": "" if status.available else f"python -m core models download {status.role.name}",
    }
    for status in resources.statuses()
]
st.table(rows, border="horizontal", hide_index=True)
missing = [status.role.name for status in resources.statuses() if not status.available]
if missing:
    st.caption(
        "A missing model is replaced by its fallback. To use it, fetch it on a machine with internet with "
        "the command in its row (`python -m core models download` fetches the main ones; add `--dir DIR` "
        "to copy them to this machine), then point its setting at the local copy (an environment variable "
        "or a key in `.streamlit/secrets.toml`); see *Installing models* in the README."
    )
    st.page_link("pages/6_Models.py", label="Download models from the app (Models page)",
                 icon=":material/download:")
