"""Real-browser fixtures: the app served on 127.0.0.1 and Debian's Chromium driven by Playwright."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser.actions import CHROMIUM_ARGS, serve_app


def _chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        message = "Chromium is not installed (make test installs Debian's chromium when run as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI a missing browser is an error.")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def app_url(tiny_models, tmp_path_factory):
    """The app pointed at the tiny models."""
    settings = {f"INPAINT_STUDIO_MODEL_{role.upper()}": str(path) for role, path in tiny_models.items()}
    with serve_app(settings, tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def modern_app_url(tiny_models, tiny_modern_models, tmp_path_factory):
    """The app pointed at the tiny models and the tiny FLUX / Qwen-Image-Edit pipelines."""
    models = {**tiny_models, **tiny_modern_models}
    settings = {f"INPAINT_STUDIO_MODEL_{role.upper()}": str(path) for role, path in models.items()}
    with serve_app(settings, tmp_path_factory.mktemp("modern-server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def fresh_app_url(tmp_path_factory):
    """The app as a new user first sees it: no model on the machine, every fallback in use."""
    models_dir = tmp_path_factory.mktemp("no-models")
    settings = {"INPAINT_STUDIO_MODELS_DIR": str(models_dir), "INPAINT_STUDIO_OFFLINE": "1"}
    with serve_app(settings, tmp_path_factory.mktemp("fresh-server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """Where browser tests save screenshots: INPAINT_STUDIO_SCREENSHOTS (the README's), else a temp dir."""
    configured = os.environ.get("INPAINT_STUDIO_SCREENSHOTS")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")
