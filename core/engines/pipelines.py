"""What every diffusers-based engine shares: load options, checking a pipeline folder before
loading it, placing a pipeline on its device, the per-variant loop (a fresh scheduler and a seeded
generator per call, progress, cancel, out-of-memory and NaN checks), the black-output check,
few-step LoRAs, and freeing memory after a failure.

Used by the SD 1.5 / SDXL engine (:mod:`core.engines.diffusion`) and the FLUX engines
(:mod:`core.engines.flux`). torch and diffusers are imported inside the functions that need them.
"""
from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.catalog import EngineEntry, FewStep
from core.engines.base import (
    CancelCheck,
    Cancelled,
    EngineRequest,
    ModelLoadError,
    ProgressCallback,
    how_to_provide,
)
from core.engines.fast import apply_few_step, quantize_fp8
from core.errors import GenerationFailed

DEVICES = ("cuda", "mps", "cpu")
DTYPES = ("float16", "bfloat16", "float32")
FP16_SAFE_SDXL_VAE = "madebyollin/sdxl-vae-fp16-fix"
NAN_ADVICE = (f"typically float16 overflowing. Run in float32 or bfloat16, or set the fp16-safe VAE "
              f"({FP16_SAFE_SDXL_VAE} for SDXL).")

# An output whose brightest value is at most this (of 1.0) is black. A float16 VAE that overflows
# decodes NaN, which diffusers turns into 0, i.e. black.
BLACK_LEVEL = 4 / 255
# An input crop whose brightest value is above this is not black, so a black output is a failure.
NOT_BLACK_INPUT_LEVEL = 16 / 255
# Files that hold a pipeline component's weights (any of them, sharded or not).
WEIGHT_SUFFIXES = (".safetensors", ".bin")
PROMPT_CACHE_SIZE = 8  # prompts whose text-encoder outputs an engine keeps


@dataclass(frozen=True)
class DiffusionOptions:
    """How a diffusion engine is loaded; per-call knobs live in :class:`EngineRequest`.

    ``device``: ``cuda``, ``mps`` or ``cpu``. ``dtype``: ``float16``, ``bfloat16`` or ``float32``
    (use float32 on CPU). ``fp16_safe_vae``: a hub id or folder of a VAE that replaces the model's
    own, e.g. ``madebyollin/sdxl-vae-fp16-fix`` for SDXL in float16 (the stock SDXL VAE overflows
    there). ``cpu_offload``: keep each sub-model on the CPU until it runs (slower, needs far less
    GPU memory); only applies on CUDA. ``compile``: ``torch.compile`` the UNet, CUDA only (a slow
    first call per fill size; crops are then filled at a few fixed sizes, see
    :func:`core.engines.fast.bucket_size`). ``channels_last``: the UNet's memory format (faster
    convolutions on CUDA). ``warm_up``: run a 2-step fill at load, so the first person's first
    generation is not the slow one. ``few_step``: a preset of :mod:`core.engines.fast` whose LoRA
    (``few_step_lora``, a folder or file) is fused into the UNet. ``fuse_qkv`` / ``fp8``: the CUDA
    fast path of :func:`apply_fast_path` (fused attention projections; FP8 weights through torchao).
    """

    device: str = "cpu"
    dtype: str = "float32"
    fp16_safe_vae: str | None = None
    cpu_offload: bool = False
    compile: bool = False
    channels_last: bool = False
    warm_up: bool = False
    few_step: FewStep | None = None
    few_step_lora: str | None = None
    fuse_qkv: bool = False
    fp8: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {self.device!r}).")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r}).")
        if (self.few_step is None) != (self.few_step_lora is None):
            raise ValueError("few_step (a core.catalog.FewStep) and few_step_lora go together.")




def diffusion_options(settings, device, *, fp16_safe_vae: str | None = None,
                      **options: Any) -> DiffusionOptions:
    """:class:`DiffusionOptions` for ``device`` (a ``core.device.DeviceInfo``) and the settings;
    ``options`` override."""
    defaults = {
        "device": device.kind,
        "dtype": device.dtype,
        "cpu_offload": settings.cpu_offload,
        "compile": settings.compile,
        "fp16_safe_vae": fp16_safe_vae if device.dtype == "float16" else None,
        # The CUDA fast path: channels-last convolutions, and the first generation warmed up at load.
        "channels_last": device.kind == "cuda",
        "warm_up": device.kind == "cuda",
        "fuse_qkv": settings.fuse_qkv and device.kind == "cuda",
        "fp8": settings.fp8,
    }
    return DiffusionOptions(**{**defaults, **options})


def run_variants(
    pipe,
    seeds: Sequence[int],
    call: Callable[..., Any],
    options: DiffusionOptions,
    *,
    generator_device: str,
    fresh_scheduler: Callable[[], Any],
    progress: ProgressCallback | None,
    should_cancel: CancelCheck | None,
    doing: str,
    advice: str,
    nan_advice: str = NAN_ADVICE,
) -> tuple[list[np.ndarray], float, float]:
    """One pipeline call per seed: ``call(generator=…, callback_on_step_end=…)`` returning the
    pipeline's output with ``output_type="np"``; (images (H, W, 3) floats in [0, 1], denoise ms,
    decode ms).

    Each call gets a fresh scheduler (it keeps state between steps, and a cancelled call's must
    not carry over) and its own seed's generator, so a variant regenerated alone is bit-identical.
    ``progress(step, total)`` counts over all variants. Raises Cancelled when ``should_cancel()``
    says so (between steps), GenerationFailed for out-of-memory (with ``advice``) and NaN images
    (``nan_advice``: the likely cause and the fix, after "invalid (NaN) image for seed N, ").
    """
    import torch

    if should_cancel is not None and should_cancel():
        raise Cancelled("The generation was cancelled before it started.")
    images, denoise_ms, decode_ms = [], 0.0, 0.0
    for index, seed in enumerate(seeds):
        pipe.scheduler = fresh_scheduler()
        last_step_at = None
        report_step = step_callback(variant_progress(progress, index, len(seeds)), should_cancel)

        def on_step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            nonlocal last_step_at
            last_step_at = time.perf_counter()
            return report_step(pipe, step, timestep, callback_kwargs)

        started = time.perf_counter()
        pipe._interrupt = False  # as diffusers' __call__ does: also true for a pipeline not yet called
        result = call_within_memory(
            lambda: call(generator=torch.Generator(generator_device).manual_seed(seed),
                         callback_on_step_end=on_step_end),
            pipe, options.device, doing=doing, advice=advice)
        finished = time.perf_counter()
        if getattr(pipe, "_interrupt", False):
            raise Cancelled("The generation was cancelled.")
        pixels = result.images[0]
        if np.isnan(pixels).any():
            raise GenerationFailed(f"The model produced an invalid (NaN) image for seed {seed}, {nan_advice}")
        images.append(pixels)
        last_step_at = last_step_at or finished
        denoise_ms += (last_step_at - started) * 1000
        decode_ms += (finished - last_step_at) * 1000
    return images, denoise_ms, decode_ms


def request_checks(request: EngineRequest) -> list[tuple[bool, str]]:
    """The checks every diffusion engine makes of a request, as (passed, what to change) pairs for
    :func:`core.errors.require_all`: seeds, steps, guidance, strength, image and mask modes and sizes."""
    image, mask = request.image, request.mask
    return [
        (len(request.seeds) >= 1, "At least one seed is needed (one variant per seed)."),
        (all(isinstance(seed, int) and 0 <= seed < 2**64 for seed in request.seeds),
         f"Seeds must be whole numbers from 0 to 2**64 - 1 (got {request.seeds})."),
        (request.steps >= 1, f"Steps must be at least 1 (got {request.steps})."),
        (request.guidance_scale >= 0, f"Guidance scale must be 0 or more (got {request.guidance_scale})."),
        (0 < request.strength <= 1, f"Strength must be above 0 and at most 1 (got {request.strength})."),
        (image.mode == "RGB", f"The image must be RGB (got mode {image.mode})."),
        (mask.mode == "L", f"The mask must be mode L, 255 = repaint (got mode {mask.mode})."),
        (image.size == mask.size,
         f"The image ({image.width}x{image.height}) and mask ({mask.width}x{mask.height}) must be the same "
         "size."),
    ]


def cached(cache: dict, key: Any, compute: Callable[[], Any], size: int = PROMPT_CACHE_SIZE) -> Any:
    """``cache[key]``, computed first (``compute()``, without gradients) when missing; the oldest
    entries are dropped beyond ``size``. For text-encoder outputs: a batch runs one prompt on every
    photo, and a person regenerates with the same prompt often."""
    import torch

    if key not in cache:
        with torch.no_grad():
            cache[key] = compute()
        while len(cache) > size:
            cache.pop(next(iter(cache)))
    return cache[key]


def fresh_scheduler(scheduler):
    """A new scheduler of ``scheduler``'s class and config: no state of an earlier (possibly
    cancelled) call carries over."""
    return type(scheduler).from_config(scheduler.config)


def check_not_black(pixels: np.ndarray, image: Image.Image, seeds: Sequence[int], advice: str) -> None:
    """Raise GenerationFailed naming every seed whose variant (``pixels``: (variants, H, W, 3) floats
    in [0, 1]) is black or NaN although the input crop ``image`` was not black (a black input may
    rightly give a black fill). ``advice``: the likely cause and the fix, after "for seed(s) N, "."""
    import numpy as np

    input_is_black = np.asarray(image).max() / 255 <= NOT_BLACK_INPUT_LEVEL
    failed = [
        seed
        for seed, variant in zip(seeds, pixels, strict=True)
        if np.isnan(variant).any() or (not input_is_black and variant.max() <= BLACK_LEVEL)
    ]
    if failed:
        seeds_text = ", ".join(map(str, failed))
        raise GenerationFailed(
            f"The model produced a black or invalid (NaN) image for seed(s) {seeds_text}, {advice}")


def call_within_memory(call: Callable[[], Any], pipe, device: str, *, doing: str, advice: str) -> Any:
    """``call()``; when it runs out of memory, free what it left and raise a GenerationFailed that says
    what was being done and what to try instead."""
    out_of_memory = None
    try:
        return call()
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        out_of_memory = str(error).splitlines()[0]
    # Only now: until its except block ended, the error's traceback held the call's tensors.
    free_memory(pipe, device)
    raise GenerationFailed(f"Out of memory on {device} while {doing} ({out_of_memory}). {advice}")


def is_out_of_memory(error: Exception) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def load_vae(path: str, dtype):
    try:
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(path, dtype=dtype)
    except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors and torch raise many types)
        raise ModelLoadError(
            f"The VAE {path} could not be loaded ({type(error).__name__}: {error}). Download "
            f"{FP16_SAFE_SDXL_VAE} on a machine with internet and point the fp16-safe VAE setting at "
            "its folder, or leave that setting empty."
        ) from error



def check_pipeline_folder(entry: EngineEntry, model_id: str, accepted: Sequence[str],
                          fitting: Callable[[str], str | None] = lambda _: None) -> dict[str, Any] | None:
    """Check the pipeline folder ``model_id`` of ``entry``'s model before loading it; its model_index.json.

    Raises ModelLoadError, naming the folder and the setting that points at it, for a folder that
    does not exist, has no model_index.json (not a diffusers pipeline), holds a pipeline class not in
    ``accepted`` (``fitting(class_name)``: the engine that runs that class, named in the message), or
    lacks a component's folder or weights (an interrupted download). Returns None for a hub id
    (nothing to check before the loader looks in the cache).
    """
    local = Path(model_id).expanduser()
    if not local.is_absolute() and not model_id.startswith(".") and not local.exists():
        return None  # a hub id
    fix = how_to_provide(entry)
    title = f"The {entry.title} model"
    if not local.is_dir():
        raise ModelLoadError(f"{title} folder {model_id} does not exist. {fix}")
    try:
        index = json.loads((local / "model_index.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"{model_id} is not a diffusers pipeline folder (its model_index.json cannot be read: "
            f"{type(error).__name__}). {fix}") from error
    loaded = index.get("_class_name")
    if loaded not in accepted:
        engine = fitting(str(loaded))
        advice = f"Load it with the {engine!r} engine, or set" if engine else "Set"
        raise ModelLoadError(
            f"{model_id} is a {loaded}, not a {entry.title} model ({' or '.join(accepted)}). "
            f"{advice} {fix.removeprefix('Set ')}")
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or None in spec:
            continue
        folder = local / component
        if not folder.is_dir():
            raise ModelLoadError(
                f"{title} {model_id} has no {component}/ folder (an interrupted download?). {fix}")
        if (folder / "config.json").exists() and not any(
                path.name.endswith(WEIGHT_SUFFIXES) for path in folder.iterdir()):
            raise ModelLoadError(
                f"{title} {model_id} has no weights in {component}/ (an interrupted download?). {fix}")
    return index


def weights_variant(folder: str) -> str | None:
    """``"fp16"`` when the pipeline folder holds only the fp16 variant of its UNet's weights (as
    ``python -m core models download`` fetches them), else None (the plain files)."""
    unet = Path(folder).expanduser() / "unet"
    if not unet.is_dir() or (unet / "diffusion_pytorch_model.safetensors").exists():
        return None
    return "fp16" if (unet / "diffusion_pytorch_model.fp16.safetensors").exists() else None


def place_pipeline(pipe, options: DiffusionOptions, what: str) -> list[str]:
    """Put a loaded pipeline on ``options``' device (or CPU offload), in channels-last and
    compiled if asked, and turn its progress bar off. Returns notes for a person (a setting that
    does not apply here). ``what`` names the model in the error raised when that fails.

    Attention runs through torch's scaled-dot-product attention (diffusers' default with torch 2).
    """
    import torch

    notes = []
    denoiser = denoiser_of(pipe)
    try:
        if options.cpu_offload and options.device == "cuda":
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(options.device)
        if options.channels_last and hasattr(pipe, "unet"):  # convolutions only: a transformer gains nothing
            denoiser.to(memory_format=torch.channels_last)
        if options.device == "cuda":
            notes += apply_fast_path(denoiser, options)
        elif options.fp8:
            notes.append(f"FP8 weights (INPAINT_STUDIO_FP8) are for CUDA GPUs; skipped on {options.device}.")
        if options.compile and options.device == "cuda":
            denoiser.compile(mode="max-autotune-no-cudagraphs", dynamic=False)
        elif options.compile:
            notes.append(f"Compiling (INPAINT_STUDIO_COMPILE) is for CUDA GPUs; skipped on {options.device}.")
    except Exception as error:  # noqa: BLE001 (torch raises many types for a missing device)
        raise ModelLoadError(
            f"{what} could not be moved to {options.device} in {options.dtype} "
            f"({type(error).__name__}: {error}). Choose another device or dtype."
        ) from error
    pipe.set_progress_bar_config(disable=True)
    return notes


FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper GPUs and newer have FP8 tensor cores


def apply_fast_path(denoiser, options: DiffusionOptions, capability: tuple[int, int] | None = None) -> list[str]:
    """The CUDA fast path on the denoiser, before it is compiled: fused query/key/value projections
    (one matmul instead of three per attention) and, when asked, FP8 weights with dynamic FP8
    activations through torchao. ``capability``: the GPU's compute capability (read from the
    device when None). Returns notes for a person (what was skipped and why)."""
    notes = []
    if options.fuse_qkv and hasattr(denoiser, "fuse_qkv_projections"):
        denoiser.fuse_qkv_projections()
    if options.fp8:
        if capability is None:
            import torch

            capability = torch.cuda.get_device_capability()
        try:
            import torchao.quantization  # noqa: F401
        except ImportError:
            notes.append("FP8 weights (INPAINT_STUDIO_FP8) need torchao: pip install torchao. Running in "
                         f"{options.dtype}.")
        else:
            if tuple(capability) < FP8_MIN_CAPABILITY:
                notes.append(f"FP8 weights need a GPU of compute capability 8.9 or newer (this one is "
                             f"{capability[0]}.{capability[1]}); running in {options.dtype}.")
            else:
                quantize_fp8(denoiser)
    return notes


def load_pipeline(entry, model_id: str, pipeline_class: str, options: DiffusionOptions, layout: str):
    """``diffusers.<pipeline_class>.from_pretrained(model_id)`` in ``options.dtype``; ModelLoadError
    naming the model, what the folder must hold (``layout``) and the setting to fix, whatever the
    loader raised."""
    try:
        import diffusers
        import torch

        return getattr(diffusers, pipeline_class).from_pretrained(model_id, dtype=getattr(torch, options.dtype))
    except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors, transformers and torch raise many types)
        from core.engines.base import how_to_provide

        reason = str(error).splitlines()[0] if str(error) else ""
        raise ModelLoadError(
            f"The {entry.title} model {model_id} could not be loaded ({type(error).__name__}: {reason}). "
            f"It must be a diffusers pipeline folder as saved by save_pretrained ({layout}). "
            f"{how_to_provide(entry)}"
        ) from error


def denoiser_of(pipe):
    """The network a pipeline runs at every step: its UNet (SD 1.5, SDXL) or its transformer
    (FLUX, Qwen-Image)."""
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


def fuse_few_step(pipe, options: DiffusionOptions) -> None:
    """Fuse the few-step preset's LoRA; ModelLoadError naming the file when it does not fit."""
    preset = options.few_step
    try:
        apply_few_step(pipe, preset, options.few_step_lora)
    except Exception as error:  # noqa: BLE001 (peft, safetensors and diffusers raise many types)
        raise ModelLoadError(
            f"The {preset.title} LoRA {options.few_step_lora} could not be applied ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). It must be a diffusers/peft LoRA for this "
            "model family (SD 1.5 or SDXL)."
        ) from error


def variant_progress(progress: ProgressCallback | None, index: int, count: int) -> ProgressCallback | None:
    """``progress`` for variant ``index`` of ``count``, counting steps over all of them."""
    if progress is None:
        return None
    return lambda step, total: progress(index * total + step, count * total)


def step_callback(progress: ProgressCallback | None, should_cancel: CancelCheck | None):
    """A ``callback_on_step_end`` reporting ``progress(step, total)`` and stopping the pipeline
    (diffusers' documented ``_interrupt``: the remaining steps are skipped) when ``should_cancel``
    says so. The caller raises Cancelled when ``pipe.interrupt`` is set after the call."""

    def on_step_end(pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        if progress is not None:
            progress(step + 1, pipe.num_timesteps)
        if should_cancel is not None and should_cancel():
            pipe._interrupt = True
        return callback_kwargs

    return on_step_end


def free_memory(pipe, device: str) -> None:
    """Release what a failed (out-of-memory) call left on the accelerator."""
    import torch

    pipe.maybe_free_model_hooks()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if device == "mps":
        torch.mps.empty_cache()


def to_pil(pixels: np.ndarray) -> Image.Image:
    """An (H, W, 3) float array in [0, 1] as an RGB image."""
    import numpy as np

    return Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), "RGB")


