"""The benchmark suite runs end to end (``--quick``): a smoke test, with no timing assertions."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.ray  # its "batch on Ray" row
@pytest.mark.timeout(1500)
def test_every_benchmark_runs_and_writes_its_rows(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("INPAINT_STUDIO_MODEL")}
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--results", str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=1400, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (written,) = tmp_path.glob("bench-*.json")
    data = json.loads(written.read_text())
    names = " | ".join(row["name"] for row in data["rows"])
    for expected in ("mask chain", "click", "inpaint 512×512", "inpaint 12 MP", "relight preview",
                     "runner's own work", "batch on Ray", "import every core module", "first render of pages/5_Batch.py",
                     "peak memory", "sdxl UNet FLOPs per step", "remove 512×512", "SAM 2.1 click",
                     "flux2_klein transformer FLOPs per step", "flux_fill whole image FLOPs",
                     "through the engine server (1 local replica; the same pixels as in process)"):
        assert expected in names, f"no row for {expected!r} in: {names}"
    for row in data["rows"]:
        assert math.isfinite(row["ms"]) and row["ms"] >= 0, row
    assert "benchmark" in result.stdout and "machine:" in result.stdout


def test_the_gpu_benchmark_code_runs_on_the_cpu_with_small_configs(monkeypatch, tiny_models):
    """The timing path of bench/gpu.py (built for CUDA) on the CPU, with the tiny models' UNet and
    VAE configs standing in for the full ones: inputs, guidance loop and decode fit together."""
    import json as json_module

    from bench import gpu

    configs = {}
    for name, folder in (("sd15", tiny_models["sd15_inpaint"]), ("sdxl", tiny_models["sdxl_inpaint"])):
        unet = json_module.loads((folder / "unet" / "config.json").read_text())
        vae = json_module.loads((folder / "vae" / "config.json").read_text())
        configs[f"{name}_unet.json"], configs[f"{name}_vae.json"] = unet, vae
        width = unet["cross_attention_dim"]
        monkeypatch.setitem(gpu.MODELS, name, (f"{name}_unet.json", f"{name}_vae.json", width, 64))
    monkeypatch.setattr(gpu, "load_config", lambda file: configs[file])
    if "sdxl" in gpu.MODELS:  # the tiny SDXL's pooled text and time embeddings are smaller
        unet = configs["sdxl_unet.json"]
        pooled = unet["projection_class_embeddings_input_dim"] - 6 * unet["addition_time_embed_dim"]
        original = gpu.unet_inputs

        def small_inputs(name, resolution, device="meta", dtype=None, batch=2):
            inputs = original(name, resolution, device, dtype, batch)
            if name == "sdxl":
                import torch

                inputs["added_cond_kwargs"]["text_embeds"] = torch.randn(batch, pooled, device=device)
            return inputs

        monkeypatch.setattr(gpu, "unet_inputs", small_inputs)
    for name in ("sd15", "sdxl"):
        flops = gpu.step_flops(name, 64)
        assert flops > 0
        rows = gpu.timing_rows(name, 64, flops, device="cpu", repeat=1, compile_too=False, steps=2, peak=1.0)
        assert [row["name"].split(",")[0] for row in rows] == [f"{name} UNet step 64²", f"{name} whole image 64²"]
        assert all(row["ms"] > 0 for row in rows) and "MFU" in rows[0]["name"]
