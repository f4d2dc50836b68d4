"""GrabCut selection (the fallback without FastSAM weights) on synthetic photos."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from core.engines import grabcut
from core.engines.grabcut import grabcut_select
from core.segment import SegmentError, SegmentPrompt

RED = (215, 35, 40)
BLUE = (40, 60, 200)


def textured_background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Grey-green float RGB with large blotches and per-pixel noise, like grass or gravel."""
    rng = np.random.default_rng(seed)
    blotches = rng.normal(0, 40, (height // 25 + 1, width // 25 + 1, 3)).astype(np.float32)
    blotches = cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.array([120, 130, 100], np.float32) + blotches + rng.normal(0, 20, (height, width, 3))


def disk(width: int, height: int, cx: float, cy: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= radius**2


def photo(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def red_disk_scene(width: int = 400, height: int = 300, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A noisy saturated red disk (radius a quarter of the height) centred on a textured background."""
    rng = np.random.default_rng(seed + 1)
    pixels = textured_background(width, height, seed)
    truth = disk(width, height, width / 2, height / 2, height / 4)
    pixels[truth] = np.array(RED) + rng.normal(0, 10, (int(truth.sum()), 3))
    return photo(pixels), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_a_box_around_the_disk_selects_the_disk():
    image, truth = red_disk_scene()
    mask, message = grabcut_select(image, SegmentPrompt(box=(110, 60, 290, 240)))
    assert mask.dtype == bool and mask.shape == (300, 400)
    assert message == ""
    assert iou(mask, truth) > 0.85


def test_a_click_in_the_centre_selects_the_disk_and_not_a_look_alike_elsewhere():
    image, truth = red_disk_scene()
    pixels = np.asarray(image).copy()
    look_alike = disk(400, 300, 40, 40, 25)  # same red, not touching the clicked disk
    pixels[look_alike] = RED
    mask, message = grabcut_select(Image.fromarray(pixels), SegmentPrompt(points=((200, 150, 1),)))
    assert message == ""
    assert iou(mask, truth) > 0.85
    assert not (mask & look_alike).any()


def test_a_negative_click_keeps_the_clicked_background_out():
    pixels = textured_background(400, 300)
    truth = disk(400, 300, 170, 150, 60)
    patch = np.zeros((300, 400), bool)
    patch[120:180, 230:280] = True  # a blue thing touching the disk, inside the same box
    pixels[truth] = RED
    pixels[patch] = BLUE
    image = photo(pixels)
    box = (100, 80, 290, 220)

    without, _ = grabcut_select(image, SegmentPrompt(box=box))
    assert (without & patch).mean() / patch.mean() > 0.5  # the scene needs the exclusion

    mask, message = grabcut_select(image, SegmentPrompt(box=box, points=((255, 150, 0),)))
    assert message == ""
    assert (mask & patch).sum() < 0.05 * patch.sum()
    assert not mask[150, 255]
    assert iou(mask, truth) > 0.85


def test_a_large_photo_is_cut_on_a_small_copy_and_answered_at_full_size(monkeypatch):
    image, truth = red_disk_scene(2000, 1500)
    shapes = []
    real_grabcut = cv2.grabCut

    def recording_grabcut(img, *args):
        shapes.append(img.shape)
        return real_grabcut(img, *args)

    monkeypatch.setattr(grabcut.cv2, "grabCut", recording_grabcut)
    mask, message = grabcut_select(image, SegmentPrompt(points=((1000, 750, 1),)))
    assert shapes == [(384, 512, 3)]
    assert mask.shape == (1500, 2000) and message == ""
    assert iou(mask, truth) > 0.95  # coordinates scaled both ways, edges not blocky

    box_mask, _ = grabcut_select(image, SegmentPrompt(box=(550, 300, 1450, 1200)), max_side=256)
    assert shapes[-1] == (192, 256, 3)
    assert box_mask.shape == (1500, 2000)
    assert iou(box_mask, truth) > 0.9


def test_the_same_prompt_gives_the_same_mask_whatever_opencvs_random_state():
    # A faint object, where GrabCut's k-means start (drawn from OpenCV's global random state)
    # changes dozens of pixels unless the selection seeds it.
    pixels = textured_background(400, 300)
    pixels[disk(400, 300, 200, 150, 75)] += np.array([60, -30, 0])
    image = photo(pixels)
    prompt = SegmentPrompt(box=(110, 60, 290, 240))
    masks = []
    for seed in (10, 11, 12, 13):
        cv2.setRNGSeed(seed)
        masks.append(grabcut_select(image, prompt)[0])
    assert masks[0].any()
    for mask in masks[1:]:
        np.testing.assert_array_equal(mask, masks[0])


def test_only_negative_clicks_select_nothing_and_say_why():
    image, _ = red_disk_scene()
    mask, message = grabcut_select(image, SegmentPrompt(points=((20, 20, 0), (380, 280, 0))))
    assert mask.shape == (300, 400) and not mask.any()
    assert "click on the object" in message


def test_clicks_outside_the_photo_are_ignored():
    image, truth = red_disk_scene()
    mask, message = grabcut_select(image, SegmentPrompt(points=((200, 150, 1), (900, 150, 1), (-5, 10, 0))))
    assert message == ""
    assert iou(mask, truth) > 0.85

    nothing, message = grabcut_select(image, SegmentPrompt(points=((900, 150, 1),)))
    assert not nothing.any()
    assert "outside the photo" in message


def test_a_box_over_the_whole_photo_asks_for_background_instead_of_crashing():
    image, truth = red_disk_scene()
    mask, message = grabcut_select(image, SegmentPrompt(box=(0, 0, 400, 300)))
    assert not mask.any()
    assert "background" in message

    # A click on the background gives GrabCut something to learn it from.
    mask, message = grabcut_select(image, SegmentPrompt(box=(0, 0, 400, 300), points=((30, 270, 0),)))
    assert message == ""
    assert mask[150, 200] and not mask[270, 30]


@pytest.mark.parametrize("prompt", [SegmentPrompt(), SegmentPrompt(text="a red ball")])
def test_a_prompt_without_clicks_or_box_is_an_error(prompt):
    image, _ = red_disk_scene()
    with pytest.raises(SegmentError, match="click on the object or drag a box"):
        grabcut_select(image, prompt)
