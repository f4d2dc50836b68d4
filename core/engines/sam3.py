"""SAM 3 through transformers: select every instance of a concept, named by a text or shown by boxes.

Where SAM (:mod:`core.engines.sam`) outlines the one object a click points at, SAM 3 finds *all*
the objects that match a concept: a short text ("window", "logo") and/or example boxes around
instances (positive) or around look-alikes to leave out (negative). It answers with one mask, score
and box per instance it finds.

The work splits the same way as SAM's: a heavy vision encoder runs once per photo
(:meth:`Sam3Engine.embed`), then each prompt runs the text encoder, the box encoder and the DETR
detector with its mask head on that embedding (:meth:`Sam3Engine.find`). The caller caches the
embedding per photo.

Coordinates are the photo's pixels (x right, y down), as in :class:`core.segment.SegmentPrompt`;
masks come back at the photo's full size, bool, True = selected.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from core.catalog import BUILTIN
from core.engines.base import CatalogEngine, ModelLoadError
from core.segment import SegmentError

if TYPE_CHECKING:
    import torch

# The model types a SAM 3 checkpoint's config.json may have: the image model, or the video model
# (facebook/sam3's layout), whose detector is the image model.
MODEL_TYPES = ("sam3", "sam3_video")
# Sam3Processor pads (but does not truncate) every text to this many tokens, the text encoder's context.
TEXT_TOKENS = 32
# Queries upsampled to the photo's size at once while post-processing (bounds the float masks in memory).
UPSAMPLE_BATCH = 16


@dataclass(frozen=True)
class Sam3Embedding:
    """One photo's SAM 3 vision features and its size.

    ``vision_embeds``: what ``Sam3Model.get_vision_features`` returned (a ``Sam3VisionEncoderOutput``:
    the ViT's last hidden state and the FPN maps with their position encodings), on the model's
    device and dtype: about 250 MB in float32 for the real model (1008 px input), half that in 16-bit.
    ``original_size``: the photo's (height, width).
    """

    vision_embeds: Any
    original_size: tuple[int, int]


@dataclass(frozen=True)
class Instance:
    """One object SAM 3 found.

    ``mask``: bool (H, W) at the photo's size, True = the object. ``score``: SAM 3's confidence in
    [0, 1] (the query's match probability times the concept's presence probability). ``box``:
    ``(x0, y0, x1, y1)`` in the photo's pixels, the model's predicted box clamped to the photo
    (it need not be the mask's bounding box).
    """

    mask: np.ndarray
    score: float
    box: tuple[float, float, float, float]


class Sam3Engine(CatalogEngine):
    """A loaded ``Sam3Model`` with its ``Sam3Processor``. Not thread-safe: hold a lock per engine."""

    def __init__(self, model, processor, model_id: str) -> None:
        self.entry = BUILTIN.engines["sam3"]
        self.model = model
        self.processor = processor
        self.model_id = model_id

    @classmethod
    def from_catalog(cls, request) -> Sam3Engine:
        engine = cls.load(request.path(), device=request.device.kind)
        engine.entry = request.entry
        return engine

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> Sam3Engine:
        """Load a SAM 3 saved with ``save_pretrained`` (e.g. ``facebook/sam3``) from ``path``.

        ``path`` is a local directory or a hub id already in the local cache. Its config may be the
        image model's (``sam3``) or the video model's (``sam3_video``, whose detector is loaded).
        ``dtype`` is a torch dtype name: float32 on CPU; float16 or bfloat16 are fine on CUDA.
        Raises :class:`ModelLoadError`, naming ``path`` and ``INPAINT_STUDIO_MODEL_SAM3``, when the
        model or its processor cannot be loaded, is not a SAM 3, lacks weights, has a tokenizer
        without its vocabulary, or has a processor whose input size differs from the model's.
        """
        model_id = str(path)
        try:
            import torch
            from transformers import AutoConfig, Sam3Model, Sam3Processor

            config = AutoConfig.from_pretrained(model_id)
            if config.model_type not in MODEL_TYPES:
                raise ValueError(f"it holds a {config.model_type!r} model, not a SAM 3")
            model, loading_info = Sam3Model.from_pretrained(
                model_id, config=config, dtype=getattr(torch, dtype), output_loading_info=True
            )
            if loading_info["missing_keys"]:
                raise ValueError(f"{len(loading_info['missing_keys'])} of its weights are missing")
            processor = Sam3Processor.from_pretrained(model_id)
        except Exception as error:  # noqa: BLE001 (hub, JSON, safetensors and torch raise many types)
            raise ModelLoadError(_load_failure(model_id, f"{type(error).__name__}: {error}")) from error
        problem = _tokenizer_problem(processor.tokenizer, model.config.text_config.vocab_size)
        if not problem:
            problem = _size_problem(model.config.vision_config.image_size, processor.image_processor.size)
        if problem:
            raise ModelLoadError(_load_failure(model_id, problem))
        return cls(model.to(device).eval(), processor, model_id)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def embed(self, image: Image.Image) -> Sam3Embedding:
        """Run the vision encoder once on ``image`` (RGB) and return its features.

        Most of a SAM 3 selection's cost is here; every :meth:`find` call on the returned embedding
        reuses it (transformers' ``vision_embeds=`` input), whatever its text or boxes.
        """
        import torch

        inputs = self.processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            vision_embeds = self.model.get_vision_features(pixel_values=pixel_values)
        height, width = (int(value) for value in inputs["original_sizes"][0])
        return Sam3Embedding(vision_embeds=vision_embeds, original_size=(height, width))

    def find(
        self,
        embedding: Sam3Embedding,
        text: str = "",
        boxes: Sequence[tuple[tuple[float, float, float, float], int]] = (),
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        limit: int | None = None,
    ) -> list[Instance]:
        """Every instance of the concept ``text`` and/or ``boxes`` show, on the embedded photo.

        ``text``: a short noun phrase ("window", "red car"); at most 32 tokens. ``boxes``:
        ``((x0, y0, x1, y1), label)`` in the photo's pixels, label 1 = an example of what to find,
        0 = an example of what not to find; with boxes alone, the text is SAM 3's own "visual"
        placeholder, as in transformers' processor. ``threshold``: the least score kept (strictly
        above it; 0.0 keeps every query). ``mask_threshold``: the probability above which a pixel
        belongs to a mask. ``limit``: keep at most this many instances (None = all).

        Returns the instances ranked by score, highest first (ties keep the model's query order),
        each with a bool mask at the photo's size; an empty list when nothing scores above
        ``threshold``. Raises :class:`SegmentError` without text or boxes, or for a box with no
        area, a label other than 0 or 1, or a text too long.
        """
        import torch

        # 1. Check the prompt
        text = text.strip()
        if not text and not boxes:
            raise SegmentError(
                "SAM 3 needs a text or a box: type what to find (\"window\", \"logo\") or drag a box "
                "around one example of it."
            )
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be None or at least 0, not {limit}.")
        corners, labels = _checked_boxes(boxes)
        if text:
            tokens = len(self.processor.tokenizer(text)["input_ids"])
            if tokens > TEXT_TOKENS:
                raise SegmentError(
                    f"The text is too long for SAM 3 ({tokens} tokens, at most {TEXT_TOKENS}): name the "
                    "thing in a few words (\"window\", \"red car\")."
                )

        # 2. Tokenise the text and scale the boxes as the processor does (to [0, 1] of the photo,
        #    centre and size), without preprocessing the photo again
        prompt = self.processor(
            text=text or None,
            input_boxes=[corners] if corners else None,
            input_boxes_labels=[labels] if labels else None,
            original_sizes=[list(embedding.original_size)],
            return_tensors="pt",
        )
        inputs = {"input_ids": prompt["input_ids"].to(self.device),
                  "attention_mask": prompt["attention_mask"].to(self.device)}
        if corners:
            inputs["input_boxes"] = prompt["input_boxes"].to(self.device, self.dtype)
            inputs["input_boxes_labels"] = prompt["input_boxes_labels"].to(self.device)

        # 3. Detect from the cached vision features (the vision encoder does not run again)
        with torch.inference_mode():
            outputs = self.model(vision_embeds=embedding.vision_embeds, **inputs)

        # 4. Rank the queries, then upsample only the kept ones to the photo (a few at a time)
        scores = outputs.pred_logits[0].float().sigmoid()
        if outputs.presence_logits is not None:
            scores = scores * outputs.presence_logits[0].float().sigmoid()
        scores = scores.cpu()
        order = [int(i) for i in torch.argsort(-scores, stable=True) if float(scores[i]) > threshold]
        return self._instances(outputs, order[:limit], threshold, mask_threshold, embedding.original_size)

    def _instances(self, outputs, order: list[int], threshold: float, mask_threshold: float,
                   original_size: tuple[int, int]) -> list[Instance]:
        """``order``'s queries as instances, through transformers' own post-processing."""
        height, width = original_size
        instances = []
        for start in range(0, len(order), UPSAMPLE_BATCH):
            chosen = order[start : start + UPSAMPLE_BATCH]
            subset = SimpleNamespace(
                pred_logits=outputs.pred_logits[:, chosen].float(),
                pred_boxes=outputs.pred_boxes[:, chosen].float(),
                pred_masks=outputs.pred_masks[:, chosen].float(),
                presence_logits=None if outputs.presence_logits is None else outputs.presence_logits.float(),
            )
            (result,) = self.processor.post_process_instance_segmentation(
                subset, threshold=threshold, mask_threshold=mask_threshold, target_sizes=[original_size]
            )
            if len(result["scores"]) != len(chosen):  # the same scores, so the same queries pass
                raise RuntimeError("SAM 3's post-processing kept other queries than were ranked.")
            masks = result["masks"].bool().cpu().numpy()
            for mask, score, box in zip(masks, result["scores"].tolist(), result["boxes"].tolist()):
                x0, y0, x1, y1 = box
                clamped = (min(max(x0, 0.0), width), min(max(y0, 0.0), height),
                           min(max(x1, 0.0), width), min(max(y1, 0.0), height))
                instances.append(Instance(mask=mask, score=float(score), box=clamped))
        return instances


def _checked_boxes(
    boxes: Sequence[tuple[tuple[float, float, float, float], int]],
) -> tuple[list[list[float]], list[int]]:
    """The boxes' corners (ordered: x0 < x1, y0 < y1) and labels; SegmentError for a bad one."""
    corners, labels = [], []
    for box, label in boxes:
        if label not in (0, 1):
            raise SegmentError(
                f"A box's label must be 1 (find things like it) or 0 (leave them out), not {label!r}."
            )
        x0, y0, x1, y1 = (float(value) for value in box)
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            raise SegmentError("An example box has no area: drag a box around one example of the thing.")
        corners.append([x0, y0, x1, y1])
        labels.append(int(label))
    return corners, labels


def _load_failure(model_id: str, reason: str) -> str:
    return (
        f"The SAM 3 model {model_id} could not be loaded ({reason}). Set INPAINT_STUDIO_MODEL_SAM3 to a "
        "local copy of facebook/sam3 (a directory with its config.json, model.safetensors, processor and "
        "tokenizer files, as saved by save_pretrained; the repository is gated: accept its licence on "
        "the Hugging Face hub first)."
    )


def _tokenizer_problem(tokenizer, text_vocab_size: int) -> str:
    """Why ``tokenizer`` cannot feed a text model with ``text_vocab_size`` embeddings ("" if it can).

    A tokenizer loaded without its vocabulary files knows only its special tokens and maps every
    word to one of them, so every text would ask for the same thing.
    """
    if len(tokenizer) > text_vocab_size:
        return f"its tokenizer has {len(tokenizer)} tokens but the text model only {text_vocab_size}"
    if not set(tokenizer("window")["input_ids"]) - set(tokenizer.all_special_ids):
        return (
            "its tokenizer knows no words (only its special tokens): the tokenizer files "
            "(tokenizer.json, or vocab.json and merges.txt) are missing"
        )
    return ""


def _size_problem(model_size, processor_size) -> str:
    """Why the processor's square resize does not fit the model's input ("" if it does).

    A mismatch would not fail loudly: the ViT tiles its position embeddings to any size.
    """
    wanted = (model_size, model_size) if isinstance(model_size, int) else tuple(model_size)
    resized = (processor_size.height, processor_size.width)
    if resized != wanted:
        return (
            f"the model takes {wanted[1]}x{wanted[0]} px inputs, but its processor resizes photos to "
            f"{resized[1]}x{resized[0]} px; use a directory whose model and processor were saved together"
        )
    return ""
