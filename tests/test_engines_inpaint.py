"""Inpainting engines: SD1.5 / SDXL through diffusers with tiny random pipelines loaded by the real
loader, the OpenCV removal engines, and the registry.

The tiny models' outputs are noise; these tests check what does not depend on weights: the loaded
classes, sizes, seeds and reproducibility, progress, cancellation, notes, errors and recovery.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from core.catalog import BUILTIN, UnknownName
from core.engines.base import Cancelled, EngineRequest, InpaintError, ModelLoadError
from core.engines.diffusion import DiffusionEngine, DiffusionOptions
from core.engines.opencv_inpaint import OpenCVInpaint
from core.errors import GenerationFailed
from core.manager import engine_class as class_of
from tests.conftest import ROOT
from tests.helpers import SD15, SDXL, manager_with

WIDTH, HEIGHT = 96, 64  # not square, so swapped axes would show
STEPS = 3

ENGINES = {"sd15": (SD15, "sd15_inpaint"), "sdxl": (SDXL, "sdxl_inpaint")}
INPAINT_ENGINES = BUILTIN.engine_names(("diffusion", "removal"), variants=False)
REMOVAL_ENGINES = BUILTIN.engine_names(("removal",))


def photo(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> Image.Image:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(noise, "RGB")


def hole(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    return Image.fromarray(mask, "L")


def request(**changes) -> EngineRequest:
    fields = dict(image=photo(), mask=hole(), seeds=(1, 2, 3), prompt="a red chair", steps=STEPS)
    fields.update(changes)
    return EngineRequest(**fields)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a CPU busy with other work, torch's idle
    threads spinning made each call up to 100 times slower (0.1 s -> 12 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request, tiny_models):
    entry, role = ENGINES[request.param]
    return DiffusionEngine.load(entry, tiny_models[role])


@pytest.fixture(scope="module")
def sd15(tiny_models):
    return DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"])


# --- loading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_each_engine_loads_its_inpainting_pipeline_with_torch_attention(tiny_models, name):
    entry, role = ENGINES[name]

    engine = DiffusionEngine.load(entry, tiny_models[role])

    assert type(engine.pipe).__name__ == entry.options["pipeline_class"]
    assert engine.pipe.unet.config.in_channels == 9
    assert engine.model_id == str(tiny_models[role])
    processors = {type(processor).__name__ for processor in engine.pipe.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}  # torch's scaled-dot-product attention, no xformers


def test_sd15_loads_without_a_safety_checker(sd15):
    assert sd15.pipe.safety_checker is None


def test_a_text_to_image_model_is_refused_as_not_an_inpainting_model(tmp_path):
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from tests.tiny_models import _inpaint_unet, _text_towers, _vae

    StableDiffusionPipeline(
        unet=_inpaint_unet(in_channels=4),
        vae=_vae(),
        scheduler=PNDMScheduler(skip_prk_steps=True),
        **_text_towers(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(tmp_path / "sd15_text2image")

    with pytest.raises(ModelLoadError, match="not an inpainting model") as error:
        DiffusionEngine.load(SD15, tmp_path / "sd15_text2image")
    assert "takes 4 input channels" in str(error.value)
    assert "INPAINT_STUDIO_MODEL_SD15_INPAINT" in str(error.value)


def test_an_sdxl_model_loaded_as_sd15_names_the_engine_that_fits(tiny_models):
    with pytest.raises(ModelLoadError, match="StableDiffusionXLInpaintPipeline") as error:
        DiffusionEngine.load(SD15, tiny_models["sdxl_inpaint"])
    assert "'sdxl' engine" in str(error.value)


def test_a_missing_folder_is_named_with_the_setting_to_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as error:
        DiffusionEngine.load(SDXL, tmp_path / "missing")
    assert str(tmp_path / "missing") in str(error.value)
    assert "INPAINT_STUDIO_MODEL_SDXL_INPAINT" in str(error.value)


@pytest.mark.parametrize("what", ["clip folder", "uncached hub id"])
def test_something_that_is_not_a_pipeline_cannot_be_loaded(tiny_models, what):
    path = str(tiny_models["clip"]) if what == "clip folder" else "nobody/no-such-inpainting-model"

    with pytest.raises(ModelLoadError, match="could not be loaded") as error:
        DiffusionEngine.load(SD15, path)
    assert path in str(error.value) and "model_index.json" in str(error.value)


def test_a_missing_fp16_safe_vae_is_named(tiny_models, tmp_path):
    options = DiffusionOptions(fp16_safe_vae=str(tmp_path / "no-vae"))

    with pytest.raises(ModelLoadError, match="The VAE .*no-vae could not be loaded"):
        DiffusionEngine.load(SDXL, tiny_models["sdxl_inpaint"], options)


def test_the_fp16_safe_vae_replaces_the_models_own(tiny_models):
    vae = tiny_models["sd15_inpaint"] / "vae"

    engine = DiffusionEngine.load(SDXL, tiny_models["sdxl_inpaint"], DiffusionOptions(fp16_safe_vae=str(vae)))

    assert engine.pipe.vae.config._name_or_path == str(vae)
    own = DiffusionEngine.load(SDXL, tiny_models["sdxl_inpaint"]).pipe.vae
    assert engine.pipe.vae.config.force_upcast != own.config.force_upcast


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there_is_a_load_error(tiny_models):
    with pytest.raises(ModelLoadError, match="could not be moved to cuda"):
        DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"], DiffusionOptions(device="cuda", dtype="float16"))


def test_options_refuse_unknown_devices_and_dtypes():
    with pytest.raises(ValueError, match="device"):
        DiffusionOptions(device="gpu")
    with pytest.raises(ValueError, match="dtype"):
        DiffusionOptions(dtype="half")


# --- generating ------------------------------------------------------------------------------------


def test_one_rgb_image_per_seed_at_exactly_the_request_size(engine):
    output = engine.generate(request(seeds=(5, 6, 7)))

    assert len(output.images) == 3
    assert all(image.mode == "RGB" and image.size == (WIDTH, HEIGHT) for image in output.images)
    assert output.notes == []
    assert output.timings["denoise"] > 0 and output.timings["decode"] > 0


def test_the_same_request_gives_identical_pixels(engine):
    first = engine.generate(request())
    second = engine.generate(request())

    for a, b in zip(first.images, second.images, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_different_seeds_give_different_variants(engine):
    images = engine.generate(request(seeds=(1, 2))).images

    assert np.abs(pixels(images[0]) - pixels(images[1])).mean() > 5


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_a_variant_regenerated_alone_matches_the_batch(engine, strength):
    batch = engine.generate(request(seeds=(11, 22, 33), strength=strength, scheduler="Euler a"))
    alone = engine.generate(request(seeds=(22,), strength=strength, scheduler="Euler a"))

    # Bit for bit: each variant is its own pipeline call (a recipe replays one variant alone).
    assert np.array_equal(pixels(batch.images[1]), pixels(alone.images[0]))
    # and it is not just any variant: the batch's other seeds differ from it
    assert np.abs(pixels(batch.images[0]) - pixels(alone.images[0])).mean() > 5


def test_progress_reports_every_step_in_order(engine):
    calls = []

    engine.generate(request(seeds=(1, 2), scheduler="DDIM"), progress=lambda step, total: calls.append((step, total)))

    assert calls == [(step, 2 * STEPS) for step in range(1, 2 * STEPS + 1)]  # over both variants


def test_progress_counts_the_steps_that_strength_leaves(engine):
    calls = []

    engine.generate(request(seeds=(1,), steps=4, strength=0.5, scheduler="DDIM"), lambda *call: calls.append(call))

    assert calls == [(1, 2), (2, 2)]


def test_cancelling_after_step_two_raises_and_the_engine_still_works(engine):
    calls = []
    expected = engine.generate(request(seeds=(4,)))

    with pytest.raises(Cancelled):
        engine.generate(
            request(seeds=(4,), steps=5),
            progress=lambda *call: calls.append(call),
            should_cancel=lambda: len(calls) >= 2,
        )

    assert [step for step, _ in calls] == [1, 2]  # the remaining steps were skipped
    assert calls[0][1] >= 5
    again = engine.generate(request(seeds=(4,)))
    assert np.array_equal(pixels(again.images[0]), pixels(expected.images[0]))


def test_cancelling_before_the_start_runs_nothing(sd15):
    calls = []

    with pytest.raises(Cancelled):
        sd15.generate(request(), progress=lambda *call: calls.append(call), should_cancel=lambda: True)

    assert calls == []


def test_a_prompt_past_77_tokens_is_used_cut_with_a_note(engine):
    long_prompt = "a red chair " * 10 + "in the end"  # the tiny tokenizer has one token per character

    output = engine.generate(request(prompt=long_prompt, seeds=(1,)))

    assert len(output.images) == 1
    assert len(output.notes) == 1
    assert output.notes[0].startswith("The prompt was cut to 77 tokens; the end (")
    assert output.notes[0].endswith("in the end) was ignored.")


def test_a_long_negative_prompt_and_one_without_guidance_get_notes(sd15):
    notes = sd15.generate(request(negative_prompt="blurry " * 20, seeds=(1,), guidance_scale=1.0)).notes

    assert any(note.startswith("The negative prompt was cut to 77 tokens") for note in notes)
    assert "The negative prompt has no effect at guidance scale 1 or below." in notes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "Steps must be at least 1"),
        ({"strength": 0.0}, "Strength must be above 0"),
        ({"strength": 1.5}, "Strength must be above 0 and at most 1"),
        ({"steps": 3, "strength": 0.2}, "Steps x strength must be at least 1"),
        ({"guidance_scale": -1.0}, "Guidance scale must be 0 or more"),
        ({"seeds": ()}, "At least one seed"),
        ({"seeds": (-1,)}, "Seeds must be whole numbers"),
        ({"mask": hole(WIDTH, HEIGHT + 8)}, "must be the same size"),
        ({"image": photo(90, 60), "mask": hole(90, 60)}, "multiples of 8"),
        ({"image": photo().convert("RGBA")}, "must be RGB"),
        ({"mask": hole().convert("1")}, "must be mode L"),
        ({"scheduler": "Heun"}, "Unknown scheduler 'Heun'"),
    ],
)
def test_invalid_requests_are_refused_with_the_reason(sd15, changes, message):
    with pytest.raises(InpaintError, match=message):
        sd15.generate(request(**changes))


SCHEDULER_CLASSES = {
    "Euler a": "EulerAncestralDiscreteScheduler",
    "DPM++ 2M Karras": "DPMSolverMultistepScheduler",
    "DDIM": "DDIMScheduler",
    "UniPC": "UniPCMultistepScheduler",
}


def test_the_scheduler_is_chosen_per_request(engine):
    default_class = type(engine.default_scheduler).__name__
    assert engine.schedulers[0] == "default" and set(engine.schedulers[1:]) == set(SCHEDULER_CLASSES)

    for scheduler, expected in SCHEDULER_CLASSES.items():
        chosen = engine.generate(request(seeds=(3,), scheduler=scheduler))
        assert type(engine.pipe.scheduler).__name__ == expected
        default = engine.generate(request(seeds=(3,), scheduler="default"))
        assert type(engine.pipe.scheduler).__name__ == default_class != expected
        assert np.abs(pixels(chosen.images[0]) - pixels(default.images[0])).mean() > 1


def test_karras_sigmas_are_turned_on_for_dpm_plus_plus(sd15):
    sd15.generate(request(seeds=(3,), scheduler="DPM++ 2M Karras"))

    assert sd15.pipe.scheduler.config.use_karras_sigmas is True


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
        engine.generate(request(seeds=(8, 9)))
    assert seeds in str(error.value)
    assert "fp16-safe VAE" in str(error.value) and "float32" in str(error.value)


def test_a_black_output_of_a_black_input_is_kept(sd15, monkeypatch):
    monkeypatch.setattr(sd15.pipe.vae, "decode", _decode_to(-1.0))
    black = Image.new("RGB", (WIDTH, HEIGHT))

    output = sd15.generate(request(image=black, seeds=(1,)))

    assert pixels(output.images[0]).max() == 0


@pytest.mark.parametrize(
    "error",
    [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)")],
)
def test_out_of_memory_gives_advice_and_the_engine_recovers(engine, monkeypatch, error):
    expected = engine.generate(request(seeds=(6,)))

    def out_of_memory(*args, **kwargs):
        raise error

    with monkeypatch.context() as patch:
        patch.setattr(engine.pipe.unet, "forward", out_of_memory)
        with pytest.raises(GenerationFailed, match="Out of memory") as raised:
            engine.generate(request(seeds=(6,)))
    for advice in ("smaller crop size", "CPU offload"):  # variants run one at a time: no more memory
        assert advice in str(raised.value)

    again = engine.generate(request(seeds=(6,)))
    assert np.array_equal(pixels(again.images[0]), pixels(expected.images[0]))


def test_other_pipeline_failures_are_not_disguised_as_out_of_memory(sd15, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(sd15.pipe.unet, "forward", broken)

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        sd15.generate(request(seeds=(1,)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cpu_offload", [False, True])
def test_float16_on_cuda_is_reproducible_per_seed(tiny_models, cpu_offload):
    options = DiffusionOptions(device="cuda", dtype="float16", cpu_offload=cpu_offload)
    engine = DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"], options)

    first = engine.generate(request(seeds=(1, 2)))
    second = engine.generate(request(seeds=(1, 2)))

    assert all(image.size == (WIDTH, HEIGHT) for image in first.images)
    assert np.array_equal(pixels(first.images[1]), pixels(second.images[1]))
    assert np.abs(pixels(first.images[0]) - pixels(first.images[1])).mean() > 5


# --- OpenCV removal --------------------------------------------------------------------------------


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    """A smooth gradient: red grows to the right, green downwards, blue constant."""
    x = np.linspace(20, 220, width)
    y = np.linspace(30, 200, height)
    red, green = np.meshgrid(x, y)
    rgb = np.stack([red, green, np.full_like(red, 90)], axis=-1)
    return Image.fromarray(rgb.round().astype(np.uint8), "RGB")


@pytest.mark.parametrize("method", ["telea", "navier_stokes"])
def test_opencv_fills_a_hole_from_the_surrounding_gradient(method):
    image = gradient()
    mask = np.zeros((48, 64), np.uint8)
    mask[18:30, 26:38] = 255
    scribbled = np.asarray(image).copy()
    scribbled[mask > 0] = (255, 0, 255)  # the object to remove
    calls = []

    output = OpenCVInpaint(method).generate(
        EngineRequest(Image.fromarray(scribbled), Image.fromarray(mask, "L"), seeds=(1, 2, 3)),
        progress=lambda *call: calls.append(call),
    )

    filled = [pixels(image) for image in output.images]
    truth, inside = pixels(image), mask > 0
    error = np.abs(filled[0][inside] - truth[inside])  # the magenta scribble was 100+ away
    assert error.mean() <= 4 and error.max() <= 16
    assert np.array_equal(filled[0][~inside], np.asarray(scribbled)[~inside])
    assert all(np.array_equal(filled[0], other) for other in filled[1:])
    assert output.images[0].size == (64, 48) and output.images[0].mode == "RGB"
    assert calls == [(1, 1)]


def test_opencv_honours_cancel_and_checks_sizes():
    engine = OpenCVInpaint("telea", radius=5)
    crop = EngineRequest(gradient(), Image.new("L", (64, 48)), seeds=(1,))

    with pytest.raises(Cancelled):
        engine.generate(crop, should_cancel=lambda: True)
    with pytest.raises(InpaintError, match="same size"):
        engine.generate(EngineRequest(gradient(), Image.new("L", (64, 40)), seeds=(1,)))
    with pytest.raises(ValueError, match="radius"):
        OpenCVInpaint("telea", radius=0)


# --- the registry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INPAINT_ENGINES))
def test_every_registered_engine_declares_what_it_can_do(name):
    entry, preset = BUILTIN.engine(name)
    engine_class = class_of(entry)
    engine = engine_class.__new__(engine_class)  # what an engine says of itself comes from its entry
    engine.entry = entry

    assert preset is None and engine.name == entry.name == name
    assert isinstance(engine.title, str) and engine.title
    assert engine.native_resolution in (512, 1024)
    for flag in ("supports_prompt", "supports_negative_prompt", "supports_strength"):
        assert getattr(engine, flag) is entry.can(flag.removeprefix("supports_"))
    assert entry.can("prompt") is (name not in REMOVAL_ENGINES)  # every diffusion engine takes a prompt
    assert isinstance(engine_class.schedulers, tuple)
    assert bool(engine_class.schedulers) is (name not in REMOVAL_ENGINES)
    assert callable(engine_class.generate)


def test_removal_engines_need_no_weights_and_unknown_names_are_refused():
    assert REMOVAL_ENGINES == ["lama", "migan", "telea", "navier_stokes"]  # best first
    assert set(REMOVAL_ENGINES) <= set(INPAINT_ENGINES)
    manager = manager_with()  # no model on disk
    without_weights = [name for name in REMOVAL_ENGINES if not BUILTIN.engines[name].roles]
    assert without_weights == ["telea", "navier_stokes"]
    assert all(manager.load(name).model_id == "opencv" for name in without_weights)
    with pytest.raises(UnknownName, match="Unknown engine 'dalle'") as error:
        manager.load("dalle")
    assert all(f"{name}, " in str(error.value) for name in ("sd15", "sdxl", "telea"))
    assert "navier_stokes" in str(error.value)


def test_importing_the_engines_loads_no_heavy_library():
    code = (
        "import sys, core.engines, core.engines.diffusion, core.manager, core.catalog; "
        "core.manager.engine_class(core.catalog.BUILTIN.engines['sdxl']); "
        "print(sorted({'torch', 'diffusers', 'transformers', 'streamlit'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
