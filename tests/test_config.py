"""Settings, the model registry's local lookup, and device detection."""
from __future__ import annotations

import os

import pytest

from core import config
from core.catalog import BUILTIN
from core.config import Settings, SettingsError, load_settings
from core.device import detect_device
from core.model_files import locate, model_statuses


def test_environment_overrides_the_secrets_file(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        'INPAINT_STUDIO_MAX_PIXELS = 1000\nINPAINT_STUDIO_DEVICE = "cpu"\n'
        'INPAINT_STUDIO_MODEL_CLIP = "/models/clip"\nunrelated = 1\n'
    )
    settings = load_settings({"INPAINT_STUDIO_MAX_PIXELS": "2e6"}, secrets)
    assert settings.max_pixels == 2_000_000
    assert settings.device == "cpu"
    assert settings.model("clip", "openai/clip-vit-base-patch32") == "/models/clip"
    assert settings.model("sam", "facebook/sam-vit-base") == "facebook/sam-vit-base"


def test_defaults_without_any_setting(tmp_path):
    settings = load_settings({}, tmp_path / "missing.toml")
    assert settings.max_pixels == config.DEFAULT_MAX_PIXELS == 50_000_000
    assert settings.device == "auto" and settings.offline is None and settings.models == {}
    assert settings.memory_trim_seconds == 60
    assert load_settings({"INPAINT_STUDIO_MEMORY_TRIM_SECONDS": "0"}, tmp_path / "x.toml").memory_trim_seconds == 0


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("INPAINT_STUDIO_MAX_PIXELS", "lots", "MAX_PIXELS"),
        ("INPAINT_STUDIO_MAX_PIXELS", "-5", "positive"),
        ("INPAINT_STUDIO_DEVICE", "tpu", "cuda, mps, cpu"),
        ("INPAINT_STUDIO_OFFLINE", "maybe", "true/false"),
        ("INPAINT_STUDIO_MEMORY_TRIM_SECONDS", "often", "MEMORY_TRIM_SECONDS='often': give a number of seconds"),
        ("INPAINT_STUDIO_MEMORY_TRIM_SECONDS", "-1", "0 turns it off"),
        ("INPAINT_STUDIO_PNG_COMPRESSION", "10", r"INPAINT_STUDIO_PNG_COMPRESSION='10': give a whole number from 0"),
        ("INPAINT_STUDIO_PNG_COMPRESSION", "-1", "INPAINT_STUDIO_PNG_COMPRESSION"),
        ("INPAINT_STUDIO_PNG_COMPRESSION", "fast", "INPAINT_STUDIO_PNG_COMPRESSION='fast'"),
        ("INPAINT_STUDIO_PNG_COMPRESSION", "1.5", "whole number from 0 to 9"),
        ("INPAINT_STUDIO_ENGINE_SERVER", "gpu-head:8000", "ENGINE_SERVER=.*such as http://"),
        ("INPAINT_STUDIO_ENGINE_TIMEOUT", "0", "ENGINE_TIMEOUT=.0.: give a number of at least 1"),
        ("INPAINT_STUDIO_SERVE_GPUS", "half", "SERVE_GPUS=.half.: give a number of at least 0 .GPUs per replica"),
        ("INPAINT_STUDIO_SERVE_MAX_REPLICAS", "0", "SERVE_MAX_REPLICAS=.0.: give a whole number of at least 1"),
        ("INPAINT_STUDIO_SERVE_MAX_ONGOING", "2.5", "SERVE_MAX_ONGOING"),
        ("INPAINT_STUDIO_OUTPUT_FORMAT", "tiff", r"INPAINT_STUDIO_OUTPUT_FORMAT='tiff': use one of auto, png, jpeg-keep"),
        ("INPAINT_STUDIO_JPEG_QUALITY", "0", r"INPAINT_STUDIO_JPEG_QUALITY='0': give a whole number from 1 to 100"),
        ("INPAINT_STUDIO_JPEG_QUALITY", "high", "INPAINT_STUDIO_JPEG_QUALITY='high'"),
    ],
)
def test_bad_values_name_the_setting(tmp_path, name, value, words):
    with pytest.raises(SettingsError, match=words):
        load_settings({name: value}, tmp_path / "missing.toml")


def test_png_compression_defaults_to_a_fast_level_and_is_read_from_both_sources(tmp_path):
    missing = tmp_path / "missing.toml"
    assert load_settings({}, missing).png_compression == config.DEFAULT_PNG_COMPRESSION == 1
    assert Settings().png_compression == 1
    assert load_settings({"INPAINT_STUDIO_PNG_COMPRESSION": " 9 "}, missing).png_compression == 9
    assert load_settings({"INPAINT_STUDIO_PNG_COMPRESSION": "0"}, missing).png_compression == 0
    assert load_settings({"INPAINT_STUDIO_PNG_COMPRESSION": ""}, missing).png_compression == 1
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("INPAINT_STUDIO_PNG_COMPRESSION = 6\n")  # a TOML number works as well as a string
    assert load_settings({}, secrets).png_compression == 6


def test_output_format_and_jpeg_quality_settings(tmp_path):
    missing = tmp_path / "missing.toml"
    assert (load_settings({}, missing).output_format, load_settings({}, missing).jpeg_quality) == ("auto", 95)
    chosen = load_settings({"INPAINT_STUDIO_OUTPUT_FORMAT": " WebP ", "INPAINT_STUDIO_JPEG_QUALITY": "80"}, missing)
    assert (chosen.output_format, chosen.jpeg_quality) == ("webp", 80)


def test_broken_secrets_file_is_a_settings_error(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("this is = = not toml")
    with pytest.raises(SettingsError, match="secrets.toml"):
        load_settings({}, secrets)


def test_offline_mode_sets_the_library_flags(monkeypatch):
    for key in config.OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)
    assert config.apply_offline_mode(Settings(offline=True)) is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["YOLO_OFFLINE"] == "1"


def test_offline_detection_when_unset_uses_the_hub_lookup(monkeypatch):
    monkeypatch.setattr(config, "hub_reachable", lambda: False)
    assert config.apply_offline_mode(Settings(offline=None)) is True
    monkeypatch.setattr(config, "hub_reachable", lambda: True)
    assert config.apply_offline_mode(Settings(offline=None)) is False


def test_locate_finds_configured_paths_and_the_models_folder(tmp_path):
    checkpoint = tmp_path / "my-fastsam.pt"
    checkpoint.write_bytes(b"weights")
    settings = Settings(models_dir=tmp_path / "models", models={"fastsam": str(checkpoint)})
    assert locate("fastsam", settings).path == checkpoint

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "FastSAM-s.pt").write_bytes(b"weights")
    assert locate("fastsam", Settings(models_dir=tmp_path / "models")).available


def test_missing_models_report_their_fallback_and_setting(tmp_path):
    statuses = model_statuses(Settings(models_dir=tmp_path, models={"clip": str(tmp_path / "nope")}))
    assert [status.role.name for status in statuses] == list(BUILTIN.models)
    clip = next(status for status in statuses if status.role.name == "clip")
    assert not clip.available
    assert "INPAINT_STUDIO_MODEL_CLIP" in clip.summary and "text selection" in clip.summary


def test_tiny_models_are_found_through_their_settings(tiny_models):
    settings = load_settings({f"INPAINT_STUDIO_MODEL_{role.upper()}": str(path) for role, path in tiny_models.items()})
    for role in tiny_models:
        assert locate(role, settings).path == tiny_models[role]


def test_cpu_is_detected_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    info = detect_device("auto")
    assert info.kind == "cpu" and info.dtype == "float32"
    assert detect_device("cuda").kind == "cpu"


def test_diffusion_settings_reach_the_engine_options(tiny_models, monkeypatch):
    from core.device import DeviceInfo
    from core.manager import ModelManager

    settings = load_settings(
        {"INPAINT_STUDIO_MODEL_SDXL_INPAINT": str(tiny_models["sdxl_inpaint"]), "INPAINT_STUDIO_CPU_OFFLOAD": "1",
         "INPAINT_STUDIO_SDXL_FP16_VAE": "madebyollin/sdxl-vae-fp16-fix"},
    )
    assert settings.cpu_offload and not settings.compile
    manager = ModelManager(settings, DeviceInfo("cpu", "test", "float32"))
    engine = manager.load("sdxl")
    assert engine.options.cpu_offload and engine.options.device == "cpu"
    assert engine.options.fp16_safe_vae is None  # only used in float16
    telea = manager.load("telea")
    assert telea.name == "telea"


def test_models_in_the_hugging_face_cache_are_found(tmp_path, monkeypatch):
    """A hub repository, and a single file published in one, as a download leaves them."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for repo, filename in (("openai/clip-vit-base-patch32", "config.json"),
                           ("lllyasviel/ic-light", "iclight_sd15_fc.safetensors")):
        folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("abc123")
        (folder / "snapshots" / "abc123").mkdir(parents=True)
        (folder / "snapshots" / "abc123" / filename).write_text("{}")
    settings = Settings(models_dir=tmp_path / "models")
    clip = locate("clip", settings)
    assert clip.available and clip.path.name == "abc123"
    iclight = locate("iclight", settings)
    assert iclight.available and iclight.path.name == "iclight_sd15_fc.safetensors"
    assert not locate("sam", settings).available


def test_engine_server_and_serve_settings(tmp_path):
    missing = tmp_path / "missing.toml"
    plain = load_settings({}, missing)
    assert (plain.engine_server, plain.engine_timeout) == (None, config.DEFAULT_ENGINE_TIMEOUT)
    assert plain.serve == config.ServeSettings()
    chosen = load_settings({"INPAINT_STUDIO_ENGINE_SERVER": " http://gpu-head:8000/ ",
                            "INPAINT_STUDIO_ENGINE_TIMEOUT": "90", "INPAINT_STUDIO_SERVE_GPUS": "0.5",
                            "INPAINT_STUDIO_SERVE_MIN_REPLICAS": "2", "INPAINT_STUDIO_SERVE_MAX_REPLICAS": "4",
                            "INPAINT_STUDIO_SERVE_MAX_ONGOING": "8", "INPAINT_STUDIO_SERVE_CPUS": "2"}, missing)
    assert (chosen.engine_server, chosen.engine_timeout) == ("http://gpu-head:8000", 90.0)
    assert chosen.serve == config.ServeSettings(gpus=0.5, cpus=2.0, min_replicas=2, max_replicas=4, max_ongoing=8)
    with pytest.raises(SettingsError, match="SERVE_MAX_REPLICAS='1': give a whole number of at least 2"):
        load_settings({"INPAINT_STUDIO_SERVE_MIN_REPLICAS": "2", "INPAINT_STUDIO_SERVE_MAX_REPLICAS": "1"}, missing)
