"""The selection service with SAM 2.1 (click refinement) and SAM 3 (concepts): which engine answers,
the per-photo embedding cache, Bigger / Smaller over SAM's proposals, fallbacks, and recipes.

The tiny random models' masks are noise; what is checked is the routing and the contracts (masks at
the photo's size, ranked instances, one embedding per photo, the fallback named)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.engines.fastsam import FastSAMEngine
from core.engines.sam import SamEngine
from core.engines.sam2 import Sam2Engine
from core.engines.sam3 import Sam3Engine
from core.images import content_hash
from core.recipe import Recipe, Selection, select_region
from core.segment import SegmentError, SegmentPrompt
from core.segmenter import Segmenter
from tests.helpers import manager_with
from tests.tiny_sam2 import build_sam2
from tests.tiny_sam3 import build_sam3

SIZE = (240, 160)  # not square, not the tiny models' input size


def photo() -> Image.Image:
    image = Image.new("RGB", SIZE, (60, 120, 60))
    ImageDraw.Draw(image).ellipse((70, 40, 170, 120), fill=(220, 30, 30))
    return image


@pytest.fixture(scope="module")
def sam2(tmp_path_factory) -> Sam2Engine:
    return Sam2Engine.load(build_sam2(tmp_path_factory.mktemp("sam2")))


@pytest.fixture(scope="module")
def sam3(tmp_path_factory) -> Sam3Engine:
    return Sam3Engine.load(build_sam3(tmp_path_factory.mktemp("sam3")))


class Counting:
    """Counts the calls of an engine's ``embed`` (its image encoder)."""

    def __init__(self, engine) -> None:
        self.engine, self.embeds = engine, 0
        self.model_id = engine.model_id

    def embed(self, image):
        self.embeds += 1
        return self.engine.embed(image)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_clicks_refined_by_sam2_embed_once_and_step_through_its_proposals(sam2):
    counted = Counting(sam2)
    segmenter = Segmenter(manager_with(sam2=counted))
    image, image_id = photo(), content_hash(photo())
    first = segmenter.segment(image, image_id, SegmentPrompt(points=((120, 80, 1),), backend="sam"))
    assert first.backend == "sam2" and not first.fallback
    assert first.levels == 3 and 0 <= first.level < 3
    assert first.mask is None or first.mask.shape == (SIZE[1], SIZE[0])
    proposals = sam2.proposals(sam2.embed(image), [(120, 80, 1)], None)
    best = int(np.argmax([score for _, score in proposals]))
    assert first.level == best
    # Bigger and Smaller move through the proposals, smallest first, and stop at the ends.
    for step in (-3, -1, 1, 3):
        stepped = segmenter.segment(image, image_id, SegmentPrompt(points=((120, 80, 1),), backend="sam", step=step))
        level = min(max(best + step, 0), 2)
        assert stepped.level == level and stepped.scores == [pytest.approx(proposals[level][1], abs=1e-5)]
    assert counted.embeds == 1  # one image encoder run for five answers
    assert "embed" not in stepped.timings and "decode" in stepped.timings


def test_sam_vit_base_stays_available_as_a_setting(tiny_models, sam2):
    sam = SamEngine.load(tiny_models["sam"])
    segmenter = Segmenter(manager_with(sam2=sam2, sam=sam))
    result = segmenter.segment(photo(), "p", SegmentPrompt(points=((120, 80, 1),), backend="sam", refiner="sam"))
    assert result.backend == "sam" and result.levels == 3 and not result.fallback


def test_without_sam2_the_next_sam_refines_and_says_why(tiny_models):
    segmenter = Segmenter(manager_with(sam=SamEngine.load(tiny_models["sam"])))
    result = segmenter.segment(photo(), "p", SegmentPrompt(points=((120, 80, 1),), backend="sam"))
    assert result.backend == "sam"
    assert "SAM 2.1 Hiera-S" in result.fallback and "Used SAM ViT-Base instead" in result.fallback


def test_a_text_finds_every_instance_with_sam3_ranked_at_the_photos_size(sam3):
    counted = Counting(sam3)
    segmenter = Segmenter(manager_with(sam3=counted))
    image = photo()
    result = segmenter.segment(image, "p", SegmentPrompt(text="red disk", min_score=0.0))
    assert result.backend == "sam3" and result.instances and not result.fallback
    assert len(result.masks) >= 2  # every query above the (zero) minimum score
    assert all(mask.shape == (SIZE[1], SIZE[0]) and mask.dtype == bool for mask in result.masks)
    assert result.scores == sorted(result.scores, reverse=True)
    # A second text on the same photo, and example boxes, reuse the photo's embedding.
    segmenter.segment(image, "p", SegmentPrompt(text="window", min_score=0.0))
    by_example = segmenter.segment(image, "p", SegmentPrompt(examples=(((70, 40, 170, 120), 1), ((0, 0, 40, 40), 0)),
                                                             min_score=0.0))
    assert by_example.backend == "sam3" and by_example.masks
    assert counted.embeds == 1


def test_a_minimum_score_above_every_instance_says_nothing_was_found(sam3):
    segmenter = Segmenter(manager_with(sam3=sam3))
    result = segmenter.segment(photo(), "p", SegmentPrompt(text="red disk", min_score=1.0))
    assert result.masks == [] and "found no “red disk”" in result.message and "lower minimum score" in result.message


def test_without_sam3_text_falls_back_to_clip_and_example_boxes_say_what_they_need(tiny_models):
    from core.engines.clip_text import ClipScorer

    fastsam = FastSAMEngine.load(tiny_models["fastsam"])
    clip = ClipScorer.load(tiny_models["clip"])
    segmenter = Segmenter(manager_with(fastsam=fastsam, clip=clip))
    result = segmenter.segment(photo(), "p", SegmentPrompt(text="red disk", top_k=2))
    assert result.backend == "fastsam+clip" and not result.instances
    assert "SAM 3" in result.fallback and "CLIP chose among FastSAM's candidates" in result.fallback
    with pytest.raises(SegmentError, match="example boxes needs SAM 3"):
        segmenter.segment(photo(), "p", SegmentPrompt(examples=(((70, 40, 170, 120), 1),)))


def test_a_text_recipe_takes_every_instance_with_sam3_and_the_best_one_without(sam3, tiny_models):
    from core.engines.clip_text import ClipScorer
    from core.recipe import Action

    image = photo()
    from core.operations.inpaint import InpaintParams

    every = Recipe(Selection(kind="text", text="red disk", all_instances=True, min_score=0.0),
                   Action("remove", InpaintParams(engine="telea")))
    assert Recipe.from_dict(every.to_dict()) == every  # saved and read back
    with_sam3 = Segmenter(manager_with(sam3=sam3))
    mask, notes = select_region(every, image, segmenter=with_sam3)
    instances = with_sam3.segment(image, content_hash(image), SegmentPrompt(text="red disk", min_score=0.0))
    assert np.array_equal(mask, np.logical_or.reduce(instances.masks)) and not notes

    fastsam = FastSAMEngine.load(tiny_models["fastsam"])
    without = Segmenter(manager_with(fastsam=fastsam, clip=ClipScorer.load(tiny_models["clip"])))
    mask, notes = select_region(every, image, segmenter=without)
    best = without.segment(image, content_hash(image), SegmentPrompt(text="red disk"))
    assert np.array_equal(mask, best.masks[0]) and any("SAM 3" in note for note in notes)


def test_several_clicks_or_a_box_are_answered_with_sams_single_mask(sam2):
    segmenter = Segmenter(manager_with(sam2=sam2))
    image = photo()
    points, box = ((120, 80, 1), (30, 20, 0)), (60, 30, 180, 130)
    result = segmenter.segment(image, "p", SegmentPrompt(points=points, box=box, backend="sam"))
    single, score = sam2.segment(sam2.embed(image), list(points), box)
    assert result.scores == [pytest.approx(score, abs=1e-5)]
    assert result.mask is None and not single.any() or np.array_equal(result.mask, single)
    bigger = segmenter.segment(image, "p", SegmentPrompt(points=points, box=box, backend="sam", step=1))
    assert bigger.level == min(result.level + 1, 2)
