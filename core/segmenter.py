"""The selection service: answers :class:`SegmentPrompt`s for photos, running each model's heavy
part at most once per photo.

Which engine answers what comes from the catalog (each selection entry's ``answers`` option, best
first): clicks and boxes go to FastSAM's candidates, or to a SAM (SAM 2.1 by default, SAM ViT-Base as
a setting) when the prompt asks to refine; a concept (a text, example boxes) goes to SAM 3, else to
CLIP scoring FastSAM's candidates; GrabCut answers clicks and boxes when no model can. A result says
which engine answered and, when it is not the one asked for, why (``fallback``).

The models come from the model manager (loaded on first use; each call takes its turn in the model's
queue and counts as running work, so the memory janitor waits). A selection waiting for its turn
behind other people's requests reports where it stands (``on_wait``) and can be cancelled
(``should_cancel``), as a generation can (:meth:`core.manager.ModelManager.hold`). Per-photo results
(FastSAM candidates, CLIP embeddings of the candidates, SAM and SAM 3 image embeddings) live here, in
bounded LRU caches keyed by the photo's content hash and the settings that produced them, shared by
every session of the server.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from core.cache import LRUCache
from core.engines.grabcut import grabcut_select
from core.errors import ModelUnavailable
from core.segment import (
    CandidateSet,
    FastSAMSettings,
    SegmentError,
    SegmentPrompt,
    SegmentResult,
    exclude_points,
    points_message,
    select_box,
    select_positive,
    timed,
    top_k_by_text,
    work_copy,
)

# CLIP ViT-B/32 cosine similarity below which a text "matches nothing well" (good matches of a
# blanked-out object crop score about 0.25-0.33).
WEAK_TEXT_MATCH = 0.22
CONCEPT_CACHE_SIZE = 2  # photos whose SAM 3 embedding is kept

# (engine, place, ahead, estimate_s): the queue's report (core.queue.WaitCallback) with the name of
# the engine waited for; place 0 once the turn has come after a wait (the work starts).
SelectionWait = Callable[[str, int, int, "float | None"], None]


@dataclass(frozen=True)
class Turns:
    """How one selection waits for its engines' turns: ``on_wait(engine, place, ahead, estimate_s)``
    while others are ahead (a :data:`SelectionWait`), and ``should_cancel()`` returning True leaves
    the queue with core.errors.Cancelled."""

    on_wait: SelectionWait | None = None
    should_cancel: Callable[[], bool] | None = None


class Segmenter:
    """Answers prompts with the models of ``manager`` (a ``core.manager.ModelManager``), from
    per-photo caches of ``cache_size`` photos."""

    def __init__(self, manager: Any, *, cache_size: int = 8) -> None:
        self.manager = manager
        self._errors: dict[str, str] = {}
        self.candidate_cache: LRUCache[CandidateSet] = LRUCache(cache_size)
        self._clip_cache: LRUCache[np.ndarray] = LRUCache(cache_size)
        self._embeddings: LRUCache[Any] = LRUCache(cache_size)  # (engine, photo) → a SAM's image embedding
        # SAM 3's multi-scale features take about 250 MB a photo in float32: fewer are kept.
        self._concept_embeddings: LRUCache[Any] = LRUCache(min(cache_size, CONCEPT_CACHE_SIZE))

    # --- engines ---------------------------------------------------------------------------

    def engine(self, role: str) -> Any | None:
        """The loaded engine for ``role``, loading it on first use; None when it cannot be had
        (:meth:`error` says why)."""
        try:
            engine = self.manager.load(role)
        except ModelUnavailable as error:
            self._errors[role] = str(error)
            return None
        self._errors.pop(role, None)
        return engine

    def error(self, role: str) -> str | None:
        """Why ``role``'s engine could not be loaded, if it could not."""
        return self._errors.get(role)

    def first_available(self, names: list[str]) -> str | None:
        """The first of engines ``names`` that loads (the others' errors are kept), or None."""
        return next((name for name in names if self.engine(name) is not None), None)

    def refiners(self) -> list[str]:
        """The engines that refine clicks and boxes (SAM 2.1, SAM), best first."""
        return self.manager.catalog.answering("clicks")

    def concept_engine(self) -> str | None:
        """The engine that finds every instance of a concept (SAM 3), when it is on this machine."""
        present = [name for name in self.manager.catalog.answering("concepts")
                   if self.manager.is_loaded(name) or self.manager.has(name)]
        return self.first_available(present)

    def has_candidates(self, image_id: str, settings: FastSAMSettings = FastSAMSettings()) -> bool:
        """Whether the photo's everything pass with these settings is already cached."""
        return (image_id, settings) in self.candidate_cache

    def model_id(self, role: str) -> str:
        engine = self.manager.load(role) if self.manager.is_loaded(role) else None
        return getattr(engine, "model_id", "") if engine is not None else ""

    # --- per-photo caches ------------------------------------------------------------------

    def candidates(
        self, image: Image.Image, image_id: str, settings: FastSAMSettings = FastSAMSettings(), *,
        on_wait: SelectionWait | None = None, should_cancel: Callable[[], bool] | None = None,
    ) -> tuple[CandidateSet, float | None]:
        """FastSAM's candidates for the photo, from the cache or from one everything pass.

        Returns the candidates and the milliseconds the pass took (None on a cache hit). Raises
        ModelUnavailable when FastSAM is not available; while FastSAM runs for others, ``on_wait``
        and ``should_cancel`` as for :meth:`segment`.
        """
        return self._candidates(image, image_id, settings, Turns(on_wait, should_cancel))

    def _candidates(
        self, image: Image.Image, image_id: str, settings: FastSAMSettings, turns: Turns
    ) -> tuple[CandidateSet, float | None]:
        engine = self.engine(settings.model)
        if engine is None:
            raise ModelUnavailable(self.error(settings.model) or "FastSAM is not available.")
        key = (image_id, settings)
        cached = self.candidate_cache.get(key)
        if cached is not None:
            return cached, None
        timings: dict[str, float] = {}
        with self._hold(settings.model, turns), timed(timings, "everything"):
            cached = self.candidate_cache.get(key)  # another session may have just computed it
            if cached is None:
                cached = engine.everything(image, settings)
                self.candidate_cache.put(key, cached)
        return cached, timings["everything"]

    def embedding(self, name: str, image: Image.Image, image_id: str, timings: dict[str, float]) -> Any:
        """Engine ``name``'s embedding of the photo (its image encoder runs once per photo); hold the
        engine's lock around the call."""
        key = (name, image_id)
        cache = self._concept_embeddings if name in self.manager.catalog.answering("concepts") else self._embeddings
        embedding = cache.get(key)
        if embedding is None:
            with timed(timings, "embed"):
                embedding = self.engine(name).embed(image)
            cache.put(key, embedding)
        return embedding

    def _candidate_embeddings(
        self, image: Image.Image, image_id: str, candidates: CandidateSet, settings: FastSAMSettings, turns: Turns
    ) -> np.ndarray:
        clip = self.engine("clip")
        key = (image_id, settings)
        embeddings = self._clip_cache.get(key)
        if embeddings is None:
            with self._hold("clip", turns):
                embeddings = clip.embed_candidates(work_copy(image, settings.imgsz), candidates)
            self._clip_cache.put(key, embeddings)
        return embeddings

    @contextlib.contextmanager
    def _hold(self, name: str, turns: Turns) -> Iterator[None]:
        """Engine ``name``'s turn (:meth:`core.manager.ModelManager.hold`), reported to
        ``turns.on_wait`` with the engine's name while waiting, and once more with place 0 when the
        turn comes after a wait."""
        on_wait, waited = turns.on_wait, False

        def report(place: int, ahead: int, estimate_s: float | None) -> None:
            nonlocal waited
            waited = True
            on_wait(name, place, ahead, estimate_s)

        with self.manager.hold(name, on_wait=report if on_wait is not None else None,
                               should_cancel=turns.should_cancel):
            if waited:
                on_wait(name, 0, 0, None)
            yield

    # --- answering -------------------------------------------------------------------------

    def segment(
        self,
        image: Image.Image,
        image_id: str,
        prompt: SegmentPrompt,
        settings: FastSAMSettings = FastSAMSettings(),
        *,
        on_wait: SelectionWait | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> SegmentResult:
        """Answer ``prompt`` for ``image`` (RGB, full resolution); masks come at full resolution.

        A concept (text, example boxes) goes to SAM 3, else (text only) to CLIP over FastSAM's
        candidates; clicks and boxes to FastSAM, or to the prompt's SAM refiner for the ``sam``
        backend (another SAM when that one is missing); GrabCut when no model can answer. The
        result's ``fallback`` says why another engine answered. Raises SegmentError for a prompt that
        cannot be answered at all (empty, a zero-area box, text with neither SAM 3 nor CLIP).

        While an engine it needs runs for others: ``on_wait(engine, place, ahead, estimate_s)`` every
        moment or so (a :data:`SelectionWait`: ``place`` 1 = next, ``ahead`` the requests ahead, the
        running one included, ``estimate_s`` None before the engine has been timed), then once with
        place 0 when its turn comes; ``should_cancel()`` returning True meanwhile leaves the queue
        with core.errors.Cancelled. Raises core.queue.QueueFull when too many requests wait.
        """
        turns = Turns(on_wait, should_cancel)
        checked = prompt.checked_for(image.size)
        dropped = len(prompt.points) - len(checked.points)
        note = f"{dropped} click{'s' if dropped > 1 else ''} outside the photo ignored. " if dropped else ""
        if checked.is_empty:
            raise SegmentError(note + "Click on the object, drag a box around it, or type what it is.")

        refiners = [checked.refiner, *(name for name in self.refiners() if name != checked.refiner)]
        if checked.is_concept:
            result = self._concept(image, image_id, checked, settings, turns)
        elif checked.backend == "sam" and (refiner := self.first_available(refiners)) is not None:
            result = self._sam(image, image_id, checked, refiner, turns)
            if refiner != checked.refiner:
                result.fallback = f"{self.error(checked.refiner)} Used {self._title(refiner)} instead."
        elif checked.backend in ("fastsam", "sam") and self.engine(settings.model) is not None:
            result = self._fastsam(image, image_id, checked, settings, turns)
            if checked.backend == "sam":
                result.fallback = f"{self.error(checked.refiner)} No SAM is available; used FastSAM instead."
        else:
            result = self._grabcut(image, checked)
            if checked.backend != "grabcut":
                result.fallback = f"{self.error(settings.model) or 'FastSAM is not available.'} Used GrabCut instead."
        result.message = (note + result.message).strip()
        return result

    def _fastsam(
        self, image: Image.Image, image_id: str, prompt: SegmentPrompt, settings: FastSAMSettings, turns: Turns
    ) -> SegmentResult:
        timings: dict[str, float] = {}
        candidates, everything_ms = self._candidates(image, image_id, settings, turns)
        if everything_ms is not None:
            timings["everything"] = everything_ms
        result = SegmentResult([], [], "fastsam", self.model_id(settings.model), timings=timings)
        if len(candidates) == 0:
            result.message = "FastSAM found no objects in this photo; try SAM, a box, or paint the mask."
            return result
        with timed(timings, "select"):
            width, height = candidates.work_size
            mask = np.zeros((height, width), dtype=bool)
            scores, protected = [], set()
            if prompt.box is not None:
                mask, iou, best = select_box(candidates, candidates.box_to_work(prompt.box), prompt.clip_to_box)
                if best is not None:
                    scores.append(iou)
                    protected.add(best)
            positive = [candidates.to_work(x, y) for x, y in prompt.positive]
            from_points, chosen, result.levels, missed = select_positive(candidates, positive, prompt.step)
            result.level = min(max(prompt.step, 0), max(result.levels - 1, 0))
            mask |= from_points
            scores.extend(float(candidates.scores[i]) for i in chosen)
            protected |= {int(i) for x, y in positive for i in candidates.containing(x, y)}
            negative = [candidates.to_work(x, y) for x, y in prompt.negative]
            mask, stuck = exclude_points(candidates, mask, negative, protected)
            result.message = points_message(missed, len(positive), stuck)
        if not mask.any():
            result.message = result.message or "Nothing was selected there; try another spot or a box."
            return result
        with timed(timings, "upscale"):
            result.masks = [candidates.to_image(mask)]
        result.scores = [float(np.mean(scores))] if scores else [0.0]
        return result

    def _title(self, name: str) -> str:
        return self.manager.catalog.title(name)

    def _concept(
        self, image: Image.Image, image_id: str, prompt: SegmentPrompt, settings: FastSAMSettings, turns: Turns
    ) -> SegmentResult:
        """Every instance of the prompt's concept: SAM 3, else CLIP's ranking of FastSAM's candidates."""
        concepts = self.manager.catalog.answering("concepts")
        name = self.concept_engine()
        if name is not None:
            return self._instances(image, image_id, prompt, name, turns)
        why = next((self.error(n) for n in concepts if self.error(n)), None) or (
            f"{self._title(concepts[0])} is not on this machine." if concepts else "No concept model is configured.")
        if not prompt.text:
            raise SegmentError(f"Selecting by example boxes needs SAM 3: {why} Type what the object is instead, "
                               "or click it.")
        result = self._text(image, image_id, prompt, settings, turns)
        result.fallback = f"{why} CLIP chose among FastSAM's candidates instead (one object at a time)."
        return result

    def _instances(
        self, image: Image.Image, image_id: str, prompt: SegmentPrompt, name: str, turns: Turns
    ) -> SegmentResult:
        timings: dict[str, float] = {}
        engine = self.engine(name)
        with self._hold(name, turns):
            embedding = self.embedding(name, image, image_id, timings)
            with timed(timings, "find"):
                instances = engine.find(embedding, text=prompt.text, boxes=prompt.examples,
                                        threshold=prompt.min_score)
        result = SegmentResult([instance.mask for instance in instances], [instance.score for instance in instances],
                               name, engine.model_id, timings=timings, instances=True)
        if not instances:
            what = f"“{prompt.text}”" if prompt.text else "anything like the example boxes"
            result.message = (f"{self._title(name)} found no {what} scoring at least {prompt.min_score:.2f} in this "
                              "photo; try another word, an example box, or a lower minimum score.")
        return result

    def _text(
        self, image: Image.Image, image_id: str, prompt: SegmentPrompt, settings: FastSAMSettings, turns: Turns
    ) -> SegmentResult:
        if self.engine("clip") is None:
            raise SegmentError(f"Selecting by text needs CLIP: {self.error('clip')}")
        if self.engine(settings.model) is None:
            raise SegmentError(f"Selecting by text needs FastSAM's candidates: {self.error(settings.model)}")
        timings: dict[str, float] = {}
        candidates, everything_ms = self._candidates(image, image_id, settings, turns)
        if everything_ms is not None:
            timings["everything"] = everything_ms
        result = SegmentResult([], [], "fastsam+clip", self.model_id("clip"), timings=timings)
        with timed(timings, "embed candidates"):
            embeddings = self._candidate_embeddings(image, image_id, candidates, settings, turns)
        clip = self.engine("clip")
        with timed(timings, "text"):
            with self._hold("clip", turns):
                similarities = clip.score(embeddings, prompt.text)
            scorable = np.flatnonzero(np.isfinite(similarities))  # tiny candidates are not scored
            order, probabilities = top_k_by_text(similarities[scorable], clip.logit_scale, prompt.top_k)
            order = [int(i) for i in scorable[order]]
        if not order:
            result.message = "No candidate is large enough to compare with the text; try clicking instead."
            return result
        with timed(timings, "upscale"):
            result.masks = [candidates.to_image(candidates.mask(i)) for i in order]
        result.scores = [float(p) for p in probabilities]
        result.similarities = [float(similarities[i]) for i in order]
        if result.similarities[0] < WEAK_TEXT_MATCH:
            result.message = (
                f"Nothing matches “{prompt.text}” well (best similarity {result.similarities[0]:.2f}); "
                "these are the closest candidates."
            )
        return result

    def _sam(self, image: Image.Image, image_id: str, prompt: SegmentPrompt, name: str, turns: Turns) -> SegmentResult:
        """Clicks and a box answered by SAM engine ``name`` from the photo's cached embedding. Its
        proposals, smallest first, are the levels Bigger / Smaller step through (``prompt.step``
        away from the answer). A lone click is ambiguous (a shirt, or the person wearing it): the
        answer is the proposal SAM scores best. More clicks or a box are not: the answer is SAM's
        single mask for them, placed among the proposals by its area."""
        sam = self.engine(name)
        timings: dict[str, float] = {}
        with self._hold(name, turns):
            embedding = self.embedding(name, image, image_id, timings)
            with timed(timings, "decode"):
                proposals = sam.proposals(embedding, prompt.points, prompt.box)
                single = sam.segment(embedding, prompt.points, prompt.box) \
                    if len(prompt.points) != 1 or prompt.box is not None else None
        if single is None:
            best = max(range(len(proposals)), key=lambda i: proposals[i][1])
        else:
            area = int(single[0].sum())
            best = min(range(len(proposals)), key=lambda i: abs(int(proposals[i][0].sum()) - area))
        level = min(max(best + prompt.step, 0), len(proposals) - 1)
        mask, score = single if single is not None and prompt.step == 0 else proposals[level]
        result = SegmentResult([mask], [score], name, sam.model_id, timings=timings, levels=len(proposals),
                               level=level)
        if not mask.any():
            result.masks, result.scores = [], []
            result.message = f"{self._title(name)} selected nothing there; try another spot or a box."
        return result

    def _grabcut(self, image: Image.Image, prompt: SegmentPrompt) -> SegmentResult:
        timings: dict[str, float] = {}
        with timed(timings, "grabcut"):
            mask, message = grabcut_select(image, prompt)
        masks = [mask] if mask.any() else []
        return SegmentResult(masks, [1.0] * len(masks), "grabcut", "OpenCV GrabCut", timings=timings, message=message)
