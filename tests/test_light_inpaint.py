"""Lighting-aware inpainting: the lit start, its use by the engine, and the photo kept outside."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core import masks
from core.engines.base import InpaintError
from core.engines.opencv_inpaint import OpenCVInpaint
from core.light import LightParams
from core.operations.inpaint import InpaintParams
from core.operations.lit_fill import light_aware_inpaint, light_gain, lit_start
from tests.helpers import SD15, FakeEngine, disk, noise_photo

SIZE = (400, 300)


def grey(value: int = 128) -> np.ndarray:
    return np.full((SIZE[1], SIZE[0], 3), value, np.uint8)


def region() -> np.ndarray:
    return disk(SIZE, (200, 150), 80)


@pytest.mark.parametrize("preset, bright, dark", [
    ("left", (150, 125), (150, 275)), ("right", (150, 275), (150, 125)),
    ("top", (75, 200), (225, 200)), ("bottom", (225, 200), (75, 200)),
])
def test_the_start_is_lit_from_the_lights_side_and_the_outside_is_untouched(preset, bright, dark):
    image = grey()
    out = lit_start(image, region(), LightParams.from_preset(preset, ambient=0.2))
    assert out[bright].mean() > out[dark].mean() + 20  # (y, x)
    assert np.array_equal(out[~region()], image[~region()])


def test_the_gain_keeps_the_regions_mean_brightness_and_takes_the_colour():
    gain = light_gain(region(), LightParams.from_preset("left"))
    assert gain[region()].mean() == pytest.approx(1.0, abs=0.02)
    assert np.all(gain[~masks.grow(region(), 2) & ~disk(SIZE, (200, 150), 200)] == 1.0)
    warm = light_gain(region(), LightParams.from_temperature(2500, azimuth=0, elevation=90))
    red, _, blue = warm[region()].mean(axis=0)
    assert red > 1.1 and blue < 0.9  # warmer, not darker on average
    stronger = light_gain(region(), LightParams.from_preset("left", intensity=2.0))
    assert stronger[region()].mean() > gain[region()].mean() * 1.3


def test_frontal_light_shades_the_start_evenly():
    out = lit_start(grey(), region(), LightParams(azimuth=0, elevation=90, ambient=0.3)).astype(int)
    inside = region() & ~masks.grow(~region(), 8)
    assert out[inside].std() < 1.0


def test_a_removal_start_fills_from_the_surroundings_before_shading():
    image = grey(60)
    image[region()] = (250, 20, 20)  # a red object to replace
    current = lit_start(image, region(), LightParams.from_preset("left"))
    removed = lit_start(image, region(), LightParams.from_preset("left"), start="removal")
    inside = region() & ~masks.grow(~region(), 10)
    assert current[inside][:, 0].mean() > 150  # still the red object, shaded
    assert removed[inside][:, 0].mean() < 110  # the surroundings' grey, shaded
    assert np.array_equal(removed[~region()], image[~region()])
    with pytest.raises(InpaintError, match="start from"):
        lit_start(image, region(), LightParams(), start="sky")


def test_the_engine_starts_from_the_lit_region_and_the_photo_is_kept_outside():
    photo = Image.fromarray(grey(), "RGB")
    engine = FakeEngine()
    params = InpaintParams(prompt="a stone", strength=0.7, steps=4, seed=3, mask_blur=4)
    result = light_aware_inpaint(photo, region(), LightParams.from_preset("right", ambient=0.2), params, engine)
    start = np.asarray(engine.requests[0].image).astype(int)
    h, w = start.shape[:2]
    assert start[h // 2, int(w * 0.75)].mean() > start[h // 2, int(w * 0.25)].mean() + 20
    band = masks.grow(region(), 4)
    out = np.asarray(result.images[0])
    assert np.array_equal(out[~band], grey()[~band])
    meta = result.metadata(0)
    assert meta["light"]["azimuth"] == 0 and meta["start"] == "current" and meta["params"]["strength"] == 0.7
    assert any("Lighting-aware" in note for note in result.notes)


def test_strength_one_and_engines_without_strength_are_refused():
    photo = Image.fromarray(grey(), "RGB")
    with pytest.raises(InpaintError, match="strength below 1"):
        light_aware_inpaint(photo, region(), LightParams(), InpaintParams(strength=1.0), FakeEngine())
    with pytest.raises(InpaintError, match="diffusion engine"):
        light_aware_inpaint(photo, region(), LightParams(), InpaintParams(strength=0.5), OpenCVInpaint("telea"))


def test_inverted_mask_lights_the_background(tiny_models):
    from core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"])
    photo = noise_photo(SIZE, seed=4)
    params = InpaintParams(prompt="a wall", strength=0.6, steps=3, seed=1, variants=2, mask_blur=4, invert_mask=True)
    result = light_aware_inpaint(photo, region(), LightParams.from_preset("top"), params, engine)
    keep = region() & ~masks.grow(~region(), 4)
    for image in result.images:
        out = np.asarray(image)
        assert out.shape == (SIZE[1], SIZE[0], 3)
        assert np.array_equal(out[keep], np.asarray(photo)[keep])  # the subject is kept
        assert (out[~region()] != np.asarray(photo)[~region()]).any()
    assert result.seeds == [1, 2]
