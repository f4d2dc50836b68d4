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

Without a CUDA device only the FLOP counts are computed (the CPU-side part), and the timing rows
say that no GPU was found.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

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
    return rows
