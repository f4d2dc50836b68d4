"""A person's first session in Chromium: upload a photo, paint the mask, switch pages, download it."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from core.masks import bounding_box
from core.models import ROLES

pytestmark = pytest.mark.browser

PHOTO_SIZE = (1600, 1000)  # shown downscaled on the canvas, so the test checks the scaling too


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until Streamlit has finished running the script."""
    page.wait_for_timeout(300)
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for(timeout=timeout)


def make_photo(path) -> None:
    yy, xx = np.mgrid[0 : PHOTO_SIZE[1], 0 : PHOTO_SIZE[0]]
    rgb = np.stack([xx * 255 // PHOTO_SIZE[0], yy * 255 // PHOTO_SIZE[1], np.full_like(xx, 120)], axis=-1)
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=90)


def test_paint_switch_pages_and_download_the_mask(page, app_url, tmp_path):
    photo = tmp_path / "gradient.jpg"
    make_photo(photo)

    page.goto(app_url)
    wait_idle(page)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(photo))
    page.get_by_text("1600×1000 JPEG").first.wait_for(timeout=30_000)
    wait_idle(page)

    page.get_by_role("link", name="…or paint the mask").click()
    wait_idle(page)
    page.get_by_text("The mask is empty").wait_for(timeout=30_000)
    canvas = page.locator("[data-testid=stBidiComponentIsolated] canvas.upper-canvas")
    canvas.wait_for(timeout=30_000)
    box = canvas.bounding_box()

    # A horizontal stroke across the middle third of the canvas, at 40 % of its height.
    y = box["y"] + 0.4 * box["height"]
    page.mouse.move(box["x"] + box["width"] / 3, y)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(box["x"] + box["width"] / 3 * (1 + step / 20), y)
    page.mouse.up()
    page.wait_for_timeout(600)
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    wait_idle(page)
    coverage = page.get_by_text("Mask covers").inner_text()

    # The mask outlives a trip to another page (the canvas itself is remounted empty).
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_role("link", name="Home").click()
    wait_idle(page)
    page.get_by_text("1600×1000 JPEG").first.wait_for(timeout=30_000)
    sidebar.get_by_role("link", name="Mask").click()
    wait_idle(page)
    assert page.get_by_text("Mask covers").inner_text() == coverage

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download mask (PNG)").click()
    mask = np.asarray(Image.open(io.BytesIO(download_info.value.path().read_bytes()))) > 127

    assert mask.shape == (PHOTO_SIZE[1], PHOTO_SIZE[0])
    x0, y0, x1, y1 = bounding_box(mask)
    # The stroke spans x from 1/3 to 2/3 of the photo at y = 40 %, widened by the brush.
    assert abs(x0 - PHOTO_SIZE[0] / 3) < 60 and abs(x1 - 2 * PHOTO_SIZE[0] / 3) < 60, (x0, x1)
    assert y0 < 0.4 * PHOTO_SIZE[1] < y1 and (y1 - y0) < 0.2 * PHOTO_SIZE[1], (y0, y1)
    centre_row = mask[int(0.4 * PHOTO_SIZE[1])]
    assert centre_row[int(PHOTO_SIZE[0] * 0.4) : int(PHOTO_SIZE[0] * 0.6)].all()
    assert not mask[: int(0.25 * PHOTO_SIZE[1])].any()


def test_example_photo_bad_upload_and_mask_screenshots(page, fresh_app_url, tmp_path, screenshot_dir):
    """A new user without models picks the cat example, tries a broken upload (a clear error, the
    photo kept) and paints over the cat. The screenshots are the README's."""
    page.set_viewport_size({"width": 1400, "height": 1250})
    page.goto(fresh_app_url)
    wait_idle(page)
    # Every model is reported missing, with its fallback.
    expect(page.get_by_role("cell", name="missing", exact=True)).to_have_count(len(ROLES), timeout=30_000)
    expect(page.get_by_role("cell", name="OpenCV GrabCut seeded by the clicks or box")).to_be_visible()
    wait_idle(page)
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="Chelsea").click()
    wait_idle(page)
    page.get_by_role("button", name="Use this example").click()
    wait_idle(page)
    page.get_by_text("451×300 JPEG").first.wait_for(timeout=30_000)
    wait_idle(page)
    page.screenshot(path=str(screenshot_dir / "home.png"), full_page=True)

    not_a_photo = tmp_path / "notes.png"
    not_a_photo.write_text("shopping list: milk, eggs\n")
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(not_a_photo))
    error = page.get_by_test_id("stAlertContentError")
    error.wait_for(timeout=30_000)
    assert "notes.png" in error.inner_text()
    wait_idle(page)
    page.screenshot(path=str(screenshot_dir / "home-error.png"), full_page=True)
    assert page.get_by_test_id("stSidebar").get_by_text("451×300 JPEG").is_visible()

    page.get_by_test_id("stSidebar").get_by_role("link", name="Mask").click()
    wait_idle(page)
    canvas = page.locator("[data-testid=stBidiComponentIsolated] canvas.upper-canvas")
    canvas.wait_for(timeout=30_000)
    box = canvas.bounding_box()
    # Scribble over the cat's face (left-centre of the photo).
    page.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.35 * box["height"])
    page.mouse.down()
    for step in range(30):
        x = 0.25 + 0.25 * (step % 10) / 10
        y = 0.35 + 0.3 * step / 30
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=3)
    page.mouse.up()
    page.wait_for_timeout(600)
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    wait_idle(page)
    page.screenshot(path=str(screenshot_dir / "mask.png"), full_page=True)
