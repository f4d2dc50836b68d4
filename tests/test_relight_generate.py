"""Relighting with the tiny IC-Light through the real loader: sizes, seeds, the background kept."""
from __future__ import annotations

import numpy as np
import pytest

from core import masks
from core.engines.base import InpaintError
from core.light import LightParams
from core.operations.relight import RelightParams, relight

SIZE = (200, 150)


@pytest.fixture(scope="module")
def engine(tiny_models):
    from core.engines.iclight import ICLightEngine

    return ICLightEngine.load(tiny_models["iclight_base"], tiny_models["iclight"])


def photo() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)


def subject() -> np.ndarray:
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    return (xx - 90) ** 2 + (yy - 70) ** 2 <= 40**2


FAST = dict(steps=3, variants=2, seed=5, prompt="warm sunlight")


def test_subject_mode_keeps_every_pixel_beyond_the_soft_edge(engine):
    result = relight(photo(), subject(), LightParams.from_preset("left"), RelightParams(**FAST, mask_blur=4), engine)
    band = masks.grow(subject(), 4)
    for image in result.images:
        out = np.asarray(image)
        assert out.shape == photo().shape
        assert np.array_equal(out[~band], photo()[~band])
        assert (out[subject()] != photo()[subject()]).any()
    assert result.seeds == [5, 6] and result.params.seed == 5
    assert set(result.timings) >= {"prepare", "generate", "paste", "total"}
    again = relight(photo(), subject(), LightParams.from_preset("left"), RelightParams(**FAST, mask_blur=4), engine)
    assert np.array_equal(np.asarray(again.images[1]), np.asarray(result.images[1]))


def test_whole_mode_relights_the_background_too(engine):
    result = relight(photo(), subject(), LightParams.from_preset("top"), RelightParams(**FAST, mode="whole"), engine)
    out = np.asarray(result.images[0])
    assert out.shape == photo().shape
    assert (out[~subject()] != photo()[~subject()]).mean() > 0.5


def test_the_light_direction_is_part_of_the_generation(engine):
    left = relight(photo(), subject(), LightParams.from_preset("left"), RelightParams(**FAST), engine)
    right = relight(photo(), subject(), LightParams.from_preset("right"), RelightParams(**FAST), engine)
    assert not np.array_equal(np.asarray(left.images[0]), np.asarray(right.images[0]))


def test_detail_transfer_restores_the_subjects_texture(engine):
    with_detail = relight(photo(), subject(), LightParams(), RelightParams(**FAST, detail_transfer=True), engine)
    without = relight(photo(), subject(), LightParams(), RelightParams(**FAST, detail_transfer=False), engine)
    inside = subject() & ~masks.grow(~subject(), 8)  # away from the edge

    def high_pass(pixels: np.ndarray) -> np.ndarray:
        import cv2

        pixels = pixels.astype(np.float32)
        return (pixels - cv2.GaussianBlur(pixels, (0, 0), 3))[inside].ravel()

    original = high_pass(photo())
    kept = np.corrcoef(high_pass(np.asarray(with_detail.images[0])), original)[0, 1]
    lost = np.corrcoef(high_pass(np.asarray(without.images[0])), original)[0, 1]
    assert kept > 0.9 and kept > lost


def test_no_subject_or_a_full_mask_are_clear_errors(engine):
    with pytest.raises(InpaintError, match="No subject"):
        relight(photo(), np.zeros((SIZE[1], SIZE[0]), bool), LightParams(), RelightParams(**FAST), engine)
    with pytest.raises(InpaintError, match="whole photo"):
        relight(photo(), np.ones((SIZE[1], SIZE[0]), bool), LightParams(), RelightParams(**FAST), engine)
    with pytest.raises(InpaintError, match="Denoise"):
        RelightParams(denoise=0)


def test_a_high_resolution_second_pass_regenerates_each_variant_larger(engine):
    calls = []
    original = engine.relight

    def spy(foreground, light, *args, **kwargs):
        calls.append((foreground.size, light.size, kwargs["seeds"], kwargs["denoise"]))
        return original(foreground, light, *args, **kwargs)

    seen = []
    params = RelightParams(**FAST, highres_scale=1.5, highres_denoise=0.5)
    engine.relight = spy
    try:
        result = relight(photo(), subject(), LightParams.from_preset("left"), params, engine,
                         progress=lambda done, total: seen.append((done, total)))
    finally:
        del engine.relight
    first, *second = calls
    assert first[2] == [5, 6] and first[3] == 0.9
    assert [call[2] for call in second] == [[5], [6]] and all(call[3] == 0.5 for call in second)
    for size, light_size, _, _ in second:
        assert size == light_size and all(side % 8 == 0 for side in size)
        assert size[0] == pytest.approx(first[0][0] * 1.5, abs=8) and size[1] == pytest.approx(first[0][1] * 1.5, abs=8)
    band = masks.grow(subject(), params.mask_blur)
    assert np.array_equal(np.asarray(result.images[0])[~band], photo()[~band])
    assert "highres" in result.timings and any("Second pass" in note for note in result.notes)
    totals = {total for _, total in seen}
    assert len(totals) == 1 and seen[-1][0] == seen[-1][1]  # one bar over all three passes, ends full
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_high_resolution_settings_are_checked():
    with pytest.raises(InpaintError, match="high-resolution pass scale"):
        RelightParams(highres_scale=3)
    with pytest.raises(InpaintError, match="high-resolution pass denoise"):
        RelightParams(highres_denoise=0)


def test_metadata_names_the_light_and_the_seed(engine):
    result = relight(photo(), subject(), LightParams.from_preset("top"), RelightParams(**FAST), engine)
    meta = result.metadata(1)
    assert meta["action"] == "relight" and meta["params"]["seed"] == 6 and meta["params"]["variants"] == 1
    assert meta["light"]["azimuth"] == 90 and meta["model"] == engine.model_id
