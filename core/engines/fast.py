"""The GPU fast path of the diffusion engines: few-step presets, compile-friendly sizes, warm-up.

Few-step presets fuse a distillation LoRA into the UNet and switch to the scheduler it was
trained for, so 4-8 steps at guidance about 1 replace 30 steps at 7.5:

- ``lcm``: Latent Consistency LoRA (``latent-consistency/lcm-lora-sdv1-5`` / ``-sdxl``), LCMScheduler;
- ``tcd``: Trajectory Consistency Distillation LoRA (``h1t/TCD-SD15-LoRA`` / ``TCD-SDXL-LoRA``),
  TCDScheduler;
- ``hyper``: Hyper-SD 8-step LoRA (``ByteDance/Hyper-SD``), DDIM with trailing timesteps.

An engine with a preset is named ``<engine>+<preset>`` (``sd15+lcm``, ``sdxl+hyper``): the name
carries through the pages, recipes, batches and the command line, and loads as its own engine.
The presets and each engine's LoRA roles are catalog entries (``core.catalog``).

``torch.compile`` specialises the UNet to the shapes it sees; with compile on, crops are filled
at one of a few fixed sizes (:func:`bucket_size`), so a new crop shape does not recompile.

FP8 weights (:func:`quantize_fp8`, torchao) go into the transformer blocks' linear layers after
their query/key/value projections are fused and before compiling (``core.engines.pipelines.apply_fast_path``).
"""
from __future__ import annotations

import math

from core.catalog import FewStep


def apply_few_step(pipe, preset: FewStep, lora_path: str) -> None:
    """Fuse ``preset``'s LoRA at ``lora_path`` (a folder or a .safetensors file) into ``pipe``'s
    UNet and make its scheduler the preset's. Raises whatever diffusers raises (the caller turns it
    into a ModelLoadError naming the file)."""
    from pathlib import Path

    import diffusers

    path = Path(lora_path)
    if path.is_file():
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=preset.name)
    else:
        pipe.load_lora_weights(str(path), adapter_name=preset.name)
    pipe.fuse_lora(adapter_names=[preset.name], lora_scale=1.0)
    pipe.unload_lora_weights()  # the fused weights stay; the adapter's copies go
    scheduler_class = getattr(diffusers, preset.scheduler)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **dict(preset.scheduler_settings))


# Width:height ratios of the compile buckets (and their inverses).
BUCKET_ASPECTS = (1.0, 5 / 4, 4 / 3, 3 / 2, 16 / 9, 2.0)


def size_buckets(native: int, multiple: int = 64) -> list[tuple[int, int]]:
    """The fill sizes used with compile on: about ``native``² pixels at each aspect of
    :data:`BUCKET_ASPECTS`, landscape and portrait, sides multiples of ``multiple``."""
    sizes = []
    for aspect in BUCKET_ASPECTS:
        width = native * math.sqrt(aspect)
        height = native / math.sqrt(aspect)
        size = (max(multiple, round(width / multiple) * multiple), max(multiple, round(height / multiple) * multiple))
        for candidate in (size, size[::-1]):
            if candidate not in sizes:
                sizes.append(candidate)
    return sizes


def bucket_size(crop_size: tuple[int, int], native: int) -> tuple[int, int]:
    """The bucket whose aspect is closest to ``crop_size``'s (in log space)."""
    aspect = math.log(crop_size[0] / crop_size[1])
    return min(size_buckets(native), key=lambda size: abs(math.log(size[0] / size[1]) - aspect))


# --- FP8 weights (the CUDA fast path; see core.engines.pipelines.apply_fast_path) --------------------

# The projections fused QKV leaves in the model unused (the fused ``to_qkv`` / ``to_added_qkv`` replace them).
FUSED_AWAY = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")


def fp8_filter(transformer):
    """torchao's ``filter_fn``: the linear layers of the transformer blocks, less the
    per-block modulation of FLUX.1 (``norm*.linear``, one row per step: nothing to gain) and the
    projections that fused QKV left unused. Embeddings, modulation and the output layer stay bf16."""
    import torch

    unused = {f"{name}.{child}" for name, module in transformer.named_modules()
              if getattr(module, "fused_projections", False) for child in FUSED_AWAY}

    def selected(module, fqn: str) -> bool:
        return (isinstance(module, torch.nn.Linear) and "transformer_blocks." in fqn and ".norm" not in fqn
                and fqn not in unused)

    return selected


def quantize_fp8(transformer) -> None:
    """FP8 (e4m3) weights and dynamically scaled FP8 activations, per-row scales, in the
    transformer blocks' linear layers, through torchao; after fusing QKV, before compiling."""
    from torchao.quantization import quantize_

    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow
        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    except ImportError:  # torchao before 0.10 names it as a function
        from torchao.quantization import float8_dynamic_activation_float8_weight
        from torchao.quantization.granularity import PerRow
        config = float8_dynamic_activation_float8_weight(granularity=PerRow())
    quantize_(transformer, config, filter_fn=fp8_filter(transformer))
