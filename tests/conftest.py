"""Shared test set-up: repo root on sys.path, offline ML libraries, tiny models fixture."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# No test may reach the network, and the ML libraries must learn that before they are imported.
from core.config import OFFLINE_ENV  # noqa: E402 (needs the repo root on sys.path)

os.environ.update(OFFLINE_ENV)
os.environ["INPAINT_STUDIO_OFFLINE"] = "1"
os.environ["YOLO_VERBOSE"] = "0"
# Each pytest-xdist worker (PYTEST_XDIST_WORKER) gets its own: Ultralytics rewrites its settings file.
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir())
                                             / f"inpaint-studio-tests-yolo{os.environ.get('PYTEST_XDIST_WORKER', '')}"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items) -> None:
    """How ``make test`` shares the tests between its pytest-xdist workers (``--dist loadgroup``): a
    file's tests stay together (its module fixtures are built once); the browser tests and the tests
    that start a local Ray cluster share one worker and run one at a time (one app server of each
    kind; a Ray cluster's processes next to a browser session starve its page of the CPU)."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("ray"):
            group = "browser-and-ray"
        else:
            group = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models in the real formats, built once per test session.

    Returns the role → path mapping also written to ``models.json``.
    """
    from tests.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_modern_models(tiny_models) -> dict[str, Path]:
    """Tiny FLUX.2 [klein], FLUX.1 Fill and Qwen-Image-Edit pipelines, beside the other tiny models."""
    from tests.tiny_models import BUILDERS, MODERN_ROLES

    outdir = next(iter(tiny_models.values())).parent
    return {role: BUILDERS[role](outdir) for role in MODERN_ROLES}


@pytest.fixture
def app_without_models(monkeypatch, tmp_path):
    """For AppTest runs: empty process-wide caches and no model on the machine (every fallback).

    Yields the monkeypatch, so a test can point a model setting somewhere."""
    import streamlit as st

    for key in list(os.environ):
        if key.startswith("INPAINT_STUDIO_MODEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "no-models"))
    st.cache_resource.clear()
    st.cache_data.clear()
    st.config.set_option("client.showErrorDetails", "full")  # tracebacks in test failures
    yield monkeypatch
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def app_with_tiny_models(app_without_models, tiny_models):
    """For AppTest runs: the app pointed at the tiny models. Yields the monkeypatch."""
    for role, path in tiny_models.items():
        app_without_models.setenv(f"INPAINT_STUDIO_MODEL_{role.upper()}", str(path))
    return app_without_models
