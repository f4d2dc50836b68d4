"""Small servers (Streamlit Community Cloud: no GPU, little memory): diffusion engines whose model
does not fit are not offered, and the Inpaint page says why."""
from __future__ import annotations

import pytest

import core.memory
from core.config import load_settings
from core.device import DeviceInfo
from core.manager import ModelManager
from core.memory import memory_needed_gb, memory_shortfall, weights_bytes
from core.model_files import locate
from tests.helpers import inpaint_page
from ui import forms

CPU = DeviceInfo("cpu", "CPU", "float32")
GPU_FP16 = DeviceInfo("cuda", "GPU", "float16", 8.0)


@pytest.fixture
def settings(tiny_models, monkeypatch, tmp_path):
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_SD15_INPAINT", str(tiny_models["sd15_inpaint"]))
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_SDXL_INPAINT", str(tiny_models["sdxl_inpaint"]))
    return load_settings()


def test_the_estimate_follows_the_weights_and_the_dtype(settings, tiny_models):
    status = locate("sd15_inpaint", settings)
    weights = weights_bytes(tiny_models["sd15_inpaint"])
    assert weights > 0
    on_cpu, on_gpu = memory_needed_gb(status, CPU), memory_needed_gb(status, GPU_FP16)
    assert on_cpu == pytest.approx(weights * 1.3 / 2**30)  # float32 files kept in float32
    assert on_gpu == pytest.approx(on_cpu / 2)  # halved in float16


def test_a_model_too_large_for_the_machine_is_left_out_with_a_reason(settings, monkeypatch):
    assert ModelManager(settings, CPU).engines("diffusion")[:1] == ["sd15"]
    monkeypatch.setattr(core.memory, "memory_available_gb", lambda settings, device: 1e-6)
    assert ModelManager(settings, CPU).engines("diffusion") == []
    assert ModelManager(settings).engines("diffusion") == []  # checked on the manager's own (detected) device too
    reason = memory_shortfall(locate("sdxl_inpaint", settings), settings, CPU)
    assert "SDXL inpainting 0.1 needs about" in reason and "no GPU" in reason and "INPAINT_STUDIO_MEMORY_CHECK=0" in reason
    monkeypatch.setenv("INPAINT_STUDIO_MEMORY_CHECK", "0")
    unchecked = ModelManager(load_settings(), CPU).engines("diffusion")
    assert "sd15" in unchecked and "sdxl" in unchecked


def test_the_inpaint_page_says_why_and_offers_removal(app_with_tiny_models, monkeypatch):
    monkeypatch.setattr(core.memory, "memory_available_gb", lambda settings, device: 1e-6)
    at = inpaint_page()
    assert not at.exception
    assert at.selectbox(key=forms.INPAINT_ENGINE).value == "lama"  # the best remover, which fits
    notes = [info.value for info in at.info if "not offered" in info.value]
    assert len(notes) == 2 and any("Stable Diffusion 1.5" in note for note in notes)
    assert all("removal (LaMa) still works" in note for note in notes)
    assert not any("No diffusion model is on this machine" in info.value for info in at.info)
