"""Tiny random models in the real on-disk formats, for tests that go through the real loaders.

No real weights can be downloaded here, yet the app's loading code must be exercised end to end:
``AutoPipelineForInpainting.from_pretrained(dir)``, ``ultralytics.FastSAM(path)``,
``CLIPModel.from_pretrained(dir)``, ``SamModel.from_pretrained(dir)``, ``torch.jit.load(path)``. This
module builds, on CPU, without network and in seconds, a randomly initialised model per role, saved
exactly the way the real ones are distributed:

========================  ==========================================================================
role                      output under OUTDIR
========================  ==========================================================================
``sd15_inpaint``          ``sd15_inpaint/``: a ``StableDiffusionInpaintPipeline`` (``save_pretrained``)
``sdxl_inpaint``          ``sdxl_inpaint/``: a ``StableDiffusionXLInpaintPipeline`` (``save_pretrained``)
``fastsam``               ``fastsam.pt``: an ultralytics segmentation checkpoint (``torch.save``)
``clip``                  ``clip/``: a ``CLIPModel`` and its ``CLIPProcessor`` (``save_pretrained``)
``sam``                   ``sam/``: a ``SamModel`` and its ``SamProcessor`` (``save_pretrained``)
``iclight_base``          ``iclight_base/``: SD1.5 text-to-image ``StableDiffusionPipeline``, 4-channel UNet
``iclight``               ``iclight_sd15_fc.safetensors``: IC-Light fc offsets for ``iclight_base``'s UNet
                          widened to 8 input channels (a subset of its keys, ``conv_in.weight`` included)
``lama``                  ``big-lama.pt``: a TorchScript module with big-lama's call contract
                          (``torch.jit.save``, as IOPaint publishes it)
``migan``                 ``migan_traced.pt``: a traced TorchScript module with MI-GAN's call contract
``sam2``                  ``sam2/``: a ``Sam2Model`` and its ``Sam2Processor`` (:mod:`tests.tiny_sam2`)
``sam3``                  ``sam3/``: a ``Sam3Model`` and its ``Sam3Processor`` (:mod:`tests.tiny_sam3`)
========================  ==========================================================================

Their outputs are noise; what they guarantee is everything that does not depend on weights: the
classes the loaders pick, the VAE scale factor of 8, image sizes, seeds, the tokenizer, the FastSAM
head yielding some boxes and masks. Weights are seeded, so a build is deterministic.

``build_all(outdir)`` builds every role, writes ``models.json`` (role -> absolute path) and
``models.env`` (``INPAINT_STUDIO_MODEL_<ROLE>=<path>`` lines, the settings the app reads), and
returns the mapping. Run it from a shell with::

    python -m tests.tiny_models OUTDIR
    set -a; . OUTDIR/models.env; set +a

The ML libraries are imported inside the functions, so that ``main`` can make them offline first.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.config import OFFLINE_ENV

ROLES = ("sd15_inpaint", "sdxl_inpaint", "fastsam", "clip", "sam", "iclight_base", "iclight", "lcm_lora_sd15",
         "lcm_lora_sdxl", "lama", "migan", "sam2", "sam3")
# The newer diffusion engines, built on request (the ``tiny_modern_models`` fixture): in the default set
# the app would pick FLUX first wherever the older tests expect SD 1.5.
MODERN_ROLES = ("flux2_klein", "flux_fill", "qwen_image_edit")

# The environment setting through which the app takes each role's local model path.
ENV_VARS = {role: "INPAINT_STUDIO_MODEL_" + role.upper() for role in ROLES + MODERN_ROLES}

# Where each role's model lies under the output directory.
OUTPUT_NAMES = {
    "sd15_inpaint": "sd15_inpaint",
    "sdxl_inpaint": "sdxl_inpaint",
    "fastsam": "fastsam.pt",
    "clip": "clip",
    "sam": "sam",
    "iclight_base": "iclight_base",
    "iclight": "iclight_sd15_fc.safetensors",
    "lcm_lora_sd15": "lcm_lora_sd15",
    "lcm_lora_sdxl": "lcm_lora_sdxl",
    "lama": "big-lama.pt",
    "migan": "migan_traced.pt",
    "sam2": "sam2",
    "sam3": "sam3",
    "flux2_klein": "flux2_klein",
    "flux_fill": "flux_fill",
    "qwen_image_edit": "qwen_image_edit",
}
LORA_RANK = 4

SEED = 0

# Sizes shared by every tiny CLIP text tower (SD1.5, both SDXL encoders, CLIP).
TEXT_HIDDEN_SIZE = 32
TEXT_MAX_LENGTH = 77  # the real CLIP tokenizers' model_max_length; SD pipelines pad prompts to it

# Biases that make a random FastSAM head find objects. Its outputs are near zero without them: the
# class logit gets 2 (confidence sigmoid(2) = 0.88 on every anchor, above the usual thresholds 0.25
# and 0.4), and the mask prototypes and coefficients get 1, so each mask covers its whole box
# instead of a random half of it (ultralytics drops masks with no pixels).
FASTSAM_CLASS_BIAS = 2.0
FASTSAM_MASK_BIAS = 1.0

# The tiny SAM's input size. Three things must agree on it, as 1024 does in the real SAMs: the
# processor (resizes the long side to it, pads to a square of it), the vision encoder, and the prompt
# encoder (normalises point coordinates by it). With 8 px patches the image embedding is 8 x 8 and
# the decoder's low-resolution masks 32 x 32.
SAM_IMAGE_SIZE = 64
SAM_PATCH_SIZE = 8
# The width shared by the vision encoder's output, the prompt encoder and the mask decoder (256 in
# the real SAMs).
SAM_HIDDEN_SIZE = 32

# The IC-Light fc offset file holds, like the real one, tensors to add to the base UNet after its
# conv_in is widened from 4 to 8 input channels (noisy latent + foreground latent). The real file
# covers every key; the tiny one a few, conv_in first. Small values, so the merged UNet stays sane.
ICLIGHT_OFFSET_KEYS = (
    "conv_in.weight",
    "conv_in.bias",
    "time_embedding.linear_1.weight",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "conv_out.bias",
)
ICLIGHT_OFFSET_SCALE = 0.05

# The removal models' sizes. The tiny LaMa, like big-lama, halves its input three times and doubles it
# back, so a side that is not a multiple of 8 fails inside it (the engine must pad). The tiny MI-GAN,
# like the traced MI-GAN (whose noise constants are 512×512), takes 512×512 inputs and nothing else.
LAMA_DOWNSAMPLINGS = 3
MIGAN_SIZE = 512
REMOVAL_CHANNELS = 8


# --- shared pieces ---------------------------------------------------------------------------------


def clip_vocab() -> dict[str, int]:
    """The tiny CLIP BPE vocabulary: the two special tokens, then every byte-level character alone
    and as a word end (``</w>``). With no merges, any text tokenizes to single characters.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    return vocab


def _clip_tokenizer():
    """A ``CLIPTokenizer`` over :func:`clip_vocab`, padding with ``<|endoftext|>`` to 77 tokens."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=clip_vocab(), merges=[], model_max_length=TEXT_MAX_LENGTH)


def _clip_text_config(**overrides):
    """A tiny ``CLIPTextConfig`` whose special-token ids and vocabulary match :func:`_clip_tokenizer`."""
    from transformers import CLIPTextConfig

    settings = dict(
        vocab_size=len(clip_vocab()),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TEXT_MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    settings.update(overrides)
    return CLIPTextConfig(**settings)


def _text_towers(*, with_projection: bool = False) -> dict:
    """Tokenizer and text encoder for a diffusers pipeline, as pipeline components.

    The encoder is a ``CLIPTextModel``, or with ``with_projection`` a ``CLIPTextModelWithProjection``
    (SDXL's second encoder, whose pooled ``text_embeds`` have ``TEXT_HIDDEN_SIZE`` features).
    """
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(SEED)
    if with_projection:
        encoder = CLIPTextModelWithProjection(_clip_text_config(projection_dim=TEXT_HIDDEN_SIZE))
    else:
        encoder = CLIPTextModel(_clip_text_config())
    return {"tokenizer": _clip_tokenizer(), "text_encoder": encoder.eval()}


def _vae(**overrides):
    """A tiny ``AutoencoderKL`` with four down blocks, so ``vae_scale_factor`` is 8 as in the real models."""
    import torch
    from diffusers import AutoencoderKL

    settings = dict(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        sample_size=64,
    )
    settings.update(overrides)
    torch.manual_seed(SEED)
    return AutoencoderKL(**settings).eval()


def _inpaint_unet(**overrides):
    """A tiny inpainting ``UNet2DConditionModel``: 9 input channels (4 noisy latent, 1 mask, 4 masked
    image latent), sample size 8 latents, i.e. 64 px pipeline output by default.
    """
    import torch
    from diffusers import UNet2DConditionModel

    settings = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=8,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN_SIZE,
    )
    settings.update(overrides)
    torch.manual_seed(SEED)
    return UNet2DConditionModel(**settings).eval()


def _build_once(path: Path, write: Callable[[Path], None]) -> Path:
    """Return ``path``, first calling ``write(temporary path)`` and renaming the result into place
    when ``path`` does not exist yet. Since outputs only appear complete, an existing one is reused.
    """
    path = Path(path).absolute()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if partial.is_dir():
        shutil.rmtree(partial)
    else:
        partial.unlink(missing_ok=True)
    write(partial)
    os.replace(partial, path)
    return path


# --- one builder per role --------------------------------------------------------------------------


def _write_sd15(path: Path, *, inpainting: bool) -> None:
    """A tiny SD 1.5 pipeline: the inpainting one (9-channel UNet) or text-to-image (4 channels)."""
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = pipeline_class(
        unet=_inpaint_unet() if inpainting else _inpaint_unet(in_channels=4),
        vae=_vae(),
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        **_text_towers(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)


def build_sd15_inpaint(outdir: Path) -> Path:
    """Build a tiny SD1.5 inpainting pipeline as ``outdir/sd15_inpaint/`` (a ``save_pretrained``
    directory loadable by ``AutoPipelineForInpainting``) unless it exists; return its path.
    """
    return _build_once(Path(outdir) / OUTPUT_NAMES["sd15_inpaint"], lambda path: _write_sd15(path, inpainting=True))


def _write_sdxl_inpaint(path: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline

    first = _text_towers()
    second = _text_towers(with_projection=True)
    # SDXL's UNet gets both encoders' hidden states side by side as context, and an added embedding
    # of the second encoder's pooled output plus six size/crop numbers (no aesthetic score).
    addition_time_embed_dim = 8
    pipe = StableDiffusionXLInpaintPipeline(
        unet=_inpaint_unet(
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 2),
            cross_attention_dim=2 * TEXT_HIDDEN_SIZE,
            addition_embed_type="text_time",
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=6 * addition_time_embed_dim + TEXT_HIDDEN_SIZE,
        ),
        vae=_vae(force_upcast=False),
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        tokenizer=first["tokenizer"],
        text_encoder=first["text_encoder"],
        tokenizer_2=second["tokenizer"],
        text_encoder_2=second["text_encoder"],
        requires_aesthetics_score=False,
    )
    pipe.save_pretrained(path)


def build_sdxl_inpaint(outdir: Path) -> Path:
    """Build a tiny SDXL inpainting pipeline as ``outdir/sdxl_inpaint/`` (a ``save_pretrained``
    directory loadable by ``AutoPipelineForInpainting``) unless it exists; return its path.
    """
    return _build_once(Path(outdir) / OUTPUT_NAMES["sdxl_inpaint"], _write_sdxl_inpaint)


def _write_fastsam(path: Path) -> None:
    import torch
    from ultralytics import __version__ as ultralytics_version
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(SEED)
    model = SegmentationModel("yolov8n-seg.yaml", nc=1, verbose=False)
    model.names = {0: "object"}
    head = model.model[-1]
    for class_branch, mask_branch in zip(head.cv3, head.cv4):  # one of each per detection scale
        class_branch[-1].bias.data.fill_(FASTSAM_CLASS_BIAS)
        mask_branch[-1].bias.data.fill_(FASTSAM_MASK_BIAS)
    head.proto.cv3.bn.bias.data.fill_(FASTSAM_MASK_BIAS)
    # The layout of ultralytics' own Model.save(): the module itself (pickled, in half precision),
    # and the training arguments, of which the loader keeps the task.
    checkpoint = {
        "model": model.half().eval(),
        "ema": None,
        "train_args": {"task": "segment"},
        "version": ultralytics_version,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
    }
    torch.save(checkpoint, path)


def build_fastsam(outdir: Path) -> Path:
    """Build a random FastSAM checkpoint as ``outdir/fastsam.pt`` (loadable by
    ``ultralytics.FastSAM(path)``, a YOLOv8n-seg with one class) unless it exists; return its path.
    """
    return _build_once(Path(outdir) / OUTPUT_NAMES["fastsam"], _write_fastsam)


def _write_clip(path: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    image_size = 64
    config = CLIPConfig(
        text_config=_clip_text_config().to_dict(),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=32,
        ),
        projection_dim=32,
    )
    torch.manual_seed(SEED)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=_clip_tokenizer(),
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)


def build_clip(outdir: Path) -> Path:
    """Build a tiny CLIP as ``outdir/clip/`` (loadable by ``CLIPModel.from_pretrained`` and
    ``CLIPProcessor.from_pretrained``; 64 px images) unless it exists; return its path.
    """
    return _build_once(Path(outdir) / OUTPUT_NAMES["clip"], _write_clip)


def _write_sam(path: Path) -> None:
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    config = SamConfig(
        vision_config=dict(
            hidden_size=32,
            output_channels=SAM_HIDDEN_SIZE,
            num_hidden_layers=2,
            num_attention_heads=4,
            mlp_dim=37,
            image_size=SAM_IMAGE_SIZE,
            patch_size=SAM_PATCH_SIZE,
            window_size=4,
            global_attn_indexes=[1],  # layer 0 attends within 4 x 4 windows, layer 1 globally
            num_pos_feats=SAM_HIDDEN_SIZE // 2,  # sine and cosine features: SAM_HIDDEN_SIZE in all
        ),
        prompt_encoder_config=dict(
            hidden_size=SAM_HIDDEN_SIZE,
            image_size=SAM_IMAGE_SIZE,
            patch_size=SAM_PATCH_SIZE,
            mask_input_channels=8,
        ),
        mask_decoder_config=dict(
            hidden_size=SAM_HIDDEN_SIZE,
            mlp_dim=37,
            num_attention_heads=4,
            iou_head_hidden_dim=32,
        ),
    )
    torch.manual_seed(SEED)
    model = SamModel(config).eval()
    mask_size = SAM_IMAGE_SIZE // 4  # the decoder's output size, as 256 is for 1024 px inputs
    processor = SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": SAM_IMAGE_SIZE},
            pad_size={"height": SAM_IMAGE_SIZE, "width": SAM_IMAGE_SIZE},
            mask_size={"longest_edge": mask_size},
            mask_pad_size={"height": mask_size, "width": mask_size},
        )
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)


def build_sam(outdir: Path) -> Path:
    """Build a tiny SAM as ``outdir/sam/`` (loadable by ``SamModel.from_pretrained`` and
    ``SamProcessor.from_pretrained``; 64 px inputs) unless it exists; return its path.
    """
    return _build_once(Path(outdir) / OUTPUT_NAMES["sam"], _write_sam)


def build_iclight_base(outdir: Path) -> Path:
    """Build a tiny SD1.5 text-to-image pipeline (4-channel UNet), IC-Light's base model, as
    ``outdir/iclight_base/`` (a ``save_pretrained`` directory) unless it exists; return its path.
    """
    return _build_once(Path(outdir) / OUTPUT_NAMES["iclight_base"], lambda path: _write_sd15(path, inpainting=False))


def iclight_offsets(in_channels: int = 8) -> dict:
    """The tiny IC-Light offsets: seeded random tensors shaped like :data:`ICLIGHT_OFFSET_KEYS` of the
    tiny base UNet with ``in_channels`` input channels (8 for fc; 12 gives the fbc layout).
    """
    import torch

    state = _inpaint_unet(in_channels=in_channels).state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    generator = torch.Generator("cpu").manual_seed(SEED)
    return {
        key: (torch.randn(shapes[key], generator=generator) * ICLIGHT_OFFSET_SCALE).contiguous()
        for key in ICLIGHT_OFFSET_KEYS
    }


def _write_iclight(path: Path) -> None:
    from safetensors.torch import save_file

    save_file(iclight_offsets(), str(path))


def build_iclight(outdir: Path) -> Path:
    """Build the tiny IC-Light fc offset file as ``outdir/iclight_sd15_fc.safetensors`` (also building
    its base, ``outdir/iclight_base/``) unless it exists; return the offset file's path.
    """
    build_iclight_base(outdir)
    return _build_once(Path(outdir) / OUTPUT_NAMES["iclight"], _write_iclight)


def _write_lora(path: Path, base: str) -> None:
    """A random rank-4 LoRA on the tiny ``base`` inpainting UNet's attention projections, made
    with peft and saved in diffusers' LoRA format (like the published LCM LoRAs)."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel.from_pretrained(BUILDERS[base](path.parent) / "unet")
    # init_lora_weights=False: both factors random, so the LoRA changes the weights it touches.
    unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    pipeline = StableDiffusionXLPipeline if base == "sdxl_inpaint" else StableDiffusionPipeline
    path.mkdir(parents=True)
    pipeline.save_lora_weights(str(path), unet_lora_layers=layers, safe_serialization=True)


def build_lcm_lora_sd15(outdir: Path) -> Path:
    """A tiny LoRA for the tiny SD 1.5 inpainting UNet, as ``outdir/lcm_lora_sd15/`` (the layout of
    ``latent-consistency/lcm-lora-sdv1-5``: ``pytorch_lora_weights.safetensors``)."""
    return _build_once(Path(outdir) / OUTPUT_NAMES["lcm_lora_sd15"], lambda path: _write_lora(path, "sd15_inpaint"))


def build_lcm_lora_sdxl(outdir: Path) -> Path:
    """A tiny LoRA for the tiny SDXL inpainting UNet, as ``outdir/lcm_lora_sdxl/``."""
    return _build_once(Path(outdir) / OUTPUT_NAMES["lcm_lora_sdxl"], lambda path: _write_lora(path, "sdxl_inpaint"))


def _tiny_lama():
    """A module with big-lama's contract: ``forward(image, mask)``, image (1, 3, H, W) RGB in [0, 1],
    mask (1, 1, H, W) with 1 = hole, H and W multiples of 8; returns (1, 3, H, W) in [0, 1].

    As in LaMa's own forward, the hole is blanked out of the image, the mask is appended as a fourth
    channel, and the prediction (a sigmoid) is blended in inside the hole only: known pixels pass through.
    """
    import torch
    from torch import nn

    class TinyLama(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            width = REMOVAL_CHANNELS
            self.down = nn.Sequential(*(nn.Conv2d(4 if i == 0 else width, width, 3, stride=2, padding=1)
                                        for i in range(LAMA_DOWNSAMPLINGS)))
            self.up = nn.Sequential(*(nn.ConvTranspose2d(width, width, 2, stride=2)
                                      for _ in range(LAMA_DOWNSAMPLINGS)))
            self.to_rgb = nn.Conv2d(width, 3, 3, padding=1)

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            masked = torch.cat([image * (1 - mask), mask], dim=1)
            predicted = torch.sigmoid(self.to_rgb(torch.relu(self.up(torch.relu(self.down(masked))))))
            return mask * predicted + (1 - mask) * image

    torch.manual_seed(SEED)
    return TinyLama().eval()


def _write_lama(path: Path) -> None:
    import torch

    module = _tiny_lama()
    example = (torch.rand(1, 3, 64, 96), (torch.rand(1, 1, 64, 96) > 0.5).float())
    with torch.no_grad():
        traced = torch.jit.trace(module, example)  # convolutions only: it runs at any size the model takes
    torch.jit.save(traced, str(path))


def build_lama(outdir: Path) -> Path:
    """Build a tiny LaMa as ``outdir/big-lama.pt`` (a TorchScript file loadable by ``torch.jit.load``,
    IOPaint's big-lama contract) unless it exists; return its path."""
    return _build_once(Path(outdir) / OUTPUT_NAMES["lama"], _write_lama)


def _tiny_migan():
    """A module with the traced MI-GAN's contract: ``forward(x)``, x (1, 4, 512, 512) =
    ``cat([0.5 - mask, image * (1 - mask)])`` with the image in [-1, 1] and 1 = hole; returns
    (1, 3, 512, 512) in [-1, 1] (a tanh). A fixed 512×512 noise constant, like MI-GAN's, makes any
    other size fail."""
    import torch
    from torch import nn

    class TinyMigan(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            width = REMOVAL_CHANNELS
            self.down = nn.Conv2d(4, width, 3, stride=2, padding=1)
            self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
            self.to_rgb = nn.Conv2d(width, 3, 3, padding=1)
            self.register_buffer("noise_const", torch.randn(MIGAN_SIZE, MIGAN_SIZE))
            self.noise_strength = nn.Parameter(torch.tensor(0.1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = torch.relu(self.up(torch.relu(self.down(x)))) + self.noise_const * self.noise_strength
            return torch.tanh(self.to_rgb(features))

    torch.manual_seed(SEED)
    return TinyMigan().eval()


def _write_migan(path: Path) -> None:
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(_tiny_migan(), torch.zeros(1, 4, MIGAN_SIZE, MIGAN_SIZE))
    torch.jit.save(traced, str(path))


def build_migan(outdir: Path) -> Path:
    """Build a tiny MI-GAN as ``outdir/migan_traced.pt`` (a traced TorchScript file, IOPaint's
    MI-GAN contract: 512×512 only) unless it exists; return its path."""
    return _build_once(Path(outdir) / OUTPUT_NAMES["migan"], _write_migan)


def build_sam2(outdir: Path) -> Path:
    """Build a tiny SAM 2.1 as ``outdir/sam2/`` (see :mod:`tests.tiny_sam2`)."""
    from tests.tiny_sam2 import build_sam2 as build  # that module imports this one

    return build(outdir)


def build_sam3(outdir: Path) -> Path:
    """Build a tiny SAM 3 as ``outdir/sam3/`` (see :mod:`tests.tiny_sam3`)."""
    from tests.tiny_sam3 import build_sam3 as build  # that module imports this one

    return build(outdir)


def build_flux2_klein(outdir: Path) -> Path:
    """Build a tiny FLUX.2 [klein] inpainting pipeline as ``outdir/flux2_klein/`` (see :mod:`tests.tiny_flux`)."""
    from tests.tiny_flux import build_flux2_klein as build  # that module imports this one

    return build(outdir)


def build_flux_fill(outdir: Path) -> Path:
    """Build a tiny FLUX.1 Fill pipeline as ``outdir/flux_fill/`` (see :mod:`tests.tiny_flux`)."""
    from tests.tiny_flux import build_flux_fill as build

    return build(outdir)


def build_qwen_image_edit(outdir: Path) -> Path:
    """Build a tiny Qwen-Image-Edit pipeline as ``outdir/qwen_image_edit/`` (see :mod:`tests.tiny_qwen_image`)."""
    from tests.tiny_qwen_image import build_qwen_image_edit as build

    return build(outdir)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "sd15_inpaint": build_sd15_inpaint,
    "sdxl_inpaint": build_sdxl_inpaint,
    "fastsam": build_fastsam,
    "clip": build_clip,
    "sam": build_sam,
    "iclight_base": build_iclight_base,
    "iclight": build_iclight,
    "lcm_lora_sd15": build_lcm_lora_sd15,
    "lcm_lora_sdxl": build_lcm_lora_sdxl,
    "lama": build_lama,
    "migan": build_migan,
    "sam2": build_sam2,
    "sam3": build_sam3,
    "flux2_klein": build_flux2_klein,
    "flux_fill": build_flux_fill,
    "qwen_image_edit": build_qwen_image_edit,
}


# --- all of them -----------------------------------------------------------------------------------


def env_lines(paths: dict[str, Path]) -> list[str]:
    """``INPAINT_STUDIO_MODEL_<ROLE>=<path>`` lines (dotenv syntax, shell-quoted where needed)."""
    return [f"{ENV_VARS[role]}={shlex.quote(str(path))}" for role, path in paths.items()]


def build_all(outdir: Path) -> dict[str, Path]:
    """Build every role under ``outdir`` (reusing outputs already there) and return role -> absolute path.

    Also writes ``outdir/models.json`` ({role: path string}) and ``outdir/models.env`` (see
    :func:`env_lines`).
    """
    outdir = Path(outdir).absolute()
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {role: BUILDERS[role](outdir) for role in ROLES}
    (outdir / "models.json").write_text(
        json.dumps({role: str(path) for role, path in paths.items()}, indent=2) + "\n"
    )
    (outdir / "models.env").write_text("\n".join(env_lines(paths)) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.tiny_models OUTDIR``: make the ML libraries offline, build, print the env lines."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.tiny_models OUTDIR", file=sys.stderr)
        return 2
    os.environ.update(OFFLINE_ENV)
    os.environ["YOLO_VERBOSE"] = "0"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "tiny-models-yolo"))
    paths = build_all(Path(args[0]))
    print("\n".join(env_lines(paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
