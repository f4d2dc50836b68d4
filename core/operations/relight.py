"""Relighting with IC-Light: the subject (or the whole photo) regenerated under a chosen light.

Contract as in ``core.light``: uint8 RGB arrays, bool masks (True = the subject). The subject's crop
is planned, scaled and pasted back through ``core.region`` and ``core.blend``, as every operation's.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
from PIL import Image

from core.blend import feather_paste
from core.engines.base import InpaintError
from core.light import LightParams, check_image, light_image, transfer_detail
from core.masks import MaskError, check_mask, crop_box, feather
from core.operations.fields import MAX_SEED, MAX_VARIANTS, check, resolve_seeds, setting
from core.region import engine_size

RelightMode = Literal["subject", "whole"]
NEUTRAL_GREY = 127  # IC-Light fc places the cut-out subject on this grey


@dataclass(frozen=True)
class RelightParams:
    """Everything that defines a generated relight, independent of the photo.

    ``mode``: "subject" relights the subject and composites it over the untouched background;
    "whole" returns the whole photo as generated (the background relit too). ``denoise``: how
    much of the light image's start is regenerated (IC-Light uses 0.9). ``detail_transfer``:
    restore the original's fine detail under the new lighting. ``seed``: the first variant's
    seed (variant i uses seed + i); None = random, reported in the result. ``highres_scale``:
    above 1, a second pass at that multiple of the first pass's size regenerates each variant
    upscaled, at ``highres_denoise`` (IC-Light's demo uses 1.5 and 0.5); 1 = one pass.
    """

    prompt: str = setting("soft natural light, detailed", label="Lighting prompt",
                          help="the light and the mood, e.g. warm sunset light, soft shadows")
    negative_prompt: str = setting("lowres, bad anatomy, worst quality, low quality", label="Negative prompt")
    steps: int = setting(25, label="Steps", low=1, high=100)
    guidance: float = setting(2.0, label="Guidance", low=0, high=20)
    denoise: float = setting(0.9, label="Denoise", low=0, high=1, above_low=True,
                             help="how much of the light's start is regenerated; IC-Light uses 0.9")
    seed: int | None = setting(None, label="Seed", low=0, high=MAX_SEED)
    variants: int = setting(1, label="Variants", low=1, high=MAX_VARIANTS)
    mode: RelightMode = setting("subject", label="Mode", choices=("subject", "whole"))
    detail_transfer: bool = setting(True, label="Keep the subject's detail")
    padding: int = setting(32, label="Padding", low=0, high=2048, unit="px")
    mask_blur: int = setting(4, label="The soft edge", low=0, high=256, unit="px")
    highres_scale: float = setting(1.0, label="The high-resolution pass scale", low=1, high=2)
    highres_denoise: float = setting(0.5, label="The high-resolution pass denoise", low=0, high=1, above_low=True)

    def __post_init__(self) -> None:
        check(self, InpaintError)


@dataclass
class RelightResult:
    """The relit photos at full size (one per seed) and what produced them."""

    images: list
    seeds: list[int]
    params: RelightParams
    light: LightParams
    model_id: str
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    engine: str = "iclight"  # or "shading" (:func:`relight_by_shading`, no model)
    mask: np.ndarray | None = field(default=None, repr=False)  # the subject mask it was given

    def metadata(self, index: int) -> dict:
        """What produced variant ``index``, for the PNG's text chunk and the recipe."""
        meta = {"action": "relight", "engine": self.engine, "model": self.model_id, "light": self.light.to_dict()}
        if self.engine != "shading":
            meta["params"] = asdict(replace(self.params, seed=self.seeds[index], variants=1))
        return meta


def relight(
    image: np.ndarray,
    mask: np.ndarray,
    light: LightParams,
    params: RelightParams,
    engine,
    *,
    progress=None,
    should_cancel=None,
):
    """Relight the subject ``mask`` of ``image`` (uint8 RGB) from ``light`` with an IC-Light engine.

    The subject's crop (mask box plus padding, multiples of 8) is cut out onto neutral grey,
    scaled to the engine's native resolution and generated from the light image (img2img). In
    subject mode the relit subject goes back through a soft edge of ``mask_blur`` px and every
    pixel beyond it is the original's; in whole mode the crop is the whole photo. Returns a
    :class:`RelightResult` with PIL images. Raises InpaintError for an empty mask, or a mask
    covering everything in subject mode.
    """
    # 1. Check inputs.
    image = check_image(image)
    height, width = image.shape[:2]
    try:
        mask = check_mask(mask, (width, height))
    except MaskError as error:
        raise InpaintError(str(error)) from error
    if not mask.any():
        raise InpaintError("No subject is selected: select it on the Segment page or paint it on the Mask page.")
    if params.mode == "subject" and mask.all():
        raise InpaintError("The subject mask covers the whole photo: select just the subject, or relight the whole image.")
    started = time.perf_counter()
    timings: dict[str, float] = {}

    # 2. The crop, cut out on grey, and the light image, at the engine's resolution.
    x0, y0, x1, y1 = crop_box(mask, padding=params.padding) if params.mode == "subject" else (0, 0, width, height)
    crop, crop_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    cutout = np.where(crop_mask[:, :, None], crop, NEUTRAL_GREY).astype(np.uint8)
    size = engine_size((x1 - x0, y1 - y0), engine.native_resolution)
    foreground = Image.fromarray(cutout, "RGB").resize(size, Image.LANCZOS)
    light_start = Image.fromarray(light_image(size, light), "RGB")
    seeds = resolve_seeds(params.seed, params.variants)
    timings["prepare"] = (time.perf_counter() - started) * 1000

    # 3. Generate: one batched pass, then optionally each variant again, upscaled, at lower denoise.
    stage = time.perf_counter()
    # One progress bar over all passes, each weighted by the steps it is expected to run.
    weights = [max(1, int(params.steps * params.denoise))]
    if params.highres_scale > 1:
        weights += [max(1, int(params.steps * params.highres_denoise))] * len(seeds)

    def pass_progress(number: int):
        def report(step: int, total: int) -> None:
            if progress is not None:
                done = sum(weights[:number]) + round(weights[number] * min(step, total) / max(total, 1))
                progress(done, sum(weights))

        return report

    common = dict(steps=params.steps, guidance=params.guidance, should_cancel=should_cancel)
    relit = engine.relight(foreground, light_start, params.prompt, params.negative_prompt, seeds=seeds,
                           denoise=params.denoise, progress=pass_progress(0), **common)
    timings["generate"] = (time.perf_counter() - stage) * 1000
    notes: list[str] = []
    if params.highres_scale > 1:
        stage = time.perf_counter()
        high = tuple(_multiple_of_8(side * params.highres_scale) for side in size)
        if int(params.steps * params.highres_denoise) < 1:
            raise InpaintError(
                f"Steps x high-resolution denoise must be at least 1 (got {params.steps} x "
                f"{params.highres_denoise}): raise either."
            )
        foreground_high = Image.fromarray(cutout, "RGB").resize(high, Image.LANCZOS)
        relit = [
            engine.relight(foreground_high, variant.resize(high, Image.LANCZOS), params.prompt,
                           params.negative_prompt, seeds=[seed], denoise=params.highres_denoise,
                           progress=pass_progress(1 + number), **common)[0]
            for number, (variant, seed) in enumerate(zip(relit, seeds))
        ]
        timings["highres"] = (time.perf_counter() - stage) * 1000
        notes.append(f"Second pass at {high[0]}×{high[1]} (×{params.highres_scale:g}, denoise "
                     f"{params.highres_denoise:g}).")

    # 4. Back to full size: the subject through its soft edge, its detail restored.
    stage = time.perf_counter()
    outputs = []
    alpha = feather(crop_mask, inner=0, outer=params.mask_blur)
    for variant in relit:
        generated = np.asarray(variant.resize((x1 - x0, y1 - y0), Image.LANCZOS))
        out = image.copy()
        if params.mode == "subject":
            if params.detail_transfer:
                generated = transfer_detail(generated, crop, crop_mask)
            out[y0:y1, x0:x1] = feather_paste(crop, generated, alpha)
        else:
            out[y0:y1, x0:x1] = transfer_detail(generated, crop, crop_mask) if params.detail_transfer else generated
        outputs.append(Image.fromarray(out, "RGB"))
    timings["paste"] = (time.perf_counter() - stage) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    return RelightResult(outputs, seeds, replace(params, seed=seeds[0]), light, engine.model_id, timings, notes,
                         mask=mask)


def _multiple_of_8(length: float) -> int:
    return max(8, int(round(length / 8)) * 8)
