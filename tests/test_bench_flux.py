"""The FLUX rows of bench/gpu.py on the CPU: FLOP counts of the full-size FLUX.2 [klein] 4B and
FLUX.1 Fill [dev] transformers (meta device: shapes only, no memory), and the whole GPU code path
(inputs, fast-path variants, denoising loop, VAE, target rows) with small configs standing in for
the published ones. Timings are not asserted: there is no GPU here."""
from __future__ import annotations

import dataclasses

import pytest

HEAD, HEADS, LATENT = 16, 2, 4
TINY_CONFIGS = {
    "tiny_klein_transformer.json": {
        "_class_name": "Flux2Transformer2DModel", "patch_size": 1, "in_channels": 4 * LATENT, "num_layers": 1,
        "num_single_layers": 1, "attention_head_dim": HEAD, "num_attention_heads": HEADS,
        "joint_attention_dim": 24, "timestep_guidance_channels": 32, "axes_dims_rope": [4, 4, 4, 4],
        "guidance_embeds": False},
    "tiny_klein_vae.json": {
        "_class_name": "AutoencoderKLFlux2", "block_out_channels": [16, 16, 16, 16], "layers_per_block": 1,
        "latent_channels": LATENT, "norm_num_groups": 4, "sample_size": 64},
    # Fill: noisy latent + masked-image latent (4 · LATENT each, packed) + the mask folded to 8 · 8 · 4
    "tiny_fill_transformer.json": {
        "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 2 * 4 * LATENT + 256,
        "out_channels": 4 * LATENT, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": HEAD,
        "num_attention_heads": HEADS, "joint_attention_dim": 32, "pooled_projection_dim": 24,
        "guidance_embeds": True, "axes_dims_rope": [4, 4, 8]},
    "tiny_fill_vae.json": {
        "_class_name": "AutoencoderKL", "block_out_channels": [16, 16, 16, 16], "layers_per_block": 1,
        "latent_channels": LATENT, "norm_num_groups": 4, "sample_size": 64, "use_quant_conv": False,
        "use_post_quant_conv": False, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4},
}
TINY_FILES = {"flux2_klein": ("tiny_klein_transformer.json", "tiny_klein_vae.json"),
              "flux_fill": ("tiny_fill_transformer.json", "tiny_fill_vae.json")}
RESOLUTION, TEXT_TOKENS, STEPS = 64, 8, 2


@pytest.fixture
def tiny_flux(monkeypatch):
    """bench.gpu with small FLUX configs (8 text tokens) standing in for the published ones."""
    from bench import gpu

    original = gpu.load_config
    monkeypatch.setattr(gpu, "load_config", lambda file: TINY_CONFIGS.get(file) or original(file))
    for name, (transformer, vae) in TINY_FILES.items():
        spec = gpu.FLUX_MODELS[name]
        monkeypatch.setitem(gpu.FLUX_MODELS, name, dataclasses.replace(
            spec, transformer=transformer, vae=vae, text_tokens=TEXT_TOKENS))
    return gpu


def token_flops(config: dict, image_tokens: int, text_tokens: int) -> int:
    """Matmul FLOPs of one transformer call that grow with the tokens, from the configuration alone:
    2 · tokens · inputs · outputs per linear layer, 4 · sequence² · width per attention. Leaves out
    the one-row timestep, guidance and modulation layers (under 0.01 % of the full-size models)."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    sequence = image_tokens + text_tokens
    if config["_class_name"] == "Flux2Transformer2DModel":  # SwiGLU MLP; single blocks fuse QKV with MLP-in
        hidden = int(config["mlp_ratio"] * width)
        double = 3 * width * width + width * width + width * 2 * hidden + hidden * width
        single = width * (3 * width + 2 * hidden) + (width + hidden) * width
    else:  # GELU MLP 4×; single blocks: QKV, MLP-in, then out over attention and MLP side by side
        hidden = 4 * width
        double = 3 * width * width + width * width + width * hidden + hidden * width
        single = 3 * width * width + width * hidden + (width + hidden) * width
    out_channels = config.get("out_channels") or config["in_channels"]
    embed = (image_tokens * config["in_channels"] * width
             + text_tokens * config["joint_attention_dim"] * width
             + image_tokens * width * out_channels)
    blocks = sequence * (config["num_layers"] * double + config["num_single_layers"] * single)
    attention = (config["num_layers"] + config["num_single_layers"]) * 4 * sequence * sequence * width
    return 2 * (embed + blocks) + attention


@pytest.mark.parametrize(("name", "parameters", "image_tokens"), [
    ("flux2_klein", (3.8e9, 4.0e9), 2 * 64 * 64),  # the noisy latent and the crop's own latent
    ("flux_fill", (11.8e9, 12.0e9), 64 * 64),
])
def test_full_size_flux_flops_per_step_are_counted_on_the_meta_device(name, parameters, image_tokens):
    """The published configs build the 4B and 12B transformers (on meta: no memory), and the counted
    FLOPs of a step at 1024² are what their layers and 512-token prompts make them."""
    from bench import gpu

    transformer, vae = gpu.build_flux(name)
    count = sum(parameter.numel() for parameter in transformer.parameters())
    assert parameters[0] < count < parameters[1], count
    assert transformer.device.type == "meta" and vae.device.type == "meta"

    flops = gpu.flux_step_flops(name, 1024)
    config = gpu.load_config(gpu.FLUX_MODELS[name].transformer)
    assert flops == pytest.approx(token_flops(config, image_tokens, 512), rel=1e-3)
    encode, decode = gpu.flux_vae_flops(name, 1024)
    assert 4e12 < encode < decode < 12e12  # the FLUX VAEs: about 4.9 and 10.5 TFLOP at 1024²
    print(f"{name}: {flops / 1e12:.2f} TFLOP per step, VAE encode {encode / 1e12:.2f}, "
          f"decode {decode / 1e12:.2f}")


def test_a_klein_reference_picture_adds_its_tokens_to_every_step():
    from bench import gpu

    config = gpu.load_config(gpu.FLUX_MODELS["flux2_klein"].transformer)
    with_reference = gpu.flux_step_flops("flux2_klein", 1024, condition_images=2)
    assert with_reference == pytest.approx(token_flops(config, 3 * 64 * 64, 512), rel=1e-3)


@pytest.mark.parametrize("name", ["flux2_klein", "flux_fill"])
def test_the_flux_gpu_code_path_runs_on_the_cpu_with_small_configs(tiny_flux, name):
    """The timing path of bench/gpu.py (built for CUDA) on the CPU with small configs: inputs,
    fast-path variants, denoising loop, VAE encode and decode, target row."""
    gpu = tiny_flux
    flops = gpu.flux_step_flops(name, RESOLUTION)
    encode, decode = gpu.flux_vae_flops(name, RESOLUTION)
    assert flops > 0 and encode > 0 and decode > 0

    transformer, vae, step, whole = gpu.flux_workload(name, RESOLUTION, device="cpu", steps=STEPS)
    tokens = (RESOLUTION // 16) ** 2
    images = 2 if name == "flux2_klein" else 1
    assert tuple(step(transformer).shape) == (1, images * tokens, 4 * LATENT)
    assert tuple(whole(transformer).shape) == (1, 3, RESOLUTION, RESOLUTION)

    rows = gpu.flux_timing_rows(name, RESOLUTION, flops, device="cpu", repeat=1, compile_too=False,
                                steps=STEPS, peak=1.0)
    names = [row["name"] for row in rows]
    assert [label.split(",")[0] for label in names[:4]] == [
        f"{name} transformer step {RESOLUTION}²", f"{name} whole image {RESOLUTION}²",
        f"{name} transformer step {RESOLUTION}²", f"{name} whole image {RESOLUTION}²"]
    assert "float32 stock" in names[0] and "fused QKV" in names[2] and "MFU" in names[0]
    assert f"{STEPS} steps + VAE encode + decode" in names[1]
    assert names[4] == f"{name} FP8 weights (torchao) skipped: " + gpu.fp8_unavailable("cpu")
    assert names[5].startswith(f"{name} VAE encode + decode")
    target = rows[6]
    assert target["name"].startswith(f"{name} target: {gpu.FLUX_MODELS[name].target}")
    assert "fast path = fused QKV" in target["name"]
    assert all(row["ms"] > 0 for index, row in enumerate(rows) if index != 4)
    assert target["reference_ms"] == (600.0 if name == "flux2_klein" else rows[1]["ms"])


def test_the_fp8_row_is_measured_where_torchao_can_run(tiny_flux, monkeypatch):
    """With FP8 available, the FP8 variant is measured after fused QKV and is the fast path the
    target row judges; quantize_fp8 gets the fused transformer."""
    gpu = tiny_flux
    quantized = []
    monkeypatch.setattr(gpu, "fp8_unavailable", lambda device="cuda": None)
    monkeypatch.setattr(gpu, "quantize_fp8", lambda transformer: quantized.append(transformer))
    rows = gpu.flux_timing_rows("flux_fill", RESOLUTION, 1, device="cpu", repeat=1, compile_too=False,
                                steps=STEPS)
    assert len(quantized) == 1
    assert all(module.fused_projections for module in quantized[0].modules() if hasattr(module, "to_qkv"))
    labels = [row["name"] for row in rows]
    assert "FP8 weights (torchao, per-row) + fused QKV" in labels[4] and "FP8" in labels[5]
    assert rows[4]["ms"] > 0 and rows[4]["reference_ms"] == rows[0]["ms"]
    assert "fast path = FP8 weights" in labels[-1]


@pytest.mark.parametrize("name", ["flux2_klein", "flux_fill"])
def test_fused_qkv_projections_change_no_output_and_fp8_takes_the_fused_layers(tiny_flux, name):
    """transformer.fuse_qkv_projections() (the engines' fast path) leaves the output as it was; the
    FP8 filter then picks the block linears that run: fused QKV, outputs, MLPs, and not the
    unfused copies diffusers keeps, the modulation or the embeddings."""
    import torch

    gpu = tiny_flux
    transformer, _, step, _ = gpu.flux_workload(name, RESOLUTION, device="cpu")
    before = step(transformer)
    transformer.fuse_qkv_projections()
    torch.testing.assert_close(step(transformer), before, atol=1e-5, rtol=1e-4)

    fused = [path for path, module in transformer.named_modules()
             if getattr(module, "fused_projections", False)]
    # FLUX.2's single blocks always fuse QKV with the MLP input; only its double blocks fuse here
    single = [] if name == "flux2_klein" else ["single_transformer_blocks.0.attn"]
    assert fused == ["transformer_blocks.0.attn", *single]
    assert hasattr(transformer.transformer_blocks[0].attn, "to_q")  # the unfused copies stay (memory)

    selected = gpu.fp8_filter(transformer)
    linears = [path for path, module in transformer.named_modules() if selected(module, path)]
    blocks = ("transformer_blocks.", "single_transformer_blocks.")
    assert {"transformer_blocks.0.attn.to_qkv", "transformer_blocks.0.attn.to_added_qkv"} <= set(linears)
    assert not [path for path in linears if path.rsplit(".", 1)[-1] in gpu.FUSED_AWAY]
    assert not [path for path in linears if ".norm" in path or not path.startswith(blocks)]
    if name == "flux2_klein":
        assert "single_transformer_blocks.0.attn.to_qkv_mlp_proj" in linears
    else:
        assert {"single_transformer_blocks.0.proj_mlp", "transformer_blocks.0.ff.net.2"} <= set(linears)


@pytest.mark.parametrize("name", ["flux2_klein", "flux_fill"])
def test_the_fused_transformers_trace_as_one_graph(tiny_flux, name):
    """torch.compile(fullgraph=True) traces the fused transformers with the inputs the benchmark
    gives them (no graph break to slow the compiled fast path); the eager backend, as there is no
    GPU here to compile for."""
    import torch

    gpu = tiny_flux
    transformer, _, step, _ = gpu.flux_workload(name, RESOLUTION, device="cpu")
    transformer.fuse_qkv_projections()
    torch._dynamo.reset()
    try:
        compiled = torch.compile(transformer, backend="eager", fullgraph=True, dynamic=False)
        torch.testing.assert_close(step(compiled), step(transformer))
    finally:
        torch._dynamo.reset()


def test_without_cuda_the_flux_rows_count_flops_and_name_the_targets(tiny_flux, monkeypatch):
    import torch

    gpu = tiny_flux
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rows = gpu.flux_rows(quick=True)
    names = " | ".join(row["name"] for row in rows)
    for name, spec in gpu.FLUX_MODELS.items():
        assert f"{name} transformer FLOPs per step at 1024²" in names
        assert f"{name} timings: no CUDA device here, not measured (target: {spec.target})" in names
    assert "4096 + 4096 + 8 tokens" in names and "4096 + 8 tokens" in names
    assert "under 600 ms on one H100/H200" in names and "at least 2× faster than stock bf16" in names
    assert all(row["ms"] > 0 for row in rows if row.get("unit") == "GF")
