"""Regenerate the masked region of a photo, keeping every other pixel exactly as it was.

The shared work for every engine lives here (IOPaint's design): the mask is split into regions
far enough apart to be filled separately; each region's crop (mask box plus context padding,
multiples of 8, clamped to the photo) is scaled to the engine's native resolution, filled, scaled
back, colour-matched to its surroundings and pasted through a soft edge into the full-resolution
photo. Pixels outside the mask's feather band are never written.

Contracts: photos are RGB ``PIL.Image``s, masks bool H×W at the photo's size (True = regenerate).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from core import masks
from core.blend import blend
from core.engines.base import CancelCheck, EngineRequest, InpaintEngine, InpaintError, ProgressCallback
from core.masks import Box
from core.operations.fields import MAX_SEED, MAX_VARIANTS, check, resolve_seeds, setting
from core.region import plan_crops, seam_score, work_size

BlendMode = Literal["feather", "poisson"]
Mode = Literal["fill", "instruct"]
DEFAULT_NEGATIVE = "blurry, low quality, distorted, watermark, text"


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

    prompt: str = setting("", label="Prompt", help="what should be in the region")
    negative_prompt: str = setting(DEFAULT_NEGATIVE, label="Negative prompt", help="what should not", flag="--negative")
    guidance_scale: float = setting(7.5, label="Guidance", low=0, high=30, flag="--guidance",
                                    help="how closely to follow the prompt")
    steps: int = setting(30, label="Steps", low=1, high=150, help="denoising steps")
    strength: float = setting(1.0, label="Strength", low=0, high=1, above_low=True,
                              help="1 ignores what is under the mask; lower keeps more of it")
    seed: int | None = setting(None, label="Seed", low=0, high=MAX_SEED, help="first variant's seed (default: random)")
    variants: int = setting(1, label="Variants", low=1, high=MAX_VARIANTS, help="variants, one per seed")
    scheduler: str | None = setting(None, label="Scheduler", help="sampler (default: the model's own)")
    padding: int = setting(64, label="Padding", low=0, high=2048, unit="px", help="context around the mask, px")
    mask_blur: int = setting(8, label="Mask blur", low=0, high=256, unit="px", help="soft edge outside the mask, px")
    mask_blur_inside: int = setting(0, label="Inner mask blur", low=0, high=256, unit="px",
                                    help="soft edge inside the mask, px")
    blend: BlendMode = setting("feather", label="Blend", choices=("feather", "poisson"),
                               help="feather (soft edge) or poisson (seamless)")
    color_match: bool = setting(True, label="Colour match", help="match colours to the surroundings",
                                flag="--no-color-match")
    invert_mask: bool = setting(False, label="Invert mask", help="regenerate everything except the mask")
    engine: str = setting("sd15", label="Engine", help="the engine that fills the region")
    mode: Mode = setting("fill", label="Mode", choices=("fill", "instruct"),
                         help="fill: the prompt says what should be there; instruct: what to change there "
                              "(engines that take instructions)")
    reference: str = setting("", label="Reference image",
                             help="a picture of what to put there (engines that take one); a recipe finds it "
                                  "next to itself")
    reference_sha256: str = setting("", label="Reference image hash", option=False,
                                    help="the reference image's content hash, recorded so a replay can check it")

    def __post_init__(self) -> None:
        check(self, InpaintError)

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
    reference_image: Image.Image | None = field(default=None, repr=False)  # the reference picture given

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


# --- the edit --------------------------------------------------------------------------------


def reference_sha256(image: Image.Image) -> str:
    """The content hash of a reference image (its RGB pixels and size), as recipes record it."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def load_reference(path: str | Path, expected_sha256: str = "") -> Image.Image:
    """The reference image at ``path`` (RGB); InpaintError naming the file when it cannot be read
    or is not the image ``expected_sha256`` was recorded from."""
    from core.images import ImageError, read_image

    try:
        image = read_image(Path(path), name=str(path)).rgb
    except (OSError, ImageError) as error:
        raise InpaintError(f"The reference image {path} cannot be read ({error}). Give the picture of what to "
                           "put in the region (PNG, JPEG, WebP…).") from error
    if expected_sha256 and reference_sha256(image) != expected_sha256:
        raise InpaintError(f"The reference image {path} is not the one this edit was made with (its content "
                           "differs). Use the original picture, or clear the recorded hash to use this one.")
    return image


def inpaint(
    image: Image.Image,
    mask: np.ndarray,
    params: InpaintParams,
    engine: InpaintEngine,
    *,
    reference_image: Image.Image | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> InpaintResult:
    """Regenerate ``mask`` of ``image`` with ``engine``; every pixel outside the soft edge is kept.

    ``reference_image``: a picture of what to put there, for engines that take one (its hash is
    recorded in the result's params).

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
    seeds = resolve_seeds(params.seed, params.variants)
    used = replace(params, seed=seeds[0])
    if reference_image is not None:
        used = replace(used, reference_sha256=reference_sha256(reference_image))
    crops = plan_crops(mask, params.padding)
    original = np.asarray(image)
    outputs = [original.copy() for _ in seeds]
    notes: list[str] = []
    timings["crop"] = (time.perf_counter() - started) * 1000

    # 3. Fill each crop and paste it back.
    for number, (x0, y0, x1, y1) in enumerate(crops):
        def crop_progress(step: int, total: int, crops_done: int = number) -> None:
            # The engine knows its real step count (schedulers may add or drop steps).
            if progress is not None:
                progress(crops_done * total + min(step, total), len(crops) * total)

        pasted = fill_crop(original, mask, (x0, y0, x1, y1), params, seeds, engine, timings, notes,
                           reference_image=reference_image, progress=crop_progress, should_cancel=should_cancel)
        for variant, crop in enumerate(pasted):
            outputs[variant][y0:y1, x0:x1] = crop

    # 4. Measure the seams and report.
    stage = time.perf_counter()
    seams = [seam_score(original, output, mask, crops) for output in outputs]
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
        reference_image=reference_image,
    )


def fill_crop(
    image: np.ndarray,
    mask: np.ndarray,
    box: Box,
    params: InpaintParams,
    seeds: Sequence[int],
    engine: InpaintEngine,
    timings: dict[str, float],
    notes: list[str],
    *,
    reference_image: Image.Image | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> list[np.ndarray]:
    """Fill ``box`` of ``image`` (uint8 RGB array) where ``mask`` (its size) is True, once per seed:
    the crop scaled to the engine's size, filled, scaled back and pasted through the soft edge
    (``params``' blur, blend and colour match). Returns the pasted crops (the box's size), one per
    seed; pixels of the crop beyond the soft edge are the image's, bit-identical. Adds the stages'
    milliseconds to ``timings`` and the engine's new notes to ``notes``.
    """
    x0, y0, x1, y1 = box
    crop_mask = mask[y0:y1, x0:x1]
    crop_original = image[y0:y1, x0:x1]
    stage = time.perf_counter()
    request = _request(Image.fromarray(crop_original, "RGB"), crop_mask, params, seeds, engine, reference_image)
    timings["resize"] = timings.get("resize", 0.0) + (time.perf_counter() - stage) * 1000
    output = engine.generate(request, progress, should_cancel)
    for stage_name, ms in output.timings.items():
        timings[stage_name] = timings.get(stage_name, 0.0) + ms
    notes.extend(note for note in output.notes if note not in notes)

    stage = time.perf_counter()
    alpha = masks.feather(crop_mask, inner=params.mask_blur_inside, outer=params.mask_blur)
    pasted = []
    for filled in output.images:
        generated = np.asarray(filled.resize((x1 - x0, y1 - y0), Image.LANCZOS))
        crop, _ = blend(crop_original, generated, crop_mask, alpha, mode=params.blend, color_match=params.color_match)
        pasted.append(crop)
    timings["paste"] = timings.get("paste", 0.0) + (time.perf_counter() - stage) * 1000
    return pasted


def _request(
    crop: Image.Image, crop_mask: np.ndarray, params: InpaintParams, seeds: Sequence[int], engine: InpaintEngine,
    reference_image: Image.Image | None = None,
) -> EngineRequest:
    """The crop and its mask scaled to the engine's resolution.

    The engine's mask covers the soft edge too (grown by the blur width), so everything that
    will be pasted was generated.
    """
    size = work_size(engine, crop.size)
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
        mode=params.mode,
        reference_image=reference_image,
    )
