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

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.catalog import BUILTIN, EngineEntry
from core.catalog import SCHEDULERS as SCHEDULER_NAMES
from core.engines.base import (
    CancelCheck,
    CatalogEngine,
    EngineOutput,
    EngineRequest,
    InpaintError,
    ModelLoadError,
    ProgressCallback,
    how_to_provide,
    require_all,
)
from core.engines.fast import bucket_size
from core.engines.pipelines import (
    FP16_SAFE_SDXL_VAE,
    DiffusionOptions,
    diffusion_options,
    fuse_few_step,
    load_vae,
    place_pipeline,
    request_checks,
    run_variants,
    to_pil,
    weights_variant,
)
from core.errors import GenerationFailed
from core.region import engine_size

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


class DiffusionEngine(CatalogEngine):
    """A loaded diffusers inpainting pipeline. Not thread-safe: hold a lock per engine.

    Its catalog entry names the model family: the diffusers pipeline class it must load as
    (``options["pipeline_class"]``), components to load differently (``options["load_overrides"]``),
    and the setting of an fp16-safe VAE, if its stock one overflows (``options["fp16_vae_setting"]``).
    """

    schedulers = SCHEDULER_NAMES

    def __init__(self, entry: EngineEntry, pipe, model_id: str, options: DiffusionOptions) -> None:
        self.entry = entry
        self.pipe = pipe
        self.model_id = model_id
        self.options = options
        self.default_scheduler = pipe.scheduler
        self.load_notes: list[str] = []
        self.preset = options.few_step  # what results and recipes record: "sd15+lcm"
        # MPS generators are not reproducible across runs; CPU ones are (the noise moves to MPS).
        self.generator_device = "cpu" if options.device == "mps" else options.device

    # --- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_catalog(cls, request) -> DiffusionEngine:
        """Load ``request``'s pipeline (its main role's path) with the device's options and, for a
        few-step variant, its LoRA fused in."""
        entry, settings = request.entry, request.settings
        vae_setting = entry.options.get("fp16_vae_setting")
        options = dict(request.options)
        if request.preset is not None:
            options.update(few_step=request.preset, few_step_lora=request.path(entry.few_step[request.preset.name]))
        vae = getattr(settings, vae_setting, None) if vae_setting else None
        options = diffusion_options(settings, request.device, fp16_safe_vae=vae, **options)
        return cls.load(entry, request.path(), options)

    @classmethod
    def load(cls, entry: EngineEntry, path: str | Path,
             options: DiffusionOptions = DiffusionOptions()) -> DiffusionEngine:
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
                f"The {entry.title} model folder {model_id} does not exist. {how_to_provide(entry)}"
            )
        try:
            import torch
            from diffusers import AutoPipelineForInpainting

            dtype = getattr(torch, options.dtype)
            components = dict(entry.options.get("load_overrides", {}))
            if options.fp16_safe_vae:
                components["vae"] = load_vae(options.fp16_safe_vae, dtype)
            pipe = AutoPipelineForInpainting.from_pretrained(model_id, dtype=dtype, variant=weights_variant(model_id),
                                                             **components)
        except ModelLoadError:
            raise
        except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors and torch raise many types)
            raise ModelLoadError(
                f"The {entry.title} model {model_id} could not be loaded ({type(error).__name__}: {error}). "
                f"It must be a diffusers inpainting pipeline (a folder with model_index.json, unet/, vae/ "
                f"and text encoders, as saved by save_pretrained). {how_to_provide(entry)}"
            ) from error
        _check_pipeline(entry, model_id, pipe)
        if options.few_step:
            fuse_few_step(pipe, options)
        notes = place_pipeline(pipe, options, f"The {entry.title} model {model_id}")
        engine = cls(entry, pipe, model_id, options)
        engine.load_notes = notes
        if options.warm_up:
            engine.warm_up()
        return engine

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
        InpaintError for invalid requests, GenerationFailed for out-of-memory and black or NaN outputs. Timings:
        ``denoise`` (call start to the last step: prompt and image encoding plus the steps) and
        ``decode`` (VAE decoding and post-processing), in ms.
        """
        # 1. Check inputs
        _check_request(request)
        scheduler_for = self._scheduler
        scheduler_for(request.scheduler)  # an unknown name fails before any step
        notes = self.load_notes + self._prompt_notes(request)

        # 2. One pipeline call per variant, each with a fresh scheduler and its own seed's generator
        def call(**per_call):  # the prompt encoded inside the out-of-memory guard (once, then cached)
            prompt = self._prompt_embeddings(request.prompt, request.negative_prompt, request.guidance_scale)
            return self.pipe(
                **prompt, image=request.image, mask_image=request.mask, height=request.image.height,
                width=request.image.width, num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                strength=request.strength, output_type="np", **per_call)

        outputs, denoise_ms, decode_ms = run_variants(
            self.pipe, request.seeds, call, self.options, generator_device=self.generator_device,
            fresh_scheduler=lambda: scheduler_for(request.scheduler),
            progress=progress, should_cancel=should_cancel,
            doing=f"inpainting a {request.image.width}x{request.image.height} crop",
            advice="Use a smaller crop size or less padding, or turn on CPU offload.")

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


def _check_pipeline(entry: EngineEntry, model_id: str, pipe) -> None:
    """Raise ModelLoadError unless ``pipe`` is ``entry``'s inpainting pipeline.

    AutoPipelineForInpainting also loads a text-to-image model (as an inpainting pipeline with
    a 4-channel UNet that only blends latents), which would fill holes with unrelated content.
    """
    unet = getattr(pipe, "unet", None)
    channels = unet.config.in_channels if unet is not None else None
    if channels != INPAINT_UNET_CHANNELS:
        raise ModelLoadError(
            f"{model_id} is not an inpainting model (its UNet takes {channels} input channels, an "
            f"inpainting UNet takes {INPAINT_UNET_CHANNELS}). {how_to_provide(entry)}"
        )
    loaded, expected = type(pipe).__name__, entry.options["pipeline_class"]
    if loaded != expected:
        fitting = [other.name for other in BUILTIN.engines.values() if other.options.get("pipeline_class") == loaded]
        advice = f"Load it with the {fitting[0]!r} engine, or set" if fitting else "Set"
        raise ModelLoadError(
            f"{model_id} is a {loaded}, not a {entry.title} model ({expected}). "
            f"{advice} {how_to_provide(entry).removeprefix('Set ')}"
        )


def _check_request(request: EngineRequest) -> None:
    """Raise InpaintError, saying what to change, for a request the pipeline cannot fill as asked."""
    image = request.image
    checks = [
        *request_checks(request),
        (int(request.steps * request.strength) >= 1,
         f"Steps x strength must be at least 1 (got {request.steps} x {request.strength}): raise either."),
        (image.width % 8 == 0 and image.height % 8 == 0,
         f"The crop's width and height must be multiples of 8 (got {image.width}x{image.height})."),
    ]
    require_all(checks, InpaintError)


def _check_outputs(pixels: np.ndarray, request: EngineRequest) -> None:
    """Raise GenerationFailed when a variant is black although the input crop was not (NaN is caught per call)."""
    import numpy as np

    input_is_black = np.asarray(request.image).max() / 255 <= NOT_BLACK_INPUT_LEVEL
    failed = [
        seed
        for seed, variant in zip(request.seeds, pixels, strict=True)
        if np.isnan(variant).any() or (not input_is_black and variant.max() <= BLACK_LEVEL)
    ]
    if failed:
        raise GenerationFailed(
            f"The model produced a black or invalid (NaN) image for seed(s) {', '.join(map(str, failed))}, "
            "typically a float16 VAE overflowing. Set the fp16-safe VAE "
            f"({FP16_SAFE_SDXL_VAE} for SDXL), run in float32, or try another seed."
        )


