"""SAM (Segment Anything) through transformers: refine a selection by points and a box.

SAM splits its work the way a clicking user needs: a heavy vision encoder runs once per photo
(:meth:`SamEngine.embed`), then a light prompt encoder and mask decoder answer each click from that
embedding (:meth:`SamEngine.segment`, :meth:`SamEngine.proposals`). The caller caches the embedding
per photo.

Coordinates are the photo's pixels (x right, y down), as in :class:`core.segment.SegmentPrompt`;
masks come back at the photo's full size, bool, True = selected.

:class:`ClickSegmenter` is what SAM and SAM 2 (:mod:`core.engines.sam2`) share: checking a prompt,
scaling it to the encoder's input, running the decoder on a cached embedding, choosing among its
masks. Each model's engine adds how it loads, embeds a photo and maps masks back to it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from core.catalog import BUILTIN
from core.engines.base import CatalogEngine, ModelLoadError
from core.segment import SegmentError

if TYPE_CHECKING:
    import torch

Point = tuple[float, float, int]  # (x, y, label): label 1 = part of the object, 0 = not
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1)


@dataclass(frozen=True)
class SamEmbedding:
    """One photo's SAM image embedding and the sizes needed to map prompts and masks to the photo.

    ``image_embeddings``: the vision encoder's output, (1, C, h, w) on the model's device and dtype.
    ``original_size``: the photo's (height, width). ``reshaped_input_size``: (height, width) of the
    photo resized for the encoder (long side = the model's input size), before padding to a square.
    """

    image_embeddings: torch.Tensor
    original_size: tuple[int, int]
    reshaped_input_size: tuple[int, int]

    @property
    def input_scale(self) -> tuple[float, float]:
        """(x, y) factors from the photo's pixels to the encoder's resized input.

        SamProcessor scales prompts the same way, but only while preprocessing the image itself,
        which :meth:`SamEngine.segment` must not redo on every click.
        """
        original_height, original_width = self.original_size
        reshaped_height, reshaped_width = self.reshaped_input_size
        return reshaped_width / original_width, reshaped_height / original_height


class ClickSegmenter(CatalogEngine):
    """Answers point and box prompts from a cached photo embedding with a SAM-style prompt encoder
    and mask decoder (``model``, called with ``image_embeddings=``) and its ``processor``.

    A subclass implements ``embed(image)`` (returning an embedding with ``original_size`` and
    ``input_scale``), :meth:`_to_photo` and, when its model wants the embedding in another form,
    :meth:`_decoder_embeddings`. Not thread-safe: hold a lock per engine.
    """

    model: Any
    processor: Any
    model_title = "SAM"  # how the model is named in messages

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def segment(
        self, embedding, points: Sequence[Point] = (), box: Box | None = None
    ) -> tuple[np.ndarray, float]:
        """The mask the model predicts for ``points`` and ``box`` on the embedded photo.

        ``points``: ``(x, y, label)`` in the photo's pixels, label 1 = part of the object, 0 = not.
        ``box``: ``(x0, y0, x1, y1)`` in the photo's pixels. A lone point is ambiguous (a shirt or
        the person wearing it), so the decoder then proposes three masks and the one with the
        highest predicted IoU is kept; more prompts give one mask. Returns a bool (H, W) mask at the
        photo's size, True = selected, and the model's predicted IoU of that mask (a confidence; not
        bounded to [0, 1] for an untrained SAM). Raises :class:`SegmentError` without points or box,
        or for a label other than 0 or 1.
        """
        multimask_output = len(points) == 1 and box is None
        masks, iou_scores = self._decode(embedding, points, box, multimask_output)
        best = int(iou_scores.argmax())
        return self._to_photo(embedding, masks[:, :, best : best + 1])[0].numpy(), float(iou_scores[best])

    def proposals(
        self, embedding, points: Sequence[Point] = (), box: Box | None = None
    ) -> list[tuple[np.ndarray, float]]:
        """Every mask the decoder proposes for ``points`` and ``box`` (its multimask output: three
        nested readings of the prompt, such as a shirt, the person, the group), smallest first.

        Prompts as in :meth:`segment`. Returns ``(mask, predicted IoU)`` pairs, each mask bool
        (H, W) at the photo's size, ordered by the mask's area from the smallest to the largest
        (the decoder's order among equal areas): the steps of a Smaller / Bigger control.
        """
        masks, iou_scores = self._decode(embedding, points, box, multimask_output=True)
        photo_masks = self._to_photo(embedding, masks)
        areas = photo_masks.flatten(1).sum(dim=1).tolist()
        order = sorted(range(len(areas)), key=lambda index: areas[index])
        return [(photo_masks[index].numpy(), float(iou_scores[index])) for index in order]

    # --- shared steps ---------------------------------------------------------------------------

    def _decode(
        self, embedding, points: Sequence[Point], box: Box | None, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the prompt, scale it to the encoder's input and run the prompt encoder and mask
        decoder on the cached embedding (the vision encoder does not run again).

        Returns the low-resolution mask logits, (1, 1, masks, h, w) in float32, and their predicted
        IoUs, (masks,) in float32 on the CPU.
        """
        import torch

        # 1. Check the prompt
        if not points and box is None:
            raise SegmentError(
                f"{self.model_title} needs a point or a box: click the object or drag a box around it."
            )
        if any(label not in (0, 1) for _, _, label in points):
            raise SegmentError("A point's label must be 1 (include) or 0 (exclude).")

        # 2. Scale the prompt from the photo's pixels to the encoder's resized input
        scale_x, scale_y = embedding.input_scale
        prompt = {}
        if points:
            coordinates = [[x * scale_x, y * scale_y] for x, y, _ in points]
            prompt["input_points"] = torch.tensor([[coordinates]], dtype=torch.float32, device=self.device)
            prompt["input_labels"] = torch.tensor(
                [[[int(label) for _, _, label in points]]], dtype=torch.int64, device=self.device
            )
        if box is not None:
            x0, y0, x1, y1 = box
            scaled_box = [x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y]
            prompt["input_boxes"] = torch.tensor([[scaled_box]], dtype=torch.float32, device=self.device)

        # 3. Decode masks from the cached embedding
        with torch.inference_mode():
            outputs = self.model(
                image_embeddings=self._decoder_embeddings(embedding),
                multimask_output=multimask_output,
                **prompt,
            )
        return outputs.pred_masks.float(), outputs.iou_scores[0, 0].float().cpu()

    def _decoder_embeddings(self, embedding):
        """The embedding as the model's ``image_embeddings`` argument."""
        return embedding.image_embeddings

    def _to_photo(self, embedding, masks: torch.Tensor) -> torch.Tensor:
        """Low-resolution mask logits (1, 1, k, h, w) as k bool masks (k, H, W) at the photo's size,
        on the CPU."""
        raise NotImplementedError


class SamEngine(ClickSegmenter):
    """A loaded ``SamModel`` with its ``SamProcessor``. Not thread-safe: hold a lock per engine."""

    def __init__(self, model, processor, model_id: str) -> None:
        self.entry = BUILTIN.engines["sam"]
        self.model = model
        self.processor = processor
        self.model_id = model_id

    @classmethod
    def from_catalog(cls, request) -> SamEngine:
        engine = cls.load(request.path(), device=request.device.kind)
        engine.entry = request.entry
        return engine

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> SamEngine:
        """Load a SAM saved with ``save_pretrained`` (e.g. ``facebook/sam-vit-base``) from ``path``.

        ``path`` is a local directory or a hub id already in the local cache. ``dtype`` is a torch
        dtype name: float32 on CPU; float16 or bfloat16 are fine on CUDA. Raises
        :class:`ModelLoadError`, naming ``path``, when the model or its processor cannot be loaded,
        is not a SAM, lacks weights, or has a processor whose input size differs from the model's.
        """
        model_id = str(path)
        try:
            import torch
            from transformers import AutoConfig, SamModel, SamProcessor

            config = AutoConfig.from_pretrained(model_id)
            if config.model_type != "sam":
                raise ValueError(f"it holds a {config.model_type!r} model, not a SAM")
            model, loading_info = SamModel.from_pretrained(
                model_id, config=config, dtype=getattr(torch, dtype), output_loading_info=True
            )
            if loading_info["missing_keys"]:
                raise ValueError(f"{len(loading_info['missing_keys'])} of its weights are missing")
            processor = SamProcessor.from_pretrained(model_id)
        except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors and torch raise many types)
            raise ModelLoadError(_load_failure(model_id, error)) from error
        _check_input_sizes(model_id, model.config.vision_config.image_size, processor.image_processor)
        return cls(model.to(device).eval(), processor, model_id)

    def embed(self, image: Image.Image) -> SamEmbedding:
        """Run the vision encoder once on ``image`` (RGB) and return its embedding.

        Most of a SAM selection's cost is here; every :meth:`segment` and :meth:`proposals` call on
        the returned embedding reuses it.
        """
        import torch

        inputs = self.processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            image_embeddings = self.model.get_image_embeddings(pixel_values)
        return SamEmbedding(
            image_embeddings=image_embeddings,
            original_size=height_width(inputs["original_sizes"][0]),
            reshaped_input_size=height_width(inputs["reshaped_input_sizes"][0]),
        )

    def _to_photo(self, embedding: SamEmbedding, masks: torch.Tensor) -> torch.Tensor:
        """Upscale to the encoder's padded square, drop the padding, resize to the photo."""
        (photo_masks,) = self.processor.post_process_masks(
            masks,  # (image, prompt, mask, h, w)
            [embedding.original_size],
            [embedding.reshaped_input_size],
        )
        return photo_masks[0].cpu()


def height_width(size) -> tuple[int, int]:
    """A processor's ``original_sizes`` row as ``(height, width)`` ints."""
    height, width = (int(value) for value in size)
    return height, width


def _load_failure(model_id: str, error: Exception) -> str:
    return (
        f"The SAM model {model_id} could not be loaded ({type(error).__name__}: {error}). "
        f"Set INPAINT_STUDIO_MODEL_SAM to a local copy of facebook/sam-vit-base (a directory with its "
        "config.json, model.safetensors and preprocessor config, as saved by save_pretrained)."
    )


def _check_input_sizes(model_id: str, model_size: int, image_processor) -> None:
    """Raise ModelLoadError unless the processor resizes and pads photos to the model's input size.

    A mismatch would not fail loudly: masks would come back silently shifted and scaled.
    """
    resized = image_processor.size["longest_edge"]
    padded = (image_processor.pad_size["height"], image_processor.pad_size["width"])
    if resized != model_size or padded != (model_size, model_size):
        raise ModelLoadError(
            f"The SAM model {model_id} takes {model_size} px inputs, but its processor resizes photos to "
            f"{resized} px and pads them to {padded[1]}x{padded[0]}. Set INPAINT_STUDIO_MODEL_SAM to a "
            "directory whose model and processor were saved together."
        )
