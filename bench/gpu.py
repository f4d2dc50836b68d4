"""GPU: denoising-step and whole-image time of the full-size inpainting models, and their FLOP rate.

The SD 1.5 inpainting and SDXL inpainting UNets and VAEs are built from their published
configurations (``bench/configs/*.json``) with random weights: their speed does not depend on the
weights' values, and no weights can be downloaded here. Measured on CUDA in bfloat16 (float16
where bfloat16 is missing), channels-last, scaled-dot-product attention, classifier-free guidance
(UNet batch 2):

- one denoising step at the model's native resolution (512² for SD 1.5, 1024² for SDXL), eager
  and, unless ``--quick``, with ``torch.compile``;
- the whole image: 30 steps plus the VAE decode (the text encoders run once per prompt and are
  cached by the engines, so they are left out);
- model-FLOPs utilisation: FLOPs per step counted with ``torch.utils.flop_counter`` (on the meta
  device, no memory needed) divided by the step time and the GPU's peak dense bf16 rate.

Targets on one H100: SDXL inpainting at 1024², 30 steps, under 1.5 s end to end.

The FLUX engines (:mod:`core.engines.flux`) likewise, their transformers and VAEs built from the
published configurations (``flux2_klein_transformer.json``, ``flux2_vae.json``,
``flux_fill_transformer.json``, ``flux_vae.json``; each says in ``_source`` where its values come
from), batch 1 (neither runs classifier-free guidance), 512 text tokens (the pipelines pad to it):

- FLUX.2 [klein] 4B inpainting: 4 steps (step-distilled); every step's sequence is the noisy
  latent, the crop's own latent (``Flux2KleinInpaintPipeline`` appends it as a condition image) and
  the text, 4096 + 4096 + 512 tokens at 1024²;
- FLUX.1 Fill [dev]: 28 steps, guidance 30 embedded (an input of the transformer), 4096 + 512
  tokens of 384 channels (noisy latent, masked-image latent, folded mask);
- the whole image: the VAE encode of the crop, the steps (an Euler update in between) and the VAE
  decode;
- stock bfloat16 against the fast path, each a measured row of the same run, each row adding one
  thing to the last: ``torch.compile`` (one fixed size, as the engines compile), fused QKV
  projections (``transformer.fuse_qkv_projections()``), FP8 weights and activations through torchao
  (:func:`quantize_fp8`; a row says why when torchao is missing or the GPU is older than compute
  capability 8.9);
- model-FLOPs utilisation, FLOPs counted on the meta device as above.

Targets: FLUX.2 [klein] inpainting at 1024² end to end under 0.6 s on one H100/H200; FLUX.1 Fill at
1024², 28 steps, at least 2× faster than stock bfloat16 in the same run. A row per target says
whether the fast path met it.

Without a CUDA device only the FLOP counts are computed (the CPU-side part), and the timing rows
say that no GPU was found.
"""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

from core.engines.fast import FUSED_AWAY, fp8_filter, quantize_fp8  # noqa: F401 (the engines' own FP8 path)

CONFIGS = Path(__file__).resolve().parent / "configs"
MODELS = {
    # name: (UNet config, VAE config, text embedding width, native resolution)
    "sd15": ("sd15_inpaint_unet.json", "sd15_vae.json", 768, 512),
    "sdxl": ("sdxl_inpaint_unet.json", "sdxl_vae.json", 2048, 1024),
}
STEPS = 30
# Peak dense bfloat16 tensor-core rate, TFLOP/s, by a substring of the device name.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10G": 70.0,
                    "4090": 165.2, "3090": 71.0}


def load_config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def build(name: str, device: str = "meta", dtype=None):
    """The model family's UNet and VAE with random weights (on ``meta``: shapes only)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet_config, vae_config, _, _ = MODELS[name]
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(load_config(unet_config))
        vae = AutoencoderKL.from_config(load_config(vae_config))
    if dtype is not None:
        unet, vae = unet.to(dtype=dtype), vae.to(dtype=dtype)
    if device != "meta":
        unet = unet.to(memory_format=torch.channels_last)
    return unet.eval(), vae.eval()


def unet_inputs(name: str, resolution: int, device: str = "meta", dtype=None, batch: int = 2) -> dict:
    """One denoising step's UNet inputs at ``resolution``² with classifier-free guidance (batch 2)."""
    import torch

    _, _, text_width, _ = MODELS[name]
    latent = resolution // 8
    make = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    inputs = {"sample": make(batch, 9, latent, latent), "timestep": torch.tensor(500, device=device),
              "encoder_hidden_states": make(batch, 77, text_width)}
    if name == "sdxl":
        inputs["added_cond_kwargs"] = {"text_embeds": make(batch, 1280), "time_ids": make(batch, 6)}
    return inputs


def step_flops(name: str, resolution: int) -> int:
    """FLOPs of one UNet call (batch 2) at ``resolution``², counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet, _ = build(name)
    inputs = unet_inputs(name, resolution)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(**inputs)
    return counter.get_total_flops()


def decode_flops(name: str, resolution: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    _, vae = build(name)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.decode(torch.randn(1, 4, resolution // 8, resolution // 8, device="meta"))
    return counter.get_total_flops()


def peak_tflops(device_name: str) -> float | None:
    return next((rate for key, rate in PEAK_BF16_TFLOPS.items() if key in device_name), None)


def _median_ms(function, repeat: int, device: str) -> float:
    """Median time of ``function`` after a warm-up call: CUDA events on a GPU, a clock elsewhere."""
    import torch

    function()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            function()
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def timing_rows(name: str, resolution: int, flops: int, *, device: str = "cuda", dtype=None, repeat: int = 20,
                compile_too: bool = True, steps: int = STEPS, peak: float | None = None) -> list[dict]:
    """Step and whole-image rows for model family ``name`` on ``device`` (random weights)."""
    import torch

    unet, vae = build(name, device, dtype)
    inputs = unet_inputs(name, resolution, device, dtype)
    latents = torch.randn(1, 4, resolution // 8, resolution // 8, device=device, dtype=dtype)

    def step(model):
        with torch.no_grad():
            return model(**inputs).sample

    def whole(model):
        with torch.no_grad():
            sample = inputs["sample"]
            for _ in range(steps):
                out = model(**{**inputs, "sample": sample}).sample
                noise = out[:1] + 7.5 * (out[1:] - out[:1])  # guidance, then a scheduler-sized update
                sample = torch.cat([sample[:, :4] - 0.01 * noise.repeat(2, 1, 1, 1), sample[:, 4:]], dim=1)
            return vae.decode(latents).sample

    variants = [("eager", unet)]
    if compile_too:
        started = time.perf_counter()
        compiled = torch.compile(unet, mode="max-autotune-no-cudagraphs")
        step(compiled)
        variants.append((f"torch.compile (compiled in {time.perf_counter() - started:.0f} s)", compiled))
    rows, eager_step = [], None
    for label, model in variants:
        step_ms = _median_ms(lambda: step(model), repeat, device)
        eager_step = eager_step or step_ms
        mfu = f", MFU {100 * flops / (step_ms / 1000) / (peak * 1e12):.0f} %" if peak else ""
        rows.append({"name": f"{name} UNet step {resolution}², CFG, {dtype}, {label}{mfu}", "ms": step_ms,
                     "reference": "eager step, same run", "reference_ms": eager_step})
        whole_ms = _median_ms(lambda: whole(model), max(2, repeat // 5), device)
        target = " (target < 1500 ms on H100)" if name == "sdxl" else ""
        rows.append({"name": f"{name} whole image {resolution}², {steps} steps + VAE decode, {label}{target}",
                     "ms": whole_ms, "reference": None, "reference_ms": None})
    return rows


def _gpu_rows(name: str, resolution: int, flops: int, quick: bool) -> list[dict]:
    import torch

    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    rows = timing_rows(name, resolution, flops, device="cuda", dtype=dtype, repeat=5 if quick else 20,
                       compile_too=not quick, peak=peak_tflops(torch.cuda.get_device_name(0)))
    torch.cuda.empty_cache()
    return rows


def run(quick: bool = False) -> list[dict]:
    import torch

    rows = []
    for name, (_, _, _, resolution) in MODELS.items():
        flops = step_flops(name, resolution)
        vae_flops = decode_flops(name, resolution)
        rows.append({"name": f"{name} UNet FLOPs per step at {resolution}², CFG batch 2 (GFLOP, counted)",
                     "ms": flops / 1e9, "unit": "GF", "reference": None, "reference_ms": None})
        rows.append({"name": f"{name} VAE decode FLOPs at {resolution}² (GFLOP, counted)", "ms": vae_flops / 1e9,
                     "unit": "GF", "reference": None, "reference_ms": None})
        if torch.cuda.is_available():
            rows.extend(_gpu_rows(name, resolution, flops, quick))
        else:
            rows.append({"name": f"{name} timings: no CUDA device here, not measured", "ms": 0.0,
                         "reference": None, "reference_ms": None})
    rows.extend(flux_rows(quick))
    return rows


# --- FLUX: FLUX.2 [klein] 4B and FLUX.1 Fill [dev] ------------------------------------------------


@dataclass(frozen=True)
class FluxModel:
    """A FLUX engine's transformer and VAE as the benchmark runs them (its defaults in the catalog)."""

    title: str
    transformer: str  # config file under bench/configs
    vae: str
    steps: int  # the engine's default steps
    resolution: int = 1024  # native, the engines' fill size
    guidance: float | None = None  # embedded guidance (a transformer input), where the model takes one
    text_tokens: int = 512  # both pipelines pad the prompt to max_sequence_length=512
    condition_images: int = 0  # latents appended to the sequence at every step ([klein]: the crop's own)
    target: str = ""  # the target, as the rows name it
    target_ms: float | None = None  # whole image, end to end, on one H100/H200
    target_speedup: float | None = None  # whole image, fast path against stock bf16 in the same run


FLUX_MODELS = {
    "flux2_klein": FluxModel(
        "FLUX.2 [klein] 4B", "flux2_klein_transformer.json", "flux2_vae.json", steps=4, condition_images=1,
        target="inpainting 1024² end to end under 600 ms on one H100/H200", target_ms=600.0),
    "flux_fill": FluxModel(
        "FLUX.1 Fill [dev]", "flux_fill_transformer.json", "flux_vae.json", steps=28, guidance=30.0,
        target="1024², 28 steps at least 2× faster than stock bf16 in the same run", target_speedup=2.0),
}
FLUX2_CLASS = "Flux2Transformer2DModel"
COMPILE_MODE = "max-autotune-no-cudagraphs"  # as core.engines.pipelines.place_pipeline compiles
# Projections that fuse_qkv_projections() copies into to_qkv / to_added_qkv and leaves in place, unused.


def flux_configs(name: str) -> tuple[dict, dict]:
    """The model's transformer and VAE configurations."""
    spec = FLUX_MODELS[name]
    return load_config(spec.transformer), load_config(spec.vae)


def _vae_scale(vae_config: dict) -> int:
    """Pixels per latent pixel: 8 for both FLUX VAEs (three 2× downsamplings)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def build_flux(name: str, device: str = "meta", dtype=None):
    """The model's transformer and VAE with random weights (on ``meta``: shapes only), classes as
    their configurations name them (``Flux2Transformer2DModel`` + ``AutoencoderKLFlux2``,
    ``FluxTransformer2DModel`` + ``AutoencoderKL``). Built on meta and cast there, then given
    storage on ``device``: a 12B transformer never takes a float32 copy on the GPU (48 GB)."""
    import diffusers
    import torch

    configs = flux_configs(name)
    with torch.device("meta"):
        models = [getattr(diffusers, config["_class_name"]).from_config(config) for config in configs]
    if dtype is not None:  # torch's own .to: diffusers 0.42.1's warns on every cast ("kept in float32: []")
        models = [torch.nn.Module.to(model, dtype=dtype) for model in models]
    if device != "meta":
        models = [_random_weights(model.to_empty(device=device)) for model in models]
    transformer, vae = models
    return transformer.eval(), vae.eval()


def _random_weights(model):
    """Fill ``model``'s uninitialised storage (``to_empty``): every parameter small noise, every
    buffer zero, then each layer's own initialisation (linear and convolution weights, norms at 1,
    BatchNorm statistics)."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
        for buffer in model.buffers():
            buffer.zero_()
        for module in model.modules():
            if module is not model and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    return model


def _image_ids(side: int, images: int, axes: int):
    """RoPE positions of ``images`` latents of side × side tokens: (row, column), and for FLUX.2
    (4 axes: time, row, column, text position) the i-th image at time 10·i, as the pipelines number them."""
    import torch

    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    ids = torch.zeros(images, side * side, axes)
    ids[:, :, 1], ids[:, :, 2] = rows.flatten(), columns.flatten()
    if axes == 4:
        ids[:, :, 0] = 10 * torch.arange(images).unsqueeze(1)
    return ids.reshape(images * side * side, axes)


def _text_ids(tokens: int, axes: int):
    import torch

    ids = torch.zeros(tokens, axes)
    if axes == 4:  # FLUX.2 numbers the text tokens on the last axis; FLUX.1 leaves them all at 0
        ids[:, 3] = torch.arange(tokens)
    return ids


def flux_inputs(name: str, resolution: int, device: str = "meta", dtype=None,
                condition_images: int | None = None) -> dict:
    """One denoising step's transformer inputs at ``resolution``² (batch 1), as the inpainting
    pipelines pass them: [klein] the packed noisy latent followed by ``condition_images`` latents
    (default: the model's), Fill the noisy latent, masked-image latent and mask side by side in 384
    channels; text embeddings of ``text_tokens``; the timestep divided by 1000; Fill's guidance."""
    import torch

    spec = FLUX_MODELS[name]
    config, vae_config = flux_configs(name)
    side = resolution // (2 * _vae_scale(vae_config))  # latents are packed in 2 × 2 patches
    axes = len(config["axes_dims_rope"])
    flux2 = config["_class_name"] == FLUX2_CLASS
    images = 1 + (spec.condition_images if condition_images is None else condition_images) if flux2 else 1
    make = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    img_ids, txt_ids = _image_ids(side, images, axes), _text_ids(spec.text_tokens, axes)
    inputs = {
        "hidden_states": make(1, images * side * side, config["in_channels"]),
        "encoder_hidden_states": make(1, spec.text_tokens, config["joint_attention_dim"]),
        "timestep": torch.full((1,), 0.5, device=device, dtype=dtype),
        # FLUX.2 pipelines pass batched ids; FLUX.1 warns about (and drops) a batch dimension
        "img_ids": (img_ids.unsqueeze(0) if flux2 else img_ids).to(device),
        "txt_ids": (txt_ids.unsqueeze(0) if flux2 else txt_ids).to(device),
    }
    if not flux2:
        inputs["pooled_projections"] = make(1, config["pooled_projection_dim"])
    if config.get("guidance_embeds"):
        inputs["guidance"] = torch.full((1,), spec.guidance or 1.0, device=device, dtype=dtype)
    return inputs


def flux_step_flops(name: str, resolution: int, condition_images: int | None = None) -> int:
    """FLOPs of one transformer call (batch 1) at ``resolution``², counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    transformer, _ = build_flux(name)
    inputs = flux_inputs(name, resolution, condition_images=condition_images)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        transformer(**inputs, return_dict=False)
    return counter.get_total_flops()


def flux_vae_flops(name: str, resolution: int) -> tuple[int, int]:
    """FLOPs of the VAE encode of a ``resolution``² crop and of the decode of its latent (meta device)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    _, vae = build_flux(name)
    latent = resolution // _vae_scale(vae.config)
    with torch.no_grad(), FlopCounterMode(display=False) as encode:
        vae.encode(torch.randn(1, 3, resolution, resolution, device="meta"))
    with torch.no_grad(), FlopCounterMode(display=False) as decode:
        vae.decode(torch.randn(1, vae.config.latent_channels, latent, latent, device="meta"))
    return encode.get_total_flops(), decode.get_total_flops()


def _pack(latents):
    """(B, C, H, W) → (B, H/2 · W/2, 4C): 2 × 2 patches side by side, as both FLUX pipelines pack."""
    batch, channels, height, width = latents.shape
    latents = latents.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(batch, (height // 2) * (width // 2), channels * 4)


def _unpack(tokens, side: int):
    batch, _, packed = tokens.shape
    latents = tokens.view(batch, side, side, packed // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(batch, packed // 4, side * 2, side * 2)


def flux_workload(name: str, resolution: int, *, device: str = "cuda", dtype=None, steps: int | None = None):
    """The model built on ``device`` and what the benchmark times with it: ``(transformer, vae,
    step, whole)``. ``step(model)`` is one transformer call; ``whole(model)`` fills one image with
    ``model`` as the transformer (the engine's steps unless ``steps``) and returns the decoded
    pixels (1, 3, resolution, resolution): VAE encode of the crop (Fill: of the masked crop), the
    steps, each followed by an Euler update ([klein] then keeps the unmasked latent, as
    ``Flux2KleinInpaintPipeline`` does), and the VAE decode. The text encoders run once per prompt
    and are cached by the engines, so they are left out."""
    import torch

    spec = FLUX_MODELS[name]
    steps = steps or spec.steps
    transformer, vae = build_flux(name, device, dtype)
    flux2 = type(transformer).__name__ == FLUX2_CLASS
    inputs = flux_inputs(name, resolution, device, dtype)
    side = resolution // (2 * _vae_scale(vae.config))
    tokens = side * side
    packed = 4 * vae.config.latent_channels
    make = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    crop, noise = make(1, 3, resolution, resolution), make(1, tokens, packed)
    keep = torch.zeros(1, tokens, 1, device=device, dtype=dtype)
    keep[:, : tokens // 2] = 1  # the unmasked half of the crop
    # Fill: the mask folded to (vae scale)² channels per latent pixel, packed: in_channels - 2 · packed
    mask_channels = transformer.config.in_channels - 2 * packed
    mask = None if flux2 else torch.ones(1, tokens, mask_channels, device=device, dtype=dtype)

    def step(model):
        with torch.no_grad():
            return model(**inputs, return_dict=False)[0]

    def whole(model):
        with torch.no_grad():
            known = _pack(vae.encode(crop).latent_dist.mode())
            condition, dim = (known, 1) if flux2 else (torch.cat([known, mask], dim=2), 2)
            latents = noise
            for _ in range(steps):
                hidden = torch.cat([latents, condition], dim=dim)
                out = model(**{**inputs, "hidden_states": hidden}, return_dict=False)[0][:, :tokens]
                latents = latents - out / steps
                if flux2:
                    latents = keep * known + (1 - keep) * latents
            return vae.decode(_unpack(latents, side)).sample

    return transformer, vae, step, whole


def fp8_unavailable(device: str = "cuda") -> str | None:
    """Why FP8 weights through torchao cannot run here, or None when they can."""
    import importlib.util

    import torch

    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed"
    if device != "cuda" or not torch.cuda.is_available():
        return "no CUDA device"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        return f"compute capability {major}.{minor} is below 8.9 (no FP8 tensor cores)"
    return None


def fast_path_variants(transformer, warm, *, compile_too: bool = True, fp8: bool = True, device: str = "cuda",
                       mode: str | None = None):
    """``(label, model)`` for stock, then each fast-path step added to the one before: torch.compile,
    fused QKV projections, FP8 weights. ``model`` is None (and the label says why) for a step that
    cannot run here. Changes ``transformer`` in place as it goes, so take each model before the next.
    ``warm(model)`` runs one call (compiling it, timed in the label)."""
    import torch

    def compiled(label: str):
        if not compile_too:
            return label, transformer
        torch._dynamo.reset()  # the earlier variant's graphs are not called again
        model = torch.compile(transformer, mode=mode or COMPILE_MODE, dynamic=False)
        started = time.perf_counter()
        warm(model)
        joined = f"{label} + " if label else ""
        return f"{joined}torch.compile (compiled in {time.perf_counter() - started:.0f} s)", model

    yield "stock", transformer
    if compile_too:
        yield compiled("")
    transformer.fuse_qkv_projections()
    yield compiled("fused QKV")
    why = fp8_unavailable(device) if fp8 else "turned off"
    if why:
        yield f"FP8 weights (torchao) skipped: {why}", None
        return
    quantize_fp8(transformer)
    yield compiled("FP8 weights (torchao, per-row) + fused QKV")


def flux_timing_rows(name: str, resolution: int, flops: int, *, device: str = "cuda", dtype=None,
                     repeat: int = 20, compile_too: bool = True, steps: int | None = None,
                     peak: float | None = None, fp8: bool = True) -> list[dict]:
    """Step and whole-image rows of FLUX model ``name`` on ``device`` (random weights), stock and
    each fast-path step (:func:`fast_path_variants`), the VAE alone, and one row per target."""
    import torch

    spec = FLUX_MODELS[name]
    steps = steps or spec.steps
    transformer, vae, step, whole = flux_workload(name, resolution, device=device, dtype=dtype, steps=steps)
    precision = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    what = f"{resolution}², {steps} steps + VAE encode + decode"
    rows, stock_step, stock_whole, fast = [], None, None, None
    variants = fast_path_variants(transformer, step, compile_too=compile_too, fp8=fp8, device=device)
    for label, model in variants:
        label = f"{precision} {label}" if label == "stock" else label
        if model is None:
            rows.append({"name": f"{name} {label}", "ms": 0.0, "reference": None, "reference_ms": None})
            continue
        step_ms = _median_ms(lambda: step(model), repeat, device)
        whole_ms = _median_ms(lambda: whole(model), max(2, repeat // 5), device)
        stock_step, stock_whole = stock_step or step_ms, stock_whole or whole_ms
        mfu = f", MFU {100 * flops / (step_ms / 1000) / (peak * 1e12):.0f} % of bf16 peak" if peak else ""
        rows.append({"name": f"{name} transformer step {resolution}², {label}{mfu}", "ms": step_ms,
                     "reference": "stock step, same run", "reference_ms": stock_step})
        rows.append({"name": f"{name} whole image {what}, {label}", "ms": whole_ms,
                     "reference": "stock whole image, same run", "reference_ms": stock_whole})
        fast = (label, whole_ms)

    side = resolution // _vae_scale(vae.config)
    latent = torch.randn(1, vae.config.latent_channels, side, side, device=device, dtype=dtype)
    crop = torch.randn(1, 3, resolution, resolution, device=device, dtype=dtype)

    def encode_decode():
        with torch.no_grad():
            vae.encode(crop)
            return vae.decode(latent).sample

    vae_ms = _median_ms(encode_decode, max(2, repeat // 5), device)
    rows.append({"name": f"{name} VAE encode + decode {resolution}², {precision}, eager", "ms": vae_ms,
                 "reference": None, "reference_ms": None})
    rows.append(_target_row(name, fast, stock_whole, device))
    return rows


def _target_row(name: str, fast: tuple[str, float], stock_ms: float, device: str) -> dict:
    """Whether the fast path (the last measured variant) met the issue's target for model ``name``."""
    import torch

    spec = FLUX_MODELS[name]
    label, fast_ms = fast
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else device
    if spec.target_ms is not None:
        met = fast_ms < spec.target_ms
        if any(key in gpu for key in ("H100", "H200")):
            verdict = "met" if met else "missed"
        else:
            verdict = f"{'under' if met else 'over'} (not an H100/H200)"
        return {"name": f"{name} target: {spec.target}: {verdict} on {gpu}, fast path = {label}",
                "ms": fast_ms, "reference": "target", "reference_ms": spec.target_ms}
    speedup = stock_ms / fast_ms
    verdict = "met" if speedup >= spec.target_speedup else "missed"
    return {"name": f"{name} target: {spec.target}: {speedup:.2f}×, {verdict} on {gpu}, fast path = {label}",
            "ms": fast_ms, "reference": "stock bf16 whole image, same run", "reference_ms": stock_ms}


def _gpu_flux_rows(name: str, flops: int, quick: bool) -> list[dict]:
    import torch

    torch._dynamo.reset()  # the SD rows' compiled graphs hold their models
    gc.collect()
    torch.cuda.empty_cache()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    rows = flux_timing_rows(name, FLUX_MODELS[name].resolution, flops, device="cuda", dtype=dtype,
                            repeat=5 if quick else 20, compile_too=not quick,
                            peak=peak_tflops(torch.cuda.get_device_name(0)))
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return rows


def _versions() -> str:
    import importlib.metadata

    import torch

    found = []
    for package in ("torch", "diffusers", "torchao"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        found.insert(0, f"{torch.cuda.get_device_name(0)} (compute capability {major}.{minor})")
    return ", ".join(found)


def flux_rows(quick: bool = False) -> list[dict]:
    """The FLUX rows: FLOPs always (meta device), timings where there is a CUDA device."""
    import torch

    rows = [{"name": f"FLUX rows on: {_versions()}", "ms": 0.0, "reference": None, "reference_ms": None}]
    for name, spec in FLUX_MODELS.items():
        resolution = spec.resolution
        config, vae_config = flux_configs(name)
        side = resolution // (2 * _vae_scale(vae_config))
        images = 1 + spec.condition_images if config["_class_name"] == FLUX2_CLASS else 1
        sequence = " + ".join([str(side * side)] * images + [str(spec.text_tokens)])
        flops = flux_step_flops(name, resolution)
        encode, decode = flux_vae_flops(name, resolution)
        flop_rows = [
            (f"{name} transformer FLOPs per step at {resolution}², {sequence} tokens, batch 1", flops),
            (f"{name} VAE encode FLOPs at {resolution}²", encode),
            (f"{name} VAE decode FLOPs at {resolution}²", decode),
            (f"{name} whole image FLOPs at {resolution}², {spec.steps} steps + VAE encode + decode",
             spec.steps * flops + encode + decode),
        ]
        if spec.condition_images:
            with_reference = flux_step_flops(name, resolution, condition_images=spec.condition_images + 1)
            flop_rows.insert(1, (f"{name} transformer FLOPs per step at {resolution}² with a reference "
                                 f"picture ({side * side} more tokens)", with_reference))
        rows += [{"name": f"{label} (GFLOP, counted)", "ms": count / 1e9, "unit": "GF", "reference": None,
                  "reference_ms": None} for label, count in flop_rows]
        if torch.cuda.is_available():
            rows.extend(_gpu_flux_rows(name, flops, quick))
        else:
            rows.append({"name": f"{name} timings: no CUDA device here, not measured (target: {spec.target})",
                         "ms": 0.0, "reference": None, "reference_ms": None})
    return rows
