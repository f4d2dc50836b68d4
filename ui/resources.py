"""Process-wide resources, created once per server process and shared by every session.

One ``st.cache_resource`` model manager (``core.manager``) holds every model; models are never
kept in session state. The manager loads each once per process, and every call into a model takes
its turn in the model's fair queue (a model keeps state between calls and is not thread-safe):
people's generations first, then batch photos, in order.
"""
from __future__ import annotations

import contextlib

import streamlit as st

from core.catalog import Catalog
from core.config import Settings, apply_offline_mode, load_settings, quiet_library_progress
from core.device import DeviceInfo
from core.downloads import DownloadManager
from core.manager import ModelManager
from core.memory import MemoryJanitor, release_memory
from core.model_files import BackgroundFetch, ModelStatus, roles_to_fetch
from core.segmenter import Segmenter


@st.cache_resource(show_spinner=False)
def settings() -> tuple[Settings, bool]:
    """The settings and whether the app runs offline (offline mode is applied to the libraries)."""
    loaded = load_settings()
    return loaded, apply_offline_mode(loaded)


@st.cache_resource(show_spinner="Checking for a GPU…")
def manager() -> ModelManager:
    """The server's model manager: every model loaded once, shared by every session and batch."""
    config = settings()[0]
    loaded = ModelManager(config, release_after_use=True)
    loaded.device  # noqa: B018 (detected now, under the spinner)
    return loaded


def catalog() -> Catalog:
    return manager().catalog


def device() -> DeviceInfo:
    return manager().device


@st.cache_resource(show_spinner=False)
def model_fetch():
    """The background download of ``INPAINT_STUDIO_DOWNLOAD_ON_START``'s models, started once per
    server process when the machine is online; None when there is nothing to fetch."""
    config, offline = settings()
    if not config.download_on_start or offline:
        return None
    return BackgroundFetch(roles_to_fetch(config.download_on_start, catalog()), config).start()


@st.cache_resource(show_spinner=False)
def downloads() -> DownloadManager:
    """The server's downloads started from the Models page: one per model at a time, shared by every
    session, going on across page switches; when one ends, what the pages know of the models is
    refreshed."""
    config, offline = settings()
    return DownloadManager(config, catalog(), offline=offline, on_finish=lambda role: forget_statuses())


def forget_statuses() -> None:
    """Drop the cached model statuses and engine lists (a model was downloaded or deleted)."""
    for cached in (statuses, engines, memory_notes, in_use):
        cached.clear()


@st.cache_data(ttl=30, show_spinner=False)
def statuses() -> list[ModelStatus]:
    """Which models are on this machine; rechecked every 30 s so a newly copied model shows up."""
    return manager().statuses()


@st.cache_data(ttl=30, show_spinner=False)
def engines(*kinds: str) -> list[str]:
    """The engines of ``kinds`` this machine has the models and the memory for, with their
    few-step variants."""
    return manager().engines(*kinds)


def engine_server_problem() -> str | None:
    """Why the engine server (``INPAINT_STUDIO_ENGINE_SERVER``) cannot be used now; None when it
    answers or none is set. The client asks at most every 10 s, and gives a host that is down 1 s."""
    return manager().engine_server_problem()


@st.cache_data(ttl=30, show_spinner=False)
def memory_notes() -> list[str]:
    """Why diffusion models that are on this machine are not offered (too little memory)."""
    return manager().memory_notes("diffusion")


@st.cache_data(ttl=30, show_spinner=False)
def in_use() -> list[tuple[str, str]]:
    """(task, what does it on this machine now) for the home page: the best engine present for each
    task, or its fallback."""
    models, catalog_ = manager(), catalog()

    def best(names: list[str]) -> str | None:
        return next((catalog_.title(name) for name in names if models.has(name)), None)

    clicks = best(catalog_.answering("everything")) or "GrabCut (no FastSAM here)"
    refine = best(catalog_.answering("clicks")) or "FastSAM's candidates (no SAM here)"
    concepts = best(catalog_.answering("concepts"))
    text = (f"{concepts}, every instance" if concepts else
            "CLIP over FastSAM's candidates, one object at a time" if best(catalog_.answering("text"))
            and best(catalog_.answering("everything")) else "not available (no SAM 3, CLIP or FastSAM here)")
    removal, diffusion, relight = models.engines("removal"), models.engines("diffusion"), models.engines("relight")
    return [
        ("Select by click or box", clicks),
        ("Refine a selection", refine),
        ("Select by text", text),
        ("Remove objects", catalog_.title(removal[0]) + (" (a smooth fill: no LaMa or MI-GAN here)"
                                                         if not catalog_.engines[removal[0]].roles else "")),
        ("Regenerate from a prompt", catalog_.title(diffusion[0]) if diffusion else
         "not available (no diffusion model here, or too little memory)"),
        ("Relight", catalog_.title(relight[0]) if relight else "the shading preview (no IC-Light here)"),
    ]


def first_model(kind: str, capability: str | None = None) -> ModelStatus:
    """The main model of the catalog's first engine of ``kind`` (with ``capability``): what to say is missing."""
    names = catalog().engine_names((kind,), variants=False)
    entry = next(e for e in map(catalog().engines.get, names) if capability is None or e.can(capability))
    return manager().status(entry.roles[0])


def engine_title(name: str) -> str:
    """How an engine is named on the pages (a few-step variant with its preset and steps)."""
    return catalog().title(name)


def made_by(name: str, model_id: str, title: str | None = None) -> str:
    """What a result's caption says produced it: the engine (``title``, default its own), its model,
    and the engine server it ran on when it ran on one (the model path is then the serving machine's)."""
    loaded = manager()
    where = f" · on the engine server at {loaded.engine_server.host}" if loaded.runs_remotely(name) else ""
    return f"{title or engine_title(name)} · {model_id}{where}"


@st.cache_resource(show_spinner=False)
def segmenter() -> Segmenter:
    """The selection service, shared by every session; each model loads on first use."""
    return Segmenter(manager())


def loading(name: str) -> contextlib.AbstractContextManager:
    """A spinner while engine ``name`` loads (nothing when it is loaded)."""
    if manager().is_loaded(name):
        return contextlib.nullcontext()
    quiet_library_progress()
    return st.spinner(f"Loading {engine_title(name)}…")


@st.cache_resource(show_spinner=False)
def memory_janitor():
    """The thread that, every ``memory_trim_seconds`` while nothing runs, ends the sessions of
    people who have left and hands the memory freed back; one per server process, None when off."""
    interval = settings()[0].memory_trim_seconds
    if interval <= 0:
        return None
    models = manager()
    return MemoryJanitor(interval, busy=lambda: models.busy, release=_tidy).start()


def _tidy() -> None:
    """End the sessions of people who have left, then hand the memory freed back."""
    from ui.sessions import end_expired_sessions

    end_expired_sessions()
    release_memory()
