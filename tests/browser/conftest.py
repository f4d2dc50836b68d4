"""Real-browser fixtures: the app served on 127.0.0.1 and Debian's Chromium driven by Playwright."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        message = "Chromium is not installed (make test installs Debian's chromium when run as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI a missing browser is an error.")
        pytest.skip(message)
    return path


@contextlib.contextmanager
def serve_app(settings: dict[str, str], log: Path, *args: str, process: list | None = None):
    """Run the app in its own server process with ``settings`` in its environment; yield its URL.

    ``args``: more ``streamlit run`` options. ``process``: a list that receives the server's Popen.
    On exit the server is stopped, and any error it logged fails the test.
    """
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("INPAINT_STUDIO_MODEL")}
    env.update(settings)
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
                "--server.port", str(port), "--server.address", "127.0.0.1",
                "--server.headless", "true", "--browser.gatherUsageStats", "false", *args,
            ],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    if process is not None:
        process.append(server)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"The app did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    errors = [line for line in log.read_text().splitlines() if "Traceback" in line or "Error" in line]
    assert not errors, f"The server logged errors:\n{log.read_text()}"


@pytest.fixture(scope="session")
def app_url(tiny_models, tmp_path_factory):
    """The app pointed at the tiny models."""
    settings = {f"INPAINT_STUDIO_MODEL_{role.upper()}": str(path) for role, path in tiny_models.items()}
    with serve_app(settings, tmp_path_factory.mktemp("server") / "streamlit.log") as url:
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
