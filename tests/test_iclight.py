"""IC-Light fc through the real loading code, on the tiny base pipeline and offset file."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from core.engines.base import Cancelled, InpaintError, ModelLoadError
from core.engines.iclight import ICLightEngine, load_iclight_unet
from core.errors import GenerationFailed
from tests.helpers import write_offsets
from tests.tiny_models import ICLIGHT_OFFSET_KEYS, iclight_offsets

SIZE = 64
STEPS = 3  # x denoise 0.9 = 2 denoising steps


@pytest.fixture(scope="module")
def paths(tiny_models):
    return tiny_models["iclight_base"], tiny_models["iclight"]


@pytest.fixture(scope="module")
def engine(paths):
    return ICLightEngine.load(*paths)


def _foreground(colour=(200, 60, 40)) -> Image.Image:
    """A square subject on neutral grey 127."""
    image = Image.new("RGB", (SIZE, SIZE), (127, 127, 127))
    image.paste(colour, (16, 16, 48, 48))
    return image


def _light() -> Image.Image:
    """Light from the left: 255 -> 0 across the width."""
    ramp = np.linspace(255, 0, SIZE).round().astype(np.uint8)
    return Image.fromarray(np.repeat(np.tile(ramp, (SIZE, 1))[..., None], 3, axis=2), "RGB")


def _relight(engine, seeds, foreground=None, **kwargs):
    foreground = foreground or _foreground()
    return engine.relight(foreground, _light(), "a red box, sunlight", seeds=seeds, steps=STEPS, **kwargs)


# --- loading ------------------------------------------------------------------------------------------


def test_merged_unet_is_base_plus_offsets(paths):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    base_path, offset_path = paths
    unet = load_iclight_unet(str(base_path), str(offset_path))
    base = UNet2DConditionModel.from_pretrained(base_path, subfolder="unet").state_dict()
    offsets = load_file(str(offset_path))
    merged = unet.state_dict()
    assert set(offsets) == set(ICLIGHT_OFFSET_KEYS)

    assert unet.conv_in.in_channels == 8 and unet.config.in_channels == 8
    weight, offset = merged["conv_in.weight"], offsets["conv_in.weight"]
    assert weight.shape[1] == 8 and base["conv_in.weight"].shape[1] == 4
    torch.testing.assert_close(weight[:, :4], base["conv_in.weight"] + offset[:, :4])
    torch.testing.assert_close(weight[:, 4:], offset[:, 4:])  # new channels: 0 + offset
    for key in set(offsets) - {"conv_in.weight"}:
        torch.testing.assert_close(merged[key], base[key] + offsets[key])
    unchanged = set(base) - set(offsets)
    assert unchanged and set(merged) == set(base)
    for key in unchanged:
        assert torch.equal(merged[key], base[key]), key


def test_tiny_offsets_are_deterministic(paths):
    import torch
    from safetensors.torch import load_file

    stored = load_file(str(paths[1]))
    rebuilt = iclight_offsets()
    assert all(torch.equal(stored[key], rebuilt[key]) for key in ICLIGHT_OFFSET_KEYS)


def test_engine_loads_an_img2img_pipeline(engine, paths):
    assert engine.name == "iclight" and engine.native_resolution == 512
    assert type(engine.pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    assert engine.pipe.unet.config.in_channels == 8
    assert engine.pipe.safety_checker is None
    assert engine.model_id == str(paths[1]) and engine.base_id == str(paths[0])


def test_fbc_shaped_offset_is_refused_naming_file_and_key(paths, tmp_path):
    offsets = iclight_offsets(in_channels=12)
    bad = write_offsets(tmp_path / "iclight_sd15_fbc.safetensors", offsets)
    with pytest.raises(ModelLoadError) as error:
        ICLightEngine.load(paths[0], bad)
    message = str(error.value)
    assert "iclight_sd15_fbc.safetensors" in message and "'conv_in.weight'" in message
    assert "(32, 12, 3, 3)" in message and "(32, 8, 3, 3)" in message
    assert "background-conditioned (fbc)" in message


def test_offset_with_an_unknown_key_is_refused_naming_it(paths, tmp_path):
    import torch

    offsets = iclight_offsets()
    offsets["not_a_layer.weight"] = torch.zeros(3)
    bad = write_offsets(tmp_path / "odd.safetensors", offsets)
    with pytest.raises(ModelLoadError, match=r"odd\.safetensors.*'not_a_layer\.weight'"):
        load_iclight_unet(str(paths[0]), str(bad))


def test_missing_or_unreadable_offset_file(paths, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist.*INPAINT_STUDIO_MODEL_ICLIGHT"):
        ICLightEngine.load(paths[0], tmp_path / "iclight_sd15_fc.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="could not be read as safetensors"):
        ICLightEngine.load(paths[0], junk)


def test_missing_or_wrong_base(paths, tiny_models, tmp_path):
    missing = "base model folder .* does not exist.*INPAINT_STUDIO_MODEL_ICLIGHT_BASE"
    with pytest.raises(ModelLoadError, match=missing):
        ICLightEngine.load(tmp_path / "nope", paths[1])
    with pytest.raises(ModelLoadError, match="StableDiffusionInpaintPipeline with a 9-channel UNet"):
        ICLightEngine.load(tiny_models["sd15_inpaint"], paths[1])
    broken = tmp_path / "broken"
    shutil.copytree(paths[0], broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelLoadError, match="not a diffusers pipeline folder"):
        ICLightEngine.load(broken, paths[1])


# --- relighting ---------------------------------------------------------------------------------------


def test_relight_gives_one_image_per_seed_at_input_size_repeatable_by_seed(engine):
    first = _relight(engine, [1, 2])
    again = _relight(engine, [1, 2])
    assert len(first) == 2
    assert all(image.size == (SIZE, SIZE) and image.mode == "RGB" for image in first)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))


def test_foreground_condition_changes_the_output(engine):
    (red,) = _relight(engine, [3])
    (blue,) = _relight(engine, [3], foreground=_foreground((30, 60, 220)))
    assert not np.array_equal(np.asarray(red), np.asarray(blue))


def test_concat_condition_reaches_the_unet(engine):
    """Without the foreground latent the UNet refuses to run, so the condition is really used."""
    import torch

    unet = engine.pipe.unet
    sample = torch.zeros(2, 4, 8, 8)
    context = torch.zeros(2, 77, unet.config.cross_attention_dim)
    with pytest.raises(ValueError, match="concat_conds"):
        unet(sample, 1, context)
    condition = engine.encode_foreground(_foreground())
    assert tuple(condition.shape) == (1, 4, 8, 8)
    out = unet(sample, 1, context, cross_attention_kwargs={"concat_conds": condition}).sample
    assert tuple(out.shape) == (2, 4, 8, 8)


def test_progress_is_reported_every_step(engine):
    calls = []
    _relight(engine, [0], progress=lambda step, total: calls.append((step, total)))
    assert calls == [(1, 2), (2, 2)]


def test_cancel_raises_cancelled(engine):
    with pytest.raises(Cancelled):
        _relight(engine, [0], should_cancel=lambda: True)
    steps = []

    def stop_after_one() -> bool:
        return len(steps) >= 1

    with pytest.raises(Cancelled):
        _relight(engine, [0], progress=lambda step, _: steps.append(step), should_cancel=stop_after_one)
    assert steps == [1]


def test_invalid_inputs_are_explained(engine):
    with pytest.raises(InpaintError, match="multiples of 8"):
        engine.relight(Image.new("RGB", (60, 64)), Image.new("RGB", (60, 64)), "x", seeds=[0], steps=STEPS)
    with pytest.raises(InpaintError, match="same size"):
        engine.relight(_foreground(), Image.new("RGB", (64, 72)), "x", seeds=[0], steps=STEPS)
    with pytest.raises(InpaintError, match="Denoise"):
        _relight(engine, [0], denoise=0)
    with pytest.raises(InpaintError, match="seed"):
        _relight(engine, [])


@pytest.mark.parametrize(
    "error",
    ["CUDA out of memory. Tried to allocate 2.00 GiB", "MPS backend out of memory (MPS allocated: 8 GB)"],
)
def test_out_of_memory_gives_advice_and_the_engine_recovers(engine, monkeypatch, error):
    import torch

    (expected,) = _relight(engine, [5])

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(error) if error.startswith("CUDA") else RuntimeError(error)

    with monkeypatch.context() as patch:
        patch.setattr(engine.pipe.unet, "forward", out_of_memory)
        with pytest.raises(GenerationFailed, match="Out of memory on cpu while relighting a 64x64 image") as raised:
            _relight(engine, [5])
    assert error.split(".")[0] in str(raised.value) and "CPU offload" in str(raised.value)

    (again,) = _relight(engine, [5])
    np.testing.assert_array_equal(np.asarray(again), np.asarray(expected))


def test_other_failures_are_not_disguised_as_out_of_memory(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(engine.pipe.unet, "forward", broken)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        _relight(engine, [5])
