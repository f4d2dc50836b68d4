"""SAM 2.1 (Segment Anything 2, image mode) through transformers: refine a selection by clicks and a box.

Same split as SAM (:mod:`core.engines.sam`): the Hiera vision encoder runs once per photo
(:meth:`Sam2Engine.embed`), then the prompt encoder and mask decoder answer each click from that
embedding (:meth:`Sam2Engine.segment`, :meth:`Sam2Engine.proposals`). The caller caches the
embedding per photo. One class runs every size (``facebook/sam2.1-hiera-small``,
``facebook/sam2.1-hiera-large``): the catalog's ``sam2`` and ``sam2_large`` engines.

Where SAM 2 differs from SAM, for this module:

* its embedding is three feature maps, not one: the decoder's image embedding (1/16 of the input)
  and two finer skip levels (1/4 and 1/8, already projected by the decoder's ``conv_s0`` /
  ``conv_s1``), all computed once per photo by ``Sam2Model.get_image_embeddings``;
* ``Sam2Processor`` resizes every photo to the input square (1024 x 1024) without keeping its aspect
  ratio or padding, so prompts scale by input size / width in x and input size / height in y, and
  masks map back by resizing the decoder's low-resolution square straight to the photo;
* with one mask asked for (several points, a box), the decoder falls back to the best of its three
  proposals when its single mask is unstable; predicted IoUs are sigmoids, in [0, 1];
* the hub's ``facebook/sam2.1-*`` checkpoints are the video model (``model_type: sam2_video``, the
  processor as ``Sam2VideoProcessor``): the image model and processor load from them, leaving the
  memory modules out.

Coordinates are the photo's pixels (x right, y down), as in :class:`core.segment.SegmentPrompt`;
masks come back at the photo's full size, bool, True = selected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from core.catalog import BUILTIN
from core.engines.base import ModelLoadError
from core.engines.sam import ClickSegmenter, height_width

if TYPE_CHECKING:
    import torch

DEFAULT_ROLE = "sam2"


@dataclass(frozen=True)
class Sam2Embedding:
    """One photo's SAM 2 image embedding and the sizes needed to map prompts and masks to the photo.

    ``image_embeddings``: the vision encoder's feature maps, finest first, each (1, C, h, w) on the
    model's device and dtype; the last is the decoder's image embedding (64 x 64 for 1024 px inputs),
    the others its high-resolution skip features (256 x 256 and 128 x 128).
    ``original_size``: the photo's (height, width). ``input_size``: the side of the square the
    processor resized the photo to (the model's input size).
    """

    image_embeddings: tuple[torch.Tensor, ...]
    original_size: tuple[int, int]
    input_size: int

    @property
    def input_scale(self) -> tuple[float, float]:
        """(x, y) factors from the photo's pixels to the encoder's square input.

        Sam2Processor scales prompts the same way, from the ``original_sizes`` it gets with the
        image, which :meth:`Sam2Engine.segment` must not preprocess again on every click.
        """
        original_height, original_width = self.original_size
        return self.input_size / original_width, self.input_size / original_height


class Sam2Engine(ClickSegmenter):
    """A loaded ``Sam2Model`` with its ``Sam2Processor``. Not thread-safe: hold a lock per engine."""

    model_title = "SAM 2"

    def __init__(self, model, processor, model_id: str, role: str = DEFAULT_ROLE) -> None:
        # The built-in engine of the same name as the role; from_catalog sets the request's own.
        self.entry = BUILTIN.engines.get(role) or BUILTIN.engines[DEFAULT_ROLE]
        self.model = model
        self.processor = processor
        self.model_id = model_id

    @classmethod
    def from_catalog(cls, request) -> Sam2Engine:
        engine = cls.load(request.path(), device=request.device.kind, role=request.entry.roles[0])
        engine.entry = request.entry
        return engine

    @classmethod
    def load(
        cls, path: str | Path, device: str = "cpu", dtype: str = "float32", *, role: str = DEFAULT_ROLE
    ) -> Sam2Engine:
        """Load a SAM 2 saved with ``save_pretrained`` (e.g. ``facebook/sam2.1-hiera-small``) from ``path``.

        ``path`` is a local directory or a hub id already in the local cache: an image model
        (``model_type`` ``sam2``) or, as the hub's ``facebook/sam2.1-*`` repositories are, a video
        model (``sam2_video``, whose memory modules are left out). ``dtype`` is a torch
        dtype name: float32 on CPU; bfloat16 (or float16) on CUDA. ``role``: the catalog role the
        model was found for (``sam2`` or ``sam2_large``), whose setting the error messages name.
        Raises :class:`ModelLoadError`, naming ``path`` and that setting, when the model or its
        processor cannot be loaded, is not a SAM 2 (a SAM 1 folder included), lacks weights, or has
        a processor whose input size differs from the model's.
        """
        model_id = str(path)
        try:
            import torch
            from transformers import AutoConfig, Sam2Config, Sam2Model, Sam2Processor

            config = AutoConfig.from_pretrained(model_id)
            if config.model_type == "sam2_video":
                # The hub's facebook/sam2.1-* hold the video model: its image path (vision encoder,
                # prompt encoder, mask decoder) is Sam2Model's, whose loader skips the memory modules.
                config = Sam2Config(
                    vision_config=config.vision_config,
                    prompt_encoder_config=config.prompt_encoder_config,
                    mask_decoder_config=config.mask_decoder_config,
                )
            elif config.model_type != "sam2":
                raise ValueError(f"it holds a {config.model_type!r} model, not a SAM 2")
            model, loading_info = Sam2Model.from_pretrained(
                model_id, config=config, dtype=getattr(torch, dtype), output_loading_info=True
            )
            if loading_info["missing_keys"]:
                raise ValueError(f"{len(loading_info['missing_keys'])} of its weights are missing")
            processor = Sam2Processor.from_pretrained(model_id)
        except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors and torch raise many types)
            raise ModelLoadError(_load_failure(model_id, role, error)) from error
        _check_input_sizes(model_id, role, model.config.prompt_encoder_config.image_size, processor)
        return cls(model.to(device).eval(), processor, model_id, role)

    def embed(self, image: Image.Image) -> Sam2Embedding:
        """Run the vision encoder once on ``image`` (RGB) and return its embedding.

        Most of a SAM 2 selection's cost is here; every :meth:`segment` and :meth:`proposals` call
        on the returned embedding reuses it.
        """
        import torch

        inputs = self.processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            feature_maps = self.model.get_image_embeddings(pixel_values)
        return Sam2Embedding(
            image_embeddings=tuple(feature_maps),
            original_size=height_width(inputs["original_sizes"][0]),
            input_size=int(self.processor.target_size),
        )

    def _decoder_embeddings(self, embedding: Sam2Embedding) -> list[torch.Tensor]:
        return list(embedding.image_embeddings)

    def _to_photo(self, embedding: Sam2Embedding, masks: torch.Tensor) -> torch.Tensor:
        """Resize the decoder's low-resolution square straight to the photo (no padding to drop)."""
        (photo_masks,) = self.processor.post_process_masks(masks, [embedding.original_size])
        return photo_masks[0].cpu()


def _setting(role: str) -> str:
    return f"INPAINT_STUDIO_MODEL_{role.upper()}"


def _default(role: str) -> str:
    return (BUILTIN.models.get(role) or BUILTIN.models[DEFAULT_ROLE]).default


def _load_failure(model_id: str, role: str, error: Exception) -> str:
    return (
        f"The SAM 2 model {model_id} could not be loaded ({type(error).__name__}: {error}). "
        f"Set {_setting(role)} to a local copy of {_default(role)} (a directory with its config.json, "
        "model.safetensors and processor settings, as saved by save_pretrained)."
    )


def _check_input_sizes(model_id: str, role: str, model_size: int, processor) -> None:
    """Raise ModelLoadError unless the processor resizes photos, and scales prompts, to the model's
    input square.

    A mismatch would not always fail loudly: prompts and masks would come back silently shifted.
    """
    size = processor.image_processor.size
    resized = (size["height"], size["width"])
    if resized != (model_size, model_size) or processor.target_size != model_size:
        raise ModelLoadError(
            f"The SAM 2 model {model_id} takes {model_size} px inputs, but its processor resizes photos to "
            f"{resized[1]}x{resized[0]} and scales prompts to {processor.target_size} px. "
            f"Set {_setting(role)} to a directory whose model and processor were saved together."
        )
