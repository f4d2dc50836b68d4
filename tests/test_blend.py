"""Blending generated pixels back into a photo: pastes, Poisson cloning, colour matching, seams."""
from __future__ import annotations

import numpy as np
import pytest

from core import blend
from core.masks import feather, grow

SHAPE = (160, 200)


def noise(seed: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Random uint8 RGB noise: any drift in a pixel that should be kept shows."""
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def scene(seed: int = 0, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A photo-like image: smooth colour gradients plus mild grain, never near 0 or 255."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([60 + 80 * xx / width, 70 + 60 * yy / height, 150 - 50 * xx / width], axis=-1)
    grain = np.random.default_rng(seed).normal(0, 4, (*shape, 3))
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def shifted(image: np.ndarray, offset: tuple[int, int, int]) -> np.ndarray:
    return np.clip(image.astype(int) + offset, 0, 255).astype(np.uint8)


def disk(
    center: tuple[int, int] = (100, 80), radius: float = 40, shape: tuple[int, int] = SHAPE
) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius**2


def hard_paste(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    result = original.copy()
    result[mask] = generated[mask]
    return result


def ring_lab(image: np.ndarray, mask: np.ndarray, width: int = 16) -> np.ndarray:
    ring = grow(mask, width) & ~mask
    return blend.to_lab(image[ring])


# --- feather_paste ---------------------------------------------------------------------------


def test_feather_paste_keeps_alpha_zero_bit_identical_and_takes_alpha_one():
    original, generated = noise(1), noise(2)
    alpha = feather(disk(), inner=4, outer=6)
    result = blend.feather_paste(original, generated, alpha)
    assert np.array_equal(result[alpha == 0], original[alpha == 0])
    assert np.array_equal(result[alpha == 1], generated[alpha == 1])
    assert result.dtype == np.uint8 and result.shape == original.shape


def test_feather_paste_half_alpha_is_the_rounded_mean():
    original, generated = noise(3), noise(4)
    alpha = np.full(SHAPE, 0.5, dtype=np.float32)
    result = blend.feather_paste(original, generated, alpha).astype(float)
    mean = (original.astype(float) + generated) / 2
    assert np.abs(result - mean).max() <= 0.5


# --- poisson_paste ---------------------------------------------------------------------------


def test_poisson_paste_keeps_everything_outside_the_mask_bit_identical():
    original, generated = noise(5), noise(6)
    mask = disk()
    result = blend.poisson_paste(original, generated, mask)
    assert np.array_equal(result[~mask], original[~mask])
    assert not np.array_equal(result[mask], original[mask])


def test_poisson_paste_with_alpha_keeps_alpha_zero_bit_identical():
    original, generated = noise(7), noise(8)
    mask = disk()
    alpha = feather(mask, inner=3, outer=5)
    result = blend.poisson_paste(original, generated, mask, alpha=alpha)
    assert np.array_equal(result[alpha == 0], original[alpha == 0])
    assert not np.array_equal(result[mask], original[mask])


def test_poisson_paste_hides_a_colour_offset_that_a_hard_paste_shows():
    original = scene(0)
    mask = disk()
    # The generator's colour cast everywhere, plus new detail inside the mask.
    generated = shifted(original, (40, 0, -25))
    detail = np.random.default_rng(9).normal(0, 8, (int(mask.sum()), 3)).astype(int)
    generated[mask] = np.clip(generated[mask].astype(int) + detail, 0, 255)

    hard_seam = blend.seam_delta_e(hard_paste(original, generated, mask), original, mask)
    result = blend.poisson_paste(original, generated, mask)
    poisson_seam = blend.seam_delta_e(result, original, mask)
    assert hard_seam > 15
    assert poisson_seam < hard_seam / 10
    # The generated detail survives: the clone shifts colours, it does not copy the original.
    assert np.abs(result[mask].astype(int) - original[mask]).mean() > 4


def test_poisson_paste_removes_an_object_at_the_image_edge():
    """The mask touches the left edge; the edge must not pull the removed object back in."""
    background = scene(1)
    blob = disk(center=(0, 80), radius=45)
    original = background.copy()
    original[blob] = (230, 20, 20)
    mask = grow(blob, 6)
    generated = shifted(background, (30, 0, -10))

    result = blend.poisson_paste(original, generated, mask)
    error = np.abs(result.astype(int) - background)
    assert error[mask].mean() < 2
    assert error[mask[:, 0], 0].mean() < 2
    assert np.array_equal(result[~mask], original[~mask])


def test_poisson_paste_places_a_mask_reaching_beyond_the_mirror_padding():
    """The mask reaches 301 px in from the top edge, farther than the 256 px mirrored beyond it;
    the generated content must still land where it was, not a row off."""
    shape = (420, 200)
    original = scene(10, shape)
    generated = shifted(original, (30, 0, -10))
    mask = np.zeros(shape, dtype=bool)
    mask[:301, 50:150] = True
    result = blend.poisson_paste(original, generated, mask)
    assert np.abs(result[mask].astype(int) - original[mask]).mean() < 1.5


def test_poisson_paste_handles_a_mask_in_a_corner_and_a_one_pixel_line():
    original, generated = scene(2), shifted(scene(2), (25, 0, 0))
    corner = np.zeros(SHAPE, dtype=bool)
    corner[:30, :30] = True
    line = np.zeros(SHAPE, dtype=bool)
    line[80, 20:180] = True
    for mask in (corner, line):
        result = blend.poisson_paste(original, generated, mask)
        assert np.array_equal(result[~mask], original[~mask])
        assert blend.seam_delta_e(result, original, mask) < 2


def test_poisson_paste_empty_mask_returns_the_original_and_full_mask_the_generated():
    original, generated = noise(10), noise(11)
    empty = np.zeros(SHAPE, dtype=bool)
    result = blend.poisson_paste(original, generated, empty)
    assert np.array_equal(result, original) and result is not original
    assert np.array_equal(blend.poisson_paste(original, generated, ~empty), generated)


def test_poisson_paste_leaves_the_callers_mask_alone():
    """OpenCV's seamlessClone writes into the mask it is given."""
    mask = disk()
    before = mask.copy()
    blend.poisson_paste(noise(12), noise(13), mask)
    assert np.array_equal(mask, before)


# --- match_colors ----------------------------------------------------------------------------


def test_match_colors_matches_the_ring_and_removes_the_seam():
    original = scene(3)
    mask = disk()
    generated = shifted(original, (30, 0, 0))
    alpha = feather(mask, inner=0, outer=6)

    matched = blend.match_colors(generated, original, mask)
    matched_ring, original_ring = ring_lab(matched, mask), ring_lab(original, mask)
    assert blend.delta_e76(matched_ring.mean(axis=0), original_ring.mean(axis=0)) < 0.5
    np.testing.assert_allclose(matched_ring.std(axis=0), original_ring.std(axis=0), rtol=0.05, atol=0.2)

    seam_before = blend.seam_delta_e(blend.feather_paste(original, generated, alpha), original, mask)
    seam_after = blend.seam_delta_e(blend.feather_paste(original, matched, alpha), original, mask)
    assert seam_before > 8
    assert seam_after < seam_before / 5


def test_match_colors_changes_nothing_beyond_the_ring():
    original, generated = scene(4), noise(14)
    mask = disk()
    matched = blend.match_colors(generated, original, mask, ring_width=10)
    beyond = ~grow(mask, 10)
    assert np.array_equal(matched[beyond], generated[beyond])
    assert not np.array_equal(matched[mask], generated[mask])


def test_match_colors_without_a_ring_returns_the_generated_image():
    generated = noise(15)
    matched = blend.match_colors(generated, noise(16), np.ones(SHAPE, dtype=bool))
    assert np.array_equal(matched, generated) and matched is not generated


def test_match_colors_clamps_the_contrast_scale():
    """A low-contrast generated ring against a contrasty original would be stretched ~10×; 2× only."""
    grey = np.random.default_rng(17).integers(40, 201, SHAPE)
    original = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    generated = np.repeat((grey // 10 + 110)[..., None], 3, axis=2).astype(np.uint8)
    mask = disk()
    generated_std = ring_lab(generated, mask)[:, 0].std()
    matched = blend.match_colors(generated, original, mask)
    assert ring_lab(original, mask)[:, 0].std() > 8 * generated_std
    assert ring_lab(matched, mask)[:, 0].std() == pytest.approx(2 * generated_std, rel=0.1)


def test_match_colors_flat_ring_only_shifts_the_mean():
    original = np.full((*SHAPE, 3), 100, dtype=np.uint8)
    generated = np.full((*SHAPE, 3), 140, dtype=np.uint8)
    mask = disk()
    matched = blend.match_colors(generated, original, mask)
    assert np.abs(matched[grow(mask, 16)].astype(int) - 100).max() <= 1


# --- seam_delta_e ----------------------------------------------------------------------------


def test_seam_delta_e_is_near_zero_for_the_original_pasted_into_itself():
    """Not exactly 0: the two rings are different pixels of the same smooth, grainy photo."""
    original = scene(9)
    assert blend.seam_delta_e(original, original, disk()) < 0.5
    flat = np.full((*SHAPE, 3), (90, 140, 60), dtype=np.uint8)
    assert blend.seam_delta_e(flat, flat, disk()) == 0.0


def test_seam_delta_e_is_large_for_a_very_different_fill():
    original = scene(6)
    mask = disk()
    result = hard_paste(original, np.full_like(original, (255, 255, 0)), mask)
    assert blend.seam_delta_e(result, original, mask) > 40


def test_seam_delta_e_is_zero_without_an_edge():
    original, result = scene(7), noise(19)
    assert blend.seam_delta_e(result, original, np.zeros(SHAPE, dtype=bool)) == 0.0
    assert blend.seam_delta_e(result, original, np.ones(SHAPE, dtype=bool)) == 0.0


def test_delta_e76_is_the_euclidean_distance_in_lab():
    assert blend.delta_e76([50.0, 10.0, -10.0], [50.0, 13.0, -6.0]) == pytest.approx(5.0)
    white, black = blend.to_lab(np.array([[255, 255, 255], [0, 0, 0]], dtype=np.uint8))
    assert white[0] == pytest.approx(100.0, abs=0.01) and black[0] == pytest.approx(0.0, abs=0.01)


# --- blend -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", blend.BLEND_MODES)
@pytest.mark.parametrize("color_match", [False, True])
def test_blend_keeps_alpha_zero_pixels_bit_identical(mode, color_match):
    original, generated = noise(20), noise(21)
    mask = disk()
    alpha = feather(mask, inner=3, outer=5)
    result, seam = blend.blend(original, generated, mask, alpha, mode=mode, color_match=color_match)
    assert np.array_equal(result[alpha == 0], original[alpha == 0])
    assert isinstance(seam, float) and seam >= 0
    assert result.dtype == np.uint8 and result.shape == original.shape


def test_blend_colour_matched_poisson_leaves_less_seam_than_a_plain_feather():
    original = scene(8)
    mask = disk()
    generated = shifted(original, (35, -10, 0))
    alpha = feather(mask, inner=2, outer=4)
    _, plain = blend.blend(original, generated, mask, alpha, mode="feather", color_match=False)
    _, matched = blend.blend(original, generated, mask, alpha, mode="poisson", color_match=True)
    assert matched < plain / 5


@pytest.mark.parametrize(
    "generated, mask, alpha",
    [
        (noise(22, (160, 199)), disk(), feather(disk())),
        (noise(22), disk(shape=(159, 200)), feather(disk())),
        (noise(22), disk(), feather(disk(shape=(160, 201)))),
    ],
    ids=["generated", "mask", "alpha"],
)
def test_blend_refuses_mismatched_sizes(generated, mask, alpha):
    with pytest.raises(ValueError, match="but the original is 200×160"):
        blend.blend(noise(23), generated, mask, alpha)


def test_blend_refuses_bad_inputs():
    original, mask = noise(24), disk()
    alpha = feather(mask)
    with pytest.raises(ValueError, match="Unknown blend mode"):
        blend.blend(original, original, mask, alpha, mode="median")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blend.blend(original, original, mask, alpha * 2)
    with pytest.raises(ValueError, match="uint8"):
        blend.blend(original.astype(np.float32), original, mask, alpha)
