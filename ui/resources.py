"""Process-wide resources, created once per server process and shared by every session.

Each factory is a ``st.cache_resource``. Models are never kept in session state: the services
handed out here load them once per process and hold a lock per model around every call (a model
keeps state between calls and is not thread-safe).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import streamlit as st

from core.config import Settings, apply_offline_mode, load_settings, quiet_library_progress
from core.device import DeviceInfo, detect_device
from core.memory import release_memory
from core.models import ModelStatus, available_engines, build_segmenter, load_inpaint_engine, load_relight_engine, model_statuses
from core.segmenter import Segmenter


@st.cache_resource(show_spinner=False)
def settings() -> tuple[Settings, bool]:
    """The settings and whether the app runs offline (offline mode is applied to the libraries)."""
    loaded = load_settings()
    return loaded, apply_offline_mode(loaded)


@st.cache_resource(show_spinner=False)
def model_fetch():
    """The background download of ``INPAINT_STUDIO_DOWNLOAD_ON_START``'s models, started once per
    server process when the machine is online; None when there is nothing to fetch."""
    from core.model_files import BackgroundFetch

    config, offline = settings()
    if not config.download_on_start or offline:
        return None
    return BackgroundFetch(config.download_on_start, config).start()


@st.cache_resource(show_spinner="Checking for a GPU…")
def device() -> DeviceInfo:
    return detect_device(settings()[0].device)


@st.cache_data(ttl=30, show_spinner=False)
def statuses() -> list[ModelStatus]:
    """Which models are on this machine; rechecked every 30 s so a newly copied model shows up."""
    return model_statuses(settings()[0])


@st.cache_data(ttl=30, show_spinner=False)
def diffusion_engines() -> list[str]:
    """The diffusion engines this machine has the models and the memory for, with their few-step
    variants."""
    return available_engines(settings()[0], device())


@st.cache_data(ttl=30, show_spinner=False)
def memory_notes() -> list[str]:
    """Why diffusion models that are on this machine are not offered (too little memory)."""
    from core.models import ENGINE_ROLES, locate, memory_shortfall

    config, found = settings()[0], []
    for role in ENGINE_ROLES.values():
        status = locate(role, config)
        if status.available and (note := memory_shortfall(status, config, device())):
            found.append(note)
    return found


def engine_title(name: str) -> str:
    """How an engine is named on the pages (a few-step variant with its preset and steps)."""
    from core.engines import inpaint_engine_class
    from core.engines.fast import split_engine_name

    _, preset = split_engine_name(name)
    title = inpaint_engine_class(name).title
    return f"{title} · {preset.title} few-step ({preset.steps} steps)" if preset else title


@st.cache_resource(show_spinner=False)
def segmenter() -> Segmenter:
    """The selection service, shared by every session; each model loads on first use."""
    return build_segmenter(settings()[0], device())


@st.cache_resource(show_spinner="Loading the inpainting model…")
def inpaint_engine(name: str) -> tuple[Any, threading.Lock]:
    """Inpainting engine ``name`` and the lock to hold while it generates (one per process).

    Raises ModelLoadError (not cached, so a model copied in later is picked up).
    """
    quiet_library_progress()
    return load_inpaint_engine(name, settings()[0], device()), threading.Lock()


@st.cache_resource(show_spinner="Loading IC-Light…")
def relight_engine() -> tuple[Any, threading.Lock]:
    """The IC-Light engine and the lock to hold while it generates (one per process).

    Raises ModelLoadError (not cached, so a model copied in later is picked up).
    """
    quiet_library_progress()
    return load_relight_engine(settings()[0], device()), threading.Lock()


_generating = 0  # generations running now, in all sessions (under _generating_lock)
_generating_lock = threading.Lock()


def _count_generation(step: int) -> None:
    global _generating
    with _generating_lock:
        _generating += step


@contextlib.contextmanager
def _held(engine: Any, lock: threading.Lock) -> Iterator[Any]:
    """``engine`` with ``lock`` held until the block ends; a spinner while another session has it."""
    if not lock.acquire(blocking=False):
        with st.spinner("Waiting for another generation on this server to finish…"):
            lock.acquire()
    _count_generation(+1)
    try:
        yield engine
    finally:
        _count_generation(-1)
        lock.release()
        release_memory()


@st.cache_resource(show_spinner=False)
def memory_janitor():
    """The thread that, every ``memory_trim_seconds`` while no generation runs, ends the sessions of
    people who have left and hands the memory freed back; one per server process, None when off."""
    from core.memory import MemoryJanitor

    interval = settings()[0].memory_trim_seconds
    if interval <= 0:
        return None
    return MemoryJanitor(interval, busy=lambda: _generating > 0, release=_tidy).start()


def _tidy() -> None:
    """End the sessions of people who have left, then hand the memory freed back."""
    from ui.sessions import end_expired_sessions

    end_expired_sessions()
    release_memory()


def engine_in_use(name: str) -> contextlib.AbstractContextManager[Any]:
    """Inpainting engine ``name``, held for this session until the ``with`` block ends."""
    return _held(*inpaint_engine(name))


def relight_engine_in_use() -> contextlib.AbstractContextManager[Any]:
    """The IC-Light engine, held for this session until the ``with`` block ends."""
    return _held(*relight_engine())
