"""The selection service with the real FastSAM loader on the tiny checkpoint, caches and fallbacks."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.config import Settings
from core.engines.base import ModelLoadError
from core.errors import Cancelled
from core.engines.fastsam import FastSAMEngine, FastSAMSettings, work_copy
from core.images import content_hash
from core.segment import SegmentError, SegmentPrompt
from core.segmenter import WEAK_TEXT_MATCH, Segmenter
from tests.helpers import manager_with

SETTINGS = FastSAMSettings(imgsz=320)


def photo(size=(480, 320)) -> Image.Image:
    image = Image.new("RGB", size, (60, 120, 60))
    draw = ImageDraw.Draw(image)
    draw.ellipse((150, 90, 330, 250), fill=(220, 30, 30))
    return image


class CountingModel:
    """Wraps an ultralytics model and counts how often it runs."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


@pytest.fixture(scope="module")
def fastsam(tiny_models) -> FastSAMEngine:
    return FastSAMEngine.load(tiny_models["fastsam"])


def counting_segmenter(fastsam: FastSAMEngine, **engines) -> tuple[Segmenter, CountingModel]:
    counter = CountingModel(fastsam.model)
    engine = FastSAMEngine(counter, fastsam.model_id, "cpu")
    return Segmenter(manager_with(fastsam=engine, **engines)), counter


def test_everything_pass_gives_candidates_at_the_work_resolution(fastsam):
    image = photo((960, 640))
    candidates = fastsam.everything(image, SETTINGS)
    assert len(candidates) > 0
    assert candidates.work_size == work_copy(image, 320).size == (320, 213)
    assert candidates.image_size == (960, 640)
    assert all(crop.dtype == bool and crop.any() for crop in candidates.crops)


def test_everything_runs_once_per_photo_and_clicks_reuse_it(fastsam):
    segmenter, counter = counting_segmenter(fastsam)
    image = photo()
    image_id = content_hash(image)
    first = segmenter.segment(image, image_id, SegmentPrompt(points=((240, 170, 1),)), SETTINGS)
    assert counter.calls == 1 and "everything" in first.timings
    assert first.backend == "fastsam" and first.model == fastsam.model_id
    assert first.mask is not None and first.mask.shape == (320, 480) and first.mask[170, 240]
    second = segmenter.segment(image, image_id, SegmentPrompt(points=((100, 60, 1), (240, 170, 1))), SETTINGS)
    boxed = segmenter.segment(image, image_id, SegmentPrompt(box=(150, 90, 330, 250)), SETTINGS)
    assert counter.calls == 1  # answered from the cache
    assert "everything" not in second.timings and "select" in second.timings
    assert boxed.mask is not None and boxed.scores[0] > 0
    # Another photo is another pass; other settings are another pass too.
    other = photo((400, 300))
    segmenter.segment(other, content_hash(other), SegmentPrompt(points=((10, 10, 1),)), SETTINGS)
    segmenter.segment(image, image_id, SegmentPrompt(points=((10, 10, 1),)), FastSAMSettings(imgsz=256))
    assert counter.calls == 3


def test_stepping_walks_through_nested_candidates(fastsam):
    segmenter, _ = counting_segmenter(fastsam)
    image = photo()
    image_id = content_hash(image)
    results = [
        segmenter.segment(image, image_id, SegmentPrompt(points=((240, 170, 1),), step=step), SETTINGS)
        for step in range(3)
    ]
    assert results[0].levels >= 1
    areas = [int(result.mask.sum()) for result in results]
    assert areas == sorted(areas)  # each step is the same size or larger
    if results[0].levels > 1:
        assert areas[1] > areas[0]


def test_clicks_outside_the_photo_are_ignored_with_a_note(fastsam):
    segmenter, _ = counting_segmenter(fastsam)
    image = photo()
    result = segmenter.segment(image, content_hash(image), SegmentPrompt(points=((240, 170, 1), (900, 10, 1))), SETTINGS)
    assert "1 click outside the photo ignored" in result.message
    with pytest.raises(SegmentError, match="outside the photo"):
        segmenter.segment(image, content_hash(image), SegmentPrompt(points=((900, 10, 1),)), SETTINGS)


def test_zero_area_box_and_empty_prompt_are_clear_errors(fastsam):
    segmenter, _ = counting_segmenter(fastsam)
    image = photo()
    with pytest.raises(SegmentError, match="no area"):
        segmenter.segment(image, "id", SegmentPrompt(box=(50, 50, 50, 120)), SETTINGS)
    with pytest.raises(SegmentError, match="Click on the object"):
        segmenter.segment(image, "id", SegmentPrompt(), SETTINGS)


def test_corrupt_or_missing_checkpoint_is_a_clear_load_error(tmp_path):
    broken = tmp_path / "FastSAM-s.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        FastSAMEngine.load(broken)
    with pytest.raises(ModelLoadError, match="does not exist"):
        FastSAMEngine.load(tmp_path / "missing.pt")


def test_a_photo_where_nothing_is_found_says_so():
    class NothingFound:
        model_id = "empty"

        def everything(self, image, settings):
            from core.segment import CandidateSet

            return CandidateSet.from_masks(np.zeros((0, 10, 10), bool), [], image.size)

    segmenter = Segmenter(manager_with(fastsam=NothingFound()))
    image = photo()
    result = segmenter.segment(image, "id", SegmentPrompt(points=((5, 5, 1),)), SETTINGS)
    assert result.mask is None and "found no objects" in result.message


def test_missing_fastsam_falls_back_to_grabcut_and_says_which_model(tmp_path):
    # Nothing adopted and nothing on disk: FastSAM and CLIP point at files that do not exist.
    missing = Settings(device="cpu", models_dir=tmp_path,
                       models={"fastsam": str(tmp_path / "FastSAM-s.pt"), "clip": str(tmp_path / "clip")})
    segmenter = Segmenter(manager_with(settings=missing))
    image = photo()
    result = segmenter.segment(image, content_hash(image), SegmentPrompt(box=(140, 80, 340, 260)), SETTINGS)
    assert result.backend == "grabcut"
    assert "FastSAM-s.pt) is not on this machine" in result.fallback and "GrabCut" in result.fallback
    truth = np.zeros((320, 480), bool)
    yy, xx = np.mgrid[0:320, 0:480]
    truth[((xx - 240) / 90) ** 2 + ((yy - 170) / 80) ** 2 <= 1] = True
    iou = (result.mask & truth).sum() / (result.mask | truth).sum()
    assert iou > 0.8
    assert segmenter.error("fastsam") is not None
    with pytest.raises(SegmentError, match="needs CLIP"):
        segmenter.segment(image, content_hash(image), SegmentPrompt(text="a red disk"), SETTINGS)


def test_text_prompt_returns_top_k_candidates_with_scores(fastsam, tiny_models):
    from core.engines.clip_text import ClipScorer

    clip_calls = []

    scorer = ClipScorer.load(str(tiny_models["clip"]))
    original = scorer.embed_candidates

    def counted(*args, **kwargs):
        clip_calls.append(1)
        return original(*args, **kwargs)

    scorer.embed_candidates = counted
    segmenter, counter = counting_segmenter(fastsam, clip=scorer)
    image = photo()
    image_id = content_hash(image)
    result = segmenter.segment(image, image_id, SegmentPrompt(text="a red disk", top_k=3), SETTINGS)
    assert 1 <= len(result.masks) <= 3
    assert len(result.scores) == len(result.masks) == len(result.similarities)
    assert result.similarities == sorted(result.similarities, reverse=True)
    assert all(mask.shape == (320, 480) for mask in result.masks)
    # A weak best match is reported with its score.
    assert ("best similarity" in result.message) == (result.similarities[0] < WEAK_TEXT_MATCH)
    segmenter.segment(image, image_id, SegmentPrompt(text="green grass", top_k=2), SETTINGS)
    assert counter.calls == 1 and len(clip_calls) == 1  # candidates embedded once per photo


# --- waiting for an engine that runs for someone else --------------------------------------------

WAIT_LIMIT = 10.0  # seconds: the bound on every wait below (never reached when they pass)


class OneDisk:
    """A FastSAM stand-in: one candidate, the photo's disk, at a quarter of the photo's size."""

    model_id = "one-disk"

    def everything(self, image, settings):
        from core.segment import CandidateSet

        small = image.resize((image.width // 4, image.height // 4))
        disk = np.asarray(small)[..., 0] > 150
        return CandidateSet.from_masks(disk[None], [0.9], image.size)


class FixedSam:
    """A SAM stand-in: the same proposal for any prompt."""

    model_id = "fixed-sam"

    def __init__(self, size) -> None:
        self.mask = np.zeros((size[1], size[0]), bool)
        self.mask[100:200, 200:300] = True

    def embed(self, image):
        return "embedding"

    def proposals(self, embedding, points=(), box=None):
        return [(self.mask, 0.9)]

    def segment(self, embedding, points=(), box=None):
        return self.mask, 0.9


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def select_in_thread(segmenter: Segmenter, prompt: SegmentPrompt, **waiting) -> tuple[threading.Thread, list, list]:
    """Start ``segmenter.segment`` for ``photo()`` in a thread; (the thread, its reports, its outcome)."""
    reports, outcome = [], []

    def call():
        try:
            outcome.append(segmenter.segment(photo(), "id", prompt, SETTINGS,
                                             on_wait=lambda *report: reports.append(report), **waiting))
        except Exception as error:  # noqa: BLE001 (looked at by the test)
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, reports, outcome


@pytest.mark.parametrize("engine, prompt", [
    ("fastsam", SegmentPrompt(points=((240, 170, 1),))),
    ("sam2", SegmentPrompt(points=((240, 170, 1),), backend="sam", refiner="sam2")),
])
def test_a_selection_reports_its_place_while_its_engine_runs_for_someone_else(engine, prompt):
    segmenter = Segmenter(manager_with(fastsam=OneDisk(), sam2=FixedSam(photo().size)))
    queue = segmenter.manager.queue(engine)
    head = queue.enter()  # someone else's selection holds the engine
    try:
        thread, reports, outcome = select_in_thread(segmenter, prompt)
        wait_until(lambda: reports, "a report")
        assert reports[0] == (engine, 1, 1, None)  # first in line, the running one ahead, not timed yet
        assert not outcome and len(queue.waiting()) == 1
    finally:
        queue.leave(head)
    thread.join(WAIT_LIMIT)
    assert not thread.is_alive()
    assert reports[-1] == (engine, 0, 0, None)  # its turn came: the work started
    assert all(report[:3] == (engine, 1, 1) for report in reports[:-1])
    result = outcome[0]
    assert result.backend == engine and result.mask is not None and result.mask[170, 240]
    assert len(queue) == 0 and not segmenter.manager.busy


def test_a_selection_that_need_not_wait_reports_nothing():
    segmenter = Segmenter(manager_with(fastsam=OneDisk()))
    reports = []
    segmenter.segment(photo(), "id", SegmentPrompt(points=((240, 170, 1),)), SETTINGS,
                      on_wait=lambda *report: reports.append(report))
    assert reports == []


def test_a_waiting_selection_is_cancelled_and_leaves_the_queue():
    segmenter = Segmenter(manager_with(fastsam=OneDisk()))
    queue = segmenter.manager.queue("fastsam")
    head = queue.enter()
    cancel = threading.Event()
    try:
        thread, reports, outcome = select_in_thread(segmenter, SegmentPrompt(points=((240, 170, 1),)),
                                                    should_cancel=cancel.is_set)
        wait_until(lambda: reports, "a report")
        cancel.set()
        thread.join(WAIT_LIMIT)
        assert not thread.is_alive()  # it did not wait for the engine
        assert isinstance(outcome[0], Cancelled) and "FastSAM-s" in str(outcome[0])
        assert queue.waiting() == [] and queue.running is head
    finally:
        queue.leave(head)
    assert not segmenter.has_candidates("id", SETTINGS)
