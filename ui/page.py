"""What every page does first: page config, settings, session defaults and the shared sidebar."""
from __future__ import annotations

import streamlit as st

from core.config import Settings
from core.errors import UserError
from ui import access, forms, resources, session

APP_NAME = "Inpaint Studio"
HOME = "streamlit_app.py"
# The sidebar's navigation, in the order of the workflow: (script, label, icon).
PAGES = [
    (HOME, "Home", ":material/home:"),
    ("pages/1_Segment.py", "Segment", ":material/ads_click:"),
    ("pages/2_Mask.py", "Mask", ":material/brush:"),
    ("pages/3_Inpaint.py", "Inpaint", ":material/auto_fix_high:"),
    ("pages/4_Relight.py", "Relight", ":material/light_mode:"),
    ("pages/5_Batch.py", "Batch", ":material/stacks:"),
    ("pages/6_Models.py", "Models", ":material/download:"),
]


def setup_page(title: str, icon: str) -> Settings:
    """Configure the page and draw the sidebar; returns the app's settings.

    Each page calls this first: Streamlit does not run the home script before other pages.
    """
    st.set_page_config(page_title=f"{title} · {APP_NAME}", page_icon=icon, layout="wide")
    try:
        settings, _ = resources.settings()
        resources.manager()  # the catalog (INPAINT_STUDIO_CATALOG_MODULES) is read here
        resources.model_fetch()  # INPAINT_STUDIO_DOWNLOAD_ON_START's roles are checked here
    except UserError as error:
        st.error(f"The app's configuration has a problem: {error}")
        st.stop()
    resources.memory_janitor()  # started by the first page drawn in this server process
    access.require_access(settings)
    forms.keep_values()
    session.init_session()
    _sidebar(settings)
    return settings


def _sidebar(settings: Settings) -> None:
    loaded = session.photo()
    with st.sidebar:
        for script, label, icon in PAGES:
            st.page_link(script, label=label, icon=icon)
        access.sign_out_control(settings)
        st.divider()
        if loaded is None:
            st.caption("No photo yet: upload one on the home page.")
            return
        st.image(session.display_copy(280), caption=loaded.name or "current photo")
        st.caption(loaded.describe())


def engine_server_notice() -> None:
    """On the pages that generate: a warning while the engine server cannot be used (the pages then
    offer what needs no model); nothing when it answers or none is set."""
    problem = resources.engine_server_problem()
    if problem:
        st.warning(problem, icon=":material/cloud_off:")


def require_photo() -> None:
    """Stop the page with a pointer to the home page when no photo has been chosen yet."""
    if session.photo() is None:
        st.info("Choose a photo first: upload one or pick an example on the home page.")
        st.page_link(HOME, label="Go to the home page", icon=":material/home:")
        st.stop()
