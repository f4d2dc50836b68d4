"""FLUX inpainting through diffusers: FLUX.2 [klein] 4B (optionally from a reference picture) and
FLUX.1 Fill [dev].

An engine holds one loaded pipeline and fills prepared crops (see :mod:`core.engines.base`): RGB
image and mode L mask (255 = repaint) of the same size. Every seed gives one variant, its own
pipeline call with its own generator and a fresh scheduler, so variant i depends on seed i alone
(see :mod:`core.engines.diffusion` for why the variants are not batched).

What differs from the SD engines: FLUX packs 2 × 2 latent patches, so sides are multiples of 16
(:meth:`FluxEngine.work_size` gives such sizes, about the native area; a request of another size is
filled at the nearest such size and scaled back). There is no negative prompt, and neither model
takes a sampler other than its own flow-matching one (the request's are ignored). [klein] 4B is
step-distilled (4 steps; guidance is ignored when its model_index.json says ``is_distilled``) and
takes a reference picture of what to put in the region; it fills at most 1024² pixels (the
pipeline shrinks a larger image). Fill [dev] is guidance-distilled (guidance ~30 is an input of
the transformer, not classifier-free guidance) and has no strength.

torch and diffusers are imported inside the functions that need them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from core.catalog import BUILTIN, EngineEntry
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
from core.engines.fast import size_buckets
from core.engines.pipelines import (
    DiffusionOptions,
    cached,
    check_not_black,
    check_pipeline_folder,
    load_pipeline,
    diffusion_options,
    fresh_scheduler,
    place_pipeline,
    request_checks,
    run_variants,
    to_pil,
)
from core.region import engine_size

KLEIN_MAX_PIXELS = 1024 * 1024  # Flux2KleinInpaintPipeline shrinks a larger image (or reference) to this
OUT_OF_MEMORY_ADVICE = "Use a smaller crop size or less padding, or turn on CPU offload."
NAN_ADVICE = ("typically float16 overflowing: FLUX models are made for bfloat16. Run on a GPU with bfloat16 "
              "or in float32, or try another seed.")
FLOAT16_NOTE = ("FLUX models are made for bfloat16; this device runs them in float16, which may give black "
                "or noisy images.")


class FluxEngine(CatalogEngine):
    """A loaded FLUX inpainting pipeline; what both FLUX engines share. Not thread-safe: hold a lock
    per engine.

    A subclass names its diffusers pipeline (``pipeline_class``), the model_index.json classes it
    loads from (``model_classes``), the largest fill it takes (``max_pixels``), and how it encodes a
    prompt and what else its pipeline call takes (:meth:`_encode_prompt`, :meth:`_call_arguments`).
    """

    pipeline_class: ClassVar[str] = ""
    model_classes: ClassVar[tuple[str, ...]] = ()
    max_pixels: ClassVar[int | None] = None
    schedulers: ClassVar[tuple[str, ...]] = ("default",)  # the model's own flow-matching sampler only

    def __init__(self, entry: EngineEntry, pipe, model_id: str, options: DiffusionOptions) -> None:
        self.entry = entry
        self.pipe = pipe
        self.model_id = model_id
        self.options = options
        self.default_scheduler = pipe.scheduler
        self.multiple = 2 * pipe.vae_scale_factor  # latents are packed in 2 x 2 patches
        self.load_notes: list[str] = []
        self._embeddings: dict[tuple[str, bool], dict[str, Any]] = {}
        # MPS generators are not reproducible across runs; CPU ones are (the noise moves to MPS).
        self.generator_device = "cpu" if options.device == "mps" else options.device

    # --- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_catalog(cls, request) -> FluxEngine:
        """Load ``request``'s pipeline (its main role's path) with the device's options (bfloat16 on
        a CUDA GPU that has it, CPU offload and compile as the settings say)."""
        options = diffusion_options(request.settings, request.device, **request.options)
        return cls.load(request.entry, request.path(), options)

    @classmethod
    def load(cls, entry: EngineEntry, path: str | Path,
             options: DiffusionOptions = DiffusionOptions()) -> FluxEngine:
        """Load the pipeline at ``path`` (a ``save_pretrained`` folder or a cached hub id) as
        ``cls.pipeline_class``.

        Raises :class:`ModelLoadError` naming ``path`` and the setting to fix when the folder is
        missing, holds another pipeline (an SD model, another FLUX), lacks weights, or cannot be loaded.
        """
        model_id = str(path)
        check_pipeline_folder(entry, model_id, cls.model_classes, _engine_running)
        pipe = load_pipeline(entry, model_id, cls.pipeline_class, options,
                             "model_index.json, transformer/, vae/, text encoders")
        engine = cls(entry, pipe, model_id, options)
        notes = engine._check_loaded()
        if options.dtype == "float16":
            notes.append(FLOAT16_NOTE)
        notes += place_pipeline(pipe, options, f"The {entry.title} model {model_id}")
        engine.load_notes = notes
        if options.warm_up:
            engine.warm_up()
        return engine

    def _check_loaded(self) -> list[str]:
        """Raise ModelLoadError when the loaded pipeline cannot do this engine's job; notes for a person."""
        return []

    # --- generating -------------------------------------------------------------------------------

    def generate(
        self,
        request: EngineRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> EngineOutput:
        """Fill ``request`` with one variant per seed, one pipeline call per variant.

        ``progress(step, total)`` after every denoising step, counting over all variants. When
        ``should_cancel()`` returns True the remaining steps are skipped and :class:`Cancelled` is
        raised. Raises InpaintError for invalid requests, GenerationFailed for out-of-memory (the
        engine stays usable) and black or NaN outputs. The negative prompt and the scheduler are
        ignored (FLUX has neither). Timings: ``denoise`` and ``decode``, in ms.
        """
        # 1. Check inputs; the size the pipeline fills without shrinking or cropping
        _check_request(request)
        size = self.fill_size(request.image.size)
        image, mask = request.image, request.mask
        if size != image.size:
            image, mask = image.resize(size, Image.LANCZOS), mask.resize(size, Image.NEAREST)
        arguments = {"guidance_scale": request.guidance_scale, **self._call_arguments(request, size)}

        # 2. One pipeline call per variant, each with a fresh scheduler and its own seed's generator
        def call(**per_call):  # the prompt encoded inside the out-of-memory guard (once, then cached)
            prompt = self._prompt_embeddings(request.prompt, request.guidance_scale)
            return self.pipe(
                **prompt, image=image, mask_image=mask, height=size[1], width=size[0],
                num_inference_steps=request.steps, output_type="np", **arguments, **per_call)

        outputs, denoise_ms, decode_ms = run_variants(
            self.pipe, request.seeds, call, self.options, generator_device=self.generator_device,
            fresh_scheduler=lambda: fresh_scheduler(self.default_scheduler), progress=progress,
            should_cancel=should_cancel,
            doing=f"inpainting a {size[0]}x{size[1]} crop with {self.entry.title}",
            advice=OUT_OF_MEMORY_ADVICE, nan_advice=NAN_ADVICE)

        # 3. Check and convert the outputs, at the request's size
        pixels = np.stack(outputs)  # (variants, height, width, 3) floats in [0, 1]
        check_not_black(pixels, request.image, request.seeds, NAN_ADVICE)
        images = [to_pil(variant) for variant in pixels]
        images = [im if im.size == request.image.size else im.resize(request.image.size, Image.LANCZOS)
                  for im in images]
        return EngineOutput(images=images, notes=self.load_notes + self._notes(request),
                            timings={"denoise": denoise_ms, "decode": decode_ms})

    def work_size(self, crop_size: tuple[int, int]) -> tuple[int, int]:
        """The size a crop of ``crop_size`` is filled at: about the native resolution's area at the
        crop's aspect, sides multiples of 16 (at most ``max_pixels``); with compile on (CUDA), the
        closest of a few fixed sizes, so the compiled transformer is reused."""
        native = self.native_resolution
        if self.options.compile and self.options.device == "cuda":
            buckets = [s for s in size_buckets(native) if s[0] * s[1] <= (self.max_pixels or math.inf)]
            aspect = math.log(crop_size[0] / crop_size[1])
            if buckets:
                return min(buckets, key=lambda s: abs(math.log(s[0] / s[1]) - aspect))
        return self.fill_size(engine_size(crop_size, native, self.multiple))

    def fill_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` with sides rounded down to multiples of 16 (at least 16), shrunk to at most
        ``max_pixels`` (keeping the aspect): the size the pipeline fills as it is."""
        width, height = size
        if self.max_pixels and width * height > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (width * height))
            width, height = width * scale, height * scale
        step = self.multiple
        return max(step, int(width) // step * step), max(step, int(height) // step * step)

    def warm_up(self) -> None:
        """A 1-step fill at the native resolution (kernels chosen and loaded, compile done)."""
        size = self.work_size((self.native_resolution, self.native_resolution))
        mask = Image.new("L", size, 0)
        mask.paste(255, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
        grey = Image.new("RGB", size, (128, 128, 128))
        self.generate(EngineRequest(image=grey, mask=mask, seeds=(0,), steps=1))

    def _prompt_embeddings(self, prompt: str, guidance_scale: float) -> dict[str, Any]:
        """The pipeline's prompt arguments as text-encoder outputs, encoded once per prompt.

        A batch runs the same prompt on every photo and a person regenerates with the same prompt
        often: both encode it once (the last few are kept). They are what the pipeline would compute
        from the string, so the pixels are the same.
        """
        guided = self._guided(guidance_scale)
        return cached(self._embeddings, (prompt, guided), lambda: self._encode_prompt(prompt, guided))

    def _guided(self, guidance_scale: float) -> bool:
        """Whether the pipeline runs classifier-free guidance (a second, unconditional pass)."""
        return False

    def _encode_prompt(self, prompt: str, guided: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _call_arguments(self, request: EngineRequest, size: tuple[int, int]) -> dict[str, Any]:
        """What else this engine's pipeline call takes for ``request`` filled at ``size`` (and its
        guidance scale, where that is not the request's)."""
        return {}

    def _notes(self, request: EngineRequest) -> list[str]:
        """What a person should know about how ``request`` was filled."""
        return []

    def _strength(self, request: EngineRequest) -> float:
        """The request's strength where the catalog says the engine takes one, else 1 (fill anew)."""
        return request.strength if self.entry.can("strength") else 1.0


class Flux2KleinEngine(FluxEngine):
    """FLUX.2 [klein] (4B, step-distilled) through ``Flux2KleinInpaintPipeline``: a Qwen3 text encoder,
    and an optional reference picture (``request.reference_image``) of what to put in the region."""

    pipeline_class = "Flux2KleinInpaintPipeline"
    model_classes = ("Flux2KleinPipeline", "Flux2KleinInpaintPipeline")
    max_pixels = KLEIN_MAX_PIXELS

    def _check_loaded(self) -> list[str]:
        if self._distilled:
            return []
        return [f"{self.model_id} is an undistilled [klein] base model: it needs about 50 steps and "
                f"guidance 4, not the {self.entry.steps} steps of the distilled model."]

    def _guided(self, guidance_scale: float) -> bool:
        return guidance_scale > 1 and not self._distilled

    def _encode_prompt(self, prompt: str, guided: bool) -> dict[str, Any]:
        device = self.pipe._execution_device
        embeddings = {"prompt_embeds": self.pipe.encode_prompt(prompt=prompt, device=device)[0]}
        if guided:  # the pipeline's unconditional pass uses the empty prompt
            embeddings["negative_prompt_embeds"] = self.pipe.encode_prompt(prompt="", device=device)[0]
        return embeddings

    def _call_arguments(self, request: EngineRequest, size: tuple[int, int]) -> dict[str, Any]:
        reference = request.reference_image
        if reference is not None:
            reference = reference_for(reference, size, self.multiple)
        arguments = {"image_reference": reference, "strength": self._strength(request)}
        if self._distilled:  # ignored by the pipeline, which would log a warning on every call
            arguments["guidance_scale"] = 1.0
        return arguments

    def _notes(self, request: EngineRequest) -> list[str]:
        if self._distilled and request.guidance_scale > 1:
            return [f"Guidance is ignored by the step-distilled {self.entry.title}; it follows the prompt "
                    "without it."]
        return []

    @property
    def _distilled(self) -> bool:
        return bool(self.pipe.config.get("is_distilled", False))


class FluxFillEngine(FluxEngine):
    """FLUX.1 Fill [dev] through ``FluxFillPipeline``: CLIP and T5 text encoders, guidance (~30) embedded
    in the transformer, no strength."""

    pipeline_class = "FluxFillPipeline"
    model_classes = ("FluxFillPipeline",)

    def _check_loaded(self) -> list[str]:
        """A Fill transformer takes the noisy latent, the masked image's latent and the mask (384
        input channels in FLUX.1 Fill: 64 + 64 + 256); a text-to-image FLUX.1 transformer takes 64."""
        transformer, vae = self.pipe.transformer.config, self.pipe.vae.config
        packed = 4 * vae.latent_channels
        expected = 2 * packed + 4 * self.pipe.vae_scale_factor**2
        if transformer.in_channels != expected:
            raise ModelLoadError(
                f"{self.model_id} is not a FLUX.1 Fill model (its transformer takes "
                f"{transformer.in_channels} input channels, a Fill transformer {expected}). "
                f"{how_to_provide(self.entry)}")
        return []

    def _encode_prompt(self, prompt: str, guided: bool) -> dict[str, Any]:
        prompt_embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, device=self.pipe._execution_device, num_images_per_prompt=1)
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}

    def _call_arguments(self, request: EngineRequest, size: tuple[int, int]) -> dict[str, Any]:
        return {"strength": self._strength(request)}


def reference_for(picture: Image.Image, size: tuple[int, int], multiple: int = 16) -> Image.Image:
    """A reference picture as [klein] takes it: RGB (transparency over white), at most the fill's
    area (``size``; its tokens then cost no more than the crop's own), never enlarged, sides multiples
    of ``multiple``, the aspect kept."""
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        picture = Image.new("RGB", rgba.size, (255, 255, 255))
        picture.paste(rgba, mask=rgba.getchannel("A"))
    picture = picture.convert("RGB")
    scale = min(1.0, math.sqrt(size[0] * size[1] / (picture.width * picture.height)))
    target = tuple(max(multiple, int(side * scale) // multiple * multiple) for side in picture.size)
    return picture if target == picture.size else picture.resize(target, Image.LANCZOS)


def _engine_running(class_name: str) -> str | None:
    """The built-in engine that runs diffusers pipelines of ``class_name``, if any."""
    for other in BUILTIN.engines.values():
        module, _, name = other.engine.partition(":")
        flux_classes = getattr(globals().get(name), "model_classes", ()) if module == __name__ else ()
        if other.options.get("pipeline_class") == class_name or class_name in flux_classes:
            return other.name
    return None


def _check_request(request: EngineRequest) -> None:
    """Raise InpaintError, saying what to change, for a request the pipeline cannot fill as asked."""
    image, reference = request.image, request.reference_image
    checks = [
        *request_checks(request),
        (min(image.size) >= 16,
         f"The crop must be at least 16 pixels wide and high (got {image.width}x{image.height})."),
        (reference is None or isinstance(reference, Image.Image),
         "The reference must be a picture (PIL image)."),
    ]
    require_all(checks, InpaintError)
