"""The GPU fast path's logic, on the CPU: dtype choice, few-step LoRA presets, compile sizes, warm-up."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.catalog import BUILTIN, UnknownName
from core.config import load_settings
from core.device import DeviceInfo, dtype_for
from core.engines.base import EngineRequest, ModelLoadError
from core.engines.diffusion import DiffusionEngine, DiffusionOptions
from core.engines.fast import bucket_size, size_buckets
from core.engines.pipelines import diffusion_options
from core.errors import ModelUnavailable
from core.manager import ModelManager, engine_class
from core.operations.inpaint import InpaintParams, inpaint
from tests.helpers import SD15, SDXL
from tests.tiny_models import LORA_RANK

CPU = DeviceInfo("cpu", "test CPU", "float32")


@pytest.mark.parametrize("kind, bf16, expected", [
    ("cuda", True, "bfloat16"), ("cuda", False, "float16"), ("mps", False, "float16"), ("cpu", True, "float32"),
])
def test_dtype_follows_the_device(kind, bf16, expected):
    assert dtype_for(kind, bf16_supported=bf16) == expected


def test_cuda_defaults_turn_on_the_fast_path_and_cpu_leaves_it_off(monkeypatch, tmp_path):
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path))
    settings = load_settings()
    cuda = diffusion_options(settings, DeviceInfo("cuda", "GPU", "bfloat16", 80.0))
    assert (cuda.device, cuda.dtype, cuda.channels_last, cuda.warm_up) == ("cuda", "bfloat16", True, True)
    assert cuda.fp16_safe_vae is None  # only needed in float16
    fp16 = diffusion_options(settings, DeviceInfo("cuda", "GPU", "float16"), fp16_safe_vae="some/vae")
    assert fp16.fp16_safe_vae == "some/vae"
    cpu = diffusion_options(settings, CPU)
    assert (cpu.channels_last, cpu.warm_up, cpu.compile) == (False, False, False)


def test_engine_names_carry_a_few_step_preset():
    assert BUILTIN.engine("sd15") == (SD15, None)
    assert BUILTIN.engine("sdxl+hyper") == (SDXL, BUILTIN.few_step["hyper"])
    assert engine_class(BUILTIN.engine("sd15+lcm")[0]) is DiffusionEngine
    with pytest.raises(UnknownName, match=r"few-step variant 'sd15\+turbo'"):
        BUILTIN.engine("sd15+turbo")
    with pytest.raises(ValueError, match="few_step"):
        DiffusionOptions(few_step=BUILTIN.few_step["lcm"])  # a preset needs its LoRA


def test_compile_sizes_are_few_fixed_and_near_the_native_area():
    buckets = size_buckets(512)
    assert len(buckets) == len(set(buckets)) <= 12
    for width, height in buckets:
        assert width % 64 == 0 and height % 64 == 0
        assert 0.8 < width * height / 512**2 < 1.2
    assert bucket_size((1600, 1200), 512) == bucket_size((800, 600), 512)  # same aspect, same size
    width, height = bucket_size((1600, 1200), 512)
    assert width > height and abs(width / height - 4 / 3) < 0.15
    assert bucket_size((300, 900), 1024)[1] > bucket_size((300, 900), 1024)[0]  # portrait stays portrait


@pytest.fixture(scope="module")
def lcm_engine(tiny_models):
    return DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"], DiffusionOptions(
        few_step=BUILTIN.few_step["lcm"], few_step_lora=str(tiny_models["lcm_lora_sd15"])))


def test_the_few_step_lora_is_fused_with_its_scheduler(lcm_engine, tiny_models):
    base = DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"])
    fused = dict(lcm_engine.pipe.unet.named_parameters())
    original = dict(base.pipe.unet.named_parameters())
    assert set(fused) == set(original)  # fused into the weights: no adapter layers left behind
    changed = [name for name in fused if not np.allclose(fused[name].detach(), original[name].detach())]
    assert changed and all(name.rsplit(".", 2)[-2] in ("to_q", "to_k", "to_v", "0") for name in changed)
    for name in changed:
        if name.endswith("weight"):
            delta = (fused[name] - original[name]).detach().double().numpy()
            assert np.linalg.matrix_rank(delta, tol=1e-6) <= LORA_RANK  # a rank-4 update, as trained
    assert type(lcm_engine.pipe.scheduler).__name__ == "LCMScheduler"
    assert lcm_engine.name == "sd15+lcm" and lcm_engine.preset.steps == 4


def test_a_few_step_engine_inpaints_in_four_steps_and_names_itself_in_the_result(lcm_engine):
    photo = Image.new("RGB", (160, 120), (120, 90, 60))
    mask = np.zeros((120, 160), bool)
    mask[30:90, 40:120] = True
    steps = []
    params = InpaintParams(prompt="a stone", steps=4, guidance_scale=1.0, seed=3, engine="sd15+lcm")
    result = inpaint(photo, mask, params, lcm_engine, progress=lambda done, total: steps.append(total))
    assert result.engine == "sd15+lcm" and result.metadata(0)["engine"] == "sd15+lcm"
    assert set(steps) == {4}
    from core.masks import grow

    beyond = ~grow(mask, params.mask_blur)
    assert np.array_equal(np.asarray(result.images[0])[beyond], np.asarray(photo)[beyond])
    assert (np.asarray(result.images[0])[mask] != np.asarray(photo)[mask]).any()


def test_the_preset_loads_by_its_role_setting_and_is_offered_when_present(tiny_models, monkeypatch, tmp_path):
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "none"))
    for role in ("sd15_inpaint", "sdxl_inpaint", "lcm_lora_sd15", "lcm_lora_sdxl"):
        monkeypatch.delenv(f"INPAINT_STUDIO_MODEL_{role.upper()}", raising=False)
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_SD15_INPAINT", str(tiny_models["sd15_inpaint"]))
    assert ModelManager(load_settings(), CPU).engines("diffusion") == ["sd15"]
    with pytest.raises(ModelUnavailable, match="INPAINT_STUDIO_MODEL_LCM_LORA_SD15"):
        ModelManager(load_settings(), CPU).load("sd15+lcm")
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_LCM_LORA_SD15", str(tiny_models["lcm_lora_sd15"]))
    assert ModelManager(load_settings(), CPU).engines("diffusion") == ["sd15", "sd15+lcm"]
    engine = ModelManager(load_settings(), CPU).load("sd15+lcm")
    assert engine.name == "sd15+lcm" and type(engine.pipe.scheduler).__name__ == "LCMScheduler"


def test_a_lora_of_another_family_is_a_clear_error(tiny_models):
    with pytest.raises(ModelLoadError) as error:
        DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"], DiffusionOptions(
            few_step=BUILTIN.few_step["lcm"], few_step_lora=str(tiny_models["lcm_lora_sdxl"])))
    assert str(tiny_models["lcm_lora_sdxl"]) in str(error.value) and "LCM LoRA" in str(error.value)


def test_sdxl_takes_its_few_step_lora_too(tiny_models):
    from core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine.load(SDXL, tiny_models["sdxl_inpaint"], DiffusionOptions(
        few_step=BUILTIN.few_step["lcm"], few_step_lora=str(tiny_models["lcm_lora_sdxl"])))
    output = engine.generate(EngineRequest(image=Image.new("RGB", (64, 64), (90, 90, 90)),
                                           mask=Image.new("L", (64, 64), 255), seeds=(1,), prompt="x", steps=4,
                                           guidance_scale=1.0))
    assert engine.name == "sdxl+lcm" and output.images[0].size == (64, 64)


def test_compile_is_accepted_and_skipped_cleanly_on_cpu_with_a_note(tiny_models):
    engine = DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"], DiffusionOptions(compile=True, channels_last=True))
    import torch

    assert engine.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not hasattr(engine.pipe.unet, "_orig_mod")  # not compiled
    output = engine.generate(EngineRequest(image=Image.new("RGB", (64, 64)), mask=Image.new("L", (64, 64), 255),
                                           seeds=(1,), prompt="x", steps=2))
    assert any("skipped on cpu" in note for note in output.notes)
    from core.region import engine_size

    assert engine.work_size((800, 600)) == engine_size((800, 600), 512)  # no buckets without a compiled UNet


def test_with_a_compiled_unet_on_cuda_crops_use_the_buckets(tiny_models):
    engine = DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"])
    engine.options = DiffusionOptions(device="cuda", compile=True)  # what work_size looks at
    assert engine.work_size((1000, 700)) == bucket_size((1000, 700), engine.native_resolution)
    assert engine.work_size((1000, 701)) == engine.work_size((1000, 700))


def test_warm_up_runs_a_short_generation(tiny_models, monkeypatch):
    engine = DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"])
    calls = []
    original = engine.pipe.__call__
    monkeypatch.setattr(type(engine.pipe), "__call__", lambda self, **kw: calls.append(kw) or original(**kw))
    engine.warm_up()
    assert len(calls) == 1 and calls[0]["num_inference_steps"] == 2
    assert calls[0]["width"] % 8 == 0 and calls[0]["width"] * calls[0]["height"] >= 0.8 * 512**2
