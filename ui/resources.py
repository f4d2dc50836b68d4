"""Process-wide resources, created once per server process and shared by every session.

Each factory is a ``st.cache_resource``; a factory that hands out a model also hands out the lock
to hold while calling it (a pipeline keeps state between steps and is not thread-safe).
"""
from __future__ import annotations

import streamlit as st

from core.config import Settings, apply_offline_mode, load_settings
from core.device import DeviceInfo, detect_device
from core.models import ModelStatus, model_statuses


@st.cache_resource(show_spinner=False)
def settings() -> tuple[Settings, bool]:
    """The settings and whether the app runs offline (offline mode is applied to the libraries)."""
    loaded = load_settings()
    return loaded, apply_offline_mode(loaded)


@st.cache_resource(show_spinner="Checking for a GPU…")
def device() -> DeviceInfo:
    return detect_device(settings()[0].device)


@st.cache_data(ttl=30, show_spinner=False)
def statuses() -> list[ModelStatus]:
    """Which models are on this machine; rechecked every 30 s so a newly copied model shows up."""
    return model_statuses(settings()[0])
