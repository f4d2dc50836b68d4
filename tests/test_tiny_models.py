"""The tiny random models load through the real library loaders and run.

Their outputs are noise, so these tests check only what does not depend on weights: the classes the
loaders pick, sizes, shapes, seeds, the tokenizer, the files that point the app at the models.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny_models import ENV_VARS, ROLES, SAM_IMAGE_SIZE, build_fastsam, build_sam, clip_vocab

ROOT = Path(__file__).resolve().parent.parent

INPAINT_PIPELINES = {
    "sd15_inpaint": "StableDiffusionInpaintPipeline",
    "sdxl_inpaint": "StableDiffusionXLInpaintPipeline",
}


def _photo(width: int, height: int) -> Image.Image:
    """A deterministic noisy RGB image."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _centre_mask(width: int, height: int) -> Image.Image:
    """An ``L`` mask, white (inpaint) over the middle half of the image."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return mask


def _load_inpaint_pipeline(path: Path):
    from diffusers import AutoPipelineForInpainting

    pipe = AutoPipelineForInpainting.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- the stack ---------------------------------------------------------------------------------------


def test_torchvision_nms_runs():
    """A torch/torchvision mismatch breaks this operator, and with it diffusers, transformers, ultralytics."""
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert torchvision.ops.nms(boxes, scores, iou_threshold=0.5).tolist() == [0, 2]


# --- the files that point the app at the models -----------------------------------------------------


def test_models_json_names_every_role(tiny_models):
    outdir = tiny_models["clip"].parent
    manifest = json.loads((outdir / "models.json").read_text())
    assert set(manifest) == set(ROLES)
    for role, path in manifest.items():
        assert Path(path).is_absolute() and Path(path).exists()
        assert Path(path) == tiny_models[role]


def test_models_env_names_every_role(tiny_models):
    outdir = tiny_models["clip"].parent
    settings = {}
    for line in (outdir / "models.env").read_text().splitlines():
        key, value = line.split("=", 1)
        (settings[key],) = shlex.split(value)
    assert settings == {ENV_VARS[role]: str(path) for role, path in tiny_models.items()}
    assert all(Path(path).exists() for path in settings.values())


def test_cli_reuses_complete_outputs_and_prints_env_lines(tiny_models):
    outdir = tiny_models["clip"].parent
    modified_before = {role: path.stat().st_mtime_ns for role, path in tiny_models.items()}
    done = subprocess.run(
        [sys.executable, "-m", "tests.tiny_models", str(outdir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout == (outdir / "models.env").read_text()
    assert {role: path.stat().st_mtime_ns for role, path in tiny_models.items()} == modified_before


def test_cli_without_outdir_prints_usage():
    done = subprocess.run(
        [sys.executable, "-m", "tests.tiny_models"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "usage" in done.stderr


# --- Stable Diffusion inpainting --------------------------------------------------------------------


@pytest.mark.parametrize("role", INPAINT_PIPELINES)
def test_inpaint_pipeline_loads_as_the_real_ones(tiny_models, role):
    pipe = _load_inpaint_pipeline(tiny_models[role])
    assert type(pipe).__name__ == INPAINT_PIPELINES[role]
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.in_channels == 9
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if role == "sdxl_inpaint" else [])
    for tokenizer in tokenizers:  # not the silent 2-token dummy a missing tokenizer can give
        assert tokenizer.vocab_size == len(clip_vocab())


@pytest.mark.parametrize("role", INPAINT_PIPELINES)
def test_inpaint_pipeline_returns_requested_size_and_repeats_with_a_seed(tiny_models, role):
    import torch

    pipe = _load_inpaint_pipeline(tiny_models[role])
    width, height = 96, 64  # not the 64 x 64 default, so the size must come from the request

    def inpaint(seed: int) -> Image.Image:
        return pipe(
            prompt="a red chair",
            image=_photo(width, height),
            mask_image=_centre_mask(width, height),
            width=width,
            height=height,
            num_inference_steps=2,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]

    first, second = inpaint(seed=7), inpaint(seed=7)
    assert first.size == (width, height)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


# --- FastSAM ----------------------------------------------------------------------------------------


def test_fastsam_segments_everything_at_image_size(tiny_models):
    from ultralytics import FastSAM

    model = FastSAM(tiny_models["fastsam"])
    assert model.task == "segment"
    height, width = 120, 160
    (result,) = model.predict(
        np.asarray(_photo(width, height)), imgsz=320, retina_masks=True, device="cpu", verbose=False
    )
    assert result.masks is not None
    masks = result.masks.data
    assert masks.shape[0] == len(result.boxes) > 0
    assert tuple(masks.shape[1:]) == (height, width)
    assert bool(masks.flatten(1).any(1).all())


def test_fastsam_prompts_select_among_the_masks(tiny_models):
    """A point keeps the masks that contain it; a box keeps the one mask that best fills it."""
    from ultralytics import FastSAM

    model = FastSAM(tiny_models["fastsam"])
    image = np.asarray(_photo(160, 120))
    settings = dict(imgsz=320, retina_masks=True, device="cpu", verbose=False)
    (by_point,) = model.predict(image, points=[[80, 60]], labels=[1], **settings)
    (by_box,) = model.predict(image, bboxes=[[40, 30, 120, 90]], **settings)
    assert len(by_point) > 0
    assert bool(by_point.masks.data[:, 60, 80].all())
    assert tuple(by_box.masks.data.shape) == (1, 120, 160)


def test_fastsam_checkpoint_passes_ultralytics_safe_load(tiny_models):
    """The checkpoint holds only allow-listed classes, so ``ULTRALYTICS_SAFE_LOAD=1`` loads it too."""
    from ultralytics.nn.tasks import SegmentationModel, torch_safe_load

    checkpoint, _ = torch_safe_load(tiny_models["fastsam"], safe_only=True)
    assert isinstance(checkpoint["model"], SegmentationModel)
    assert checkpoint["train_args"]["task"] == "segment"


def test_fastsam_build_is_deterministic(tiny_models, tmp_path):
    import torch

    rebuilt = build_fastsam(tmp_path)
    assert rebuilt.name == tiny_models["fastsam"].name
    first, second = (
        torch.load(path, weights_only=False)["model"].state_dict()
        for path in (tiny_models["fastsam"], rebuilt)
    )
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


# --- CLIP -------------------------------------------------------------------------------------------


def test_clip_scores_crops_against_a_text(tiny_models):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(tiny_models["clip"]).eval()
    processor = CLIPProcessor.from_pretrained(tiny_models["clip"])
    crops = [_photo(40, 30), _photo(20, 50), _photo(64, 64)]
    inputs = processor(text=["a red chair"], images=crops, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_text  # 1 text x 3 images
    probabilities = logits.softmax(dim=-1)[0]
    assert probabilities.shape == (3,)
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_clip_tokenizer_is_the_saved_one(tiny_models):
    from transformers import CLIPModel, CLIPProcessor

    tokenizer = CLIPProcessor.from_pretrained(tiny_models["clip"]).tokenizer
    assert tokenizer.vocab_size == len(clip_vocab())  # a missing one can come back as a 2-token dummy
    assert tokenizer.model_max_length == 77
    ids = tokenizer("a cat").input_ids
    assert ids[0] == tokenizer.bos_token_id == 0 and ids[-1] == tokenizer.eos_token_id == 1
    text_config = CLIPModel.from_pretrained(tiny_models["clip"]).config.text_config
    assert text_config.vocab_size >= tokenizer.vocab_size


# --- SAM --------------------------------------------------------------------------------------------


def test_sam_predicts_three_masks_at_image_size_for_a_point(tiny_models):
    import torch
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(tiny_models["sam"]).eval()
    processor = SamProcessor.from_pretrained(tiny_models["sam"])
    width, height = 120, 80  # resized to 64 x 43, then padded to the model's 64 x 64 input
    inputs = processor(images=_photo(width, height), input_points=[[[[60, 40]]]], return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (1, 3, SAM_IMAGE_SIZE, SAM_IMAGE_SIZE)
    assert inputs["reshaped_input_sizes"].tolist() == [[43, SAM_IMAGE_SIZE]]
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"])
    assert tuple(outputs.iou_scores.shape) == (1, 1, 3)
    (masks,) = processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    assert tuple(masks.shape) == (1, 3, height, width)
    assert masks.dtype == torch.bool
    assert bool(masks.flatten(1).any(1).all())  # noise, but not nothing


def test_sam_build_is_deterministic(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    rebuilt = build_sam(tmp_path)
    assert rebuilt.name == tiny_models["sam"].name
    first, second = (load_file(path / "model.safetensors") for path in (tiny_models["sam"], rebuilt))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
