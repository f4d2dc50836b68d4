"""Qwen-Image-Edit: instruction edits confined to the mask, through diffusers'
``QwenImageEditInpaintPipeline``.

Qwen-Image-Edit (``Qwen/Qwen-Image-Edit``, Apache-2.0) is a 20B MMDiT that edits a picture as told.
The crop goes in twice: to Qwen2.5-VL, which reads it with the text (semantics: what is there, what
to change), and through the VAE, whose latents sit beside the noisy ones in the transformer
(appearance). The inpainting pipeline re-noises the original latents outside the mask at every
step, so only the masked region changes (up to the VAE round trip, which ``core.blend``'s paste
removes).

**Prompts.** The text encoder's system prompt asks it to explain "how the user's text instruction
should alter or modify the image", so the model expects an instruction:

* mode ``"instruct"``: the prompt is that instruction, unchanged ("make the jacket red");
* mode ``"fill"``: the prompt describes what should be in the region ("a red vase of tulips"). An edit
  model given a bare description may keep what it sees (nothing says to change it), so the
  description is turned into a replacement instruction, :data:`FILL_INSTRUCTION` ("Replace the
  masked area with a red vase of tulips."). The text encoder never sees the mask (it reads the
  whole crop); the words only say *what* to paint, the mask says *where*. An empty description
  asks for the region to be filled in from its surroundings (:data:`EMPTY_FILL_INSTRUCTION`).

**Guidance.** The catalog's guidance is the pipeline's ``true_cfg_scale`` (4.0 in Qwen's model card):
real classifier-free guidance, one extra transformer pass per step against the negative prompt.
The pipeline only guides when it is given a negative prompt, so an empty one is sent as ``" "``,
as the model card does; at ``true_cfg_scale`` 1 or below no negative prompt is sent (the pipeline
would ignore it and warn).

**Sizes.** The pipeline itself always works at about 1024 × 1024 pixels at the image's aspect, sides
multiples of 32 (its ``calculate_dimensions``), whatever ``height`` and ``width`` say. The engine
decides instead: :meth:`QwenImageEditEngine.work_size` is about the catalog's native size squared
(1024², the same as the pipeline's for the real model), multiples of :data:`SIZE_MULTIPLE`, and
each call runs at exactly its request's size (:func:`_pinned_size`), so the output needs no
resampling and a smaller native size (a catalog entry, the tests) is honoured.

**dtype.** Qwen's model card runs it in bfloat16, the dtype the app picks on GPUs that have it.
In float16 Qwen-Image's activations overflow and images come out black (NaN); the load notes say
so, and such outputs raise GenerationFailed.

Reproducibility as in :mod:`core.engines.diffusion`: one pipeline call per seed with its own
generator and a fresh scheduler. torch and diffusers are imported inside the functions.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from core.catalog import BUILTIN, EngineEntry
from core.engines.base import (
    CancelCheck,
    CatalogEngine,
    EngineOutput,
    EngineRequest,
    InpaintError,
    ProgressCallback,
    require_all,
)
from core.engines.fast import bucket_size
from core.engines.pipelines import (
    DiffusionOptions,
    check_not_black,
    check_pipeline_folder,
    load_pipeline,
    diffusion_options,
    place_pipeline,
    run_variants,
    to_pil,
)
from core.region import engine_size

PIPELINE_CLASS = "QwenImageEditInpaintPipeline"
# What a folder's model_index.json may name: Qwen/Qwen-Image-Edit is saved as the edit pipeline,
# whose components the inpainting pipeline shares; a folder saved from the inpainting one is fine too.
LOADABLE_CLASSES = ("QwenImageEditPipeline", PIPELINE_CLASS)
# The pipeline's sides: its VAE downsamples 8 times and its transformer packs 2 x 2 latents (16),
# and its own sizing rounds to 32.
SIZE_MULTIPLE = 32
MODES = ("fill", "instruct")
FILL_INSTRUCTION = "Replace the masked area with {description}."
EMPTY_FILL_INSTRUCTION = "Remove what is in the masked area and fill it in to match its surroundings."
EMPTY_NEGATIVE_PROMPT = " "  # the model card's: enables true CFG without steering away from anything
NAN_ADVICE = ("typically float16 overflowing: Qwen-Image models are made for bfloat16. Run on a GPU with "
              "bfloat16 or in float32, or try another seed.")
FLOAT16_NOTE = ("Qwen-Image-Edit is made for bfloat16; this device runs it in float16, in which Qwen-Image "
                "models overflow and can give black images.")

_PINNED = contextvars.ContextVar("qwen_image_edit_size", default=None)


class QwenImageEditEngine(CatalogEngine):
    """A loaded Qwen-Image-Edit inpainting pipeline. Not thread-safe: hold a lock per engine."""

    schedulers: ClassVar[tuple[str, ...]] = ("default",)  # the model's own flow-matching sampler only

    def __init__(self, entry: EngineEntry, pipe, model_id: str, options: DiffusionOptions) -> None:
        self.entry = entry
        self.pipe = pipe
        self.model_id = model_id
        self.options = options
        self.default_scheduler = pipe.scheduler
        self.load_notes: list[str] = []
        self.generator_device = "cpu" if options.device == "mps" else options.device

    # --- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_catalog(cls, request) -> QwenImageEditEngine:
        """Load ``request``'s pipeline (its main role's path) with the device's options."""
        options = diffusion_options(request.settings, request.device, **dict(request.options))
        return cls.load(request.entry, request.path(), options)

    @classmethod
    def load(cls, entry: EngineEntry, path: str | Path,
             options: DiffusionOptions = DiffusionOptions()) -> QwenImageEditEngine:
        """Load the Qwen-Image-Edit pipeline at ``path`` (a ``save_pretrained`` folder, such as a
        download of ``Qwen/Qwen-Image-Edit``, or a cached hub id) as a ``QwenImageEditInpaintPipeline``.

        Raises :class:`ModelLoadError` naming ``path`` and the setting to change when the folder is
        missing, holds another kind of pipeline, lacks a component's folder or weights (checked
        before loading), or cannot be loaded.
        """
        model_id = str(path)
        # Named before any weight is read: a missing folder, another model's, an incomplete download.
        check_pipeline_folder(entry, model_id, LOADABLE_CLASSES, _engine_running)
        pipe = load_pipeline(entry, model_id, "QwenImageEditInpaintPipeline", options,
                             "model_index.json; processor/, scheduler/, text_encoder/, tokenizer/, transformer/ "
                             "and vae/ with their weights")
        notes = place_pipeline(pipe, options, f"The {entry.title} model {model_id}")
        if options.dtype == "float16":
            notes.append(FLOAT16_NOTE)
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
        """Edit the masked region of ``request`` as its prompt says, one variant per seed.

        Mode ``"instruct"``: the prompt is the instruction; mode ``"fill"``: it describes the
        region's new content (see :func:`instruction`). The call runs at the request's size
        (snapped to multiples of 32 and scaled back if it is not one). ``progress(step, total)``
        counts the steps of all variants (``steps x strength`` each, rounded as the pipeline does).
        The scheduler is ignored (the model's own flow-matching sampler, fresh for every call).
        Raises InpaintError for an invalid request, Cancelled when ``should_cancel()`` says so,
        GenerationFailed for out-of-memory and black or NaN images.
        """
        # 1. Check inputs and phrase the prompts
        _check_request(request)
        prompt = instruction(request.prompt, request.mode)
        guided = request.guidance_scale > 1
        negative = (request.negative_prompt or EMPTY_NEGATIVE_PROMPT) if guided else None
        notes = list(self.load_notes)
        if request.negative_prompt and not guided:
            notes.append("The negative prompt has no effect at guidance 1 or below.")
        if request.reference_image is not None:
            notes.append(f"{self.title} takes no reference image; it was ignored.")
        size = _runnable_size(request.image.size)
        image, mask = request.image, request.mask
        if size != image.size:
            image, mask = image.resize(size, Image.LANCZOS), mask.resize(size, Image.NEAREST)

        # 2. One pipeline call per variant, each with a fresh scheduler and its own seed's generator
        def call(**per_call):
            with _pinned_size(size):
                return self.pipe(
                    image=image, mask_image=mask, prompt=prompt, negative_prompt=negative,
                    true_cfg_scale=request.guidance_scale, strength=request.strength,
                    num_inference_steps=request.steps, height=size[1], width=size[0], output_type="np",
                    **per_call)

        outputs, denoise_ms, decode_ms = run_variants(
            self.pipe, request.seeds, call, self.options, generator_device=self.generator_device,
            fresh_scheduler=lambda: type(self.default_scheduler).from_config(self.default_scheduler.config),
            progress=progress, should_cancel=should_cancel,
            doing=f"editing a {size[0]}x{size[1]} crop with {self.title}", advice=self._memory_advice(),
            nan_advice=NAN_ADVICE)

        # 3. Check and convert the outputs
        check_not_black(np.stack(outputs), request.image, request.seeds, NAN_ADVICE)
        images = [to_pil(pixels) for pixels in outputs]
        if size != request.image.size:
            images = [variant.resize(request.image.size, Image.LANCZOS) for variant in images]
        return EngineOutput(images=images, notes=notes, timings={"denoise": denoise_ms, "decode": decode_ms})

    def _memory_advice(self) -> str:
        memory = self.entry.memory_gb
        needs = f"{self.title} needs about {memory:.0f} GB" if memory else self.title
        return (f"{needs}: turn on CPU offload (INPAINT_STUDIO_CPU_OFFLOAD=1), use a smaller crop or less "
                "padding, or choose another engine.")

    def work_size(self, crop_size: tuple[int, int]) -> tuple[int, int]:
        """The size a crop of ``crop_size`` is edited at: about the native size squared (1024²) at
        the crop's aspect, sides multiples of 32 (the long side at most twice the native size);
        with compile on (CUDA) the closest of a few fixed sizes, so shapes do not recompile."""
        if self.options.compile and self.options.device == "cuda":
            return bucket_size(crop_size, self.native_resolution)  # multiples of 64
        return engine_size(crop_size, self.native_resolution, SIZE_MULTIPLE)

    def warm_up(self) -> None:
        """A 2-step edit at the native size (kernels chosen and loaded, compile done)."""
        size = self.work_size((self.native_resolution, self.native_resolution))
        mask = Image.new("L", size, 0)
        mask.paste(255, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
        self.generate(EngineRequest(image=Image.new("RGB", size, (128, 128, 128)), mask=mask, seeds=(0,),
                                    prompt="", steps=2, guidance_scale=1.0))


def instruction(prompt: str, mode: str) -> str:
    """What the model is told: in mode "instruct" the prompt itself; in mode "fill" the description
    as a replacement instruction (:data:`FILL_INSTRUCTION`), or, when empty, to fill the region in
    from its surroundings."""
    text = prompt.strip()
    if mode == "instruct":
        return text
    return FILL_INSTRUCTION.format(description=text.rstrip(".")) if text else EMPTY_FILL_INSTRUCTION


@contextlib.contextmanager
def _pinned_size(size: tuple[int, int]) -> Iterator[None]:
    """Make ``QwenImageEditInpaintPipeline`` calls in this context run at ``size`` (width, height).

    The pipeline sizes its work with its module's ``calculate_dimensions(1024 * 1024, aspect)``,
    ignoring ``height`` and ``width``; that function is wrapped (once per process) to return the
    size pinned here, and the pipeline's own result everywhere else (other threads, other callers).
    """
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as module

    original = module.calculate_dimensions
    if not getattr(original, "pinned_by_inpaint_studio", False):
        def calculate_dimensions(target_area, ratio):
            pinned = _PINNED.get()
            return (*pinned, None) if pinned is not None else original(target_area, ratio)

        calculate_dimensions.pinned_by_inpaint_studio = True
        module.calculate_dimensions = calculate_dimensions
    token = _PINNED.set(tuple(size))
    try:
        yield
    finally:
        _PINNED.reset(token)


def _runnable_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` with each side rounded to a multiple of :data:`SIZE_MULTIPLE` (at least one)."""
    return tuple(max(SIZE_MULTIPLE, round(side / SIZE_MULTIPLE) * SIZE_MULTIPLE) for side in size)


def _check_request(request: EngineRequest) -> None:
    """Raise InpaintError, saying what to change, for a request the pipeline cannot run as asked."""
    image, mask = request.image, request.mask
    checks = [
        (len(request.seeds) >= 1, "At least one seed is needed (one variant per seed)."),
        (all(isinstance(seed, int) and 0 <= seed < 2**64 for seed in request.seeds),
         f"Seeds must be whole numbers from 0 to 2**64 - 1 (got {request.seeds})."),
        (request.steps >= 1, f"Steps must be at least 1 (got {request.steps})."),
        (request.guidance_scale >= 0, f"Guidance must be 0 or more (got {request.guidance_scale})."),
        (0 < request.strength <= 1, f"Strength must be above 0 and at most 1 (got {request.strength})."),
        (request.mode in MODES, f"Mode must be one of {', '.join(MODES)} (got {request.mode!r})."),
        (request.mode != "instruct" or bool(request.prompt.strip()),
         "Say what to change in the region (an instruction such as \"make the jacket red\")."),
        (image.mode == "RGB", f"The image must be RGB (got mode {image.mode})."),
        (mask.mode == "L", f"The mask must be mode L, 255 = repaint (got mode {mask.mode})."),
        (image.size == mask.size,
         f"The image ({image.width}x{image.height}) and mask ({mask.width}x{mask.height}) "
         "must be the same size."),
    ]
    require_all(checks, InpaintError)


def _engine_running(class_name: str) -> str | None:
    """The catalog engine that runs pipelines of ``class_name`` (for a folder of another model)."""
    return next((entry.name for entry in BUILTIN.engines.values()
                 if entry.options.get("pipeline_class") == class_name), None)
