"""Sam3Engine with the tiny random SAM 3: prompts reaching the model, ranked instances at the photo's
size, the vision features reused across prompts, loading (directly and through the model manager)
and its errors.

The tiny model's masks and scores are noise (every score is about 0.25, below the default threshold
of 0.5, so the tests pass ``threshold=0.0``); the reference for what they should be is transformers'
own documented pipeline (processor with the image and the prompt, the full model, the processor's
instance post-processing).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.catalog import BUILTIN
from core.config import Settings
from core.engines.base import ModelLoadError
from core.engines.sam3 import Instance, Sam3Embedding, Sam3Engine
from core.errors import ModelUnavailable
from core.manager import ModelManager
from core.segment import SegmentError
from tests.helpers import CPU
from tests.tiny_sam3 import SAM3_QUERIES, build_sam3

WIDTH, HEIGHT = 120, 80  # not square, and not the tiny model's 64 px input
POSITIVE, NEGATIVE = (10.0, 10.0, 50.0, 40.0), (60.0, 20.0, 100.0, 70.0)
# The same boxes as Sam3Processor hands them to the model: (centre x, centre y, width, height) as
# fractions of the photo's width and height.
POSITIVE_SCALED = [30 / WIDTH, 25 / HEIGHT, 40 / WIDTH, 30 / HEIGHT]
NEGATIVE_SCALED = [80 / WIDTH, 45 / HEIGHT, 40 / WIDTH, 50 / HEIGHT]
EVERYTHING = dict(threshold=0.0)

PROMPTS = {
    "text": dict(text="window"),
    "boxes": dict(boxes=[(POSITIVE, 1), (NEGATIVE, 0)]),
    "text and a box": dict(text="logo", boxes=[(POSITIVE, 1)]),
}


@pytest.fixture(scope="module")
def sam3_path(tmp_path_factory) -> Path:
    return build_sam3(tmp_path_factory.mktemp("tiny-sam3"))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def engine(sam3_path) -> Sam3Engine:
    return Sam3Engine.load(sam3_path)


@pytest.fixture(scope="module")
def embedding(engine, photo) -> Sam3Embedding:
    return engine.embed(photo)


def _reference(path, photo: Image.Image, text: str = "", boxes=()) -> list[Instance]:
    """The instances transformers' documented SAM 3 pipeline gives, ranked by score."""
    import torch
    from transformers import Sam3Model, Sam3Processor

    model = Sam3Model.from_pretrained(path).eval()
    processor = Sam3Processor.from_pretrained(path)
    prompt = {}
    if text:
        prompt["text"] = text
    if boxes:
        prompt["input_boxes"] = [[list(box) for box, _ in boxes]]
        prompt["input_boxes_labels"] = [[label for _, label in boxes]]
    inputs = processor(images=photo, return_tensors="pt", **prompt)
    with torch.no_grad():
        outputs = model(**inputs)
    (result,) = processor.post_process_instance_segmentation(
        outputs, threshold=0.0, mask_threshold=0.5, target_sizes=[photo.size[::-1]]
    )
    order = torch.argsort(-result["scores"], stable=True)
    return [
        Instance(mask.bool().numpy(), float(score), tuple(box.tolist()))
        for mask, score, box in zip(result["masks"][order], result["scores"][order], result["boxes"][order])
    ]


def _clamped(box) -> tuple[float, ...]:
    x0, y0, x1, y1 = box
    return (min(max(x0, 0), WIDTH), min(max(y0, 0), HEIGHT), min(max(x1, 0), WIDTH), min(max(y1, 0), HEIGHT))


class ForwardSpy:
    """Records the keyword arguments of every ``Sam3Model`` forward call while active."""

    def __init__(self, model) -> None:
        self.model = model
        self.calls: list[dict] = []

    def __enter__(self) -> ForwardSpy:
        self.handle = self.model.register_forward_pre_hook(
            lambda _module, _args, kwargs: self.calls.append(dict(kwargs)), with_kwargs=True
        )
        return self

    def __exit__(self, *_) -> None:
        self.handle.remove()


# --- finding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_instances_are_ranked_masks_at_the_photo_size(engine, embedding, prompt):
    instances = engine.find(embedding, **prompt, **EVERYTHING)
    assert len(instances) == SAM3_QUERIES  # threshold 0 keeps every query
    scores = [instance.score for instance in instances]
    assert scores == sorted(scores, reverse=True)
    for instance in instances:
        assert isinstance(instance, Instance)
        assert instance.mask.shape == (HEIGHT, WIDTH) and instance.mask.dtype == np.bool_
        assert isinstance(instance.score, float) and 0.0 <= instance.score <= 1.0
        x0, y0, x1, y1 = instance.box
        assert 0 <= x0 <= x1 <= WIDTH and 0 <= y0 <= y1 <= HEIGHT
    assert len({instance.mask.tobytes() for instance in instances}) > 1  # not one mask repeated


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_instances_match_transformers_own_pipeline(sam3_path, engine, embedding, photo, prompt):
    """Same tokens, box scaling, scores, mask upscaling and boxes as the processor-with-image path
    on the full model, though the engine reuses the photo's vision features."""
    instances = engine.find(embedding, **prompt, **EVERYTHING)
    reference = _reference(sam3_path, photo, **prompt)
    assert [i.score for i in instances] == pytest.approx([r.score for r in reference], abs=1e-6)
    for mine, theirs in zip(instances, reference, strict=True):
        assert theirs.mask.any() and not theirs.mask.all()  # masks that can tell a wrong scaling apart
        assert np.mean(mine.mask != theirs.mask) < 0.001
        assert mine.box == pytest.approx(_clamped(theirs.box), abs=1e-4)


def test_the_text_reaches_the_model(engine, embedding):
    tokenizer = engine.processor.tokenizer
    with ForwardSpy(engine.model) as spy:
        windows = engine.find(embedding, "window", **EVERYTHING)
        logos = engine.find(embedding, "logo", **EVERYTHING)
    window_ids, logo_ids = (call["input_ids"][0].tolist() for call in spy.calls)
    assert window_ids == tokenizer("window", padding="max_length", max_length=32)["input_ids"]
    assert logo_ids == tokenizer("logo", padding="max_length", max_length=32)["input_ids"]
    assert all("input_boxes" not in call and "pixel_values" not in call for call in spy.calls)
    assert [i.score for i in windows] != [i.score for i in logos]


def test_the_boxes_reach_the_model_scaled_as_the_processor_scales_them(engine, embedding):
    with ForwardSpy(engine.model) as spy:
        engine.find(embedding, boxes=[(POSITIVE, 1), (NEGATIVE, 0)], **EVERYTHING)
        engine.find(embedding, "window", boxes=[(NEGATIVE, 1)], **EVERYTHING)
    boxes_only, with_text = spy.calls
    np.testing.assert_allclose(
        boxes_only["input_boxes"][0].numpy(), [POSITIVE_SCALED, NEGATIVE_SCALED], atol=1e-6
    )
    assert boxes_only["input_boxes_labels"].tolist() == [[1, 0]]
    visual = engine.processor.tokenizer("visual", padding="max_length", max_length=32)["input_ids"]
    assert boxes_only["input_ids"][0].tolist() == visual  # SAM 3's placeholder text for boxes alone
    np.testing.assert_allclose(with_text["input_boxes"][0].numpy(), [NEGATIVE_SCALED], atol=1e-6)
    assert with_text["input_boxes_labels"].tolist() == [[1]]


def test_different_boxes_and_labels_give_different_instances(engine, embedding):
    def scores(boxes):
        return [instance.score for instance in engine.find(embedding, "window", boxes, **EVERYTHING)]

    here, there, excluded = scores([(POSITIVE, 1)]), scores([(NEGATIVE, 1)]), scores([(POSITIVE, 0)])
    assert here != there and here != excluded and here != scores([])


def test_corners_may_come_in_any_order(engine, embedding):
    x0, y0, x1, y1 = POSITIVE
    forward = engine.find(embedding, boxes=[(POSITIVE, 1)], **EVERYTHING)
    backward = engine.find(embedding, boxes=[((x1, y1, x0, y0), 1)], **EVERYTHING)
    assert [i.score for i in forward] == [i.score for i in backward]


def test_threshold_and_limit_keep_the_best(engine, embedding):
    everything = engine.find(embedding, "window", **EVERYTHING)
    middle = everything[2].score
    above = engine.find(embedding, "window", threshold=middle)
    assert [i.score for i in above] == [i.score for i in everything[:2]]
    top = engine.find(embedding, "window", limit=3, **EVERYTHING)
    assert [i.score for i in top] == [i.score for i in everything[:3]]
    # Upsampled in a batch of another size: a pixel at the mask threshold may round the other way.
    assert all((a.mask == b.mask).mean() > 0.999 for a, b in zip(top, everything))
    assert engine.find(embedding, "window", limit=0, **EVERYTHING) == []


def test_nothing_found_is_an_empty_list(engine, embedding):
    assert engine.find(embedding, "window", threshold=1.0) == []
    assert engine.find(embedding, "window") == []  # the untrained model scores every query about 0.25


def test_a_lower_mask_threshold_gives_larger_masks(engine, embedding):
    strict = engine.find(embedding, "window", mask_threshold=0.9, **EVERYTHING)
    loose = engine.find(embedding, "window", mask_threshold=0.1, **EVERYTHING)
    assert sum(i.mask.sum() for i in loose) > sum(i.mask.sum() for i in strict)


def test_same_photo_and_prompt_give_the_same_instances(engine, photo):
    first = engine.find(engine.embed(photo), **PROMPTS["text and a box"], **EVERYTHING)
    embedding = engine.embed(photo.copy())
    second = engine.find(embedding, **PROMPTS["text and a box"], **EVERYTHING)
    again = engine.find(embedding, **PROMPTS["text and a box"], **EVERYTHING)  # the features are not changed
    for a, b, c in zip(first, second, again, strict=True):
        assert a.score == b.score == c.score and a.box == b.box == c.box
        assert np.array_equal(a.mask, b.mask) and np.array_equal(b.mask, c.mask)


def test_the_vision_encoder_runs_once_per_photo_not_per_prompt(sam3_path, photo):
    engine = Sam3Engine.load(sam3_path)
    encoder_runs = []
    engine.model.vision_encoder.register_forward_hook(lambda *_: encoder_runs.append(1))

    embedding = engine.embed(photo)
    assert len(encoder_runs) == 1
    assert embedding.original_size == (HEIGHT, WIDTH)
    for prompt in (*PROMPTS.values(), dict(text="door")):
        engine.find(embedding, **prompt, **EVERYTHING)
    assert len(encoder_runs) == 1

    engine.embed(photo.rotate(180))
    assert len(encoder_runs) == 2


def test_a_prompt_without_text_or_boxes_is_refused(engine, embedding):
    for text in ("", "   "):
        with pytest.raises(SegmentError, match="text or a box"):
            engine.find(embedding, text)


@pytest.mark.parametrize(
    ("boxes", "match"),
    [([(POSITIVE, 2)], "label"), ([((10.0, 10.0, 10.0, 40.0), 1)], "no area")],
    ids=["label", "flat box"],
)
def test_a_bad_box_is_refused(engine, embedding, boxes, match):
    with pytest.raises(SegmentError, match=match):
        engine.find(embedding, "window", boxes)


def test_a_text_too_long_is_refused(engine, embedding):
    with pytest.raises(SegmentError, match="too long"):
        engine.find(embedding, "a very long description of the thing to find " * 3)


def test_bfloat16_features_give_bool_masks(sam3_path, photo):
    import torch

    engine = Sam3Engine.load(sam3_path, dtype="bfloat16")
    embedding = engine.embed(photo)
    assert embedding.vision_embeds.fpn_hidden_states[0].dtype == torch.bfloat16
    instances = engine.find(embedding, **PROMPTS["text and a box"], **EVERYTHING)
    assert len(instances) == SAM3_QUERIES
    assert all(i.mask.shape == (HEIGHT, WIDTH) and i.mask.dtype == np.bool_ for i in instances)


@pytest.mark.gpu
def test_float16_on_cuda_gives_bool_masks_on_the_host(sam3_path, photo):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    engine = Sam3Engine.load(sam3_path, device="cuda", dtype="float16")
    embedding = engine.embed(photo)
    assert embedding.vision_embeds.fpn_hidden_states[0].is_cuda
    instances = engine.find(embedding, **PROMPTS["text and a box"], **EVERYTHING)
    assert len(instances) == SAM3_QUERIES
    assert all(isinstance(i.mask, np.ndarray) and i.mask.shape == (HEIGHT, WIDTH) for i in instances)


# --- loading --------------------------------------------------------------------------------------


def test_load_keeps_the_model_id_and_the_catalog_entry(sam3_path, engine):
    assert engine.model_id == str(sam3_path)
    assert engine.entry is BUILTIN.engines["sam3"]


def test_the_video_layout_of_facebook_sam3_loads_its_detector(sam3_path, engine, embedding, photo, tmp_path):
    """facebook/sam3 holds the video model (config ``sam3_video``, the image model's weights under
    ``detector_model.``); Sam3Model loads its detector."""
    from safetensors.torch import load_file, save_file
    from transformers import Sam3VideoConfig

    video = shutil.copytree(sam3_path, tmp_path / "sam3")
    detector = json.loads((sam3_path / "config.json").read_text())
    Sam3VideoConfig(detector_config=detector).save_pretrained(video)
    weights = load_file(sam3_path / "model.safetensors")
    save_file({f"detector_model.{name}": tensor for name, tensor in weights.items()},
              video / "model.safetensors", metadata={"format": "pt"})
    assert json.loads((video / "config.json").read_text())["model_type"] == "sam3_video"

    loaded = Sam3Engine.load(video)
    expected = engine.find(embedding, "window", **EVERYTHING)
    got = loaded.find(loaded.embed(photo), "window", **EVERYTHING)
    assert [i.score for i in got] == [i.score for i in expected]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(got, expected, strict=True))


def _assert_load_error_names(path) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as caught:
        Sam3Engine.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "INPAINT_STUDIO_MODEL_SAM3" in message
    return caught.value


def test_load_of_a_missing_directory_says_where_to_point_the_setting(tmp_path):
    _assert_load_error_names(tmp_path / "no-such-sam3")


def test_load_of_an_empty_directory_fails_loudly(tmp_path):
    empty = tmp_path / "sam3"
    empty.mkdir()
    _assert_load_error_names(empty)


def test_load_of_a_sam_v1_fails_loudly(tmp_path):
    """transformers itself would load a SAM directory as a SAM 3 with random weights."""
    from tests.tiny_models import build_sam

    error = _assert_load_error_names(build_sam(tmp_path))
    assert "'sam'" in str(error)


def test_load_of_a_checkpoint_missing_weights_fails_loudly(sam3_path, tmp_path):
    from safetensors.torch import load_file, save_file

    partial = shutil.copytree(sam3_path, tmp_path / "sam3")
    weights = load_file(partial / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if not name.startswith("mask_decoder.")}
    save_file(kept, partial / "model.safetensors", metadata={"format": "pt"})
    error = _assert_load_error_names(partial)
    assert "missing" in str(error)


def test_load_of_a_processor_for_another_input_size_fails_loudly(sam3_path, tmp_path):
    mismatched = shutil.copytree(sam3_path, tmp_path / "sam3")
    settings_file = mismatched / "processor_config.json"
    settings = json.loads(settings_file.read_text())
    settings["image_processor"]["size"] = {"height": 128, "width": 128}
    settings_file.write_text(json.dumps(settings))
    error = _assert_load_error_names(mismatched)
    assert "128x128 px" in str(error)


def test_load_without_tokenizer_files_fails_loudly(sam3_path, tmp_path):
    bare = shutil.copytree(sam3_path, tmp_path / "sam3")
    (bare / "tokenizer.json").unlink()
    error = _assert_load_error_names(bare)
    assert "tokenizer" in str(error)


# --- through the model manager --------------------------------------------------------------------


def _manager(path) -> ModelManager:
    settings = Settings(
        device="cpu", models_dir=Path("/nonexistent/inpaint-studio-models"), models={"sam3": str(path)}
    )
    return ModelManager(settings, CPU, options={"warm_up": False})


def test_the_manager_loads_the_catalog_entry(sam3_path, photo):
    manager = _manager(sam3_path)
    assert manager.has("sam3")
    with manager.use("sam3") as engine:
        assert isinstance(engine, Sam3Engine)
        assert engine.entry is manager.catalog.engines["sam3"]
        assert engine.model_id == str(sam3_path)
        instances = engine.find(engine.embed(photo), "window", limit=2, **EVERYTHING)
    assert len(instances) == 2 and instances[0].mask.shape == (HEIGHT, WIDTH)
    assert manager.load("sam3") is engine


def test_the_manager_reports_a_wrong_folder(tmp_path):
    empty = tmp_path / "sam3"
    empty.mkdir()
    with pytest.raises(ModelUnavailable) as caught:
        _manager(empty).load("sam3")
    assert str(empty) in str(caught.value) and "INPAINT_STUDIO_MODEL_SAM3" in str(caught.value)
