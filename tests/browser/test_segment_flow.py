"""Selecting by clicking in Chromium: the selection appears, goes to the mask at the clicked place."""
from __future__ import annotations

import re

import pytest

from tests.browser.actions import (
    choose_example,
    click_canvas,
    download_mask,
    drag,
    go_to,
    spot_with_an_object,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CAT_SIZE = (451, 300)


def test_click_selects_and_adds_to_the_mask_at_the_clicked_place(page, app_url, tiny_models):
    fx, fy = spot_with_an_object(tiny_models)
    choose_example(page, app_url)
    go_to(page, "Segment")
    page.get_by_text("Click on the object to select it.").wait_for(timeout=60_000)

    click_canvas(page, fx, fy)
    page.get_by_text("Selected").first.wait_for(timeout=30_000)
    caption = page.get_by_text("Selected").first.inner_text()
    assert "with FastSAM-s (fastsam)" in caption
    page.get_by_role("button", name="Add to mask").click()
    wait_idle(page)
    page.get_by_text("Added to the mask.").wait_for(timeout=30_000)
    page.get_by_role("link", name="See it on the Mask page").click()
    wait_idle(page)
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    mask = download_mask(page)
    assert mask.shape == (CAT_SIZE[1], CAT_SIZE[0])
    clicked = (int(fx * CAT_SIZE[0]), int(fy * CAT_SIZE[1]))
    assert mask[clicked[1], clicked[0]], "the clicked pixel is not in the mask"
    assert 0 < mask.mean() < 1


def test_box_without_fastsam_uses_grabcut_and_says_so(page, fresh_app_url, screenshot_dir):
    choose_example(page, fresh_app_url)
    go_to(page, "Segment")
    page.get_by_text("Clicks and boxes use GrabCut instead").wait_for(timeout=30_000)
    page.get_by_test_id("stButtonGroup").first.get_by_text("Box", exact=True).click()
    wait_idle(page)
    drag(page, [(0.15, 0.1), (0.85, 0.95)], steps=10)
    caption = page.get_by_text("Selected").first
    caption.wait_for(timeout=60_000)
    assert "with grabcut" in caption.inner_text()
    page.screenshot(path=str(screenshot_dir / "segment.png"))


def test_text_selects_every_instance_with_sam3_and_adds_them_to_the_mask(page, app_url):
    choose_example(page, app_url)
    go_to(page, "Segment")
    page.get_by_test_id("stButtonGroup").first.get_by_text("Text", exact=True).click()
    wait_idle(page)
    page.get_by_text("finds every instance of what you name").wait_for(timeout=30_000)
    # The tiny random SAM 3 scores every instance low: take them all.
    page.get_by_test_id("stSlider").filter(has_text="Minimum score").get_by_role("slider").focus()
    page.keyboard.press("Home")
    page.get_by_label("What is it?").fill("cat")
    page.get_by_role("button", name="Find").click()
    wait_idle(page, timeout=90_000)
    page.get_by_role("button", name=re.compile(r"Select all \d+")).wait_for(timeout=90_000)
    caption = page.get_by_text("Selected").first
    caption.wait_for(timeout=30_000)
    assert "with SAM 3 (sam3)" in caption.inner_text()
    instances = int(re.search(r"Select all (\d+)", page.get_by_role("button", name=re.compile("Select all")).inner_text())[1])
    assert instances >= 2
    assert page.get_by_test_id("stCheckbox").filter(has_text=re.compile(r"#\d+ · \d+%")).count() == instances
    page.get_by_role("button", name="Add to mask").click()
    wait_idle(page)
    page.get_by_text("Added to the mask.").wait_for(timeout=30_000)
    page.get_by_role("link", name="See it on the Mask page").click()
    wait_idle(page)
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    mask = download_mask(page)
    assert mask.shape == (CAT_SIZE[1], CAT_SIZE[0]) and mask.any()
