"""A tiny random Qwen-Image-Edit pipeline in the real on-disk format, for tests through the real loader.

``build_qwen_image_edit(outdir)`` writes ``outdir/qwen_image_edit/``: a ``QwenImageEditPipeline``
saved with ``save_pretrained``, the layout of ``Qwen/Qwen-Image-Edit`` (``model_index.json`` naming
``QwenImageEditPipeline``; ``processor/`` a ``Qwen2VLProcessor``: tokenizer files,
``preprocessor_config.json``, ``video_preprocessor_config.json``; ``scheduler/``; ``text_encoder/`` a
``Qwen2_5_VLForConditionalGeneration``; ``tokenizer/`` a ``Qwen2Tokenizer``; ``transformer/`` a
``QwenImageTransformer2DModel``; ``vae/`` an ``AutoencoderKLQwenImage``). The app loads it, as the
real model, with ``QwenImageEditInpaintPipeline.from_pretrained``. Its outputs are noise; what it
guarantees is everything that does not depend on weights: the classes the loader picks, the VAE
scale factor of 8 (so the pipeline's sizes are multiples of 16, its working sizes of 32, as for
the real model), the prompt template's special tokens, seeds. Weights are seeded, so a build is
deterministic; it takes about a second on a CPU and a few MB on disk.

No hub access: diffusers' own tiny Qwen tests load their tokenizer from
``hf-internal-testing/*``; here the tokenizer is built in code. It is a byte-level BPE without
merges (any text becomes one token per byte) plus the special tokens of Qwen2.5-VL's chat
template, so the pipeline's prompt template, ``<|image_pad|>`` expansion included, tokenizes as in
the real model (only longer).

What must agree, as in the real model:

* the tokenizer's special-token ids and the text encoder config's ``image_token_id``,
  ``video_token_id``, ``vision_start_token_id`` and ``vision_end_token_id``;
* the processor's ``patch_size`` / ``merge_size`` / ``temporal_patch_size`` and the vision tower's;
  the processor resizes every image to :data:`VL_IMAGE_PIXELS` (4 × 4 patches of 14 px, merged
  into 4 image tokens), however large the crop, so the text encoder stays fast;
* the vision tower's ``out_hidden_size``, the text model's ``hidden_size`` and the transformer's
  ``joint_attention_dim`` (:data:`QWEN_HIDDEN_SIZE`);
* the VAE's ``z_dim`` and the transformer's channels (``in_channels`` = 4 × ``z_dim``: 2 × 2 packed
  latent patches; ``out_channels`` = ``z_dim``); the transformer's ``axes_dims_rope`` summing to its
  ``attention_head_dim``.
"""
from __future__ import annotations

from pathlib import Path

from tests.tiny_models import SEED, _build_once

OUTPUT_NAME = "qwen_image_edit"
PIPELINE_CLASS = "QwenImageEditPipeline"  # what Qwen/Qwen-Image-Edit's model_index.json names

QWEN_HIDDEN_SIZE = 16
LATENT_CHANNELS = 4  # the VAE's z_dim (16 in the real model)
VL_PATCH_SIZE = 14
VL_MERGE_SIZE = 2
VL_IMAGE_PIXELS = (VL_PATCH_SIZE * VL_MERGE_SIZE * 2) ** 2  # 56 x 56: the processor's min and max

# Qwen2.5-VL's special tokens: those of its chat template and the vision placeholders.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def qwen_vocab() -> dict[str, int]:
    """The tiny vocabulary: every byte-level character, then the special tokens."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {char: index for index, char in enumerate(sorted(ByteLevel.alphabet()))}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return vocab


def qwen_tokenizer():
    """A ``Qwen2Tokenizer`` over :func:`qwen_vocab` (no merges), its special tokens never split."""
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(vocab=qwen_vocab(), merges=[], model_max_length=32768)
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    return tokenizer


def qwen_processor(tokenizer):
    """A ``Qwen2VLProcessor``: the tokenizer and image / video processors resizing to 56 x 56."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    sizes = dict(min_pixels=VL_IMAGE_PIXELS, max_pixels=VL_IMAGE_PIXELS, patch_size=VL_PATCH_SIZE,
                 merge_size=VL_MERGE_SIZE, temporal_patch_size=2)
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tokenizer,
                            video_processor=Qwen2VLVideoProcessor(**sizes))


def qwen_text_encoder():
    """A tiny ``Qwen2_5_VLForConditionalGeneration``: 1 text layer and 1 vision block, 16 wide."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vocab = qwen_vocab()
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": QWEN_HIDDEN_SIZE,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "bos_token_id": vocab["<|endoftext|>"],
            "eos_token_id": vocab["<|im_end|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": QWEN_HIDDEN_SIZE,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": QWEN_HIDDEN_SIZE,
            "patch_size": VL_PATCH_SIZE,
            "spatial_merge_size": VL_MERGE_SIZE,
            "temporal_patch_size": 2,
            "fullatt_block_indexes": [0],
        },
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(SEED)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen_transformer():
    """A tiny ``QwenImageTransformer2DModel``: 1 layer, 2 heads of 16."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(SEED)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=QWEN_HIDDEN_SIZE,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    ).eval()


def qwen_vae():
    """A tiny ``AutoencoderKLQwenImage`` with the real model's three downsamplings (scale factor 8)."""
    import torch
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(SEED)
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
    ).eval()


def qwen_image_edit_pipeline():
    """The tiny ``QwenImageEditPipeline`` (not saved)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline

    tokenizer = qwen_tokenizer()
    return QwenImageEditPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            # Qwen-Image-Edit's scheduler settings (its scheduler/scheduler_config.json).
            base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0,
            shift_terminal=0.02, time_shift_type="exponential", use_dynamic_shifting=True,
        ),
        vae=qwen_vae(),
        text_encoder=qwen_text_encoder(),
        tokenizer=tokenizer,
        processor=qwen_processor(tokenizer),
        transformer=qwen_transformer(),
    )


def _write_qwen_image_edit(path: Path) -> None:
    qwen_image_edit_pipeline().save_pretrained(path)
    _as_published(path)


def _as_published(path: Path) -> None:
    """Rewrite the tokenizer and processor folders the way ``Qwen/Qwen-Image-Edit`` publishes them
    (written by transformers 4): ``vocab.json`` + ``merges.txt`` + ``added_tokens.json`` +
    ``special_tokens_map.json`` with the special tokens in ``tokenizer_config.json`` (``tokenizer/``
    has no ``tokenizer.json``), and ``preprocessor_config.json`` + ``video_preprocessor_config.json``
    with ``min_pixels`` / ``max_pixels`` instead of transformers 5's single ``processor_config.json``.
    So the tests load the files a download of the real model holds."""
    import json

    vocab = qwen_vocab()
    special = {token: vocab[token] for token in SPECIAL_TOKENS}
    decoder = {str(index): {"content": token, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True} for token, index in special.items()}
    for name in ("tokenizer", "processor"):
        folder = path / name
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config.update(added_tokens_decoder=decoder, errors="replace", split_special_tokens=False)
        files = {
            "vocab.json": {token: index for token, index in vocab.items() if token not in special},
            "added_tokens.json": special,
            "special_tokens_map.json": {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
            "tokenizer_config.json": config,
        }
        for file_name, content in files.items():
            (folder / file_name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
        (folder / "merges.txt").write_text("#version: 0.2\n")
    (path / "tokenizer" / "tokenizer.json").unlink()

    processor = path / "processor"
    configs = json.loads((processor / "processor_config.json").read_text())
    for key, file_name in (("image_processor", "preprocessor_config.json"),
                           ("video_processor", "video_preprocessor_config.json")):
        config = dict(configs[key])
        size = config.pop("size")
        config.update(min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"],
                      processor_class="Qwen2VLProcessor")
        (processor / file_name).write_text(json.dumps(config, indent=2) + "\n")
    (processor / "processor_config.json").unlink()


def build_qwen_image_edit(outdir: Path) -> Path:
    """``outdir/qwen_image_edit/``: the tiny Qwen-Image-Edit pipeline (``save_pretrained``), built
    once and reused."""
    return _build_once(Path(outdir) / OUTPUT_NAME, _write_qwen_image_edit)
