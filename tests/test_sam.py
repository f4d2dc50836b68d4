"""SamEngine with the tiny random SAM: sizes, prompts, the embedding reused across clicks, load errors.

The tiny model's masks are noise; the reference for what they should be is transformers' own
documented pipeline (processor with the image and the prompt, then the full model).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from core.engines.base import ModelLoadError
from core.engines.sam import SamEngine
from core.segment import SegmentError

WIDTH, HEIGHT = 120, 80  # not square, and not the tiny model's 64 px input
ONE_POINT = dict(points=[(30.0, 20.0, 1)])  # the best of three is not the first here
POINTS_AND_BOX = dict(points=[(60.0, 40.0, 1), (25.0, 15.0, 0)], box=(20.0, 10.0, 100.0, 70.0))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def engine(tiny_models) -> SamEngine:
    return SamEngine.load(tiny_models["sam"])


def _reference_mask(path, photo: Image.Image, points=(), box=None) -> np.ndarray:
    """The mask transformers' documented SAM pipeline gives: processor with the image, full model."""
    import torch
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(path).eval()
    processor = SamProcessor.from_pretrained(path)
    prompt = {}
    if points:
        prompt["input_points"] = [[[[x, y] for x, y, _ in points]]]
        prompt["input_labels"] = [[[label for _, _, label in points]]]
    if box is not None:
        prompt["input_boxes"] = [[list(box)]]
    inputs = processor(images=photo, return_tensors="pt", **prompt)
    multimask_output = len(points) == 1 and box is None
    with torch.no_grad():
        outputs = model(
            pixel_values=inputs["pixel_values"],
            input_points=inputs.get("input_points"),
            input_labels=inputs.get("input_labels"),
            input_boxes=inputs.get("input_boxes"),
            multimask_output=multimask_output,
        )
    (masks,) = processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    best = int(outputs.iou_scores[0, 0].argmax())
    return masks[0, best].numpy()


# --- selecting ------------------------------------------------------------------------------------


def test_one_point_gives_a_bool_mask_at_the_photo_size(engine, photo):
    mask, score = engine.segment(engine.embed(photo), **ONE_POINT)
    assert mask.shape == (HEIGHT, WIDTH)
    assert mask.dtype == np.bool_
    assert isinstance(score, float)


def test_points_and_a_box_give_a_bool_mask_at_the_photo_size(engine, photo):
    embedding = engine.embed(photo)
    for prompt in (POINTS_AND_BOX, dict(box=POINTS_AND_BOX["box"])):
        mask, score = engine.segment(embedding, **prompt)
        assert mask.shape == (HEIGHT, WIDTH)
        assert mask.dtype == np.bool_
        assert isinstance(score, float)


@pytest.mark.parametrize("prompt", [ONE_POINT, POINTS_AND_BOX], ids=["one point", "points and box"])
def test_masks_match_transformers_own_pipeline(tiny_models, engine, photo, prompt):
    """Same prompt scaling, mask choice and upscaling as the processor-with-image path."""
    mask, _ = engine.segment(engine.embed(photo), **prompt)
    reference = _reference_mask(tiny_models["sam"], photo, **prompt)
    assert reference.any() and not reference.all()  # a mask that can tell a wrong scaling apart
    assert np.mean(mask != reference) < 0.001


def test_the_mask_follows_the_point(engine, photo):
    embedding = engine.embed(photo)
    here, _ = engine.segment(embedding, [(60.0, 40.0, 1)])
    there, _ = engine.segment(embedding, [(90.0, 60.0, 1)])
    assert not np.array_equal(here, there)


def test_same_photo_and_prompt_give_the_same_mask(engine, photo):
    first, first_score = engine.segment(engine.embed(photo), **POINTS_AND_BOX)
    second, second_score = engine.segment(engine.embed(photo.copy()), **POINTS_AND_BOX)
    np.testing.assert_array_equal(first, second)
    assert first_score == second_score


def test_the_vision_encoder_runs_once_per_photo_not_per_click(tiny_models, photo):
    engine = SamEngine.load(tiny_models["sam"])
    encoder_runs = []
    engine.model.vision_encoder.register_forward_hook(lambda *_: encoder_runs.append(1))

    embedding = engine.embed(photo)
    assert len(encoder_runs) == 1
    for prompt in (ONE_POINT, POINTS_AND_BOX, dict(points=[(10.0, 70.0, 1), (60.0, 40.0, 1)])):
        engine.segment(embedding, **prompt)
    assert len(encoder_runs) == 1

    engine.embed(photo.rotate(180))
    assert len(encoder_runs) == 2


def test_a_prompt_without_points_or_box_is_refused(engine, photo):
    embedding = engine.embed(photo)
    with pytest.raises(SegmentError, match="point or a box"):
        engine.segment(embedding)
    with pytest.raises(SegmentError, match="label"):
        engine.segment(embedding, [(60.0, 40.0, -1)])


def test_bfloat16_embeddings_give_bool_masks(tiny_models, photo):
    import torch

    engine = SamEngine.load(tiny_models["sam"], dtype="bfloat16")
    embedding = engine.embed(photo)
    assert embedding.image_embeddings.dtype == torch.bfloat16
    mask, score = engine.segment(embedding, **POINTS_AND_BOX)
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.bool_
    assert isinstance(score, float)


@pytest.mark.gpu
def test_float16_on_cuda_gives_bool_masks_on_the_host(tiny_models, photo):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    engine = SamEngine.load(tiny_models["sam"], device="cuda", dtype="float16")
    embedding = engine.embed(photo)
    assert embedding.image_embeddings.is_cuda and embedding.image_embeddings.dtype == torch.float16
    mask, score = engine.segment(embedding, **ONE_POINT)
    assert isinstance(mask, np.ndarray) and mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.bool_
    assert isinstance(score, float)


# --- loading --------------------------------------------------------------------------------------


def test_load_keeps_the_model_id(tiny_models, engine):
    assert engine.model_id == str(tiny_models["sam"])


def _assert_load_error_names(path) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as caught:
        SamEngine.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "INPAINT_STUDIO_MODEL_SAM" in message
    return caught.value


def test_load_of_a_missing_directory_says_where_to_point_the_setting(tmp_path):
    _assert_load_error_names(tmp_path / "no-such-sam")


def test_load_of_a_garbage_config_fails_loudly(tiny_models, tmp_path):
    broken = shutil.copytree(tiny_models["sam"], tmp_path / "sam")
    (broken / "config.json").write_text("{ not json")
    _assert_load_error_names(broken)


def test_load_of_another_kind_of_model_fails_loudly(tiny_models):
    """transformers itself would load a CLIP directory as a SAM with random weights."""
    error = _assert_load_error_names(tiny_models["clip"])
    assert "'clip'" in str(error)


def test_load_of_a_checkpoint_missing_weights_fails_loudly(tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file

    partial = shutil.copytree(tiny_models["sam"], tmp_path / "sam")
    weights = load_file(partial / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if not name.startswith("mask_decoder.")}
    save_file(kept, partial / "model.safetensors", metadata={"format": "pt"})
    error = _assert_load_error_names(partial)
    assert "missing" in str(error)


def test_load_of_a_processor_for_another_input_size_fails_loudly(tiny_models, tmp_path):
    mismatched = shutil.copytree(tiny_models["sam"], tmp_path / "sam")
    settings_file = mismatched / "processor_config.json"
    settings = json.loads(settings_file.read_text())
    settings["image_processor"]["size"] = {"longest_edge": 128}
    settings_file.write_text(json.dumps(settings))
    error = _assert_load_error_names(mismatched)
    assert "128 px" in str(error)
