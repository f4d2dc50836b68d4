"""A tiny random SAM 3 in the real on-disk format, for tests that go through the real loaders.

``build_sam3(outdir)`` writes ``outdir/sam3/``: a ``Sam3Model`` and its ``Sam3Processor`` saved with
``save_pretrained``, the layout of ``facebook/sam3`` (config.json with ``model_type: sam3``,
model.safetensors, processor_config.json, the tokenizer files). Its outputs are noise; what it
guarantees is everything that does not depend on weights: the classes the loaders pick, the
processor's square resize, the text tokenizer (the tiny CLIP one of :mod:`tests.tiny_models`, so it
works offline), the box encoding, the instance outputs' shapes. Weights are seeded, so a build is
deterministic; it takes a second or two on a CPU.

The sizes, and what must agree on them (as 1008 / 14 / 288 do in the real model):

* the processor resizes every photo to a :data:`SAM3_IMAGE_SIZE` square (no aspect kept, no padding);
* the ViT cuts it into :data:`SAM3_PATCH_SIZE` px patches, an 8 × 8 grid; its position embeddings
  are trained for that same size (``pretrain_image_size``), so they are not tiled;
* the FPN neck makes maps at 4, 2, 1 and 0.5 times the grid (32, 16, 8, 4); the model drops the
  last, runs the DETR encoder on the 8 × 8 map and predicts masks at 32 × 32
  (:data:`SAM3_MASK_SIZE`, the processor's ``mask_size``);
* every part is :data:`SAM3_HIDDEN_SIZE` wide (256 in the real model; a multiple of 8 for the mask
  decoder's group norms), and the DETR decoder has :data:`SAM3_QUERIES` object queries (200).
"""
from __future__ import annotations

from pathlib import Path

from tests.tiny_models import SEED, TEXT_HIDDEN_SIZE, _build_once, _clip_tokenizer, clip_vocab

OUTPUT_NAME = "sam3"
SAM3_IMAGE_SIZE = 64
SAM3_PATCH_SIZE = 8
SAM3_HIDDEN_SIZE = 32
SAM3_MASK_SIZE = 4 * SAM3_IMAGE_SIZE // SAM3_PATCH_SIZE
SAM3_QUERIES = 6
SAM3_TEXT_LENGTH = 32  # Sam3Processor pads every text to 32 tokens, the text encoder's context


def sam3_config():
    """The tiny ``Sam3Config`` (one or two layers per part, 4 heads, 32 wide)."""
    from transformers import (
        Sam3Config,
        Sam3DETRDecoderConfig,
        Sam3DETREncoderConfig,
        Sam3GeometryEncoderConfig,
        Sam3MaskDecoderConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    heads, width, mlp = 4, SAM3_HIDDEN_SIZE, 64
    backbone = Sam3ViTConfig(
        hidden_size=width,
        intermediate_size=mlp,
        num_hidden_layers=2,
        num_attention_heads=heads,
        image_size=SAM3_IMAGE_SIZE,
        pretrain_image_size=SAM3_IMAGE_SIZE,
        patch_size=SAM3_PATCH_SIZE,
        window_size=4,  # the first layer attends within 4 × 4 windows of the 8 × 8 grid
        global_attn_indexes=[1],
    )
    vision = Sam3VisionConfig(
        backbone_config=backbone,
        fpn_hidden_size=width,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        backbone_feature_sizes=[[SAM3_MASK_SIZE] * 2, [SAM3_MASK_SIZE // 2] * 2, [SAM3_MASK_SIZE // 4] * 2],
    )
    text = dict(
        vocab_size=len(clip_vocab()),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=mlp,
        projection_dim=TEXT_HIDDEN_SIZE,
        num_hidden_layers=1,
        num_attention_heads=heads,
        max_position_embeddings=SAM3_TEXT_LENGTH,
        hidden_act="gelu",
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    layers = dict(hidden_size=width, num_layers=1, num_attention_heads=heads, intermediate_size=mlp)
    return Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(**layers, roi_size=3),
        detr_encoder_config=Sam3DETREncoderConfig(**layers),
        detr_decoder_config=Sam3DETRDecoderConfig(**layers, num_queries=SAM3_QUERIES),
        mask_decoder_config=Sam3MaskDecoderConfig(
            hidden_size=width, num_upsampling_stages=2, num_attention_heads=heads
        ),
    )


def _write_sam3(path: Path) -> None:
    import torch
    from transformers import Sam3ImageProcessor, Sam3Model, Sam3Processor

    torch.manual_seed(SEED)
    model = Sam3Model(sam3_config()).eval()
    processor = Sam3Processor(
        image_processor=Sam3ImageProcessor(
            size={"height": SAM3_IMAGE_SIZE, "width": SAM3_IMAGE_SIZE},
            mask_size={"height": SAM3_MASK_SIZE, "width": SAM3_MASK_SIZE},
        ),
        tokenizer=_clip_tokenizer(),
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)


def build_sam3(outdir: Path) -> Path:
    """Build a tiny SAM 3 as ``outdir/sam3/`` (loadable by ``Sam3Model.from_pretrained`` and
    ``Sam3Processor.from_pretrained``; 64 px inputs, 32 × 32 masks, 6 queries) unless it exists;
    return its absolute path.
    """
    return _build_once(Path(outdir) / OUTPUT_NAME, _write_sam3)
