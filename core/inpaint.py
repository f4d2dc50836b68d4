"""Regenerate the masked region of a photo, keeping every other pixel exactly as it was.

The shared work for every engine lives here (IOPaint's design): the mask is split into regions
far enough apart to be filled separately; each region's crop (mask box plus context padding,
multiples of 8, clamped to the photo) is scaled to the engine's native resolution, filled, scaled
back, colour-matched to its surroundings and pasted through a soft edge into the full-resolution
photo. Pixels outside the mask's feather band are never written.

Contracts: photos are RGB ``PIL.Image``s, masks bool H×W at the photo's size (True = regenerate).
"""
from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from core import masks
from core.blend import blend, seam_delta_e
from core.engines.base import CancelCheck, EngineRequest, InpaintEngine, InpaintError, ProgressCallback, require_all
from core.masks import Box

BlendMode = Literal["feather", "poisson"]
MAX_VARIANTS = 8
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class InpaintParams:
    """Everything that defines an inpainting edit, independent of the photo.

    ``seed``: the first variant's seed (variant i uses seed + i); None = pick one at random (the
    seed used is reported in the result). ``padding``: context around the mask, in photo pixels,
    that the engine sees. ``mask_blur`` / ``mask_blur_inside``: widths in photo pixels of the soft
    edge outside / inside the mask through which the result is pasted (0 = hard edge). ``blend``: "feather" or "poisson".
    ``color_match``: match the generated colours to a ring around the mask. ``invert_mask``:
    regenerate everything except the mask (keep the subject, replace the background).
    """

    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    steps: int = 30
    strength: float = 1.0
    seed: int | None = None
    variants: int = 1
    scheduler: str | None = None
    padding: int = 32
    mask_blur: int = 8
    mask_blur_inside: int = 0
    blend: BlendMode = "feather"
    color_match: bool = True
    invert_mask: bool = False
    engine: str = "sd15"

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.steps <= 150, f"Steps must be between 1 and 150 (got {self.steps})."),
            (0 <= self.guidance_scale <= 30, f"Guidance must be between 0 and 30 (got {self.guidance_scale})."),
            (0 < self.strength <= 1, f"Strength must be above 0 and at most 1 (got {self.strength})."),
            (1 <= self.variants <= MAX_VARIANTS, f"Variants must be between 1 and {MAX_VARIANTS} (got {self.variants})."),
            (0 <= self.padding <= 2048, f"Padding must be between 0 and 2048 px (got {self.padding})."),
            (0 <= self.mask_blur <= 256, f"Mask blur must be between 0 and 256 px (got {self.mask_blur})."),
            (0 <= self.mask_blur_inside <= 256, "Inner mask blur must be between 0 and 256 px."),
            (self.blend in ("feather", "poisson"), f"Blend must be 'feather' or 'poisson' (got {self.blend!r})."),
            (self.seed is None or 0 <= self.seed <= MAX_SEED, f"Seed must be between 0 and {MAX_SEED}."),
        ]
        require_all(checks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InpaintParams:
        known = {name for name in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InpaintError(f"Unknown inpainting settings: {', '.join(unknown)}.")
        return cls(**data)


@dataclass
class InpaintResult:
    """The variants at the photo's full size, and what produced them.

    ``images``: one RGB image per variant, the photo's size. ``seeds``: variant i's seed.
    ``params``: the params with the seed actually used. ``seam_delta_e``: per variant, the colour
    step across the mask's edge (ΔE76, see ``core.blend.seam_delta_e``). ``timings``: ms per stage.
    ``crops``: the boxes that were regenerated. ``notes``: what a person should know. ``extra``: more
    of what produced the result (e.g. the light of a lighting-aware fill), added to the metadata.
    ``mask``: the mask the edit was given, as it was then (a recipe saved later replays it).
    """

    images: list[Image.Image]
    seeds: list[int]
    params: InpaintParams
    engine: str
    model_id: str
    seam_delta_e: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    crops: list[Box] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = field(default=None, repr=False)  # the mask given (before any inversion)

    def metadata(self, index: int) -> dict[str, Any]:
        """What produced variant ``index``, for the PNG's text chunk and the recipe."""
        return {
            "action": "inpaint",
            "params": replace(self.params, seed=self.seeds[index], variants=1).to_dict(),
            "engine": self.engine,
            "model": self.model_id,
            "seam_delta_e": round(self.seam_delta_e[index], 3) if self.seam_delta_e else None,
            **self.extra,
        }


# --- planning the crops ----------------------------------------------------------------------


def plan_crops(mask: np.ndarray, padding: int, multiple: int = 8) -> list[Box]:
    """The boxes to regenerate: one per group of mask regions whose padded boxes overlap.

    Regions far apart get their own crop (a small crop each instead of one huge one); regions
    whose context overlaps are filled together so they see each other.
    """
    mask = masks.check_mask(mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    height, width = mask.shape
    boxes = [
        _padded(
            (int(s[cv2.CC_STAT_LEFT]), int(s[cv2.CC_STAT_TOP]),
             int(s[cv2.CC_STAT_LEFT] + s[cv2.CC_STAT_WIDTH]), int(s[cv2.CC_STAT_TOP] + s[cv2.CC_STAT_HEIGHT])),
            padding, width, height,
        )
        for s in stats[1:count]
    ]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _overlap(boxes[i], boxes[j]):
                    boxes[i] = _union(boxes[i], boxes.pop(j))
                    merged = True
                    break
            if merged:
                break
    return [_snap(box, width, height, multiple) for box in sorted(boxes, key=lambda b: (b[1], b[0]))]


def _padded(box: Box, padding: int, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0 - padding), max(0, y0 - padding), min(width, x1 + padding), min(height, y1 + padding)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _snap(box: Box, width: int, height: int, multiple: int) -> Box:
    region = np.zeros((height, width), dtype=bool)
    region[box[1] : box[3], box[0] : box[2]] = True
    return masks.crop_box(region, padding=0, multiple=multiple)


def engine_size(
    crop_size: tuple[int, int], native: int, multiple: int = 8, *, upscale: bool = True
) -> tuple[int, int]:
    """The size a crop is filled at: about ``native``² pixels, the crop's aspect, multiples of 8.

    The long side is capped at twice the native resolution (very long thin crops), and neither
    side goes below 64 px. ``upscale=False`` keeps a smaller crop at its own size (for engines
    that gain nothing from more pixels, like OpenCV's).
    """
    width, height = crop_size
    scale = native / math.sqrt(width * height)
    scale = min(scale, 2 * native / max(width, height))
    if not upscale:
        scale = min(scale, 1.0)

    def side(length: int) -> int:
        return max(64, int(round(length * scale / multiple)) * multiple)

    return side(width), side(height)


# --- the edit --------------------------------------------------------------------------------


def resolve_seeds(params: InpaintParams) -> list[int]:
    """Variant seeds: seed, seed + 1, …; a random first seed when the params leave it open."""
    first = params.seed if params.seed is not None else secrets.randbelow(MAX_SEED - MAX_VARIANTS)
    return [(first + i) % (MAX_SEED + 1) for i in range(params.variants)]


def inpaint(
    image: Image.Image,
    mask: np.ndarray,
    params: InpaintParams,
    engine: InpaintEngine,
    *,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> InpaintResult:
    """Regenerate ``mask`` of ``image`` with ``engine``; every pixel outside the soft edge is kept.

    Raises InpaintError for an empty mask or a mask of another size, Cancelled when
    ``should_cancel`` says so. ``progress`` receives (steps done, total steps) over all crops,
    as the engine counts its steps.
    """
    # 1. Check inputs.
    if image.mode != "RGB":
        raise InpaintError(f"The photo must be RGB (got {image.mode}).")
    try:
        mask = masks.check_mask(mask, image.size)
    except masks.MaskError as error:
        raise InpaintError(f"{error} Make the mask on this photo, or resize it to the photo.") from error
    selected = mask
    if params.invert_mask:
        mask = ~mask
    if not mask.any():
        raise InpaintError("The mask is empty: select or paint the region to change first.")
    timings: dict[str, float] = {}
    started = time.perf_counter()

    # 2. Plan the crops and the soft edge.
    seeds = resolve_seeds(params)
    used = replace(params, seed=seeds[0])
    crops = plan_crops(mask, params.padding)
    original = np.asarray(image)
    outputs = [original.copy() for _ in seeds]
    notes: list[str] = []
    timings["crop"] = (time.perf_counter() - started) * 1000

    # 3. Fill each crop and paste it back.
    for number, (x0, y0, x1, y1) in enumerate(crops):
        crop_mask = mask[y0:y1, x0:x1]
        crop_original = original[y0:y1, x0:x1]
        stage = time.perf_counter()
        request = _request(image.crop((x0, y0, x1, y1)), crop_mask, params, seeds, engine)
        timings["resize"] = timings.get("resize", 0.0) + (time.perf_counter() - stage) * 1000

        def crop_progress(step: int, total: int, crops_done: int = number) -> None:
            # The engine knows its real step count (schedulers may add or drop steps).
            if progress is not None:
                progress(crops_done * total + min(step, total), len(crops) * total)

        output = engine.generate(request, crop_progress, should_cancel)
        for stage_name, ms in output.timings.items():
            timings[stage_name] = timings.get(stage_name, 0.0) + ms
        notes.extend(note for note in output.notes if note not in notes)

        stage = time.perf_counter()
        alpha = masks.feather(crop_mask, inner=params.mask_blur_inside, outer=params.mask_blur)
        for variant, filled in enumerate(output.images):
            generated = np.asarray(filled.resize((x1 - x0, y1 - y0), Image.LANCZOS))
            pasted, _ = blend(crop_original, generated, crop_mask, alpha, mode=params.blend,
                              color_match=params.color_match)
            outputs[variant][y0:y1, x0:x1] = pasted
        timings["paste"] = timings.get("paste", 0.0) + (time.perf_counter() - stage) * 1000

    # 4. Measure the seams and report.
    stage = time.perf_counter()
    seams = [_seam(original, output, mask, crops) for output in outputs]
    timings["measure"] = (time.perf_counter() - stage) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    return InpaintResult(
        images=[Image.fromarray(output, "RGB") for output in outputs],
        seeds=seeds,
        params=used,
        engine=engine.name,
        model_id=engine.model_id,
        seam_delta_e=seams,
        timings=timings,
        crops=crops,
        notes=notes,
        mask=selected,
    )


def _request(
    crop: Image.Image, crop_mask: np.ndarray, params: InpaintParams, seeds: Sequence[int], engine: InpaintEngine
) -> EngineRequest:
    """The crop and its mask scaled to the engine's resolution.

    The engine's mask covers the soft edge too (grown by the blur width), so everything that
    will be pasted was generated.
    """
    if hasattr(engine, "work_size"):  # the engine decides (fixed sizes when its UNet is compiled)
        size = engine.work_size(crop.size)
    else:
        size = engine_size(crop.size, engine.native_resolution, upscale=getattr(engine, "upscales_small_crops", True))
    covered = masks.grow(crop_mask, params.mask_blur) if params.mask_blur else crop_mask
    mask_image = Image.fromarray(covered.astype(np.uint8) * 255, "L").resize(size, Image.NEAREST)
    return EngineRequest(
        image=crop.resize(size, Image.LANCZOS),
        mask=mask_image,
        seeds=tuple(seeds),
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        guidance_scale=params.guidance_scale,
        steps=params.steps,
        strength=params.strength,
        scheduler=params.scheduler,
    )


def _seam(original: np.ndarray, output: np.ndarray, mask: np.ndarray, crops: list[Box]) -> float:
    """The seam ΔE over the regenerated crops (mask-weighted mean)."""
    values, weights = [], []
    for x0, y0, x1, y1 in crops:
        crop_mask = mask[y0:y1, x0:x1]
        values.append(seam_delta_e(output[y0:y1, x0:x1], original[y0:y1, x0:x1], crop_mask))
        weights.append(int(crop_mask.sum()))
    return float(np.average(values, weights=weights)) if sum(weights) else 0.0
