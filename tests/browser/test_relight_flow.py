"""Relighting in Chromium: a direction preset changes the live preview; shading gives a result."""
from __future__ import annotations

import pytest

from tests.browser.actions import choose_example, drag, go_to, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_preset_changes_the_preview_and_shading_applies(page, fresh_app_url, screenshot_dir):
    page.set_viewport_size({"width": 1400, "height": 1100})
    choose_example(page, fresh_app_url)
    # The subject: the cat's face, boxed on the Segment page (GrabCut without models).
    go_to(page, "Segment")
    page.get_by_test_id("stButtonGroup").first.get_by_text("Box", exact=True).click()
    wait_idle(page)
    drag(page, [(0.15, 0.1), (0.85, 0.95)], steps=10)
    page.get_by_text("Selected").first.wait_for(timeout=60_000)
    page.get_by_role("button", name="Add to mask").click()
    wait_idle(page)
    go_to(page, "Relight")
    preview = page.get_by_test_id("stMain").get_by_test_id("stImage").first
    preview.wait_for(timeout=30_000)
    before = preview.locator("img").get_attribute("src")
    page.get_by_test_id("stButtonGroup").first.get_by_text("Left", exact=True).click()
    wait_idle(page)
    assert preview.locator("img").get_attribute("src") != before  # the light moved
    page.get_by_role("button", name="Apply shading").click()
    wait_idle(page)
    page.get_by_text("After · light from 180°").wait_for(timeout=30_000)
    preview.scroll_into_view_if_needed()  # the light preview at the top of the picture
    page.mouse.move(0, 0)  # no tooltip in the picture
    page.wait_for_timeout(800)
    page.screenshot(path=str(screenshot_dir / "relight.png"))


def test_preset_changes_the_preview_and_ic_light_generates(page, app_url):
    """With the (tiny) IC-Light models: paint a subject, choose a preset, Generate, a result appears."""
    page.set_viewport_size({"width": 1400, "height": 1100})
    choose_example(page, app_url)
    go_to(page, "Mask")
    for row in range(6):  # a painted patch in the middle of the photo is the subject
        drag(page, [(0.35 + step / 50, 0.4 + row * 0.03) for step in range(16)], steps=1)
        wait_idle(page)
    page.get_by_text("Mask covers").wait_for(timeout=30_000)
    go_to(page, "Relight")
    page.get_by_role("button", name="Generate").wait_for(timeout=30_000)
    assert page.get_by_text("Generating with IC-Light needs").count() == 0
    preview = page.get_by_test_id("stMain").get_by_test_id("stImage").first
    before = preview.locator("img").get_attribute("src")
    page.get_by_test_id("stButtonGroup").first.get_by_text("Top", exact=True).click()
    wait_idle(page)
    assert preview.locator("img").get_attribute("src") != before  # the light moved
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("seed 12345 · light from 90°").first.wait_for(timeout=180_000)
    wait_idle(page)
    assert page.get_by_role("button", name="Download PNG").is_visible()
    assert page.get_by_text("IC-Light ·").first.is_visible()
