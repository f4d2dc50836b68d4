"""IC-Light fc (foreground-conditioned relighting) through diffusers.

IC-Light fc is a Stable Diffusion 1.5 model (by default Realistic Vision 5.1,
``stablediffusionapi/realistic-vision-v51``) whose UNet takes 8 input channels instead of 4: the
noisy latent, then the VAE latent of the foreground (the subject on neutral grey 127). The released
weights (``iclight_sd15_fc.safetensors`` from ``lllyasviel/ic-light``) are *offsets*: the base UNet's
``conv_in`` is widened to 8 input channels (the 4 new ones zero), and every tensor of the file is
added to the tensor of the same name. The background-conditioned model (``iclight_sd15_fbc``) takes
12 channels and is not supported here; its file is recognised and refused with that advice.

The foreground latent reaches the UNet through ``cross_attention_kwargs={"concat_conds": latent}``:
:func:`iclight_unet_class` is a ``UNet2DConditionModel`` subclass that takes it out of those kwargs
and concatenates it to the noisy latent along channels before ``conv_in`` (repeated over the batch,
which classifier-free guidance doubles), so a stock ``StableDiffusionImg2ImgPipeline`` runs it
unchanged. (Were a pipeline holding it ever saved, its config would first need
``unet.register_to_config(_class_name="UNet2DConditionModel")`` or it would not reload; nothing
here saves.)

Relighting follows IC-Light's ``gradio_demo_fc``: the light map (e.g. a grey gradient, bright on
the lit side) is the img2img initial image, denoised with strength 0.9 (``denoise``), DPM++ 2M SDE
Karras, guidance 2, 25 steps, prompt describing subject and lighting. IC-Light's default size is
512 x 640 (width x height); ``native_resolution`` is 512, its short side. Its optional second
high-resolution pass (x1.5 at denoise 0.5) is a second call by the caller.

torch, diffusers and safetensors are imported inside the functions that need them.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

from PIL import Image

from core.catalog import BUILTIN, EngineEntry
from core.engines.base import (
    CancelCheck,
    CatalogEngine,
    InpaintError,
    ModelLoadError,
    ProgressCallback,
    require_all,
)
from core.engines.pipelines import (
    DiffusionOptions,
    diffusion_options,
    load_vae,
    place_pipeline,
    run_variants,
    to_pil,
    weights_variant,
)

DEFAULT_BASE = "stablediffusionapi/realistic-vision-v51"
DEFAULT_OFFSET_REPO = "lllyasviel/ic-light"
OFFSET_FILE = "iclight_sd15_fc.safetensors"
BASE_SETTING = "INPAINT_STUDIO_MODEL_ICLIGHT_BASE"
OFFSET_SETTING = "INPAINT_STUDIO_MODEL_ICLIGHT"

LATENT_CHANNELS = 4
FC_CHANNELS = 8  # noisy latent + foreground latent
FBC_CHANNELS = 12  # noisy latent + foreground latent + background latent (not supported)
CONCAT_KEY = "concat_conds"
# How many unknown offset keys an error message names.
NAMED_KEYS = 5

# IC-Light's sampler: DPM++ 2M SDE Karras, over the base model's own scheduler config.
SCHEDULER_SETTINGS = {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True, "steps_offset": 1}

HOW_TO_PROVIDE = (
    f"Set {BASE_SETTING} to a local copy of {DEFAULT_BASE} (a diffusers SD1.5 text-to-image folder) "
    f"and {OFFSET_SETTING} to a local copy of {OFFSET_FILE} from {DEFAULT_OFFSET_REPO}."
)


@cache
def iclight_unet_class() -> type:
    """The ``UNet2DConditionModel`` subclass that concatenates ``cross_attention_kwargs["concat_conds"]``
    to its input (defined on first use, so that importing this module does not import diffusers).
    """
    import torch
    from diffusers import UNet2DConditionModel

    class ICLightUNet(UNet2DConditionModel):
        """A UNet taking the IC-Light condition latent through ``cross_attention_kwargs``."""

        def forward(
            self, sample, timestep, encoder_hidden_states, *args, cross_attention_kwargs=None, **kwargs
        ):
            extra = dict(cross_attention_kwargs or {})
            condition = extra.pop(CONCAT_KEY, None)
            if condition is None:
                raise ValueError(
                    f"The IC-Light UNet needs the foreground latent: pass cross_attention_kwargs="
                    f"{{{CONCAT_KEY!r}: latent}} ({self.config.in_channels - LATENT_CHANNELS} channels)."
                )
            condition = condition.to(device=sample.device, dtype=sample.dtype)
            if sample.shape[0] % condition.shape[0]:
                raise ValueError(
                    f"The IC-Light condition's batch ({condition.shape[0]}) does not divide the "
                    f"sample's ({sample.shape[0]})."
                )
            condition = condition.repeat_interleave(sample.shape[0] // condition.shape[0], dim=0)
            sample = torch.cat([sample, condition], dim=1)
            return super().forward(
                sample, timestep, encoder_hidden_states, *args, cross_attention_kwargs=extra or None, **kwargs
            )

    return ICLightUNet


# --- loading ------------------------------------------------------------------------------------------


def _is_local(model_id: str) -> bool:
    return Path(model_id).expanduser().is_absolute() or model_id.startswith(".") or Path(model_id).exists()


def _check_base_folder(base_path: str) -> None:
    """Raise ModelLoadError unless a local ``base_path`` is a diffusers SD1.5 text-to-image folder.

    Hub ids are checked after loading (see :func:`_check_base_unet`).
    """
    import json

    if not _is_local(base_path):
        return
    folder = Path(base_path).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"The IC-Light base model folder {base_path} does not exist. {HOW_TO_PROVIDE}")
    index = folder / "model_index.json"
    unet_config = folder / "unet" / "config.json"
    if not index.is_file() or not unet_config.is_file():
        raise ModelLoadError(
            f"The IC-Light base model {base_path} is not a diffusers pipeline folder (it needs "
            f"model_index.json and unet/config.json, as saved by save_pretrained). {HOW_TO_PROVIDE}"
        )
    try:
        pipeline_class = json.loads(index.read_text()).get("_class_name")
        in_channels = json.loads(unet_config.read_text()).get("in_channels")
    except (OSError, ValueError, AttributeError) as error:
        raise ModelLoadError(
            f"The IC-Light base model {base_path} has an unreadable model_index.json or unet/config.json "
            f"({type(error).__name__}: {error}). {HOW_TO_PROVIDE}"
        ) from error
    if pipeline_class != "StableDiffusionPipeline" or in_channels != LATENT_CHANNELS:
        raise ModelLoadError(
            f"The IC-Light base model {base_path} is a {pipeline_class} with a {in_channels}-channel UNet, "
            f"not an SD1.5 text-to-image model (StableDiffusionPipeline, {LATENT_CHANNELS}-channel UNet). "
            f"{HOW_TO_PROVIDE}"
        )


def _check_base_unet(base_path: str, unet) -> None:
    channels = unet.config.in_channels
    if channels != LATENT_CHANNELS:
        raise ModelLoadError(
            f"The IC-Light base model {base_path} has a {channels}-channel UNet, not an SD1.5 "
            f"text-to-image model ({LATENT_CHANNELS} channels). {HOW_TO_PROVIDE}"
        )


def _read_offsets(offset_path: str) -> dict:
    """The offset file's tensors; ModelLoadError when it is missing or not a safetensors file."""
    path = Path(offset_path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ModelLoadError(f"The IC-Light offset file {offset_path} {what}. {HOW_TO_PROVIDE}")
    try:
        from safetensors.torch import load_file

        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 (safetensors raises its own error types and OSError)
        raise ModelLoadError(
            f"The IC-Light offset file {offset_path} could not be read as safetensors "
            f"({type(error).__name__}: {error}). It must be {OFFSET_FILE} from {DEFAULT_OFFSET_REPO}."
        ) from error


def widen_conv_in(unet, in_channels: int = FC_CHANNELS) -> None:
    """Give ``unet``'s ``conv_in`` ``in_channels`` input channels: the old ones kept, the new ones zero."""
    import torch

    old = unet.conv_in
    if old.in_channels == in_channels:
        return
    new = torch.nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)


def merge_offsets(unet, offsets: dict, offset_name: str) -> None:
    """Add ``offsets`` to ``unet``'s weights in place (sums in float32, stored in the UNet's dtype).

    Raises ModelLoadError, naming ``offset_name`` and the keys, for offsets the UNet does not have or
    whose shapes differ from the (widened) UNet's.
    """
    import torch

    state = unet.state_dict()  # tensors sharing storage with the parameters and buffers
    unknown = [key for key in offsets if key not in state]
    if unknown:
        named = ", ".join(repr(key) for key in unknown[:NAMED_KEYS])
        more = f" and {len(unknown) - NAMED_KEYS} more" if len(unknown) > NAMED_KEYS else ""
        raise ModelLoadError(
            f"{offset_name}: {len(unknown)} offset(s) name weights the SD1.5 UNet does not have "
            f"({named}{more}). It is not an IC-Light SD1.5 offset file; use {OFFSET_FILE}."
        )
    for key, offset in offsets.items():
        expected = tuple(state[key].shape)
        if tuple(offset.shape) != expected:
            message = (
                f"{offset_name}: {key!r} has shape {tuple(offset.shape)} but the widened UNet's is {expected}"
            )
            if key == "conv_in.weight" and offset.ndim == 4 and offset.shape[1] == FBC_CHANNELS:
                message += (
                    " — this looks like the background-conditioned (fbc) model; use the fc file "
                    f"({OFFSET_FILE})"
                )
            raise ModelLoadError(message + ".")
    with torch.no_grad():
        for key, offset in offsets.items():
            target = state[key]
            target.copy_((target.float() + offset.to(target.device).float()).to(target.dtype))


def load_iclight_unet(base_path: str, offset_path: str, *, dtype: str = "float32", device: str = "cpu"):
    """The IC-Light fc UNet: ``base_path``'s SD1.5 UNet, ``conv_in`` widened to 8 channels, plus the
    offsets in ``offset_path``. An instance of :func:`iclight_unet_class` (takes the foreground latent
    through ``cross_attention_kwargs["concat_conds"]``), in ``dtype`` on ``device``.

    Raises :class:`ModelLoadError` when the base is missing or not SD1.5 text-to-image, or the offset
    file is missing, unreadable, or does not fit the widened UNet.
    """
    base_path, offset_path = str(base_path), str(offset_path)
    _check_base_folder(base_path)
    offsets = _read_offsets(offset_path)  # before the (large) UNet: a bad file fails fast
    try:
        import torch

        unet = iclight_unet_class().from_pretrained(base_path, subfolder="unet", dtype=getattr(torch, dtype),
                                                    variant=weights_variant(base_path))
    except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors and torch raise many types)
        raise ModelLoadError(
            f"The UNet of the IC-Light base model {base_path} could not be loaded "
            f"({type(error).__name__}: {error}). {HOW_TO_PROVIDE}"
        ) from error
    _check_base_unet(base_path, unet)
    widen_conv_in(unet, FC_CHANNELS)
    merge_offsets(unet, offsets, Path(offset_path).name)
    try:
        unet.to(device)
    except Exception as error:  # noqa: BLE001 (torch raises many types for a missing device)
        raise ModelLoadError(
            f"The IC-Light UNet could not be moved to {device} in {dtype} ({type(error).__name__}: {error}). "
            "Choose another device or dtype."
        ) from error
    return unet.eval()


# --- the engine ---------------------------------------------------------------------------------------


class ICLightEngine(CatalogEngine):
    """A loaded IC-Light fc img2img pipeline. Not thread-safe: hold a lock per engine.

    Its native size is the short side it was trained at; IC-Light's own default is 512 x 640."""

    def __init__(self, pipe, model_id: str, base_id: str, options: DiffusionOptions,
                 entry: EngineEntry = BUILTIN.engines["iclight"]) -> None:
        self.entry = entry
        self.pipe = pipe
        self.model_id = model_id  # the offset file
        self.base_id = base_id
        self.options = options
        self.default_scheduler = pipe.scheduler
        self.generator_device = "cpu" if options.device == "mps" else options.device

    @classmethod
    def from_catalog(cls, request) -> ICLightEngine:
        """The base model from the entry's first role, the offsets from its second."""
        base_role, offsets_role = request.entry.roles
        engine = cls.load(request.path(base_role), request.path(offsets_role),
                          diffusion_options(request.settings, request.device, **request.options))
        engine.entry = request.entry
        return engine

    @classmethod
    def load(
        cls, base_path: str | Path, offset_path: str | Path, options: DiffusionOptions = DiffusionOptions()
    ) -> ICLightEngine:
        """Load the base SD1.5 model at ``base_path`` with the IC-Light fc offsets at ``offset_path``
        merged into its UNet, as a ``StableDiffusionImg2ImgPipeline`` (no safety checker, no
        progress bars). Raises :class:`ModelLoadError` saying what is wrong and how to fix it.
        """
        base_id, offset_id = str(base_path), str(offset_path)
        unet = load_iclight_unet(base_id, offset_id, dtype=options.dtype, device="cpu")
        try:
            import torch
            from diffusers import StableDiffusionImg2ImgPipeline

            components = {}
            if options.fp16_safe_vae:

                components["vae"] = load_vae(options.fp16_safe_vae, getattr(torch, options.dtype))
            pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
                base_id,
                variant=weights_variant(base_id),
                unet=unet,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
                dtype=getattr(torch, options.dtype),
                **components,
            )
        except ModelLoadError:
            raise
        except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors and torch raise many types)
            raise ModelLoadError(
                f"The IC-Light base model {base_id} could not be loaded ({type(error).__name__}: {error}). "
                f"{HOW_TO_PROVIDE}"
            ) from error
        pipe.scheduler = _iclight_scheduler(pipe.scheduler)
        place_pipeline(pipe, options, "IC-Light")
        return cls(pipe, offset_id, base_id, options)

    def relight(
        self,
        foreground: Image.Image,
        light: Image.Image,
        prompt: str,
        negative_prompt: str = "",
        seeds: list[int] | tuple[int, ...] = (0,),
        steps: int = 25,
        guidance: float = 2.0,
        denoise: float = 0.9,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[Image.Image]:
        """Relight ``foreground`` (RGB, the subject on grey 127) under ``light`` (RGB light map, same
        size, width and height multiples of 8): one image per seed, each its own pipeline call (so
        a variant regenerated alone is bit-identical), each the input's size.

        The light map is the img2img initial image, denoised with strength ``denoise``; the
        foreground's VAE latent (distribution mode, times the VAE's scaling factor) is the UNet's
        extra input at every step. ``progress(step, total)`` is called after every step, counting
        over all variants; when
        ``should_cancel()`` returns True the remaining steps are skipped and :class:`Cancelled` is
        raised. Raises InpaintError for invalid inputs, GenerationFailed for out-of-memory and NaN images.
        """
        seeds = list(seeds)
        _check_inputs(foreground, light, seeds, steps, guidance, denoise)
        width, height = foreground.size
        condition = None

        def call(**per_call):
            nonlocal condition
            if condition is None:  # once for all variants, inside the out-of-memory guard
                condition = self.encode_foreground(foreground)
            return self.pipe(prompt=prompt, negative_prompt=negative_prompt or None, image=light, strength=denoise,
                             num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                             cross_attention_kwargs={CONCAT_KEY: condition}, **per_call)

        images, _, _ = run_variants(
            self.pipe, seeds, call, self.options, generator_device=self.generator_device,
            fresh_scheduler=lambda: type(self.default_scheduler).from_config(self.default_scheduler.config),
            progress=progress, should_cancel=should_cancel, doing=f"relighting a {width}x{height} image",
            advice="Use a smaller size or turn on CPU offload.")
        return [to_pil(pixels) for pixels in images]

    def encode_foreground(self, foreground: Image.Image):
        """The foreground's VAE latent (mode, scaled by the VAE's scaling factor), batch 1."""
        import torch

        vae = self.pipe.vae
        pixels = self.pipe.image_processor.preprocess(foreground)  # (1, 3, H, W) in [-1, 1]
        pixels = pixels.to(device=self.pipe._execution_device, dtype=vae.dtype)
        with torch.no_grad():
            latent = vae.encode(pixels).latent_dist.mode()
        return latent * vae.config.scaling_factor


def _iclight_scheduler(scheduler):
    """IC-Light's DPM++ 2M SDE Karras over ``scheduler``'s config (betas, timesteps)."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(scheduler.config, **SCHEDULER_SETTINGS)


def _check_inputs(foreground, light, seeds, steps, guidance, denoise) -> None:
    """Raise InpaintError, saying what to change, for inputs IC-Light cannot relight as asked."""
    checks = [
        (len(seeds) >= 1, "At least one seed is needed (one variant per seed)."),
        (all(isinstance(seed, int) and 0 <= seed < 2**64 for seed in seeds),
         f"Seeds must be whole numbers from 0 to 2**64 - 1 (got {seeds})."),
        (isinstance(steps, int) and steps >= 1, f"Steps must be at least 1 (got {steps})."),
        (guidance >= 0, f"Guidance must be 0 or more (got {guidance})."),
        (0 < denoise <= 1, f"Denoise must be above 0 and at most 1 (got {denoise})."),
        (int(steps * denoise) >= 1,
         f"Steps x denoise must be at least 1 (got {steps} x {denoise}): raise either."),
        (foreground.mode == "RGB", f"The foreground must be RGB (got mode {foreground.mode})."),
        (light.mode == "RGB", f"The light map must be RGB (got mode {light.mode})."),
        (foreground.size == light.size,
         f"The foreground ({foreground.width}x{foreground.height}) and light map "
         f"({light.width}x{light.height}) must be the same size."),
        (foreground.width % 8 == 0 and foreground.height % 8 == 0,
         f"The width and height must be multiples of 8 (got {foreground.width}x{foreground.height})."),
    ]
    require_all(checks, InpaintError)
