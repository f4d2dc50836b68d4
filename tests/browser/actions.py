"""What a person does in the app, as Playwright steps shared by the browser tests, and the helpers
they share: the app served in its own process, Chromium's options, the bundled example photos."""
from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
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
CANVAS = "[data-testid=stBidiComponentIsolated] canvas.upper-canvas"
IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"  # the script has finished its run


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until Streamlit has finished running the script."""
    page.wait_for_timeout(300)
    page.locator(IDLE).wait_for(timeout=timeout)


def go_to(page, name: str) -> None:
    """Open a page through the sidebar's navigation."""
    page.get_by_test_id("stSidebar").get_by_role("link", name=name).click()
    wait_idle(page)


def choose_example(page, app_url: str, name: str = "Chelsea") -> None:
    """Open the app and make one of the bundled example photos the current photo."""
    page.goto(app_url)
    wait_idle(page)
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name=name).click()
    wait_idle(page)
    page.get_by_role("button", name="Use this example").click()
    wait_idle(page)


# The same steps for async Playwright (the load tests, whose sessions run side by side).


async def async_wait_idle(page, timeout: float) -> None:
    """Wait until Streamlit has finished running the script."""
    await page.wait_for_timeout(300)
    await page.locator(IDLE).wait_for(timeout=timeout)


async def async_go_to(page, name: str, timeout: float) -> None:
    """Open a page through the sidebar's navigation."""
    await page.get_by_test_id("stSidebar").get_by_role("link", name=name).click()
    await async_wait_idle(page, timeout)


async def async_choose_example(page, app_url: str, name: str, file: str, timeout: float) -> None:
    """Open the app and make the example photo ``name`` (``file``) the current photo."""
    await page.goto(app_url)
    await async_wait_idle(page, timeout)
    await page.get_by_test_id("stSelectbox").first.click()
    await page.get_by_role("option", name=name).click()
    await async_wait_idle(page, timeout)
    await page.get_by_role("button", name="Use this example").click()
    await page.get_by_test_id("stSidebar").get_by_text(file).wait_for()
    await async_wait_idle(page, timeout)


def canvas_box(page) -> dict:
    """The drawing canvas's box on the screen (x, y, width, height)."""
    canvas = page.locator(CANVAS)
    canvas.wait_for(timeout=30_000)
    return canvas.bounding_box()


def drag(page, path: Sequence[tuple[float, float]], steps: int = 3) -> None:
    """Press, move through ``path`` (fractions of the canvas), release; then wait for the app."""
    box = canvas_box(page)
    points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in path]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=steps)
    page.mouse.up()
    page.wait_for_timeout(600)  # the canvas debounces what it sends
    wait_idle(page)


def click_canvas(page, fx: float, fy: float) -> None:
    box = canvas_box(page)
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.wait_for_timeout(600)
    wait_idle(page)


def download_mask(page) -> np.ndarray:
    """Click "Download mask (PNG)" and return the downloaded mask (True = edit)."""
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download mask (PNG)").click()
    return np.asarray(Image.open(io.BytesIO(download_info.value.path().read_bytes()))) > 127


def spot_with_an_object(tiny_models) -> tuple[float, float]:
    """Where the (random) tiny FastSAM finds an object in the cat photo, as fractions of its size.

    The tiny model is deterministic, so the app finds the same candidates for the same photo.
    """
    from core.engines.fastsam import FastSAMEngine, FastSAMSettings
    from core.images import load_image

    image = load_image(EXAMPLES / "chelsea.jpg")
    candidates = FastSAMEngine.load(tiny_models["fastsam"]).everything(image, FastSAMSettings())
    largest = int(np.argmax(candidates.areas))
    ys, xs = np.nonzero(candidates.mask(largest))
    middle = len(xs) // 2
    return (xs[middle] + 0.5) / image.width, (ys[middle] + 0.5) / image.height


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
