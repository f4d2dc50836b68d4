"""A person's first session in Chromium: upload a photo, paint the mask, switch pages, download it."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from core.catalog import BUILTIN
from core.masks import bounding_box
from tests.browser.actions import choose_example, download_mask, drag, go_to, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHOTO_SIZE = (1600, 1000)  # shown downscaled on the canvas, so the test checks the scaling too


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
    # A horizontal stroke across the middle third of the canvas, at 40 % of its height.
    drag(page, [(1 / 3 + step / 60, 0.4) for step in range(21)], steps=1)
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    wait_idle(page)
    coverage = page.get_by_text("Mask covers").inner_text()

    # The mask outlives a trip to another page (the canvas itself is remounted empty).
    go_to(page, "Home")
    page.get_by_text("1600×1000 JPEG").first.wait_for(timeout=30_000)
    go_to(page, "Mask")
    assert page.get_by_text("Mask covers").inner_text() == coverage

    mask = download_mask(page)

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
    expect(page.get_by_role("cell", name="missing", exact=True)).to_have_count(len(BUILTIN.models), timeout=30_000)
    expect(page.get_by_role("cell", name="OpenCV GrabCut seeded by the clicks or box")).to_be_visible()
    choose_example(page, fresh_app_url)
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

    go_to(page, "Mask")
    # Scribble over the cat's face (left-centre of the photo).
    drag(page, [(0.25 + 0.25 * (step % 10) / 10, 0.35 + 0.3 * step / 30) for step in range(30)])
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    wait_idle(page)
    page.screenshot(path=str(screenshot_dir / "mask.png"), full_page=True)
