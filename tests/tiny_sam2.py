"""A tiny random SAM 2.1 in the real on-disk formats, for tests that go through the real loaders.

``build_sam2(outdir)`` writes ``outdir/sam2/``: a ``Sam2Model`` and its ``Sam2Processor`` saved with
``save_pretrained`` (config.json with ``model_type: sam2``, model.safetensors, processor_config.json).

``build_sam2_video(outdir)`` writes ``outdir/sam2_video/`` in the layout of the hub's
``facebook/sam2.1-hiera-small`` and ``-large``, which hold the *video* model: config.json with
``model_type: sam2_video``, a ``Sam2VideoModel``'s model.safetensors (the image model's weights plus
the memory modules), and the processor as separate files (preprocessor_config.json naming the
legacy ``Sam2ImageProcessorFast``, video_preprocessor_config.json, a flat processor_config.json
naming ``Sam2VideoProcessor``). Its image path has the very weights of ``build_sam2``'s model, so
both give the same masks.

Their outputs are noise; what they guarantee is everything that does not depend on weights: the
classes the loaders pick, the processor's square resize, the prompt normalisation, the three feature
levels the mask decoder takes, the three multimask outputs. Weights are seeded, so a build is
deterministic; each takes well under a second on a CPU.

The sizes, and what must agree on them (as 1024 / 4 / 16 do in the real models):

* the processor resizes every photo to a :data:`SAM2_IMAGE_SIZE` square (no aspect kept, no padding)
  and normalises prompt coordinates to that square (its ``target_size``);
* the Hiera backbone cuts it into a 16 × 16 grid (stride 4), then halves it at each of its three
  later stages (8, 4, 2); the FPN neck keeps the three finest levels, so the model's
  ``backbone_feature_sizes`` are 16, 8 and 4;
* the prompt encoder's ``image_size`` / ``patch_size`` is that coarsest level (64 / 16 = 4), and the
  mask decoder upsamples it four times: low-resolution masks of :data:`SAM2_MASK_SIZE` (256 for the
  real models);
* the neck, the prompt encoder and the mask decoder are all :data:`SAM2_HIDDEN_SIZE` wide (256 in the
  real models; the decoder's skip connections take an eighth and a quarter of it).
"""
from __future__ import annotations

from pathlib import Path

from tests.tiny_models import SEED, _build_once

OUTPUT_NAME = "sam2"
VIDEO_OUTPUT_NAME = "sam2_video"
SAM2_IMAGE_SIZE = 64
SAM2_PATCH_STRIDE = 4  # the backbone's first grid: 64 / 4 = 16
SAM2_PATCH_SIZE = 16  # the prompt encoder's: the coarsest kept level, 64 / 16 = 4
SAM2_HIDDEN_SIZE = 32
SAM2_MASK_SIZE = 4 * SAM2_IMAGE_SIZE // SAM2_PATCH_SIZE
SAM2_EMBED_DIMS = [8, 16, 32, 64]  # the Hiera stages' widths (96 to 768 in the real small model)


def sam2_config():
    """The tiny ``Sam2Config``: five Hiera blocks 8 to 64 wide, a 32-wide neck, prompt encoder and
    mask decoder."""
    from transformers import Sam2Config

    grid = SAM2_IMAGE_SIZE // SAM2_PATCH_STRIDE
    return Sam2Config(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=SAM2_EMBED_DIMS[0],
                image_size=[SAM2_IMAGE_SIZE, SAM2_IMAGE_SIZE],
                patch_stride=[SAM2_PATCH_STRIDE, SAM2_PATCH_STRIDE],
                # One block per stage but two in the third, whose second attends globally: the first
                # block of a later stage pools its queries, and must keep a window.
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=SAM2_EMBED_DIMS,
                num_attention_heads_per_stage=[1, 1, 2, 2],
                window_size_per_stage=[4, 4, 2, 2],
                window_positional_embedding_background_size=[4, 4],
                global_attention_blocks=[3],
            ),
            backbone_channel_list=SAM2_EMBED_DIMS[::-1],
            backbone_feature_sizes=[[grid, grid], [grid // 2, grid // 2], [grid // 4, grid // 4]],
            fpn_hidden_size=SAM2_HIDDEN_SIZE,
        ),
        prompt_encoder_config=dict(
            hidden_size=SAM2_HIDDEN_SIZE,
            image_size=SAM2_IMAGE_SIZE,
            patch_size=SAM2_PATCH_SIZE,
            mask_input_channels=8,
        ),
        mask_decoder_config=dict(
            hidden_size=SAM2_HIDDEN_SIZE,
            mlp_dim=37,
            num_attention_heads=4,
            iou_head_hidden_dim=32,
        ),
    )


def _image_model():
    import torch
    from transformers import Sam2Model

    torch.manual_seed(SEED)
    return Sam2Model(sam2_config()).eval()


def _image_processor():
    from transformers import Sam2ImageProcessor

    return Sam2ImageProcessor(
        size={"height": SAM2_IMAGE_SIZE, "width": SAM2_IMAGE_SIZE},
        mask_size={"height": SAM2_MASK_SIZE, "width": SAM2_MASK_SIZE},
    )


def _write_sam2(path: Path) -> None:
    from transformers import Sam2Processor

    _image_model().save_pretrained(path)
    Sam2Processor(image_processor=_image_processor()).save_pretrained(path)


def _write_sam2_video(path: Path) -> None:
    import json

    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    image_model = _image_model()
    parts = {name: getattr(image_model.config, name).to_dict()
             for name in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
    grid = SAM2_IMAGE_SIZE // SAM2_PATCH_SIZE
    config = Sam2VideoConfig(
        **parts,
        memory_attention_hidden_size=SAM2_HIDDEN_SIZE,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=37,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=SAM2_HIDDEN_SIZE,
        memory_encoder_output_channels=16,
        mask_downsampler_embed_dim=SAM2_HIDDEN_SIZE,
        memory_fuser_embed_dim=SAM2_HIDDEN_SIZE,
        memory_fuser_intermediate_dim=37,
        memory_fuser_num_layers=1,
    )
    torch.manual_seed(SEED)
    model = Sam2VideoModel(config).eval()
    loaded = model.load_state_dict(image_model.state_dict(), strict=False)  # the memory modules stay random
    assert not loaded.unexpected_keys, loaded.unexpected_keys
    model.save_pretrained(path)

    size = {"height": SAM2_IMAGE_SIZE, "width": SAM2_IMAGE_SIZE}
    _image_processor().save_pretrained(path)
    Sam2VideoVideoProcessor(size=size).save_pretrained(path)
    image_settings_file = Path(path) / "preprocessor_config.json"
    image_settings = json.loads(image_settings_file.read_text())
    image_settings.update(image_processor_type="Sam2ImageProcessorFast", processor_class="Sam2VideoProcessor")
    image_settings_file.write_text(json.dumps(image_settings, indent=2))
    processor_settings = {"point_pad_value": -10, "processor_class": "Sam2VideoProcessor",
                          "target_size": SAM2_IMAGE_SIZE}
    (Path(path) / "processor_config.json").write_text(json.dumps(processor_settings, indent=2))


def build_sam2(outdir: Path) -> Path:
    """Build a tiny SAM 2.1 as ``outdir/sam2/`` (loadable by ``Sam2Model.from_pretrained`` and
    ``Sam2Processor.from_pretrained``; 64 px inputs, 16 × 16 low-resolution masks) unless it exists;
    return its absolute path.
    """
    return _build_once(Path(outdir) / OUTPUT_NAME, _write_sam2)


def build_sam2_video(outdir: Path) -> Path:
    """Build the tiny SAM 2.1 in the layout of the hub's ``facebook/sam2.1-*`` repositories (a
    ``Sam2VideoModel``, ``model_type: sam2_video``; the processor's settings as separate files) as
    ``outdir/sam2_video/`` unless it exists; return its absolute path. Its image path has the weights
    of :func:`build_sam2`'s model.
    """
    return _build_once(Path(outdir) / VIDEO_OUTPUT_NAME, _write_sam2_video)
