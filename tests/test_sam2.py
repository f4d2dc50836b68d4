"""Sam2Engine with the tiny random SAM 2.1: sizes, prompts, proposals, the embedding reused across
clicks, loading directly and through the model manager, load errors; and SamEngine's proposals.

The tiny models' masks are noise; the reference for what they should be is transformers' own
documented pipeline (processor with the image and the prompt, the full model on the pixels, then
``post_process_masks``).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from core.config import Settings
from core.engines.base import ModelLoadError
from core.engines.sam import SamEngine
from core.engines.sam2 import Sam2Embedding, Sam2Engine
from core.errors import ModelUnavailable
from core.segment import SegmentError
from tests.helpers import manager_with
from tests.tiny_models import build_sam
from tests.tiny_sam2 import SAM2_IMAGE_SIZE, build_sam2, build_sam2_video

WIDTH, HEIGHT = 120, 80  # not square, and not the tiny model's 64 px input
ONE_POINT = dict(points=[(30.0, 20.0, 1)])  # the best of three is not the first here
POINTS_AND_BOX = dict(points=[(60.0, 40.0, 1), (25.0, 15.0, 0)], box=(20.0, 10.0, 100.0, 70.0))
BOX = dict(box=(20.0, 10.0, 100.0, 70.0))
TWO_POINTS = dict(points=[(60.0, 40.0, 1), (90.0, 60.0, 1)])
PROMPTS = [ONE_POINT, POINTS_AND_BOX, BOX, TWO_POINTS]
PROMPT_IDS = ["one point", "points and box", "box", "two points"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("tiny-sam2")
    return {"sam2": build_sam2(folder), "sam2_video": build_sam2_video(folder), "sam": build_sam(folder)}


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def engine(models) -> Sam2Engine:
    return Sam2Engine.load(models["sam2"])


def _reference(path, photo: Image.Image, points=(), box=None, multimask_output=None):
    """Masks and IoUs of transformers' documented SAM 2 pipeline: the processor with the image and
    the prompt, the full model on the pixels, ``post_process_masks`` to the photo's size."""
    import torch
    from transformers import Sam2Model, Sam2Processor

    model = Sam2Model.from_pretrained(path).eval()
    processor = Sam2Processor.from_pretrained(path)
    prompt = {}
    if points:
        prompt["input_points"] = [[[[x, y] for x, y, _ in points]]]
        prompt["input_labels"] = [[[label for _, _, label in points]]]
    if box is not None:
        prompt["input_boxes"] = [[list(box)]]
    inputs = processor(images=photo, return_tensors="pt", **prompt)
    if multimask_output is None:
        multimask_output = len(points) == 1 and box is None
    with torch.no_grad():
        outputs = model(
            pixel_values=inputs["pixel_values"],
            input_points=inputs.get("input_points"),
            input_labels=inputs.get("input_labels"),
            input_boxes=inputs.get("input_boxes"),
            multimask_output=multimask_output,
        )
    (masks,) = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])
    return masks[0].numpy(), outputs.iou_scores[0, 0].numpy()


def _reference_mask(path, photo, points=(), box=None) -> np.ndarray:
    """The documented pipeline's mask for a click: the best of three for a lone point."""
    masks, scores = _reference(path, photo, points, box)
    return masks[int(scores.argmax())]


def _assert_same_mask(mask: np.ndarray, reference: np.ndarray) -> None:
    assert reference.any() and not reference.all()  # a mask that can tell a wrong scaling apart
    assert np.mean(mask != reference) < 0.001


# --- selecting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS, ids=PROMPT_IDS)
def test_prompts_give_a_bool_mask_at_the_photo_size(engine, photo, prompt):
    mask, score = engine.segment(engine.embed(photo), **prompt)
    assert mask.shape == (HEIGHT, WIDTH)
    assert mask.dtype == np.bool_
    assert isinstance(score, float) and 0.0 <= score <= 1.0  # SAM 2's IoU head ends in a sigmoid


def test_the_embedding_holds_the_three_feature_levels(engine, photo):
    embedding = engine.embed(photo)
    assert isinstance(embedding, Sam2Embedding)
    assert embedding.original_size == (HEIGHT, WIDTH)
    assert embedding.input_size == SAM2_IMAGE_SIZE
    # a square without padding: each axis scales on its own
    assert embedding.input_scale == (SAM2_IMAGE_SIZE / WIDTH, SAM2_IMAGE_SIZE / HEIGHT)
    sides = [level.shape[-1] for level in embedding.image_embeddings]
    assert sides == [16, 8, 4]  # 1/4, 1/8 and 1/16 of the input, finest first


@pytest.mark.parametrize("prompt", PROMPTS, ids=PROMPT_IDS)
def test_masks_match_transformers_own_pipeline(models, engine, photo, prompt):
    """Precomputed embeddings + decoder give the full model's mask: same prompt scaling, mask
    choice and resizing to the photo as the processor-with-image path."""
    mask, score = engine.segment(engine.embed(photo), **prompt)
    masks, scores = _reference(models["sam2"], photo, **prompt)
    best = int(scores.argmax())
    _assert_same_mask(mask, masks[best])
    assert score == pytest.approx(float(scores[best]), abs=1e-5)


def test_a_lone_point_keeps_the_best_of_three_not_the_first(models, photo):
    _, scores = _reference(models["sam2"], photo, **ONE_POINT)
    assert len(scores) == 3 and int(scores.argmax()) != 0  # the test prompt is one that tells them apart


def test_the_mask_follows_the_point(engine, photo):
    embedding = engine.embed(photo)
    here, _ = engine.segment(embedding, [(60.0, 40.0, 1)])
    there, _ = engine.segment(embedding, [(100.0, 10.0, 1)])
    assert not np.array_equal(here, there)


def test_same_photo_and_prompt_give_the_same_mask(engine, photo):
    first, first_score = engine.segment(engine.embed(photo), **POINTS_AND_BOX)
    second, second_score = engine.segment(engine.embed(photo.copy()), **POINTS_AND_BOX)
    np.testing.assert_array_equal(first, second)
    assert first_score == second_score


def test_the_vision_encoder_runs_once_per_photo_not_per_click(models, photo):
    engine = Sam2Engine.load(models["sam2"])
    encoder_runs = []
    engine.model.vision_encoder.register_forward_hook(lambda *_: encoder_runs.append(1))

    embedding = engine.embed(photo)
    assert len(encoder_runs) == 1
    for prompt in PROMPTS:
        engine.segment(embedding, **prompt)
        engine.proposals(embedding, **prompt)
    assert len(encoder_runs) == 1

    engine.embed(photo.rotate(180))
    assert len(encoder_runs) == 2


def test_a_prompt_without_points_or_box_is_refused(engine, photo):
    embedding = engine.embed(photo)
    with pytest.raises(SegmentError, match="point or a box"):
        engine.segment(embedding)
    with pytest.raises(SegmentError, match="point or a box"):
        engine.proposals(embedding)


@pytest.mark.parametrize("label", [-1, 2, 0.5, -10])
def test_labels_other_than_0_or_1_are_refused(engine, photo, label):
    """-1 (SAM's "not a point") and -10 (the processor's padding) included: they would be obeyed silently."""
    embedding = engine.embed(photo)
    with pytest.raises(SegmentError, match="label"):
        engine.segment(embedding, [(60.0, 40.0, 1), (30.0, 20.0, label)])
    with pytest.raises(SegmentError, match="label"):
        engine.proposals(embedding, [(60.0, 40.0, label)])


def test_bfloat16_embeddings_give_bool_masks(models, photo):
    import torch

    engine = Sam2Engine.load(models["sam2"], dtype="bfloat16")
    embedding = engine.embed(photo)
    assert all(level.dtype == torch.bfloat16 for level in embedding.image_embeddings)
    mask, score = engine.segment(embedding, **POINTS_AND_BOX)
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.bool_
    assert isinstance(score, float)
    assert len(engine.proposals(embedding, **ONE_POINT)) == 3


@pytest.mark.gpu
def test_cuda_gives_bool_masks_on_the_host(models, photo):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for dtype in ("bfloat16", "float16"):
        engine = Sam2Engine.load(models["sam2"], device="cuda", dtype=dtype)
        embedding = engine.embed(photo)
        levels = embedding.image_embeddings
        assert all(level.is_cuda and level.dtype == getattr(torch, dtype) for level in levels)
        mask, score = engine.segment(embedding, **ONE_POINT)
        assert isinstance(mask, np.ndarray) and mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.bool_
        assert isinstance(score, float)
        for proposal, proposal_score in engine.proposals(embedding, **POINTS_AND_BOX):
            assert isinstance(proposal, np.ndarray) and proposal.shape == (HEIGHT, WIDTH)
            assert isinstance(proposal_score, float)
    cpu = Sam2Engine.load(models["sam2"])
    gpu = Sam2Engine.load(models["sam2"], device="cuda")
    on_cpu, _ = cpu.segment(cpu.embed(photo), **POINTS_AND_BOX)
    on_gpu, _ = gpu.segment(gpu.embed(photo), **POINTS_AND_BOX)
    assert np.mean(on_cpu != on_gpu) < 0.01


# --- proposals (the Bigger / Smaller steps) ---------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS, ids=PROMPT_IDS)
def test_proposals_are_the_decoders_three_masks_smallest_first(models, engine, photo, prompt):
    proposals = engine.proposals(engine.embed(photo), **prompt)
    assert len(proposals) == 3
    for mask, score in proposals:
        assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.bool_
        assert isinstance(score, float) and 0.0 <= score <= 1.0
    areas = [int(mask.sum()) for mask, _ in proposals]
    assert areas == sorted(areas)

    masks, scores = _reference(models["sam2"], photo, multimask_output=True, **prompt)
    order = np.argsort([mask.sum() for mask in masks], kind="stable")
    assert list(order) != [0, 1, 2]  # the decoder's own order is not by area here: the sort is tested
    for (mask, score), index in zip(proposals, order):
        _assert_same_mask(mask, masks[index])
        assert score == pytest.approx(float(scores[index]), abs=1e-5)


def test_a_lone_points_mask_is_its_best_proposal(engine, photo):
    embedding = engine.embed(photo)
    mask, score = engine.segment(embedding, **ONE_POINT)
    best_mask, best_score = max(engine.proposals(embedding, **ONE_POINT), key=lambda proposal: proposal[1])
    np.testing.assert_array_equal(mask, best_mask)
    assert score == best_score


def test_sam_proposals_are_its_three_masks_smallest_first(models, photo):
    """SamEngine (SAM 1) offers the same proposals, from its own documented pipeline."""
    import torch
    from transformers import SamModel, SamProcessor

    sam = SamEngine.load(models["sam"])
    embedding = sam.embed(photo)
    proposals = sam.proposals(embedding, **POINTS_AND_BOX)
    assert len(proposals) == 3
    areas = [int(mask.sum()) for mask, _ in proposals]
    assert areas == sorted(areas)
    assert all(mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.bool_ for mask, _ in proposals)

    model = SamModel.from_pretrained(models["sam"]).eval()
    processor = SamProcessor.from_pretrained(models["sam"])
    inputs = processor(images=photo, return_tensors="pt", input_points=[[[[60.0, 40.0], [25.0, 15.0]]]],
                       input_labels=[[[1, 0]]], input_boxes=[[list(POINTS_AND_BOX["box"])]])
    with torch.no_grad():
        outputs = model(**inputs, multimask_output=True)
    (masks,) = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"],
                                            inputs["reshaped_input_sizes"])
    masks, scores = masks[0].numpy(), outputs.iou_scores[0, 0].numpy()
    order = np.argsort([mask.sum() for mask in masks], kind="stable")
    for (mask, score), index in zip(proposals, order):
        _assert_same_mask(mask, masks[index])
        assert score == pytest.approx(float(scores[index]), abs=1e-5)

    mask, score = sam.segment(embedding, **ONE_POINT)
    best_mask, best_score = max(sam.proposals(embedding, **ONE_POINT), key=lambda proposal: proposal[1])
    np.testing.assert_array_equal(mask, best_mask)
    assert score == best_score
    with pytest.raises(SegmentError, match="label"):
        sam.proposals(embedding, [(60.0, 40.0, 2)])


# --- loading --------------------------------------------------------------------------------------


def test_load_keeps_the_model_id_and_the_catalog_entry(models, engine):
    assert engine.model_id == str(models["sam2"])
    assert engine.name == "sam2" and engine.entry.kind == "selection"
    assert Sam2Engine.load(models["sam2"], role="sam2_large").name == "sam2_large"


@pytest.mark.parametrize("role", ["sam2", "sam2_large"])
def test_the_model_manager_loads_each_size_through_the_catalog(models, photo, tmp_path, role):
    settings = Settings(device="cpu", models_dir=tmp_path / "models", models={role: str(models["sam2"])})
    manager = manager_with(settings=settings)
    assert manager.has(role)
    with manager.use(role) as engine:
        assert isinstance(engine, Sam2Engine)
        assert engine.name == role and engine.model_id == str(models["sam2"])
        mask, _ = engine.segment(engine.embed(photo), **ONE_POINT)
    assert mask.shape == (HEIGHT, WIDTH)


def test_the_hubs_video_checkpoint_loads_as_the_same_image_model(models, engine, photo):
    """facebook/sam2.1-* on the hub are Sam2VideoModel checkpoints with a Sam2VideoProcessor's files."""
    import torch

    from_hub_layout = Sam2Engine.load(models["sam2_video"])
    assert json.loads((models["sam2_video"] / "config.json").read_text())["model_type"] == "sam2_video"
    assert from_hub_layout.model.config.model_type == "sam2"
    assert from_hub_layout.processor.target_size == SAM2_IMAGE_SIZE
    reference = engine.model.state_dict()
    weights = from_hub_layout.model.state_dict()
    assert weights.keys() == reference.keys()
    assert all(torch.equal(tensor, reference[name]) for name, tensor in weights.items())

    embedding, hub_embedding = engine.embed(photo), from_hub_layout.embed(photo)
    for prompt in PROMPTS:
        mask, score = engine.segment(embedding, **prompt)
        hub_mask, hub_score = from_hub_layout.segment(hub_embedding, **prompt)
        np.testing.assert_array_equal(mask, hub_mask)
        assert score == hub_score
    for (mask, score), (hub_mask, hub_score) in zip(engine.proposals(embedding, **ONE_POINT),
                                                    from_hub_layout.proposals(hub_embedding, **ONE_POINT)):
        np.testing.assert_array_equal(mask, hub_mask)
        assert score == hub_score


def test_the_model_manager_loads_the_hubs_video_checkpoint(models, photo, tmp_path):
    settings = Settings(device="cpu", models_dir=tmp_path / "models",
                        models={"sam2": str(models["sam2_video"])})
    with manager_with(settings=settings).use("sam2") as engine:
        mask, _ = engine.segment(engine.embed(photo), **POINTS_AND_BOX)
    assert isinstance(engine, Sam2Engine) and mask.shape == (HEIGHT, WIDTH)


def test_the_model_manager_reports_a_sam_folder_given_for_sam2(models, tmp_path):
    settings = Settings(device="cpu", models_dir=tmp_path / "models",
                        models={"sam2_large": str(models["sam"])})
    with pytest.raises(ModelUnavailable) as caught:
        manager_with(settings=settings).load("sam2_large")
    message = str(caught.value)
    assert str(models["sam"]) in message and "INPAINT_STUDIO_MODEL_SAM2_LARGE" in message
    assert "facebook/sam2.1-hiera-large" in message


def _assert_load_error_names(path, role: str = "sam2") -> ModelLoadError:
    with pytest.raises(ModelLoadError) as caught:
        Sam2Engine.load(path, role=role)
    message = str(caught.value)
    assert str(path) in message
    assert f"INPAINT_STUDIO_MODEL_{role.upper()}" in message
    return caught.value


def test_load_of_a_missing_directory_says_where_to_point_the_setting(tmp_path):
    error = _assert_load_error_names(tmp_path / "no-such-sam2")
    assert "facebook/sam2.1-hiera-small" in str(error)


def test_load_of_an_empty_directory_fails_loudly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_load_error_names(empty)


def test_load_of_a_sam_1_folder_fails_loudly(models):
    """transformers itself would load a SAM 1 directory as a SAM 2 with random weights."""
    error = _assert_load_error_names(models["sam"])
    assert "'sam'" in str(error) and "not a SAM 2" in str(error)


def test_load_errors_name_the_large_models_setting(models):
    error = _assert_load_error_names(models["sam"], role="sam2_large")
    assert "facebook/sam2.1-hiera-large" in str(error)


def test_load_of_a_garbage_config_fails_loudly(models, tmp_path):
    broken = shutil.copytree(models["sam2"], tmp_path / "sam2")
    (broken / "config.json").write_text("{ not json")
    _assert_load_error_names(broken)


@pytest.mark.parametrize("layout", ["sam2", "sam2_video"])
def test_load_of_a_checkpoint_missing_weights_fails_loudly(models, tmp_path, layout):
    from safetensors.torch import load_file, save_file

    partial = shutil.copytree(models[layout], tmp_path / layout)
    weights = load_file(partial / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if not name.startswith("mask_decoder.")}
    save_file(kept, partial / "model.safetensors", metadata={"format": "pt"})
    error = _assert_load_error_names(partial)
    assert "missing" in str(error)


def test_load_of_a_folder_without_weights_fails_loudly(models, tmp_path):
    partial = shutil.copytree(models["sam2"], tmp_path / "sam2")
    (partial / "model.safetensors").unlink()
    _assert_load_error_names(partial)


@pytest.mark.parametrize("setting", ["size", "target_size"])
def test_load_of_a_processor_for_another_input_size_fails_loudly(models, tmp_path, setting):
    mismatched = shutil.copytree(models["sam2"], tmp_path / "sam2")
    settings_file = mismatched / "processor_config.json"
    settings = json.loads(settings_file.read_text())
    if setting == "size":
        settings["image_processor"]["size"] = {"height": 128, "width": 128}
    else:
        settings["target_size"] = 128
    settings_file.write_text(json.dumps(settings))
    error = _assert_load_error_names(mismatched)
    assert "128" in str(error) and f"{SAM2_IMAGE_SIZE} px inputs" in str(error)
