"""The FLUX engines, FLUX.2 [klein] (with a reference picture) and FLUX.1 Fill [dev], with tiny random
pipelines (:mod:`tests.tiny_flux`) loaded by the real loaders.

The tiny models' outputs are noise; these tests check what does not depend on weights: the loaded
classes, sizes (multiples of 16), seeds and reproducibility, the reference reaching the pipeline,
progress, cancellation, errors and recovery, and the edit through the inpainting core.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from core import masks
from core.catalog import BUILTIN
from core.config import Settings
from core.engines.base import Cancelled, EngineRequest, InpaintError, ModelLoadError
from core.engines.flux import KLEIN_MAX_PIXELS, Flux2KleinEngine, FluxFillEngine, reference_for
from core.engines.pipelines import DiffusionOptions, fresh_scheduler
from core.errors import GenerationFailed
from core.operations.inpaint import InpaintParams, inpaint
from tests.conftest import ROOT
from tests.helpers import disk, manager_with, noise_photo
from tests.tiny_flux import build_flux2_klein, build_flux_fill

WIDTH, HEIGHT = 96, 64  # not square, so swapped axes would show; multiples of 16
STEPS = 3
NATIVE = 64  # the tiny models' native size, so crops stay small

KLEIN = replace(BUILTIN.engines["flux2_klein"], native_size=NATIVE)
FILL = replace(BUILTIN.engines["flux_fill"], native_size=NATIVE)
ENGINES = {"flux2_klein": (Flux2KleinEngine, KLEIN), "flux_fill": (FluxFillEngine, FILL)}


def photo(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> Image.Image:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(noise, "RGB")


def hole(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    return Image.fromarray(mask, "L")


def request(engine, **changes) -> EngineRequest:
    fields = dict(image=photo(), mask=hole(), seeds=(1, 2), prompt="a red chair", steps=STEPS,
                  guidance_scale=engine.entry.guidance)
    fields.update(changes)
    return EngineRequest(**fields)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def inside(image: Image.Image) -> np.ndarray:
    """The pixels under :func:`hole`."""
    return pixels(image)[np.asarray(hole()) > 0]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy CPU idle threads spinning slow each call."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def flux_models(tmp_path_factory):
    """The two tiny FLUX pipelines, built once for this module: role → folder."""
    outdir = tmp_path_factory.mktemp("tiny-flux")
    return {"flux2_klein": build_flux2_klein(outdir), "flux_fill": build_flux_fill(outdir)}


@pytest.fixture(scope="module")
def loaded(flux_models):
    return {name: engine_class.load(entry, flux_models[name])
            for name, (engine_class, entry) in ENGINES.items()}


@pytest.fixture(params=sorted(ENGINES))
def engine(request, loaded):
    return loaded[request.param]


@pytest.fixture
def klein(loaded):
    return loaded["flux2_klein"]


# --- loading ---------------------------------------------------------------------------------------


def test_each_engine_loads_its_pipeline_from_the_hub_layout(flux_models, loaded):
    klein_index = json.loads((flux_models["flux2_klein"] / "model_index.json").read_text())
    # as on the hub: the text-to-image class, which the inpainting pipeline loads from
    assert klein_index["_class_name"] == "Flux2KleinPipeline" and klein_index["is_distilled"] is True
    assert type(loaded["flux2_klein"].pipe).__name__ == "Flux2KleinInpaintPipeline"
    assert loaded["flux2_klein"].pipe.config.is_distilled is True
    assert type(loaded["flux_fill"].pipe).__name__ == "FluxFillPipeline"
    for name, engine in loaded.items():
        assert engine.model_id == str(flux_models[name])
        assert engine.load_notes == []
        assert engine.multiple == 16  # a VAE scale factor of 8, latents packed 2 x 2
        assert engine.schedulers == ("default",)
        assert not engine.supports_negative_prompt and not engine.supports_strength


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_the_model_manager_loads_each_engine_from_its_setting(flux_models, tmp_path, name):
    settings = Settings(device="cpu", models={name: str(flux_models[name])}, models_dir=tmp_path)
    manager = manager_with(settings=settings)

    assert name in manager.engines("diffusion")
    engine = manager.load(name)

    assert type(engine) is ENGINES[name][0]
    assert engine.model_id == str(flux_models[name])
    assert engine.options.device == "cpu" and engine.options.dtype == "float32" and not engine.options.warm_up
    assert len(engine.generate(request(engine, seeds=(4,), steps=1)).images) == 1


def test_a_missing_folder_is_named_with_the_setting_to_fix(tmp_path):
    for engine_class, entry, setting in ((Flux2KleinEngine, KLEIN, "INPAINT_STUDIO_MODEL_FLUX2_KLEIN"),
                                         (FluxFillEngine, FILL, "INPAINT_STUDIO_MODEL_FLUX_FILL")):
        with pytest.raises(ModelLoadError, match="does not exist") as error:
            engine_class.load(entry, tmp_path / "nothing-here")
        assert str(tmp_path / "nothing-here") in str(error.value) and setting in str(error.value)


def test_another_pipeline_in_the_folder_is_refused_naming_the_engine_that_runs_it(flux_models, tmp_path):
    sd_folder = tmp_path / "sd15"
    sd_folder.mkdir()
    (sd_folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInpaintPipeline"}))

    with pytest.raises(ModelLoadError, match="is a StableDiffusionInpaintPipeline, not a FLUX.2") as error:
        Flux2KleinEngine.load(KLEIN, sd_folder)
    assert "'sd15' engine" in str(error.value) and "INPAINT_STUDIO_MODEL_FLUX2_KLEIN" in str(error.value)
    with pytest.raises(ModelLoadError, match="is a FluxFillPipeline") as error:
        Flux2KleinEngine.load(KLEIN, flux_models["flux_fill"])
    assert "'flux_fill' engine" in str(error.value)
    with pytest.raises(ModelLoadError, match="is a Flux2KleinPipeline") as error:
        FluxFillEngine.load(FILL, flux_models["flux2_klein"])
    assert "'flux2_klein' engine" in str(error.value) and "INPAINT_STUDIO_MODEL_FLUX_FILL" in str(error.value)


def test_a_folder_without_weights_or_model_index_is_named(flux_models, tmp_path):
    cut_short = tmp_path / "cut-short"
    shutil.copytree(flux_models["flux2_klein"], cut_short)
    (cut_short / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no weights in transformer/") as error:
        Flux2KleinEngine.load(KLEIN, cut_short)
    assert str(cut_short) in str(error.value) and "INPAINT_STUDIO_MODEL_FLUX2_KLEIN" in str(error.value)

    shutil.rmtree(cut_short / "text_encoder")
    with pytest.raises(ModelLoadError, match=r"no text_encoder/ folder"):
        Flux2KleinEngine.load(KLEIN, cut_short)

    (cut_short / "model_index.json").unlink()
    with pytest.raises(ModelLoadError, match="not a diffusers pipeline folder") as error:
        Flux2KleinEngine.load(KLEIN, cut_short)
    assert "INPAINT_STUDIO_MODEL_FLUX2_KLEIN" in str(error.value)


def test_a_text_to_image_flux_transformer_is_not_a_fill_model(flux_models, tmp_path):
    from diffusers import FluxTransformer2DModel

    folder = tmp_path / "flux_dev_in_fill"
    shutil.copytree(flux_models["flux_fill"], folder)
    shutil.rmtree(folder / "transformer")
    config = dict(FluxTransformer2DModel.load_config(flux_models["flux_fill"] / "transformer"))
    config.update(in_channels=16, out_channels=None)  # the packed latent only, as FLUX.1 [dev]'s 64
    FluxTransformer2DModel.from_config(config).save_pretrained(folder / "transformer")

    with pytest.raises(ModelLoadError, match="not a FLUX.1 Fill model") as error:
        FluxFillEngine.load(FILL, folder)
    assert "takes 16 input channels, a Fill transformer 288" in str(error.value)


def test_an_undistilled_klein_and_float16_get_notes(flux_models, tmp_path):
    base = tmp_path / "klein-base"
    shutil.copytree(flux_models["flux2_klein"], base)
    index = json.loads((base / "model_index.json").read_text())
    (base / "model_index.json").write_text(json.dumps({**index, "is_distilled": False}))

    engine = Flux2KleinEngine.load(KLEIN, base, DiffusionOptions(dtype="float16"))

    assert engine.pipe.config.is_distilled is False
    assert any("undistilled" in note and "50 steps" in note for note in engine.load_notes)
    assert any("bfloat16" in note for note in engine.load_notes)


def test_warm_up_fills_once_at_load(flux_models):
    engine = FluxFillEngine.load(FILL, flux_models["flux_fill"], DiffusionOptions(warm_up=True))

    assert engine.pipe.num_timesteps == 1  # the warm-up's one step ran


# --- generating ------------------------------------------------------------------------------------


def test_one_rgb_image_per_seed_at_exactly_the_request_size(engine):
    output = engine.generate(request(engine, seeds=(1, 2, 3)))

    assert [image.size for image in output.images] == [(WIDTH, HEIGHT)] * 3
    assert all(image.mode == "RGB" for image in output.images)
    assert set(output.timings) == {"denoise", "decode"}


def test_a_size_that_is_not_a_multiple_of_16_is_filled_and_scaled_back(engine):
    output = engine.generate(request(engine, image=photo(88, 56), mask=hole(88, 56), seeds=(1,)))

    assert output.images[0].size == (88, 56)
    assert engine.fill_size((88, 56)) == (80, 48)


def test_same_seed_same_pixels_and_each_variant_depends_on_its_seed_alone(engine):
    first = engine.generate(request(engine, seeds=(5, 6)))
    again = engine.generate(request(engine, seeds=(5, 6)))
    alone = engine.generate(request(engine, seeds=(6,)))

    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first.images, again.images))
    assert np.array_equal(pixels(alone.images[0]), pixels(first.images[1]))
    assert np.abs(inside(first.images[0]) - inside(first.images[1])).mean() > 5  # variants differ


def test_the_prompt_is_encoded_once_and_gives_what_the_pipeline_gives(engine, monkeypatch):
    calls = []
    encode = engine.pipe.encode_prompt

    def counting(*args, **kwargs):
        if kwargs.get("prompt_embeds") is None:  # the pipeline's own call, given embeddings, encodes nothing
            calls.append(kwargs["prompt"])
        return encode(*args, **kwargs)

    monkeypatch.setattr(engine.pipe, "encode_prompt", counting)

    chair = engine.generate(request(engine, prompt="a blue lamp", seeds=(3,)))
    again = engine.generate(request(engine, prompt="a blue lamp", seeds=(3,)))
    other = engine.generate(request(engine, prompt="a tall cactus", seeds=(3,)))

    assert calls == ["a blue lamp", "a tall cactus"]  # cached per prompt
    assert np.array_equal(pixels(chair.images[0]), pixels(again.images[0]))
    assert np.abs(inside(chair.images[0]) - inside(other.images[0])).mean() > 1  # the prompt matters
    engine.pipe.scheduler = fresh_scheduler(engine.default_scheduler)
    direct = engine.pipe(prompt="a blue lamp", image=photo(), mask_image=hole(), height=HEIGHT, width=WIDTH,
                         num_inference_steps=STEPS, guidance_scale=engine.entry.guidance, strength=1.0,
                         output_type="np", generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(pixels(chair.images[0]), (np.clip(direct, 0, 1) * 255).round().astype(np.int16))


def test_the_reference_picture_reaches_klein_and_changes_the_fill(klein, monkeypatch):
    pipeline_class = type(klein.pipe)
    original = pipeline_class.__call__
    seen = []

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("image_reference"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "__call__", spy)
    reference = photo(300, 150, seed=9)  # larger than the crop, another aspect

    plain = klein.generate(request(klein, seeds=(2,)))
    guided = klein.generate(request(klein, seeds=(2,), reference_image=reference))

    assert seen[0] is None
    assert isinstance(seen[1], Image.Image) and seen[1].mode == "RGB"
    assert seen[1].width % 16 == 0 and seen[1].height % 16 == 0
    assert seen[1].width * seen[1].height <= WIDTH * HEIGHT  # no more tokens than the crop's own
    assert abs(seen[1].width / seen[1].height - 2) < 0.5
    assert np.abs(inside(plain.images[0]) - inside(guided.images[0])).mean() > 1


def test_a_reference_is_made_rgb_never_enlarged_and_kept_within_the_fill_area():
    transparent = Image.new("RGBA", (2000, 1000), (255, 0, 0, 0))
    transparent.paste((0, 0, 255, 255), (0, 0, 1000, 1000))

    fitted = reference_for(transparent, (1024, 1024))

    assert fitted.mode == "RGB" and fitted.width % 16 == 0 and fitted.height % 16 == 0
    assert fitted.width * fitted.height <= 1024 * 1024 and fitted.size == (1440, 720)
    assert fitted.getpixel((1400, 360)) == (255, 255, 255)  # transparent → white
    assert fitted.getpixel((100, 360))[2] > 250  # the opaque half kept
    small = Image.new("RGB", (160, 96))
    assert reference_for(small, (1024, 1024)).size == (160, 96)


def test_klein_ignores_guidance_with_a_note_and_fill_passes_it(loaded, monkeypatch):
    seen = {}
    for name, engine in loaded.items():
        pipeline_class = type(engine.pipe)
        original = pipeline_class.__call__

        def spy(self, *args, _name=name, _original=original, **kwargs):
            seen[_name] = kwargs["guidance_scale"]
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(pipeline_class, "__call__", spy)
        output = engine.generate(request(engine, seeds=(1,), steps=1, guidance_scale=7.0))
        assert any("Guidance is ignored" in note for note in output.notes) is (name == "flux2_klein")

    assert seen == {"flux2_klein": 1.0, "flux_fill": 7.0}


def test_work_sizes_are_multiples_of_16_about_the_native_area(klein):
    real = Flux2KleinEngine(BUILTIN.engines["flux2_klein"], klein.pipe, "klein", DiffusionOptions())
    compiled = Flux2KleinEngine(BUILTIN.engines["flux2_klein"], klein.pipe, "klein",
                                DiffusionOptions(device="cuda", dtype="bfloat16", compile=True))
    for crop in ((4000, 3000), (3000, 4000), (1000, 1000), (5000, 1000), (333, 777), (100, 60)):
        for engine in (real, compiled):
            width, height = engine.work_size(crop)
            assert width % 16 == 0 and height % 16 == 0
            # (long thin crops: the long side is capped at twice the native size)
            assert 0.8 * 1024**2 <= width * height <= KLEIN_MAX_PIXELS  # the pipeline shrinks a larger one
            if engine is real or max(crop) <= 2 * min(crop):  # compile buckets go up to 2:1
                assert abs(np.log(width / height) - np.log(crop[0] / crop[1])) < 0.1
    assert real.work_size((4000, 3000)) == (1184, 880)


def test_progress_reports_every_step_over_all_variants(engine):
    steps = []

    engine.generate(request(engine, seeds=(1, 2)), progress=lambda done, total: steps.append((done, total)))

    assert steps == [(done, 2 * STEPS) for done in range(1, 2 * STEPS + 1)]


def test_cancelling_after_step_two_raises_and_the_engine_still_works(engine):
    expected = engine.generate(request(engine, seeds=(7,)))
    steps = []

    with pytest.raises(Cancelled):
        engine.generate(request(engine, seeds=(7, 8)), progress=lambda done, total: steps.append(done),
                        should_cancel=lambda: len(steps) >= 2)
    assert steps == [1, 2]

    again = engine.generate(request(engine, seeds=(7,)))
    assert np.array_equal(pixels(again.images[0]), pixels(expected.images[0]))


def test_cancelling_before_the_start_runs_nothing(klein, monkeypatch):
    monkeypatch.setattr(klein.pipe.transformer, "forward", lambda *a, **k: pytest.fail("the model ran"))

    with pytest.raises(Cancelled):
        klein.generate(request(klein), should_cancel=lambda: True)


def test_out_of_memory_gives_advice_and_the_engine_recovers(engine, monkeypatch):
    expected = engine.generate(request(engine, seeds=(6,)))

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(engine.pipe.transformer, "forward", out_of_memory)
        with pytest.raises(GenerationFailed, match="Out of memory") as raised:
            engine.generate(request(engine, seeds=(6,)))
    for advice in ("smaller crop size", "CPU offload", engine.entry.title):
        assert advice in str(raised.value)

    again = engine.generate(request(engine, seeds=(6,)))
    assert np.array_equal(pixels(again.images[0]), pixels(expected.images[0]))


def _decode_to(value: float):
    """A VAE decode that returns a constant image (-1 = black in the VAE's [-1, 1] range)."""

    def decode(latents, **_ignored):
        batch, _, height, width = latents.shape
        return (torch.full((batch, 3, height * 8, width * 8), value),)

    return decode


@pytest.mark.parametrize(("value", "message", "seeds"), [
    (float("nan"), r"invalid \(NaN\) image for seed 8\b", "seed 8,"),  # the first NaN variant stops the run
    (-1.0, "black or invalid", "seed(s) 8, 9"),
])
def test_a_black_or_nan_output_is_reported_with_the_fix(engine, monkeypatch, value, message, seeds):
    monkeypatch.setattr(engine.pipe.vae, "decode", _decode_to(value))

    with pytest.raises(GenerationFailed, match=message) as error:
        engine.generate(request(engine, seeds=(8, 9), steps=1))
    assert seeds in str(error.value) and "bfloat16" in str(error.value)


def test_a_black_output_of_a_black_input_is_kept(klein, monkeypatch):
    monkeypatch.setattr(klein.pipe.vae, "decode", _decode_to(-1.0))

    output = klein.generate(request(klein, image=Image.new("RGB", (WIDTH, HEIGHT)), seeds=(1,), steps=1))

    assert pixels(output.images[0]).max() == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cpu_offload", [False, True])
@pytest.mark.parametrize("name", sorted(ENGINES))
def test_bfloat16_on_cuda_is_reproducible_per_seed(flux_models, name, cpu_offload):
    engine_class, entry = ENGINES[name]
    options = DiffusionOptions(device="cuda", dtype="bfloat16", cpu_offload=cpu_offload)
    engine = engine_class.load(entry, flux_models[name], options)

    first = engine.generate(request(engine, seeds=(1, 2), reference_image=photo(64, 48, seed=4)))
    second = engine.generate(request(engine, seeds=(2,), reference_image=photo(64, 48, seed=4)))

    assert all(image.size == (WIDTH, HEIGHT) for image in first.images)
    assert np.array_equal(pixels(first.images[1]), pixels(second.images[0]))
    assert np.abs(inside(first.images[0]) - inside(first.images[1])).mean() > 5


@pytest.mark.parametrize(("changes", "message"), [
    ({"seeds": ()}, "At least one seed"),
    ({"steps": 0}, "Steps must be at least 1"),
    ({"mask": hole().convert("RGB")}, "mode L"),
    ({"image": photo(8, 8), "mask": hole(8, 8)}, "at least 16 pixels"),
    ({"reference_image": np.zeros((8, 8, 3))}, "reference must be a picture"),
])
def test_invalid_requests_are_refused_with_the_reason(klein, changes, message):
    with pytest.raises(InpaintError, match=message):
        klein.generate(request(klein, **changes))


# --- the edit, through the inpainting core --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_inpainting_a_photo_keeps_every_pixel_beyond_the_soft_edge(loaded, name):
    engine = loaded[name]
    photo_ = noise_photo()  # 1500 x 1000
    mask = disk(photo_.size, (1100, 300), 45) | disk(photo_.size, (200, 800), 30)  # far apart
    params = InpaintParams(prompt="a bench", steps=2, seed=11, variants=2, mask_blur=6, padding=16,
                           guidance_scale=engine.entry.guidance)

    result = inpaint(photo_, mask, params, engine)

    assert len(result.crops) == 2
    band = masks.grow(mask, 6)
    original = np.asarray(photo_)
    outputs = [np.asarray(image) for image in result.images]
    for out in outputs:
        assert out.shape == original.shape
        assert np.array_equal(out[~band], original[~band])
        for centre, radius in (((1100, 300), 45), ((200, 800), 30)):
            region = disk(photo_.size, centre, radius)
            assert (out[region] != original[region]).any()
    assert not np.array_equal(outputs[0][mask], outputs[1][mask])  # variants differ
    again = inpaint(photo_, mask, params, engine)
    assert np.array_equal(np.asarray(again.images[1]), outputs[1])  # same seed, same pixels
    assert result.engine == name and result.model_id == engine.model_id


def test_a_reference_picture_given_to_the_edit_reaches_klein_for_every_crop(klein):
    photo_ = noise_photo((400, 300), seed=3)
    mask = disk(photo_.size, (100, 80), 20) | disk(photo_.size, (320, 230), 20)
    params = InpaintParams(prompt="a lamp", steps=2, seed=5, mask_blur=4, padding=16, guidance_scale=1.0)
    reference = photo(120, 80, seed=7)

    plain = inpaint(photo_, mask, params, klein)
    guided = inpaint(photo_, mask, params, klein, reference_image=reference)

    band = masks.grow(mask, 4)
    before, with_reference = np.asarray(plain.images[0]).astype(int), np.asarray(guided.images[0]).astype(int)
    assert len(guided.crops) == 2
    assert np.array_equal(with_reference[~band], np.asarray(photo_)[~band])
    for centre in ((100, 80), (320, 230)):
        region = disk(photo_.size, centre, 20)
        assert np.abs(with_reference[region] - before[region]).mean() > 1
    assert guided.params.reference_sha256 and not plain.params.reference_sha256


def test_importing_the_flux_engines_loads_no_heavy_library():
    code = (
        "import sys, core.engines.flux, core.manager, core.catalog; "
        "core.manager.engine_class(core.catalog.BUILTIN.engines['flux2_klein']); "
        "core.manager.engine_class(core.catalog.BUILTIN.engines['flux_fill']); "
        "print(sorted({'torch', 'diffusers', 'transformers', 'streamlit'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            check=True)

    assert result.stdout.strip() == "[]"


def test_the_cuda_fast_path_fuses_attention_projections_and_says_why_fp8_is_skipped(flux_models, monkeypatch):
    """On the CPU, what the fast path does to the denoiser (the timing needs a GPU: ``bench/gpu.py``)."""
    import builtins

    import torch

    from core.catalog import BUILTIN
    from core.engines.pipelines import DiffusionOptions, apply_fast_path

    engine = FluxFillEngine.load(BUILTIN.engines["flux_fill"], flux_models["flux_fill"])
    transformer = engine.pipe.transformer
    hidden = torch.randn(1, 16, transformer.config.num_attention_heads * transformer.config.attention_head_dim)
    attention = transformer.transformer_blocks[0].attn
    before = attention.to_q(hidden)
    assert apply_fast_path(transformer, DiffusionOptions(fuse_qkv=True), capability=(9, 0)) == []
    assert attention.fused_projections
    fused = attention.to_qkv(hidden) if hasattr(attention, "to_qkv") else None
    assert fused is not None and torch.allclose(fused[..., : before.shape[-1]], before, atol=1e-5)

    real_import = builtins.__import__

    def without_torchao(name, *args, **kwargs):
        if name.startswith("torchao"):
            raise ImportError("No module named 'torchao'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_torchao)
    notes = apply_fast_path(transformer, DiffusionOptions(fp8=True), capability=(9, 0))
    assert notes and "pip install torchao" in notes[0]
