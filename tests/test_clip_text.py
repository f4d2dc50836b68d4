"""Scoring candidate masks against a text with the tiny random CLIP, through the real loaders.

The tiny model's similarities mean nothing; these tests check what does not depend on weights:
shapes, norms, which pixels reach the model, the ranking contract, and loading errors.
"""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from PIL import Image

from core.engines.base import ModelLoadError
from core.engines.clip_text import ClipScorer
from core.segment import CandidateSet, top_k_by_text

WIDTH, HEIGHT = 160, 120


@pytest.fixture(scope="module")
def scorer(tiny_models) -> ClipScorer:
    return ClipScorer.load(tiny_models["clip"])


def noise_photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def rectangle(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def disk_in_box(x0: int, y0: int, size: int) -> np.ndarray:
    """A disk inscribed in the square box (x0, y0, x0 + size, y0 + size)."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    centre = size / 2
    return (xx + 0.5 - x0 - centre) ** 2 + (yy + 0.5 - y0 - centre) ** 2 <= centre**2


def candidates_of(*masks: np.ndarray) -> CandidateSet:
    return CandidateSet.from_masks(np.stack(masks), None, (WIDTH, HEIGHT))


def embed(scorer: ClipScorer, pixels: np.ndarray, candidates: CandidateSet, **kwargs) -> np.ndarray:
    return scorer.embed_candidates(Image.fromarray(pixels), candidates, **kwargs)


def test_load_gives_a_named_scorer_with_the_models_temperature(scorer, tiny_models):
    assert scorer.model_id == str(tiny_models["clip"])
    assert isinstance(scorer.logit_scale, float)
    assert scorer.logit_scale == pytest.approx(math.exp(scorer.model.config.logit_scale_init_value))


def test_candidate_embeddings_are_unit_rows_and_small_candidates_are_nan(scorer):
    candidates = candidates_of(
        rectangle(0, 0, 40, 30),
        disk_in_box(60, 20, 50),
        rectangle(120, 90, 130, 100),  # 100 pixels: not more than min_area
        rectangle(120, 100, 137, 106),  # 102 pixels
        rectangle(10, 60, 150, 70),
    )
    embeddings = embed(scorer, noise_photo(), candidates)
    assert embeddings.shape == (5, scorer.model.config.projection_dim)
    assert embeddings.dtype == np.float32
    assert np.isnan(embeddings[2]).all()
    scorable = embeddings[[0, 1, 3, 4]]
    assert np.isfinite(scorable).all()
    np.testing.assert_allclose(np.linalg.norm(scorable, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(scorable[0], scorable[1])  # different crops, different embeddings

    stricter = embed(scorer, noise_photo(), candidates, min_area=500)
    assert np.isnan(stricter[[2, 3]]).all() and np.isfinite(stricter[[0, 1, 4]]).all()


def test_no_candidates_give_no_rows(scorer):
    empty = CandidateSet.from_masks(np.zeros((0, HEIGHT, WIDTH), bool), [], (WIDTH, HEIGHT))
    assert embed(scorer, noise_photo(), empty).shape == (0, scorer.model.config.projection_dim)


def test_the_work_image_must_match_the_candidates_size(scorer):
    candidates = candidates_of(rectangle(0, 0, 40, 30))
    with pytest.raises(ValueError, match="work image is 80×60"):
        scorer.embed_candidates(Image.new("RGB", (80, 60)), candidates)


def test_identical_crops_get_identical_embeddings(scorer):
    first, second = disk_in_box(20, 10, 40), disk_in_box(100, 60, 40)
    pixels = noise_photo()
    pixels[second] = pixels[first]  # the same object in another place, on other surroundings
    candidates = candidates_of(first, second, rectangle(0, 0, 40, 30))
    embeddings = embed(scorer, pixels, candidates, batch_size=2)  # the two land in one batch
    np.testing.assert_allclose(embeddings[0], embeddings[1], rtol=0, atol=1e-6)

    one_by_one = embed(scorer, pixels, candidates, batch_size=1)
    np.testing.assert_allclose(one_by_one, embeddings, rtol=0, atol=1e-6)


def test_pixels_outside_a_candidates_mask_do_not_reach_it(scorer):
    candidate = disk_in_box(50, 30, 60)
    candidates = candidates_of(candidate)
    pixels = noise_photo(0)
    before = embed(scorer, pixels, candidates)[0]

    outside_changed = np.where(candidate[:, :, None], pixels, noise_photo(1))  # incl. the box's corners
    np.testing.assert_allclose(embed(scorer, outside_changed, candidates)[0], before, rtol=0, atol=1e-6)

    inside_changed = np.where(candidate[:, :, None], noise_photo(2), pixels)
    assert not np.allclose(embed(scorer, inside_changed, candidates)[0], before, atol=1e-3)


def test_a_long_thin_candidate_is_seen_whole(scorer):
    # CLIP's processor centre-crops a square; the candidate is padded to a square first, so the
    # ends of a 140×10 bar still count.
    bar = rectangle(10, 50, 150, 60)
    candidates = candidates_of(bar)
    pixels = noise_photo(0)
    before = embed(scorer, pixels, candidates)[0]
    ends_changed = pixels.copy()
    ends_changed[50:60, 10:40] = 255 - ends_changed[50:60, 10:40]
    assert not np.allclose(embed(scorer, ends_changed, candidates)[0], before, atol=1e-3)


def test_text_embeddings_are_unit_vectors_that_depend_on_the_text(scorer):
    ball = scorer.embed_text("a red ball")
    dog = scorer.embed_text("a dog on the grass")
    assert ball.shape == (scorer.model.config.projection_dim,) and ball.dtype == np.float32
    assert np.linalg.norm(ball) == pytest.approx(1.0, rel=1e-5)
    assert not np.allclose(ball, dog)


def test_score_and_top_k_rank_the_scorable_candidates(scorer):
    masks = [rectangle(0, 0, 40, 30), disk_in_box(60, 20, 50), rectangle(120, 90, 125, 95)]
    masks += [rectangle(x, 70, x + 25, 110) for x in range(0, 150, 30)]
    candidates = candidates_of(*masks)
    embeddings = embed(scorer, noise_photo(), candidates)
    similarities = scorer.score(embeddings, "a red ball")

    assert similarities.shape == (len(candidates),)
    assert similarities[2] == -np.inf  # too small to score
    finite = np.flatnonzero(np.isfinite(similarities))
    assert finite.tolist() == [0, 1, 3, 4, 5, 6, 7]
    assert np.all(np.abs(similarities[finite]) <= 1.0 + 1e-6)
    np.testing.assert_allclose(
        similarities[finite], embeddings[finite] @ scorer.embed_text("a red ball"), rtol=1e-5, atol=1e-6
    )

    order, probabilities = top_k_by_text(similarities, scorer.logit_scale, 3)
    assert order.tolist() == np.argsort(-similarities)[:3].tolist()
    assert 2 not in order.tolist()
    assert np.all(np.diff(probabilities) <= 0) and probabilities.sum() < 1.0

    _, all_probabilities = top_k_by_text(similarities, scorer.logit_scale, len(candidates))
    assert all_probabilities.sum() == pytest.approx(1.0)
    assert all_probabilities[-1] == 0.0  # the unscorable candidate ranks last, with nothing


def test_a_missing_directory_is_a_model_load_error(tmp_path):
    missing = tmp_path / "clip-vit-base-patch32"
    with pytest.raises(ModelLoadError) as raised:
        ClipScorer.load(str(missing))
    assert str(missing) in str(raised.value)
    assert "INPAINT_STUDIO_MODEL_CLIP" in str(raised.value)


def test_a_missing_tokenizer_is_caught_although_transformers_loads_a_dummy(tiny_models, tmp_path):
    from transformers import CLIPProcessor

    copy = tmp_path / "clip-without-tokenizer"
    shutil.copytree(tiny_models["clip"], copy)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (copy / name).unlink(missing_ok=True)

    # The trap: transformers loads this without complaint, with a tokenizer that knows no words.
    dummy = CLIPProcessor.from_pretrained(str(copy)).tokenizer
    assert len(dummy) == 2

    with pytest.raises(ModelLoadError, match="tokenizer") as raised:
        ClipScorer.load(str(copy))
    assert str(copy) in str(raised.value)
    assert "INPAINT_STUDIO_MODEL_CLIP" in str(raised.value)
