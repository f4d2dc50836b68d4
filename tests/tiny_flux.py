"""Tiny random FLUX pipelines in the real on-disk format, for tests that go through the real loaders.

``build_flux2_klein(outdir)`` writes ``outdir/flux2_klein/`` and ``build_flux_fill(outdir)`` writes
``outdir/flux_fill/``: pipelines saved with ``save_pretrained`` in the layout of
``black-forest-labs/FLUX.2-klein-4B`` and ``black-forest-labs/FLUX.1-Fill-dev`` (model_index.json,
transformer/, vae/, scheduler/, text encoders and tokenizers, each in its own folder). Their outputs
are noise; what they guarantee is everything that does not depend on weights: the classes the loaders
pick (from model_index.json), the VAE scale factor of 8 (so sides must be multiples of 16, as with
the real models), the 512-token text sequences, the reference-image path of [klein], the guidance
embedding of Fill. Weights are seeded, so a build is deterministic; each takes a second or two on a
CPU and a few MB on disk.

What must agree, as in the real models:

* [klein]: the transformer reads the text encoder's hidden states of layers 9, 18 and 27 side by side
  (the pipeline's default ``text_encoder_out_layers``), so the tiny Qwen3 has 27 layers and the
  transformer's ``joint_attention_dim`` is 3 × its width; the transformer takes the VAE's latent
  channels patchified 2 × 2 (``in_channels`` = 4 × latent channels); RoPE has four axes (T, H, W, L)
  whose sizes add up to the head width. ``is_distilled`` is true, as in the 4B model's model_index.json
  (guidance is then ignored). The model_index.json names ``Flux2KleinPipeline``, as the hub
  repository's does; the inpainting pipeline loads from it.
* Fill: the transformer takes the packed noisy latent, the packed masked-image latent and the mask
  folded into 8 × 8 × 4 channels (``in_channels`` = 2 × 4 × latent channels + 256) and outputs the
  packed latent; it embeds the guidance (``guidance_embeds``, FLUX.1 [dev] is guidance-distilled);
  the CLIP tower's pooled output is its ``pooled_projection_dim``, the T5's width its
  ``joint_attention_dim``; RoPE has three axes adding up to the head width. The VAE has FLUX's
  scaling and shift factors and no quant convolutions.

Both transformers have their weights scaled by :data:`TRANSFORMER_GAIN` after the seeded random
init, so that the prompt and the reference picture visibly change the pixels (tests check that they
reach the model). The tokenizers are made in code (no download): a byte-level Qwen2 BPE tokenizer
with the Qwen chat markers and a chat template honouring ``enable_thinking=False`` (saved, as
transformers now saves it, as ``tokenizer/chat_template.jinja``); the byte-level CLIP tokenizer of
:mod:`tests.tiny_models`; a T5 Unigram tokenizer over printable ASCII.
"""
from __future__ import annotations

import string
from pathlib import Path

from tests.tiny_models import SEED, TEXT_HIDDEN_SIZE, _build_once, _text_towers, _vae

OUTPUT_NAMES = {"flux2_klein": "flux2_klein", "flux_fill": "flux_fill"}

LATENT_CHANNELS = 4  # 32 in the FLUX.2 VAE, 16 in FLUX.1's
# Four VAE blocks, so the scale factor is 8 as in the real VAEs; narrow, so a fill at the real
# native size (1024 px, the app's own tests) takes seconds on a CPU.
VAE_CHANNELS = (16, 16, 16, 16)
VAE_GROUPS = 4
HEAD_DIM = 16
HEADS = 2

# The tiny Qwen3: 27 layers, so that hidden states 9, 18 and 27 exist (Qwen3-4B has 36).
QWEN_LAYERS = 27
QWEN_HIDDEN = 16
QWEN_OUT_LAYERS = (9, 18, 27)
QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# Qwen3's chat template reduced to what the [klein] pipeline uses: one user message, the generation
# prompt, and an empty thinking block when thinking is off.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
T5_WIDTH = 32
# A random transformer's conditioning (the prompt, the reference image) is all but averaged away:
# its attention is nearly flat over the 512 text tokens, and the output follows the noise. Its
# weights scaled by this much, the prompt and the reference visibly change the pixels (a few
# levels in 255 without, tens with), as they do with trained weights.
TRANSFORMER_GAIN = 3.0


def _amplify(transformer) -> None:
    """Scale every weight of ``transformer`` by :data:`TRANSFORMER_GAIN`."""
    import torch

    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.mul_(TRANSFORMER_GAIN)


# --- FLUX.2 [klein] --------------------------------------------------------------------------------


def qwen_vocab() -> dict[str, int]:
    """The chat markers, then every byte-level character: with no merges any text tokenizes to bytes."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {token: index for index, token in enumerate(QWEN_SPECIAL)}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    return vocab


def _qwen_tokenizer():
    from transformers import Qwen2TokenizerFast

    tokenizer = Qwen2TokenizerFast(vocab=qwen_vocab(), merges=[], model_max_length=131072)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL[1:])})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def _write_flux2_klein(path: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(SEED)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=len(QWEN_OUT_LAYERS) * QWEN_HIDDEN,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    ).eval()
    _amplify(transformer)
    torch.manual_seed(SEED)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(qwen_vocab()),
        hidden_size=QWEN_HIDDEN,
        intermediate_size=16,
        num_hidden_layers=QWEN_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=QWEN_HIDDEN // 2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=0,
    )).eval()
    torch.manual_seed(SEED)
    vae = AutoencoderKLFlux2(
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=VAE_GROUPS,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_qwen_tokenizer(),
        transformer=transformer,
        is_distilled=True,
    )
    pipe.save_pretrained(path)


def build_flux2_klein(outdir: Path) -> Path:
    """Build a tiny FLUX.2 [klein] pipeline as ``outdir/flux2_klein/`` (a ``save_pretrained`` folder
    whose model_index.json names ``Flux2KleinPipeline``, like the hub repository's) unless it exists;
    return its path."""
    return _build_once(Path(outdir) / OUTPUT_NAMES["flux2_klein"], _write_flux2_klein)


# --- FLUX.1 Fill [dev] -----------------------------------------------------------------------------


def _t5_tokenizer():
    """A T5 Unigram tokenizer over printable ASCII (pad 0, end 1, unknown 2, as T5's)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(char, -2.0) for char in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("▁" + char, -1.5) for char in string.ascii_letters]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def _write_flux_fill(path: Path) -> None:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer_2 = _t5_tokenizer()
    packed = 4 * LATENT_CHANNELS  # a latent's 2 x 2 patches side by side
    mask_channels = 8 * 8 * 4  # the mask at pixel resolution, folded per 8 x 8 latent pixel, then packed
    torch.manual_seed(SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=2 * packed + mask_channels,
        out_channels=packed,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=TEXT_HIDDEN_SIZE,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    ).eval()
    _amplify(transformer)
    torch.manual_seed(SEED)
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2),
        d_model=T5_WIDTH,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )).eval()
    clip = _text_towers()
    pipe = FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15,
            use_dynamic_shifting=True, shift=3.0),
        vae=_vae(latent_channels=LATENT_CHANNELS, block_out_channels=VAE_CHANNELS, norm_num_groups=VAE_GROUPS,
                 scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=clip["text_encoder"],
        tokenizer=clip["tokenizer"],
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(path)


def build_flux_fill(outdir: Path) -> Path:
    """Build a tiny FLUX.1 Fill [dev] pipeline as ``outdir/flux_fill/`` (a ``save_pretrained`` folder
    whose model_index.json names ``FluxFillPipeline``) unless it exists; return its path."""
    return _build_once(Path(outdir) / OUTPUT_NAMES["flux_fill"], _write_flux_fill)


BUILDERS = {"flux2_klein": build_flux2_klein, "flux_fill": build_flux_fill}
