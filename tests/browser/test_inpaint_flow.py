"""The whole edit in Chromium: example → click to select → Inpaint → new base → download."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from core import masks
from core.images import load_image
from tests.browser.actions import (
    EXAMPLES,
    choose_example,
    click_canvas,
    download_mask,
    drag,
    go_to,
    spot_with_an_object,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_select_inpaint_use_as_base_and_download(page, app_url, tiny_models):
    fx, fy = spot_with_an_object(tiny_models)
    original = np.asarray(load_image(EXAMPLES / "chelsea.jpg"))
    choose_example(page, app_url)
    go_to(page, "Segment")
    click_canvas(page, fx, fy)
    page.get_by_text("Selected").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Add to mask").click()
    wait_idle(page)

    go_to(page, "Mask")
    mask = download_mask(page)
    go_to(page, "Inpaint")
    page.get_by_label("Prompt", exact=True).fill("a wooden bench")
    page.keyboard.press("Control+Enter")  # text areas commit on Ctrl+Enter or blur
    wait_idle(page)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("seed 42").first.wait_for(timeout=120_000)
    wait_idle(page)

    page.get_by_role("button", name="Use as new base").click()
    wait_idle(page)
    page.get_by_role("button", name="Step back (1)").wait_for(timeout=30_000)
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download PNG").click()
    result = np.asarray(Image.open(io.BytesIO(download_info.value.path().read_bytes())).convert("RGB"))

    assert result.shape == original.shape
    band = masks.grow(mask, 8)  # the default soft edge outside the mask
    assert np.array_equal(result[~band], original[~band]), "pixels outside the edit changed"
    assert (result[mask] != original[mask]).any(), "nothing was regenerated"


def test_remove_an_object_without_any_model(page, fresh_app_url, screenshot_dir):
    """A new user without models paints over the cat's eye and removes it with OpenCV."""
    page.set_viewport_size({"width": 1400, "height": 1100})
    choose_example(page, fresh_app_url)
    go_to(page, "Mask")
    drag(page, [(0.33 + 0.06 * (step % 4) / 4, 0.3 + 0.12 * step / 16) for step in range(16)])
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    mask = download_mask(page)
    go_to(page, "Inpaint")
    page.get_by_text("No diffusion model is on this machine").wait_for(timeout=30_000)
    page.get_by_role("button", name="Remove object").click()
    page.get_by_text("seed").first.wait_for(timeout=60_000)
    wait_idle(page)
    # Before / after as one picture: a press a quarter of the way across moves the wipe there.
    wipe = page.locator(".ips-wipe")
    box = wipe.bounding_box()
    assert box["width"] > 300 and abs(box["width"] / box["height"] - 451 / 300) < 0.02  # the column's width
    page.mouse.click(box["x"] + box["width"] / 4, box["y"] + box["height"] / 2)
    assert abs(float(wipe.evaluate("e => e.style.getPropertyValue('--at')").rstrip("%")) - 25) < 1
    assert page.locator(".ips-range").input_value() != "50"
    page.locator(".ips-range").fill("20")  # the screenshot shows the removed eye on the after side
    page.mouse.move(0, 0)  # no tooltip in the picture
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshot_dir / "inpaint.png"))
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download PNG").click()
    result = np.asarray(Image.open(io.BytesIO(download_info.value.path().read_bytes())).convert("RGB"))
    original = np.asarray(load_image(EXAMPLES / "chelsea.jpg"))
    band = masks.grow(mask, 8)
    assert np.array_equal(result[~band], original[~band])
    assert (result[mask] != original[mask]).any()


def test_cancel_stops_a_generation_and_the_next_one_runs(page, app_url):
    choose_example(page, app_url)
    go_to(page, "Mask")
    drag(page, [(0.3, 0.3), (0.5, 0.5)])
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    go_to(page, "Inpaint")
    # The most steps there are (100), so that the click lands mid-run on a fast machine too: the tiny
    # model makes several steps a second, and the test must not wait for a step that flashed by.
    page.get_by_text("More settings").click()
    page.get_by_test_id("stSlider").filter(has_text="Steps").get_by_role("slider").focus()
    page.keyboard.press("End")
    wait_idle(page)
    page.get_by_role("button", name="Generate").click()
    page.get_by_role("button", name="Cancel").wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"Step \d+ of")).wait_for(timeout=180_000)  # a step may wait for the CPU
    page.get_by_role("button", name="Cancel").click()
    wait_idle(page, timeout=120_000)
    assert page.get_by_text("Generation cancelled").is_visible()
    assert page.get_by_text("seed 42").count() == 0  # nothing was produced

    # The model's lock was released: a short generation right after works.
    page.get_by_test_id("stButtonGroup").get_by_text("Fast", exact=True).click()  # 15 steps
    wait_idle(page)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("seed 42").first.wait_for(timeout=120_000)


def test_select_then_instruct_with_qwen_image_edit(page, modern_app_url, tiny_models):
    """Select the cat with a click, then tell Qwen-Image-Edit what to change there."""
    fx, fy = spot_with_an_object(tiny_models)
    original = np.asarray(load_image(EXAMPLES / "chelsea.jpg"))
    choose_example(page, modern_app_url)
    go_to(page, "Segment")
    click_canvas(page, fx, fy)
    page.get_by_text("Selected").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Add to mask").click()
    wait_idle(page)
    go_to(page, "Mask")
    mask = download_mask(page)

    go_to(page, "Inpaint")
    page.get_by_test_id("stSelectbox").filter(has_text="Engine").click()
    page.get_by_role("option", name="Fill or instruct · Qwen-Image-Edit").click()
    wait_idle(page)
    page.get_by_text("Say what to change").click()
    wait_idle(page)
    page.get_by_text("More settings").click()  # two steps: the tiny pipeline runs at 1024 px on a CPU
    page.get_by_test_id("stSlider").filter(has_text="Steps").get_by_role("slider").focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    wait_idle(page)
    page.get_by_label("Prompt", exact=True).fill("make the cat wear a red scarf")
    page.keyboard.press("Control+Enter")
    wait_idle(page)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("seed 42").first.wait_for(timeout=240_000)
    wait_idle(page)
    page.get_by_text("Qwen-Image-Edit ·").first.wait_for(timeout=120_000)  # the result's footer names the engine
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download PNG").first.click()
    result = np.asarray(Image.open(io.BytesIO(download_info.value.path().read_bytes())).convert("RGB"))
    band = masks.grow(mask, 8)
    assert np.array_equal(result[~band], original[~band]), "pixels outside the edit changed"
    assert (result[mask] != original[mask]).any(), "nothing was changed"
