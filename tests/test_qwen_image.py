"""The Qwen-Image-Edit engine with a tiny random pipeline loaded by the real loader
(:mod:`tests.tiny_qwen_image`, saved as ``Qwen/Qwen-Image-Edit`` is: a ``QwenImageEditPipeline``).

The tiny model's outputs are noise; these tests check what does not depend on weights: the loaded
class, how the prompts of each mode and the guidance reach the pipeline, sizes, seeds and
reproducibility, progress, cancellation, errors and recovery, and the whole edit through
``core.operations.inpaint``.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from core import masks
from core.catalog import BUILTIN
from core.config import Settings
from core.engines.base import Cancelled, EngineRequest, InpaintError, ModelLoadError
from core.engines.pipelines import DiffusionOptions
from core.engines.qwen_image import (
    EMPTY_FILL_INSTRUCTION,
    EMPTY_NEGATIVE_PROMPT,
    QwenImageEditEngine,
    instruction,
)
from core.errors import GenerationFailed
from core.operations.inpaint import InpaintParams, inpaint
from tests.helpers import CPU, disk, noise_photo
from tests.tiny_qwen_image import PIPELINE_CLASS, build_qwen_image_edit

ENTRY = BUILTIN.engines["qwen_image_edit"]
SMALL = dataclasses.replace(ENTRY, native_size=64)  # crops are edited at about 64 x 64
SETTING = "INPAINT_STUDIO_MODEL_QWEN_IMAGE_EDIT"
WIDTH, HEIGHT = 96, 64  # not square, so swapped axes would show; multiples of 32
STEPS = 2


def photo(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> Image.Image:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(noise, "RGB")


def hole(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    return Image.fromarray(mask, "L")


def request(**changes) -> EngineRequest:
    fields = dict(image=photo(), mask=hole(), seeds=(1, 2), prompt="a red chair", steps=STEPS,
                  guidance_scale=4.0)
    fields.update(changes)
    return EngineRequest(**fields)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy CPU idle threads spinning slow every call."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    return build_qwen_image_edit(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="module")
def engine(qwen_path):
    return QwenImageEditEngine.load(SMALL, qwen_path)


@pytest.fixture
def calls(engine, monkeypatch):
    """The keyword arguments and output size of every pipeline call (the real pipeline still runs)."""
    pipeline_class = type(engine.pipe)
    original = pipeline_class.__call__
    seen = []

    def spy(pipe, **kwargs):
        result = original(pipe, **kwargs)
        seen.append({**kwargs, "output_shape": result.images[0].shape})
        return result

    monkeypatch.setattr(pipeline_class, "__call__", spy)
    return seen


# --- loading ---------------------------------------------------------------------------------------


def test_the_edit_pipeline_folder_loads_as_the_inpainting_pipeline(engine, qwen_path):
    assert json.loads((qwen_path / "model_index.json").read_text())["_class_name"] == PIPELINE_CLASS
    assert type(engine.pipe).__name__ == "QwenImageEditInpaintPipeline"
    assert type(engine.pipe.processor).__name__ == "Qwen2VLProcessor"
    assert engine.model_id == str(qwen_path) and engine.name == "qwen_image_edit"
    assert engine.pipe.vae_scale_factor == 8  # as the real model: sizes are multiples of 16, its own of 32


def test_the_manager_loads_it_from_its_setting(qwen_path, tmp_path):
    from core.manager import ModelManager

    settings = Settings(device="cpu", models_dir=tmp_path, models={"qwen_image_edit": str(qwen_path)})
    manager = ModelManager(settings, CPU, options={"warm_up": False})

    with manager.use("qwen_image_edit") as loaded:
        assert isinstance(loaded, QwenImageEditEngine)
        assert loaded.model_id == str(qwen_path) and loaded.native_resolution == 1024
        output = loaded.generate(request(seeds=(3,)))  # a request runs at its own size, not the native one
    assert output.images[0].size == (WIDTH, HEIGHT)


def test_the_tiny_folder_holds_what_a_download_of_the_real_model_holds(qwen_path):
    from huggingface_hub.utils import filter_repo_objects

    from core.model_files import pipeline_patterns

    files = sorted(str(path.relative_to(qwen_path)) for path in qwen_path.rglob("*") if path.is_file())
    assert {"processor/preprocessor_config.json", "processor/video_preprocessor_config.json",
            "processor/tokenizer.json", "tokenizer/vocab.json", "tokenizer/merges.txt"} <= set(files)
    assert "tokenizer/tokenizer.json" not in files and "processor/processor_config.json" not in files
    assert sorted(filter_repo_objects(files, allow_patterns=pipeline_patterns(files))) == files


def test_a_missing_folder_is_named_with_the_setting_to_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as error:
        QwenImageEditEngine.load(ENTRY, tmp_path / "missing")
    assert str(tmp_path / "missing") in str(error.value) and SETTING in str(error.value)


@pytest.mark.parametrize("saved_as", ["QwenImagePipeline", "StableDiffusionInpaintPipeline"])
def test_a_folder_of_another_pipeline_is_refused_before_loading(tmp_path, saved_as):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": saved_as}))

    with pytest.raises(ModelLoadError, match=saved_as) as error:
        QwenImageEditEngine.load(ENTRY, folder)
    assert str(folder) in str(error.value) and SETTING in str(error.value)


def test_a_folder_without_the_transformer_weights_is_named(qwen_path, tmp_path):
    folder = tmp_path / "incomplete"
    shutil.copytree(qwen_path, folder)
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()

    with pytest.raises(ModelLoadError, match="no weights in transformer/") as error:
        QwenImageEditEngine.load(ENTRY, folder)
    assert str(folder) in str(error.value) and SETTING in str(error.value)


def test_a_folder_the_loader_fails_on_is_named(qwen_path, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(qwen_path, folder)
    (folder / "processor" / "preprocessor_config.json").write_text("{not json")

    with pytest.raises(ModelLoadError, match="could not be loaded") as error:
        QwenImageEditEngine.load(ENTRY, folder)
    assert str(folder) in str(error.value) and SETTING in str(error.value)


def test_float16_gets_a_note_about_black_images(qwen_path):
    loaded = QwenImageEditEngine.load(SMALL, qwen_path, DiffusionOptions(dtype="float16"))
    assert loaded.pipe.transformer.dtype == torch.float16
    assert any("float16" in note and "black" in note for note in loaded.load_notes)


# --- sizes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop", [(1500, 1000), (1000, 1500), (700, 700), (333, 250), (2000, 1200)])
def test_work_size_is_the_pipelines_own_choice_for_the_real_model(crop):
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_inpaint import calculate_dimensions

    real = QwenImageEditEngine(ENTRY, SimpleNamespace(scheduler=None), "real", DiffusionOptions())
    width, height = real.work_size(crop)
    assert width % 32 == 0 and height % 32 == 0
    assert (width, height) == calculate_dimensions(1024 * 1024, crop[0] / crop[1])[:2]


def test_each_call_runs_at_the_request_size_and_the_pipeline_is_left_as_it_was(engine, calls):
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_inpaint import calculate_dimensions

    output = engine.generate(request(seeds=(1,)))

    assert output.images[0].size == (WIDTH, HEIGHT) and output.images[0].mode == "RGB"
    assert calls[0]["output_shape"] == (HEIGHT, WIDTH, 3)  # not the pipeline's 1024 x 1024 area
    assert (calls[0]["width"], calls[0]["height"]) == (WIDTH, HEIGHT)
    assert calculate_dimensions(1024 * 1024, 1.5) == (1248, 832, None)  # outside a call: the pipeline's own


def test_a_size_that_is_not_a_multiple_of_32_is_run_at_the_nearest_and_scaled_back(engine, calls):
    output = engine.generate(request(image=photo(72, 56), mask=hole(72, 56), seeds=(1,)))

    assert output.images[0].size == (72, 56)
    assert calls[0]["output_shape"] == (64, 64, 3)


# --- generating ------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_pixels_and_seeds_give_different_variants(engine):
    first = engine.generate(request(seeds=(5, 6)))
    again = engine.generate(request(seeds=(6,)))

    assert len(first.images) == 2
    assert np.array_equal(pixels(again.images[0]), pixels(first.images[1]))  # a variant alone replays
    assert not np.array_equal(pixels(first.images[0]), pixels(first.images[1]))
    assert set(first.timings) == {"denoise", "decode"}


def test_instruct_mode_sends_the_instruction_unchanged(engine, calls):
    engine.generate(request(prompt="make the jacket red", mode="instruct", seeds=(1,)))

    assert calls[0]["prompt"] == "make the jacket red"


def test_fill_mode_turns_the_description_into_a_replacement_instruction(engine, calls):
    engine.generate(request(prompt="a vase of tulips", mode="fill", seeds=(1,)))
    engine.generate(request(prompt="  ", mode="fill", seeds=(1,)))

    assert calls[0]["prompt"] == "Replace the masked area with a vase of tulips."
    assert calls[1]["prompt"] == EMPTY_FILL_INSTRUCTION
    assert instruction("a cat.", "fill") == "Replace the masked area with a cat."


def test_instruct_mode_without_an_instruction_is_refused(engine):
    with pytest.raises(InpaintError, match="what to change"):
        engine.generate(request(prompt=" ", mode="instruct"))


def test_guidance_is_true_cfg_with_the_negative_prompt_or_a_blank_one(engine, calls):
    transformer_calls = []
    hook = engine.pipe.transformer.register_forward_hook(lambda *args: transformer_calls.append(1))
    try:
        engine.generate(request(negative_prompt="blurry", guidance_scale=4.0, seeds=(1,)))
        guided_passes = len(transformer_calls)
        engine.generate(request(negative_prompt="", guidance_scale=3.0, seeds=(1,)))
        transformer_calls.clear()
        unguided = engine.generate(request(negative_prompt="blurry", guidance_scale=1.0, seeds=(1,)))
    finally:
        hook.remove()

    assert (calls[0]["true_cfg_scale"], calls[0]["negative_prompt"]) == (4.0, "blurry")
    assert (calls[1]["true_cfg_scale"], calls[1]["negative_prompt"]) == (3.0, EMPTY_NEGATIVE_PROMPT)
    assert (calls[2]["true_cfg_scale"], calls[2]["negative_prompt"]) == (1.0, None)
    assert calls[0]["strength"] == 1.0 and calls[0]["num_inference_steps"] == STEPS
    assert guided_passes == 2 * STEPS and len(transformer_calls) == STEPS  # guidance: one more pass per step
    assert any("no effect" in note for note in unguided.notes)


def test_progress_counts_every_step_of_every_variant_in_order(engine):
    seen = []
    engine.generate(request(seeds=(1, 2)), progress=lambda step, total: seen.append((step, total)))
    assert seen == [(step, 2 * STEPS) for step in range(1, 2 * STEPS + 1)]


def test_strength_below_one_runs_fewer_steps(engine):
    seen = []
    engine.generate(request(seeds=(1,), steps=4, strength=0.5),
                    progress=lambda step, total: seen.append(total))
    assert set(seen) == {2}


def test_cancelling_after_the_first_step_raises_and_the_engine_still_works(engine):
    steps_done = []

    def progress(step, total):
        steps_done.append(step)

    with pytest.raises(Cancelled):
        engine.generate(request(steps=4), progress, should_cancel=lambda: len(steps_done) >= 1)
    assert steps_done == [1]
    assert len(engine.generate(request(seeds=(1,))).images) == 1


def test_cancelling_before_the_start_runs_nothing(engine, calls):
    with pytest.raises(Cancelled):
        engine.generate(request(), should_cancel=lambda: True)
    assert calls == []


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("MPS backend out of memory")])
def test_out_of_memory_gives_advice_and_the_engine_recovers(engine, monkeypatch, error):
    pipeline_class = type(engine.pipe)
    original = pipeline_class.__call__

    def out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipeline_class, "__call__", out_of_memory)
    with pytest.raises(GenerationFailed, match="Out of memory") as failure:
        engine.generate(request())
    assert "CPU offload" in str(failure.value) and "58 GB" in str(failure.value)

    monkeypatch.setattr(pipeline_class, "__call__", original)
    assert len(engine.generate(request(seeds=(1,))).images) == 1


@pytest.mark.parametrize(("value", "message"), [(0.0, "black"), (float("nan"), "NaN")])
def test_a_black_or_nan_output_is_a_failure(engine, monkeypatch, value, message):
    pipeline_class = type(engine.pipe)

    def broken(pipe, **kwargs):
        return type("Output", (), {"images": np.full((1, HEIGHT, WIDTH, 3), value, np.float32)})()

    monkeypatch.setattr(pipeline_class, "__call__", broken)
    with pytest.raises(GenerationFailed, match=message) as failure:
        engine.generate(request(seeds=(4,)))
    assert "seed 4" in str(failure.value) or "seed(s) 4" in str(failure.value)


def test_other_pipeline_failures_are_not_disguised_as_out_of_memory(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("something else")

    monkeypatch.setattr(type(engine.pipe), "__call__", broken)
    with pytest.raises(ValueError, match="something else"):
        engine.generate(request())


# --- through the inpainting operation --------------------------------------------------------------


def test_an_edit_of_two_regions_keeps_every_pixel_beyond_the_soft_edge(engine, calls):
    size = (1500, 1000)
    image = noise_photo(size)
    mask = disk(size, (1100, 300), 45) | disk(size, (200, 800), 30)  # far apart: two crops
    params = InpaintParams(prompt="a bench", steps=STEPS, guidance_scale=4.0, seed=11, mask_blur=6,
                           padding=16, engine="qwen_image_edit")

    result = inpaint(image, mask, params, engine)

    assert len(result.crops) == 2 and result.engine == "qwen_image_edit"
    band = masks.grow(mask, 6)
    original, out = np.asarray(image), np.asarray(result.images[0])
    assert out.shape == original.shape
    assert np.array_equal(out[~band], original[~band])
    for region in (disk(size, (1100, 300), 45), disk(size, (200, 800), 30)):
        assert (out[region] != original[region]).any()
    assert [call["prompt"] for call in calls] == ["Replace the masked area with a bench."] * 2
    assert all(call["output_shape"] == (64, 64, 3) for call in calls)  # the entry's native size


def test_an_instruction_given_to_the_operation_reaches_the_pipeline_unchanged(engine, calls):
    size = (300, 200)
    params = InpaintParams(prompt="make it red", mode="instruct", steps=STEPS, guidance_scale=4.0, seed=3,
                           engine="qwen_image_edit")

    result = inpaint(noise_photo(size), disk(size, (150, 100), 30), params, engine)

    assert [call["prompt"] for call in calls] == ["make it red"]
    assert calls[0]["negative_prompt"] == params.negative_prompt and calls[0]["true_cfg_scale"] == 4.0
    assert result.images[0].size == size
