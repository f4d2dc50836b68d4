"""What a person does in the app, as Playwright steps shared by the browser tests."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

CANVAS = "[data-testid=stBidiComponentIsolated] canvas.upper-canvas"


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until Streamlit has finished running the script."""
    page.wait_for_timeout(300)
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for(timeout=timeout)


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
