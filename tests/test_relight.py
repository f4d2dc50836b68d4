"""The light model and the weight-free shading preview."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from core import light as relight
from core.light import LightParams, PreviewCache

AZIMUTHS = (0, 45, 90, 135, 180, 225, 270, 315)
WARM = relight.color_from_temperature(2000)


def disk(size: tuple[int, int], center: tuple[int, int], radius: float) -> np.ndarray:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius**2


def grey(size: tuple[int, int], value: int = 128) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def toward_light(shape: tuple[int, int], azimuth: float) -> np.ndarray:
    """Pixels whose offset from the centre points toward the light (y down), more than 45° off excluded."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    dx, dy = math.cos(math.radians(azimuth)), -math.sin(math.radians(azimuth))
    along = (xx - (width - 1) / 2) * dx + (yy - (height - 1) / 2) * dy
    return along > 0.25 * min(width, height)


# --- LightParams ----------------------------------------------------------------------------


def test_clamped_reports_out_of_range_values():
    params, notes = LightParams.clamped(elevation=120, intensity=-0.5, ambient=1.5, azimuth=30)
    assert (params.elevation, params.intensity, params.ambient) == (90.0, 0.0, 1.0)
    assert "Elevation 120° was clamped to 90°." in notes
    assert any(note.startswith("Intensity -0.5") for note in notes)
    assert any(note.startswith("Ambient 1.5") for note in notes)
    assert len(notes) == 3


def test_azimuth_wraps_without_a_note():
    params, notes = LightParams.clamped(azimuth=370, elevation=20)
    assert params.azimuth == pytest.approx(10.0)
    assert notes == []
    assert LightParams(azimuth=-90).azimuth == pytest.approx(270.0)


def test_in_range_values_give_no_notes_and_constructor_clamps_too():
    assert LightParams.clamped(azimuth=200, elevation=-45, intensity=2, ambient=0.1)[1] == []
    assert LightParams(elevation=-200, color=(300, -5, 10)).elevation == -90.0
    assert LightParams(color=(300, -5, 10)).color == (255, 0, 10)


def test_dict_round_trip_through_json():
    params = LightParams(azimuth=200, elevation=-20, intensity=1.5, color=(255, 180, 100), ambient=0.2)
    restored = LightParams.from_dict(json.loads(json.dumps(params.to_dict())))
    assert restored == params
    with pytest.raises(ValueError, match="brightness"):
        LightParams.from_dict({"brightness": 2})


def test_color_from_temperature():
    warm, white, cool = (relight.color_from_temperature(k) for k in (2000, 6500, 10000))
    assert warm[0] > warm[2] + 100
    assert cool[2] >= cool[0]
    assert all(channel >= 245 for channel in white)
    assert LightParams.from_temperature(2000).color == warm


def test_presets_point_where_they_say():
    assert LightParams.from_preset("left").direction[0] == pytest.approx(-1.0)
    assert LightParams.from_preset("top").direction[1] == pytest.approx(-1.0)
    assert LightParams.from_preset("front").direction[2] == pytest.approx(1.0)
    back = LightParams.from_preset("back-light").direction
    assert back[2] < 0 and back[1] < 0  # behind the subject, above it
    with pytest.raises(ValueError, match="preset"):
        LightParams.from_preset("sideways")


# --- light maps -----------------------------------------------------------------------------


@pytest.mark.parametrize("azimuth", AZIMUTHS)
def test_light_map_is_brighter_on_the_light_side(azimuth):
    params = LightParams(azimuth=azimuth, elevation=20, ambient=0.2)
    light = relight.light_map((120, 80), params)
    near = toward_light(light.shape, azimuth)
    far = toward_light(light.shape, azimuth + 180)
    assert light[near].mean() > light[far].mean() + 0.3


def test_light_map_shape_and_range():
    params = LightParams(azimuth=30, elevation=10, intensity=3.0, ambient=0.3)
    light = relight.light_map((64, 32), params)
    assert light.shape == (32, 64) and light.dtype == np.float32
    assert light.min() >= 0.3 - 1e-6 and light.max() <= 1.0
    dim = relight.light_map((64, 32), LightParams(azimuth=30, elevation=10, intensity=0.0, ambient=0.3))
    assert np.allclose(dim, 0.3)


def test_light_map_is_uniform_for_frontal_light_and_dark_from_behind():
    front = relight.light_map((90, 60), LightParams(azimuth=45, elevation=90))
    assert front.max() - front.min() < 1e-5
    assert front.min() == pytest.approx(1.0)
    behind = relight.light_map((90, 60), LightParams(azimuth=45, elevation=-90, ambient=0.25))
    assert np.allclose(behind, 0.25)


def test_light_map_flattens_as_elevation_rises():
    spreads = [np.ptp(relight.light_map((60, 40), LightParams(azimuth=0, elevation=e))) for e in (0, 30, 60, 85)]
    assert spreads == sorted(spreads, reverse=True)
    assert spreads[0] > 0.6


def test_light_image_is_tinted_light_map():
    size = (40, 30)
    white = relight.light_image(size, LightParams(azimuth=180, elevation=0))
    assert white.shape == (30, 40, 3) and white.dtype == np.uint8
    assert np.array_equal(white[:, :, 0], white[:, :, 2])  # grey
    assert white[:, 0].mean() > white[:, -1].mean() + 100  # left lit
    warm = relight.light_image(size, LightParams(azimuth=180, elevation=0, color=WARM))
    assert (warm[:, :, 0].astype(int) - warm[:, :, 2]).min() >= 0
    assert warm[:, :, 0].mean() > warm[:, :, 2].mean() + 50


# --- normals and shading --------------------------------------------------------------------


def test_pseudo_normals_form_a_dome():
    mask = disk((121, 101), (60, 50), 40)
    normals = relight.pseudo_normals(mask)
    assert normals.shape == (101, 121, 3) and normals.dtype == np.float32
    assert np.allclose(np.linalg.norm(normals, axis=2), 1.0, atol=1e-5)
    assert normals[50, 60, 2] > 0.99
    assert normals[50, 98, 0] > 0.7  # right edge faces right
    assert normals[50, 22, 0] < -0.7  # left edge faces left
    assert normals[12, 60, 1] < -0.7  # top edge faces up (y down)
    assert np.array_equal(normals[~mask], np.tile([0.0, 0.0, 1.0], ((~mask).sum(), 1)))


def test_a_mask_covering_the_whole_photo_is_flat_and_shades_evenly():
    full = np.ones((40, 60), bool)
    normals = relight.pseudo_normals(full)
    assert np.array_equal(normals[:, :, 2], np.ones((40, 60), np.float32))
    out = relight.shade(np.full((40, 60, 3), 100, np.uint8), full, LightParams(azimuth=0, elevation=90, ambient=0.5))
    assert out.std() == 0


def test_pseudo_normals_of_an_empty_mask_face_the_viewer():
    normals = relight.pseudo_normals(np.zeros((10, 12), bool))
    assert np.array_equal(normals[:, :, 2], np.ones((10, 12)))


def test_shade_leaves_outside_bit_identical_and_lights_the_right_side():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 140, 3), dtype=np.uint8)
    mask = disk((140, 100), (70, 50), 35)
    image[mask] = 128
    out = relight.shade(image, mask, LightParams(azimuth=0, elevation=20))
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[~mask], image[~mask])
    right = out[40:60, 80:100].astype(float).mean()
    left = out[40:60, 40:60].astype(float).mean()
    assert right > left + 40


def test_shade_tints_with_the_light_colour():
    mask = disk((80, 80), (40, 40), 30)
    image = grey((80, 80))
    out = relight.shade(image, mask, LightParams(azimuth=0, elevation=60, color=WARM)).astype(float)
    inside = out[mask]
    assert inside[:, 0].mean() > inside[:, 2].mean() + 20
    white = relight.shade(image, mask, LightParams(azimuth=0, elevation=60)).astype(float)[mask]
    assert abs(white[:, 0].mean() - white[:, 2].mean()) < 1


def test_shade_has_no_hard_seam_at_the_edge():
    mask = disk((100, 100), (50, 50), 35)
    image = grey((100, 100), 200)
    out = relight.shade(image, mask, LightParams(azimuth=0, elevation=0, ambient=0.1)).astype(int)
    # The unlit left edge fades from the untouched outside instead of jumping to 10 % brightness.
    row = out[50, 10:30, 0]
    assert np.abs(np.diff(row)).max() < 60
    assert row[-1] < 100


def test_shade_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="mask"):
        relight.shade(grey((20, 10)), np.zeros((20, 10), bool), LightParams())


# --- preview --------------------------------------------------------------------------------


def test_preview_is_bounded_by_max_side():
    image = grey((300, 200))
    out = relight.preview(image, None, LightParams(), max_side=150)
    assert out.shape == (100, 150, 3) and out.dtype == np.uint8
    small = relight.preview(grey((60, 40)), None, LightParams(), max_side=150)
    assert small.shape == (40, 60, 3)


def test_preview_with_mask_shades_the_subject_and_lights_the_scene():
    image = grey((200, 160), 180)
    mask = disk((200, 160), (100, 80), 50)
    params = LightParams(azimuth=180, elevation=10, ambient=0.2)
    out = relight.preview(image, mask, params, max_side=100).astype(float)
    assert out.shape == (80, 100, 3)
    assert out[:, :10].mean() > out[:, -10:].mean() + 50  # scene lit from the left
    subject_left, subject_right = out[40, 30], out[40, 70]
    assert subject_left.mean() > subject_right.mean() + 50
    across_right_edge = out[40, 60:85, 0]  # unlit side: the shading fades in, no step
    assert np.abs(np.diff(across_right_edge)).max() < 25
    plain = relight.preview(image, None, params, max_side=100).astype(float)
    assert np.abs(out - plain)[25:55, 35:65].mean() > 5  # the subject is shaded by its shape


def test_previews_differ_by_azimuth_and_cache_matches_one_off():
    image = np.random.default_rng(1).integers(50, 200, (90, 120, 3), dtype=np.uint8)
    mask = disk((120, 90), (60, 45), 30)
    cache = PreviewCache.build(image, mask, max_side=100)
    renders = [cache.render(LightParams(azimuth=a, elevation=15)) for a in (0, 90, 180, 270)]
    for i, first in enumerate(renders):
        for second in renders[i + 1 :]:
            assert np.abs(first.astype(int) - second).mean() > 5
    assert np.array_equal(renders[0], relight.preview(image, mask, LightParams(azimuth=0, elevation=15), max_side=100))


# --- detail transfer ------------------------------------------------------------------------


def high_pass(image: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    pixels = image.astype(np.float32)
    return pixels - cv2.GaussianBlur(pixels, (0, 0), sigma)


def test_transfer_detail_keeps_texture_and_lighting():
    size = (160, 120)
    rng = np.random.default_rng(2)
    texture = rng.normal(0, 25, (120, 160, 1)).astype(np.float32)
    original = np.clip(128 + texture, 0, 255).astype(np.uint8).repeat(3, axis=2)
    mask = disk(size, (80, 60), 50)
    # A relit image that got the lighting right but lost the texture: a smooth gradient.
    gradient = np.linspace(60, 220, 160, dtype=np.float32)[None, :, None]
    relit = np.broadcast_to(gradient, (120, 160, 3)).round().astype(np.uint8).copy()
    relit[~mask] = rng.integers(0, 256, ((~mask).sum(), 3), dtype=np.uint8)

    out = relight.transfer_detail(relit, original, mask, radius=6.0)

    assert np.array_equal(out[~mask], relit[~mask])
    core = disk(size, (80, 60), 35)
    detail_out, detail_original = high_pass(out)[core].ravel(), high_pass(original)[core].ravel()
    assert np.corrcoef(detail_out, detail_original)[0, 1] > 0.9
    assert np.corrcoef(high_pass(relit)[core].ravel(), detail_original)[0, 1] < 0.1  # relit had none
    low_out = cv2.GaussianBlur(out.astype(np.float32), (0, 0), 8)[core]
    low_relit = cv2.GaussianBlur(relit.astype(np.float32), (0, 0), 8)[core]
    assert np.abs(low_out - low_relit).mean() < 4
    assert out[50:70, 40:55].mean() < out[50:70, 105:120].mean() - 50  # the gradient's direction survives


def test_transfer_detail_checks_sizes():
    with pytest.raises(ValueError, match="must match"):
        relight.transfer_detail(grey((20, 10)), grey((10, 20)), np.zeros((10, 20), bool))
