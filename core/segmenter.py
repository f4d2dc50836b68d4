"""The selection service: answers :class:`SegmentPrompt`s for photos, running each model at most
once per photo.

The models come from the model manager (loaded on first use; each call holds the model's lock and
counts as running work, so the memory janitor waits); per-photo results (FastSAM candidates, CLIP embeddings of the candidates, SAM image
embeddings) live here, in bounded LRU caches keyed by the photo's content hash and the settings
that produced them, shared by every session of the server.
"""
from __future__ import annotations

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


class Segmenter:
    """Answers prompts with the models of ``manager`` (a ``core.manager.ModelManager``), from
    per-photo caches of ``cache_size`` photos."""

    def __init__(self, manager: Any, *, cache_size: int = 8) -> None:
        self.manager = manager
        self._errors: dict[str, str] = {}
        self.candidate_cache: LRUCache[CandidateSet] = LRUCache(cache_size)
        self._clip_cache: LRUCache[np.ndarray] = LRUCache(cache_size)
        self._sam_cache: LRUCache[Any] = LRUCache(cache_size)

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

    def has_candidates(self, image_id: str, settings: FastSAMSettings = FastSAMSettings()) -> bool:
        """Whether the photo's everything pass with these settings is already cached."""
        return (image_id, settings) in self.candidate_cache

    def model_id(self, role: str) -> str:
        engine = self.manager.load(role) if self.manager.is_loaded(role) else None
        return getattr(engine, "model_id", "") if engine is not None else ""

    # --- per-photo caches ------------------------------------------------------------------

    def candidates(
        self, image: Image.Image, image_id: str, settings: FastSAMSettings = FastSAMSettings()
    ) -> tuple[CandidateSet, float | None]:
        """FastSAM's candidates for the photo, from the cache or from one everything pass.

        Returns the candidates and the milliseconds the pass took (None on a cache hit). Raises
        ModelUnavailable when FastSAM is not available.
        """
        engine = self.engine(settings.model)
        if engine is None:
            raise ModelUnavailable(self.error(settings.model) or "FastSAM is not available.")
        key = (image_id, settings)
        cached = self.candidate_cache.get(key)
        if cached is not None:
            return cached, None
        timings: dict[str, float] = {}
        with self.manager.hold(settings.model), timed(timings, "everything"):
            cached = self.candidate_cache.get(key)  # another session may have just computed it
            if cached is None:
                cached = engine.everything(image, settings)
                self.candidate_cache.put(key, cached)
        return cached, timings["everything"]

    def _candidate_embeddings(
        self, image: Image.Image, image_id: str, candidates: CandidateSet, settings: FastSAMSettings
    ) -> np.ndarray:
        clip = self.engine("clip")
        key = (image_id, settings)
        embeddings = self._clip_cache.get(key)
        if embeddings is None:
            with self.manager.hold("clip"):
                embeddings = clip.embed_candidates(work_copy(image, settings.imgsz), candidates)
            self._clip_cache.put(key, embeddings)
        return embeddings

    # --- answering -------------------------------------------------------------------------

    def segment(
        self,
        image: Image.Image,
        image_id: str,
        prompt: SegmentPrompt,
        settings: FastSAMSettings = FastSAMSettings(),
    ) -> SegmentResult:
        """Answer ``prompt`` for ``image`` (RGB, full resolution); masks come at full resolution.

        Falls back to GrabCut for clicks and boxes when FastSAM cannot be had, and says so in the
        result's message. Raises SegmentError for a prompt that cannot be answered at all (empty,
        a zero-area box, text without CLIP).
        """
        checked = prompt.checked_for(image.size)
        dropped = len(prompt.points) - len(checked.points)
        note = f"{dropped} click{'s' if dropped > 1 else ''} outside the photo ignored. " if dropped else ""
        if checked.is_empty:
            raise SegmentError(note + "Click on the object, drag a box around it, or type what it is.")

        if checked.text:
            result = self._text(image, image_id, checked, settings)
        elif checked.backend == "sam" and self.engine("sam") is not None:
            result = self._sam(image, image_id, checked)
        elif checked.backend in ("fastsam", "sam") and self.engine(settings.model) is not None:
            result = self._fastsam(image, image_id, checked, settings)
            if checked.backend == "sam":
                result.fallback = f"{self.error('sam')} Used FastSAM instead."
        else:
            result = self._grabcut(image, checked)
            if checked.backend != "grabcut":
                result.fallback = f"{self.error(settings.model) or 'FastSAM is not available.'} Used GrabCut instead."
        result.message = (note + result.message).strip()
        return result

    def _fastsam(
        self, image: Image.Image, image_id: str, prompt: SegmentPrompt, settings: FastSAMSettings
    ) -> SegmentResult:
        timings: dict[str, float] = {}
        candidates, everything_ms = self.candidates(image, image_id, settings)
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

    def _text(
        self, image: Image.Image, image_id: str, prompt: SegmentPrompt, settings: FastSAMSettings
    ) -> SegmentResult:
        if self.engine("clip") is None:
            raise SegmentError(f"Selecting by text needs CLIP: {self.error('clip')}")
        if self.engine(settings.model) is None:
            raise SegmentError(f"Selecting by text needs FastSAM's candidates: {self.error(settings.model)}")
        timings: dict[str, float] = {}
        candidates, everything_ms = self.candidates(image, image_id, settings)
        if everything_ms is not None:
            timings["everything"] = everything_ms
        result = SegmentResult([], [], "fastsam+clip", self.model_id("clip"), timings=timings)
        with timed(timings, "embed candidates"):
            embeddings = self._candidate_embeddings(image, image_id, candidates, settings)
        clip = self.engine("clip")
        with timed(timings, "text"):
            with self.manager.hold("clip"):
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

    def _sam(self, image: Image.Image, image_id: str, prompt: SegmentPrompt) -> SegmentResult:
        sam = self.engine("sam")
        timings: dict[str, float] = {}
        embedding = self._sam_cache.get(image_id)
        with self.manager.hold("sam"):
            if embedding is None:
                with timed(timings, "embed"):
                    embedding = sam.embed(image)
                self._sam_cache.put(image_id, embedding)
            with timed(timings, "decode"):
                mask, score = sam.segment(embedding, prompt.points, prompt.box)
        result = SegmentResult([mask], [score], "sam", sam.model_id, timings=timings)
        if not mask.any():
            result.masks, result.scores = [], []
            result.message = "SAM selected nothing there; try another spot or a box."
        return result

    def _grabcut(self, image: Image.Image, prompt: SegmentPrompt) -> SegmentResult:
        timings: dict[str, float] = {}
        with timed(timings, "grabcut"):
            mask, message = grabcut_select(image, prompt)
        masks = [mask] if mask.any() else []
        return SegmentResult(masks, [1.0] * len(masks), "grabcut", "OpenCV GrabCut", timings=timings, message=message)
