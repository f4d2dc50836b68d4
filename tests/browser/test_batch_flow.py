"""A batch in Chromium: save an edit as a recipe, run it on three photos, download the zip."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.browser.actions import choose_example, drag, go_to, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_recipe_to_batch_of_three_and_download_the_zip(page, fresh_app_url, tmp_path, screenshot_dir):
    page.set_viewport_size({"width": 1400, "height": 1100})
    choose_example(page, fresh_app_url)
    go_to(page, "Mask")
    drag(page, [(0.33 + 0.06 * (step % 4) / 4, 0.3 + 0.12 * step / 16) for step in range(16)])
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    go_to(page, "Inpaint")
    page.get_by_role("button", name="Remove object").click()
    page.get_by_text("seed").first.wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_text("Save this edit as a recipe").click()
    page.get_by_label("Recipe name").fill("remove-eye")
    page.keyboard.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Use for a batch").click()
    wait_idle(page)
    page.get_by_text("remove-eye").first.wait_for(timeout=30_000)

    photos = []
    for index, colour in enumerate([(200, 60, 40), (40, 160, 90), (60, 80, 200)]):
        path = tmp_path / f"photo{index}.jpg"
        rgb = np.zeros((300, 450, 3), np.uint8)
        rgb[:] = colour
        rgb[100:200, 150:300] = (240, 240, 240)
        Image.fromarray(rgb).save(path, quality=95)
        photos.append(str(path))
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(photos)
    page.get_by_text("photo2.jpg").first.wait_for(timeout=30_000)
    wait_idle(page)
    page.get_by_role("button", name="Run the batch").click()
    download = page.get_by_role("button", name="Download the results (zip, with manifest.json and .csv)")
    download.wait_for(timeout=120_000)
    wait_idle(page)
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshot_dir / "batch.png"))
    with page.expect_download() as download_info:
        download.click()
    archive = zipfile.ZipFile(io.BytesIO(download_info.value.path().read_bytes()))
    # JPEG photos give JPEGs (only the edited blocks re-encoded), the default for a batch of JPEGs.
    assert set(archive.namelist()) == {"photo0.jpg", "photo1.jpg", "photo2.jpg", "manifest.json", "manifest.csv"}
    manifest = json.loads(archive.read("manifest.json"))
    assert [row["status"] for row in manifest["items"]] == ["done"] * 3
    assert manifest["recipe"]["name"] == "remove-eye"
    for index in range(3):
        out = Image.open(io.BytesIO(archive.read(f"photo{index}.jpg")))
        assert out.size == (450, 300) and out.format == "JPEG"
