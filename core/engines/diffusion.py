"""Stable Diffusion 1.5 and SDXL inpainting through diffusers.

An engine holds one loaded inpainting pipeline and fills prepared crops (see
:mod:`core.engines.base`): RGB image and mode L mask (255 = repaint) of the same size, width and
height multiples of 8. Every seed gives one variant.

Reproducibility: variant i depends only on seed i, bit for bit. Each variant is its own pipeline
call with its own generator and a fresh scheduler, so regenerating one variant alone (a recipe
replaying the variant a person chose) gives exactly its pixels. A batched call would be faster
for several variants on a GPU, but batched and unbatched kernels sum in different orders, and
the variant would then replay only up to rounding. (The same pixels also need the same device,
dtype and, on a CPU, the same number of threads.)

torch and diffusers are imported inside the functions that need them.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
from PIL import Image

from core.engines import ModelLoadError
from core.engines.base import (
    CancelCheck,
    Cancelled,
    EngineOutput,
    EngineRequest,
    InpaintError,
    ProgressCallback,
    require_all,
)
from core.models import ROLES

if TYPE_CHECKING:
    import numpy as np

DEVICES = ("cuda", "mps", "cpu")
DTYPES = ("float16", "bfloat16", "float32")

# The UNet of an inpainting model takes the noisy latent (4 channels), the mask (1) and the
# masked image's latent (4).
INPAINT_UNET_CHANNELS = 9

# Scheduler names offered to people -> (diffusers class, settings over the pipeline's own config).
# "default" keeps the scheduler the model was saved with.
DEFAULT_SCHEDULER = "default"
PROMPT_CACHE_SIZE = 8  # prompt pairs whose text-encoder outputs an engine keeps
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}
    ),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}

# An output whose brightest value is at most this (of 1.0) is black. A float16 VAE that overflows
# decodes NaN, which diffusers turns into 0, i.e. black.
BLACK_LEVEL = 4 / 255
# An input crop whose brightest value is above this is not black, so a black output is a failure.
NOT_BLACK_INPUT_LEVEL = 16 / 255

FP16_SAFE_SDXL_VAE = "madebyollin/sdxl-vae-fp16-fix"


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
    (``few_step_lora``, a folder or file) is fused into the UNet.
    """

    device: str = "cpu"
    dtype: str = "float32"
    fp16_safe_vae: str | None = None
    cpu_offload: bool = False
    compile: bool = False
    channels_last: bool = False
    warm_up: bool = False
    few_step: str | None = None
    few_step_lora: str | None = None

    def __post_init__(self) -> None:
        from core.engines.fast import FEW_STEP_PRESETS

        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {self.device!r}).")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r}).")
        if self.few_step is not None and (self.few_step not in FEW_STEP_PRESETS or not self.few_step_lora):
            raise ValueError(f"few_step must be one of {', '.join(FEW_STEP_PRESETS)}, with few_step_lora set.")


class DiffusionEngine:
    """A loaded diffusers inpainting pipeline. Not thread-safe: hold a lock per engine.

    Subclasses name the model family: the diffusers pipeline class it must load as and the model
    role (``core.models.ROLES``) under which it is configured.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    native_resolution: ClassVar[int]
    supports_prompt: ClassVar[bool] = True
    supports_negative_prompt: ClassVar[bool] = True
    supports_strength: ClassVar[bool] = True
    schedulers: ClassVar[tuple[str, ...]] = (DEFAULT_SCHEDULER, *SCHEDULERS)
    pipeline_class: ClassVar[str]
    role: ClassVar[str]
    load_overrides: ClassVar[dict[str, Any]] = {}

    def __init__(self, pipe, model_id: str, options: DiffusionOptions) -> None:
        from core.engines.fast import FEW_STEP_PRESETS

        self.pipe = pipe
        self.model_id = model_id
        self.options = options
        self.default_scheduler = pipe.scheduler
        self.load_notes: list[str] = []
        self.preset = FEW_STEP_PRESETS.get(options.few_step) if options.few_step else None
        if self.preset is not None:
            self.name = f"{type(self).name}+{self.preset.name}"  # what results and recipes record
        # MPS generators are not reproducible across runs; CPU ones are (the noise moves to MPS).
        self.generator_device = "cpu" if options.device == "mps" else options.device

    # --- loading ----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, options: DiffusionOptions = DiffusionOptions()) -> DiffusionEngine:
        """Load the inpainting pipeline at ``path`` (a ``save_pretrained`` folder or a cached hub id).

        The model's safety checker is not loaded (it blacks out whole variants; a photo editor
        does not need it). Attention runs through torch's scaled-dot-product attention (diffusers'
        default with torch 2; no xformers). Raises :class:`ModelLoadError` naming ``path`` when it
        cannot be loaded, is not an inpainting model, or belongs to another engine.
        """
        model_id = str(path)
        local = Path(model_id).expanduser()
        if (local.is_absolute() or model_id.startswith(".")) and not local.exists():
            raise ModelLoadError(
                f"The {cls.title} model folder {model_id} does not exist. {cls._how_to_provide()}"
            )
        try:
            import torch
            from diffusers import AutoPipelineForInpainting

            dtype = getattr(torch, options.dtype)
            components = dict(cls.load_overrides)
            if options.fp16_safe_vae:
                components["vae"] = load_vae(options.fp16_safe_vae, dtype)
            pipe = AutoPipelineForInpainting.from_pretrained(model_id, dtype=dtype, variant=weights_variant(model_id),
                                                             **components)
        except ModelLoadError:
            raise
        except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors and torch raise many types)
            raise ModelLoadError(
                f"The {cls.title} model {model_id} could not be loaded ({type(error).__name__}: {error}). "
                f"It must be a diffusers inpainting pipeline (a folder with model_index.json, unet/, vae/ "
                f"and text encoders, as saved by save_pretrained). {cls._how_to_provide()}"
            ) from error
        cls._check_pipeline(model_id, pipe)
        if options.few_step:
            _fuse_few_step(pipe, options)
        notes = place_pipeline(pipe, options, f"The {cls.title} model {model_id}")
        engine = cls(pipe, model_id, options)
        engine.load_notes = notes
        if options.warm_up:
            engine.warm_up()
        return engine

    @classmethod
    def _how_to_provide(cls) -> str:
        role = ROLES[cls.role]
        return f"Set {role.setting} to a local copy of {role.default}."

    @classmethod
    def _check_pipeline(cls, model_id: str, pipe) -> None:
        """Raise ModelLoadError unless ``pipe`` is this engine's inpainting pipeline.

        AutoPipelineForInpainting also loads a text-to-image model (as an inpainting pipeline with
        a 4-channel UNet that only blends latents), which would fill holes with unrelated content.
        """
        unet = getattr(pipe, "unet", None)
        channels = unet.config.in_channels if unet is not None else None
        if channels != INPAINT_UNET_CHANNELS:
            raise ModelLoadError(
                f"{model_id} is not an inpainting model (its UNet takes {channels} input channels, an "
                f"inpainting UNet takes {INPAINT_UNET_CHANNELS}). {cls._how_to_provide()}"
            )
        loaded = type(pipe).__name__
        if loaded != cls.pipeline_class:
            engines = DiffusionEngine.__subclasses__()
            fitting = [other.name for other in engines if other.pipeline_class == loaded]
            advice = f"Load it with the {fitting[0]!r} engine, or set" if fitting else "Set"
            raise ModelLoadError(
                f"{model_id} is a {loaded}, not a {cls.title} model ({cls.pipeline_class}). "
                f"{advice} {ROLES[cls.role].setting} to a local copy of {ROLES[cls.role].default}."
            )

    # --- generating -------------------------------------------------------------------------------

    def generate(
        self,
        request: EngineRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> EngineOutput:
        """Fill ``request`` with one variant per seed, one pipeline call per variant.

        ``progress(step, total)`` is called after every denoising step, counting over all
        variants; a variant's step count is the pipeline's, ``int(steps * strength)`` for most
        schedulers but one more for PNDM (the SD1.5 default). When ``should_cancel()`` returns True the remaining steps are skipped (the
        pipeline still decodes its latents once) and :class:`Cancelled` is raised. Raises
        :class:`InpaintError` for invalid requests, out-of-memory, and black or NaN outputs. Timings:
        ``denoise`` (call start to the last step: prompt and image encoding plus the steps) and
        ``decode`` (VAE decoding and post-processing), in ms.
        """
        # 1. Check inputs
        _check_request(request)
        scheduler = self._scheduler(request.scheduler)
        notes = self.load_notes + self._prompt_notes(request)
        if should_cancel is not None and should_cancel():
            raise Cancelled("Inpainting was cancelled before it started.")

        # 2. One pipeline call per variant, each with a fresh scheduler and its own seed's generator
        count = len(request.seeds)
        denoise_ms = decode_ms = 0.0
        outputs = []
        for index, seed in enumerate(request.seeds):
            pixels, timings = self._one_variant(request, seed, scheduler if index == 0 else None,
                                                variant_progress(progress, index, count), should_cancel)
            outputs.append(pixels)
            denoise_ms += timings[0]
            decode_ms += timings[1]

        # 3. Check and convert the outputs
        pixels = np.stack(outputs)  # (variants, height, width, 3) floats in [0, 1]
        _check_outputs(pixels, request)
        return EngineOutput(
            images=[to_pil(variant) for variant in pixels],
            notes=notes,
            timings={"denoise": denoise_ms, "decode": decode_ms},
        )

    def work_size(self, crop_size: tuple[int, int]) -> tuple[int, int]:
        """The size a crop of ``crop_size`` is filled at: about the native resolution's area at the
        crop's aspect, or, with compile on (CUDA), the closest of a few fixed sizes."""
        from core.engines.fast import bucket_size
        from core.inpaint import engine_size

        if self.options.compile and self.options.device == "cuda":
            return bucket_size(crop_size, self.native_resolution)
        return engine_size(crop_size, self.native_resolution)

    def warm_up(self) -> None:
        """A 2-step fill at the native resolution (kernels chosen and loaded, compile done)."""
        size = self.work_size((self.native_resolution, self.native_resolution))
        mask = Image.new("L", size, 0)
        mask.paste(255, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
        self.generate(EngineRequest(image=Image.new("RGB", size, (128, 128, 128)), mask=mask, seeds=(0,),
                                    prompt="", steps=2))

    def _one_variant(self, request: EngineRequest, seed: int, scheduler, progress, should_cancel):
        """One variant: (pixels (H, W, 3) floats in [0, 1], (denoise ms, decode ms))."""
        import torch

        self.pipe.scheduler = scheduler if scheduler is not None else self._scheduler(request.scheduler)
        last_step_at = None
        report_step = step_callback(progress, should_cancel)

        def on_step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            nonlocal last_step_at
            last_step_at = time.perf_counter()
            return report_step(pipe, step, timestep, callback_kwargs)

        started = time.perf_counter()
        result = call_within_memory(
            lambda: self.pipe(
                **self._prompt_embeddings(request.prompt, request.negative_prompt, request.guidance_scale),
                image=request.image,
                mask_image=request.mask,
                height=request.image.height,
                width=request.image.width,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale,
                strength=request.strength,
                generator=torch.Generator(self.generator_device).manual_seed(seed),
                output_type="np",
                callback_on_step_end=on_step_end,
            ),
            self.pipe, self.options.device,
            doing=f"inpainting a {request.image.width}x{request.image.height} crop",
            advice="Use a smaller crop size or less padding, or turn on CPU offload.",
        )
        finished = time.perf_counter()
        if self.pipe.interrupt:
            raise Cancelled("Inpainting was cancelled.")
        last_step_at = last_step_at or finished
        return result.images[0], ((last_step_at - started) * 1000, (finished - last_step_at) * 1000)

    def _prompt_embeddings(self, prompt: str, negative_prompt: str, guidance_scale: float) -> dict[str, Any]:
        """The pipeline's prompt arguments as text-encoder outputs, encoded once per prompt pair.

        A batch runs the same prompt on every photo and a person regenerates with the same prompt
        often: both encode it once (the last few pairs are kept). The embeddings are what the
        pipeline would compute itself from the strings, so the pixels are the same.
        """
        import torch

        guided = guidance_scale > 1
        key = (prompt, negative_prompt, guided)
        cache = self.__dict__.setdefault("_embeddings", {})
        if key not in cache:
            with torch.no_grad():
                encoded = self.pipe.encode_prompt(
                    prompt=prompt, device=self.pipe._execution_device, num_images_per_prompt=1,
                    do_classifier_free_guidance=guided, negative_prompt=negative_prompt or None,
                )
            names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
            cache[key] = {name: value for name, value in zip(names, encoded) if value is not None}
            while len(cache) > PROMPT_CACHE_SIZE:
                cache.pop(next(iter(cache)))
        return cache[key]

    def _scheduler(self, name: str | None):
        """A fresh scheduler called ``name``, built from the model's own scheduler config.

        Fresh, so that no state of a previous (possibly cancelled) call carries over.
        """
        if name in (None, DEFAULT_SCHEDULER):
            return type(self.default_scheduler).from_config(self.default_scheduler.config)
        if name not in SCHEDULERS:
            raise InpaintError(f"Unknown scheduler {name!r}: choose one of {', '.join(self.schedulers)}.")
        import diffusers

        class_name, settings = SCHEDULERS[name]
        return getattr(diffusers, class_name).from_config(self.default_scheduler.config, **settings)

    def _prompt_notes(self, request: EngineRequest) -> list[str]:
        """What a person should know about their prompts: text past the tokenizer's limit is ignored."""
        notes = []
        tokenizer = getattr(self.pipe, "tokenizer", None) or self.pipe.tokenizer_2
        limit = tokenizer.model_max_length
        for label, text in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
            token_ids = tokenizer(text, truncation=False, verbose=False).input_ids
            if len(token_ids) > limit:
                # As diffusers cuts it: the start token, limit - 2 tokens of text, the end token.
                ignored = tokenizer.decode(token_ids[limit - 1 : -1]).strip()
                if len(ignored) > 80:
                    ignored = ignored[:77] + "…"
                notes.append(f"The {label} was cut to {limit} tokens; the end ({ignored}) was ignored.")
        if request.negative_prompt and request.guidance_scale <= 1:
            notes.append("The negative prompt has no effect at guidance scale 1 or below.")
        return notes


class SD15Inpaint(DiffusionEngine):
    """Stable Diffusion 1.5 inpainting (e.g. ``stable-diffusion-v1-5/stable-diffusion-inpainting``)."""

    name = "sd15"
    title = "Stable Diffusion 1.5 inpainting"
    native_resolution = 512
    pipeline_class = "StableDiffusionInpaintPipeline"
    role = "sd15_inpaint"
    load_overrides = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


class SDXLInpaint(DiffusionEngine):
    """SDXL inpainting (e.g. ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1``).

    In float16 its stock VAE overflows to black images; set ``DiffusionOptions.fp16_safe_vae``.
    """

    name = "sdxl"
    title = "SDXL inpainting"
    native_resolution = 1024
    pipeline_class = "StableDiffusionXLInpaintPipeline"
    role = "sdxl_inpaint"


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


def _check_request(request: EngineRequest) -> None:
    """Raise InpaintError, saying what to change, for a request the pipeline cannot fill as asked."""
    image, mask = request.image, request.mask
    checks = [
        (len(request.seeds) >= 1, "At least one seed is needed (one variant per seed)."),
        (all(isinstance(seed, int) and 0 <= seed < 2**64 for seed in request.seeds),
         f"Seeds must be whole numbers from 0 to 2**64 - 1 (got {request.seeds})."),
        (request.steps >= 1, f"Steps must be at least 1 (got {request.steps})."),
        (request.guidance_scale >= 0, f"Guidance scale must be 0 or more (got {request.guidance_scale})."),
        (0 < request.strength <= 1, f"Strength must be above 0 and at most 1 (got {request.strength})."),
        (int(request.steps * request.strength) >= 1,
         f"Steps x strength must be at least 1 (got {request.steps} x {request.strength}): raise either."),
        (image.mode == "RGB", f"The image must be RGB (got mode {image.mode})."),
        (mask.mode == "L", f"The mask must be mode L, 255 = repaint (got mode {mask.mode})."),
        (image.size == mask.size,
         f"The image ({image.width}x{image.height}) and mask ({mask.width}x{mask.height}) "
         "must be the same size."),
        (image.width % 8 == 0 and image.height % 8 == 0,
         f"The crop's width and height must be multiples of 8 (got {image.width}x{image.height})."),
    ]
    require_all(checks)


def call_within_memory(call: Callable[[], Any], pipe, device: str, *, doing: str, advice: str) -> Any:
    """``call()``; when it runs out of memory, free what it left and raise an InpaintError that says
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
    raise InpaintError(f"Out of memory on {device} while {doing} ({out_of_memory}). {advice}")


def is_out_of_memory(error: Exception) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def _check_outputs(pixels: np.ndarray, request: EngineRequest) -> None:
    """Raise InpaintError when a variant is NaN or black although the input crop was not."""
    import numpy as np

    input_is_black = np.asarray(request.image).max() / 255 <= NOT_BLACK_INPUT_LEVEL
    failed = [
        seed
        for seed, variant in zip(request.seeds, pixels, strict=True)
        if np.isnan(variant).any() or (not input_is_black and variant.max() <= BLACK_LEVEL)
    ]
    if failed:
        raise InpaintError(
            f"The model produced a black or invalid (NaN) image for seed(s) {', '.join(map(str, failed))}, "
            "typically a float16 VAE overflowing. Set the fp16-safe VAE "
            f"({FP16_SAFE_SDXL_VAE} for SDXL), run in float32, or try another seed."
        )


def to_pil(pixels: np.ndarray) -> Image.Image:
    """An (H, W, 3) float array in [0, 1] as an RGB image."""
    import numpy as np

    return Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), "RGB")


# --- shared with the other diffusers-based engines (IC-Light) ---------------------------------


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
    try:
        if options.cpu_offload and options.device == "cuda":
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(options.device)
        if options.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
        if options.compile and options.device == "cuda":
            pipe.unet.compile(mode="max-autotune-no-cudagraphs", dynamic=False)
        elif options.compile:
            notes.append(f"Compiling (INPAINT_STUDIO_COMPILE) is for CUDA GPUs; skipped on {options.device}.")
    except Exception as error:  # noqa: BLE001 (torch raises many types for a missing device)
        raise ModelLoadError(
            f"{what} could not be moved to {options.device} in {options.dtype} "
            f"({type(error).__name__}: {error}). Choose another device or dtype."
        ) from error
    pipe.set_progress_bar_config(disable=True)
    return notes


def _fuse_few_step(pipe, options: DiffusionOptions) -> None:
    """Fuse the few-step preset's LoRA; ModelLoadError naming the file when it does not fit."""
    from core.engines.fast import FEW_STEP_PRESETS, apply_few_step

    preset = FEW_STEP_PRESETS[options.few_step]
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
