"""Selecting objects: point, box and text prompts answered from candidate masks.

FastSAM segments everything in a photo once; every prompt after that is answered here, from the
cached :class:`CandidateSet`, without running a model again. SAM (refinement) and GrabCut (the
fallback without FastSAM weights) answer point and box prompts directly.

Coordinates: a :class:`SegmentPrompt` is in the photo's pixels (x right, y down, pixel ``i``
covers ``[i, i + 1)``). Candidates live at a *work* resolution (the copy the model saw, long side
about ``imgsz``); :meth:`CandidateSet.to_work` and :meth:`CandidateSet.to_image` convert. Masks are
bool, True = selected; results are at the photo's full resolution.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from core.errors import UserError
from core.masks import Box, bounding_box

Backend = Literal["fastsam", "sam", "grabcut"]
BACKENDS: tuple[Backend, ...] = ("fastsam", "sam", "grabcut")


class SegmentError(UserError):
    """A prompt that cannot be answered as given; the message says why and what to do."""


# --- the prompt ------------------------------------------------------------------------------


def _ordered(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


@dataclass(frozen=True)
class SegmentPrompt:
    """What the user asked for, in the photo's pixel coordinates.

    ``points``: ``(x, y, label)`` with label 1 = part of the object, 0 = not part of it.
    ``box``: ``(x0, y0, x1, y1)``. ``text``: what the object is called. ``top_k``: how many text
    candidates to return. ``step``: FastSAM: 0 picks the smallest candidate at each positive point,
    +1 the next larger one, and so on; SAM: 0 is the mask SAM scores best, -1 the next smaller of its
    proposals, +1 the next larger. ``clip_to_box``: cut the box's best candidate to the box.
    ``refiner``: the SAM engine (a catalog name) that answers the ``sam`` backend. ``examples``: boxes
    showing the concept by example, ``((x0, y0, x1, y1), label)`` with label 1 = like this, 0 = not
    like this (SAM 3). ``min_score``: SAM 3's lowest instance score kept.
    """

    points: tuple[tuple[float, float, int], ...] = ()
    box: tuple[float, float, float, float] | None = None
    text: str = ""
    top_k: int = 3
    backend: Backend = "fastsam"
    step: int = 0
    clip_to_box: bool = False
    refiner: str = "sam2"
    examples: tuple[tuple[tuple[float, float, float, float], int], ...] = ()
    min_score: float = 0.5

    def __post_init__(self) -> None:
        points = tuple((float(x), float(y), int(label)) for x, y, label in self.points)
        if any(label not in (0, 1) for _, _, label in points):
            raise SegmentError("A point's label must be 1 (include) or 0 (exclude).")
        object.__setattr__(self, "points", points)
        if self.box is not None:
            object.__setattr__(self, "box", _ordered(self.box))
        examples = tuple((_ordered(box), int(label)) for box, label in self.examples)
        if any(label not in (0, 1) for _, label in examples):
            raise SegmentError("An example box's label must be 1 (like this) or 0 (not like this).")
        object.__setattr__(self, "examples", examples)
        if not 0.0 <= self.min_score <= 1.0:
            raise SegmentError(f"min_score is a score from 0 to 1 (got {self.min_score}).")
        object.__setattr__(self, "text", self.text.strip())
        if self.top_k < 1:
            raise SegmentError("top_k must be at least 1.")
        if self.backend not in BACKENDS:
            raise SegmentError(f"Unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}.")

    @property
    def positive(self) -> list[tuple[float, float]]:
        return [(x, y) for x, y, label in self.points if label == 1]

    @property
    def negative(self) -> list[tuple[float, float]]:
        return [(x, y) for x, y, label in self.points if label == 0]

    @property
    def is_empty(self) -> bool:
        return not self.points and self.box is None and not self.text and not self.examples

    @property
    def is_concept(self) -> bool:
        """A concept to find every instance of: a text, example boxes, or both."""
        return bool(self.text or self.examples)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SegmentPrompt:
        box = data.get("box")
        return cls(
            points=tuple(tuple(p) for p in data.get("points", ())),
            box=tuple(box) if box is not None else None,
            text=data.get("text", ""),
            top_k=int(data.get("top_k", 3)),
            backend=data.get("backend", "fastsam"),
            step=int(data.get("step", 0)),
            clip_to_box=bool(data.get("clip_to_box", False)),
            refiner=str(data.get("refiner", "sam2")),
            examples=tuple((tuple(box), int(label)) for box, label in data.get("examples", ())),
            min_score=float(data.get("min_score", 0.5)),
        )

    def checked_for(self, image_size: tuple[int, int]) -> SegmentPrompt:
        """This prompt with points outside the photo dropped and the box clamped to it.

        Raises SegmentError for a box of zero area (inside the photo).
        """
        width, height = image_size
        points = tuple((x, y, label) for x, y, label in self.points if 0 <= x < width and 0 <= y < height)

        def clamped(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
            x0, y0, x1, y1 = box
            box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                raise SegmentError("The box has no area inside the photo: drag a box around the object.")
            return box

        return replace(self, points=points, box=clamped(self.box) if self.box is not None else None,
                       examples=tuple((clamped(box), label) for box, label in self.examples))


@dataclass
class SegmentResult:
    """What a prompt selected, at the photo's full resolution.

    ``masks``: one or more bool masks, best first (several for text prompts: the top k).
    ``scores``: one per mask (meaning depends on the prompt: IoU with the box, text probability,
    model confidence). ``similarities``: the text prompt's cosine similarity per mask.
    ``timings``: milliseconds per stage. ``message``: what a person should know about this
    answer (nothing found, a weak text match, a point outside the photo). ``fallback``: why
    another engine than the one asked for answered (a model missing or broken), empty otherwise.
    """

    masks: list[np.ndarray]
    scores: list[float]
    backend: str
    model: str = ""
    similarities: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    message: str = ""
    fallback: str = ""
    levels: int = 0  # point prompts: how many nested candidates (or SAM proposals) Bigger / Smaller step through
    level: int = 0  # which of them is shown, 0 = the smallest
    instances: bool = False  # the masks are every instance of a concept found (SAM 3), not ranked guesses

    @property
    def mask(self) -> np.ndarray | None:
        """The best mask, or None when nothing was selected."""
        return self.masks[0] if self.masks else None


# --- candidates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateSet:
    """The candidate masks of one photo, from one "segment everything" pass.

    Each candidate is kept as its bounding box's crop at the work resolution, so memory follows
    the objects' extents. ``boxes`` are ``(x0, y0, x1, y1)`` exclusive, in work pixels;
    ``areas`` in work pixels; ``scores`` the model's confidence.
    """

    work_size: tuple[int, int]
    image_size: tuple[int, int]
    boxes: np.ndarray
    areas: np.ndarray
    scores: np.ndarray
    crops: tuple[np.ndarray, ...]

    @classmethod
    def from_masks(
        cls,
        masks: np.ndarray | Sequence[np.ndarray],
        scores: Sequence[float] | np.ndarray | None,
        image_size: tuple[int, int],
    ) -> CandidateSet:
        """Build from full work-resolution masks (N, H, W); empty masks are dropped."""
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            masks = masks.reshape((0, 1, 1)) if masks.size == 0 else masks
        count, height, width = masks.shape
        scores = np.ones(count, np.float32) if scores is None else np.asarray(scores, np.float32)
        boxes, areas, kept_scores, crops = [], [], [], []
        for mask, score in zip(masks, scores):
            box = bounding_box(mask)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            crop = np.ascontiguousarray(mask[y0:y1, x0:x1])
            boxes.append(box)
            areas.append(int(crop.sum()))
            kept_scores.append(float(score))
            crops.append(crop)
        return cls(
            work_size=(width, height),
            image_size=tuple(image_size),
            boxes=np.asarray(boxes, np.int32).reshape(-1, 4),
            areas=np.asarray(areas, np.int64),
            scores=np.asarray(kept_scores, np.float32),
            crops=tuple(crops),
        )

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def nbytes(self) -> int:
        return sum(crop.nbytes for crop in self.crops)

    def mask(self, index: int) -> np.ndarray:
        """Candidate ``index`` as a full work-resolution mask."""
        width, height = self.work_size
        full = np.zeros((height, width), dtype=bool)
        x0, y0, x1, y1 = self.boxes[index]
        full[y0:y1, x0:x1] = self.crops[index]
        return full

    def to_work(self, x: float, y: float) -> tuple[int, int]:
        """Photo coordinates → the work pixel that contains them."""
        sx = self.work_size[0] / self.image_size[0]
        sy = self.work_size[1] / self.image_size[1]
        return (
            min(self.work_size[0] - 1, max(0, int(x * sx))),
            min(self.work_size[1] - 1, max(0, int(y * sy))),
        )

    def box_to_work(self, box: tuple[float, float, float, float]) -> Box:
        sx = self.work_size[0] / self.image_size[0]
        sy = self.work_size[1] / self.image_size[1]
        x0, y0, x1, y1 = box
        return (
            int(np.floor(x0 * sx)),
            int(np.floor(y0 * sy)),
            max(int(np.ceil(x1 * sx)), int(np.floor(x0 * sx)) + 1),
            max(int(np.ceil(y1 * sy)), int(np.floor(y0 * sy)) + 1),
        )

    def to_image(self, mask: np.ndarray) -> np.ndarray:
        """A work-resolution mask at the photo's full resolution (smooth, not blocky, edges)."""
        if tuple(self.work_size) == tuple(self.image_size):
            return mask.copy()
        upscaled = cv2.resize(mask.astype(np.float32), self.image_size, interpolation=cv2.INTER_LINEAR)
        return upscaled >= 0.5

    def containing(self, x: int, y: int) -> np.ndarray:
        """Indices of the candidates that contain work pixel (x, y), smallest area first."""
        boxes = self.boxes
        inside = np.flatnonzero((boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3]))
        hits = [i for i in inside if self.crops[i][y - boxes[i, 1], x - boxes[i, 0]]]
        return np.asarray(sorted(hits, key=lambda i: self.areas[i]), dtype=np.int64)

    def levels_at(self, x: int, y: int, min_growth: float = 1.05) -> np.ndarray:
        """The candidates at work pixel (x, y) that a person can step through, smallest first.

        Near-duplicates (an area within ``min_growth`` of the previous level's) are skipped, so
        each step up selects something visibly larger.
        """
        levels: list[int] = []
        for index in self.containing(x, y):
            if not levels or self.areas[index] > min_growth * self.areas[levels[-1]]:
                levels.append(int(index))
        return np.asarray(levels, dtype=np.int64)

    def box_iou(self, box: Box) -> np.ndarray:
        """IoU of every candidate with the rectangle ``box`` (work pixels)."""
        bx0, by0, bx1, by1 = box
        box_area = (bx1 - bx0) * (by1 - by0)
        ious = np.zeros(len(self), np.float64)
        for i, (x0, y0, x1, y1) in enumerate(self.boxes):
            ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            inter = int(self.crops[i][iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0].sum())
            ious[i] = inter / (box_area + self.areas[i] - inter)
        return ious


# --- answering prompts from candidates ------------------------------------------------------


def select_positive(
    candidates: CandidateSet, positive: Sequence[tuple[int, int]], step: int = 0
) -> tuple[np.ndarray, list[int], int, int]:
    """Union, over positive points (work pixels), of the ``step``-th smallest candidate at each.

    Returns the mask, the chosen candidate indices, the number of levels ``step`` can go through
    (the most candidates at any point) and how many points hit no candidate.
    """
    width, height = candidates.work_size
    mask = np.zeros((height, width), dtype=bool)
    chosen: list[int] = []
    hits_per_point = [candidates.levels_at(x, y) for x, y in positive]
    for hits in hits_per_point:
        if hits.size:
            index = int(hits[min(max(step, 0), hits.size - 1)])
            chosen.append(index)
            mask |= candidates.mask(index)
    levels = max((hits.size for hits in hits_per_point), default=0)
    missed = sum(hits.size == 0 for hits in hits_per_point)
    return mask, chosen, int(levels), int(missed)


def exclude_points(
    candidates: CandidateSet, mask: np.ndarray, negative: Sequence[tuple[int, int]], protected: set[int]
) -> tuple[np.ndarray, int]:
    """Remove from ``mask``, for each negative point on it, the smallest candidate containing the
    point that is not ``protected`` (the candidates the positive prompts rely on), so excluding a
    part never erases the object it belongs to. Returns the mask and how many points could not be
    excluded that way."""
    mask = mask.copy()
    stuck = 0
    for x, y in negative:
        if not mask[y, x]:
            continue
        removable = [int(i) for i in candidates.containing(x, y) if int(i) not in protected]
        if removable:
            mask &= ~candidates.mask(removable[0])
        else:
            stuck += 1
    return mask, stuck


def points_message(missed: int, clicks: int, stuck: int) -> str:
    messages = []
    if missed:
        messages.append(
            f"No object was found under {missed} of the {clicks} clicks; try another spot, a box, "
            "or SAM refinement."
        )
    if stuck:
        messages.append(
            "An excluded point lies on the selected object itself; step to a smaller selection or "
            "use the eraser on the Mask page."
        )
    return " ".join(messages)


def select_box(
    candidates: CandidateSet, box: Box, clip_to_box: bool = False
) -> tuple[np.ndarray, float, int | None]:
    """The candidate with the highest IoU with ``box`` (work pixels), optionally cut to the box.

    Returns the mask, its IoU with the box and the candidate's index (None when none overlaps).
    """
    width, height = candidates.work_size
    if len(candidates) == 0:
        return np.zeros((height, width), dtype=bool), 0.0, None
    ious = candidates.box_iou(box)
    best = int(np.argmax(ious))
    if ious[best] <= 0:
        return np.zeros((height, width), dtype=bool), 0.0, None
    mask = candidates.mask(best)
    if clip_to_box:
        x0, y0, x1, y1 = box
        clipped = np.zeros_like(mask)
        clipped[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
        mask = clipped
    return mask, float(ious[best]), best


def top_k_by_text(similarities: np.ndarray, logit_scale: float, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top_k`` best candidates and their probabilities (softmax over all)."""
    similarities = np.asarray(similarities, np.float64)
    if similarities.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    logits = logit_scale * similarities
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-similarities, kind="stable")[:top_k]
    return order, probabilities[order]


def timed(timings: dict[str, float], stage: str):
    """Context manager adding a stage's wall time in milliseconds to ``timings``."""
    return _Timer(timings, stage)


class _Timer:
    def __init__(self, timings: dict[str, float], stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + (time.perf_counter() - self.start) * 1000


@dataclass(frozen=True)
class FastSAMSettings:
    """The "everything" pass's settings (FastSAM's own defaults).

    ``model``: which checkpoint (its engine in the catalog). ``imgsz``: the long side the photo is scaled to for the model (and the work resolution of the
    candidates). ``conf``/``iou``: detection confidence and NMS thresholds. ``retina_masks``:
    masks computed at the work resolution rather than the model's coarser output.
    """

    model: str = "fastsam"  # the model role: "fastsam" (FastSAM-s) or "fastsam_x"
    imgsz: int = 1024
    conf: float = 0.4
    iou: float = 0.9
    retina_masks: bool = True
    max_det: int = 300


def work_copy(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` scaled down so its long side is at most ``long_side`` (never scaled up)."""
    scale = long_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR, reducing_gap=2.0)
