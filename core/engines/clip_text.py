"""CLIP through transformers: score candidate masks against a text, for selecting by name.

FastSAM's text prompts need the git-only ``clip`` package and a download, so text selection is
done here instead: each candidate mask's box is cropped from the photo, the pixels outside the mask
are blanked, and CLIP compares the crop with the text. Candidate embeddings are computed once per
photo (:meth:`ClipScorer.embed_candidates`, cached by the caller); each text prompt after that
costs one text embedding and a matrix product (:meth:`ClipScorer.score`), and the caller ranks the
similarities with :func:`core.segment.top_k_by_text`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from core.catalog import BUILTIN
from core.engines.base import CatalogEngine, ModelLoadError
from core.segment import CandidateSet


class ClipScorer(CatalogEngine):
    """A loaded ``CLIPModel`` with its ``CLIPProcessor``. Not thread-safe: hold a lock.

    Embeddings are float32 and L2-normalised, so a dot product is a cosine similarity.
    """

    def __init__(self, model, processor, model_id: str, device: str) -> None:
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.device = device
        self.entry = BUILTIN.engines["clip"]

    @classmethod
    def from_catalog(cls, request) -> ClipScorer:
        engine = cls.load(request.path(), device=request.device.kind)
        engine.entry = request.entry
        return engine

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> ClipScorer:
        """Load a hub id (e.g. ``openai/clip-vit-base-patch32``, from the local cache when offline) or
        a ``save_pretrained`` directory holding a ``CLIPModel`` and its ``CLIPProcessor``.

        Raises :class:`ModelLoadError` naming ``path`` when anything is missing or unreadable,
        including a tokenizer whose vocabulary files are missing (transformers then quietly builds a
        two-token dummy that would turn every text into the same embedding).
        """
        from transformers import CLIPModel, CLIPProcessor

        path = str(path)
        local = Path(path).expanduser()
        if _looks_local(path) and not local.is_dir():
            raise ModelLoadError(_load_message(path, "there is no such directory"))
        if local.is_dir():
            path = str(local)
        try:
            model = CLIPModel.from_pretrained(path).to(device).eval()
            processor = CLIPProcessor.from_pretrained(path)
        except Exception as error:  # noqa: BLE001 (hub, file and torch errors come in many types)
            raise ModelLoadError(_load_message(path, f"{type(error).__name__}: {error}")) from error
        problem = _tokenizer_problem(processor.tokenizer, model.config.text_config.vocab_size)
        if problem:
            raise ModelLoadError(_load_message(path, problem))
        return cls(model, processor, path, device)

    @property
    def logit_scale(self) -> float:
        """The model's learned softmax temperature, ``exp(logit_scale)`` (100 for OpenAI's CLIP)."""
        return self.model.logit_scale.exp().item()

    def embed_candidates(
        self, work_image: Image.Image, candidates: CandidateSet, min_area: int = 100, *, batch_size: int = 32
    ) -> np.ndarray:
        """One image embedding per candidate: float32 (len(candidates), D), rows L2-normalised.

        ``work_image`` is the photo (RGB) at the candidates' work resolution
        (``candidates.work_size``). Each candidate's box is cropped from it, every pixel outside the
        candidate's mask is set to the processor's mean colour (see :func:`_fill_colour`), and the
        crop is padded with that colour to a square so CLIP's centre crop keeps the whole object.
        Candidates of ``min_area`` work pixels or fewer get a row of NaN: too small to recognise.
        """
        if tuple(work_image.size) != tuple(candidates.work_size):
            raise ValueError(
                f"The work image is {work_image.width}×{work_image.height} but the candidates were "
                f"found at {candidates.work_size[0]}×{candidates.work_size[1]}."
            )
        import torch

        pixels = np.asarray(work_image.convert("RGB"))
        fill = _fill_colour(self.processor.image_processor.image_mean)
        embeddings = np.full((len(candidates), self.model.config.projection_dim), np.nan, np.float32)
        scorable = [i for i in range(len(candidates)) if candidates.areas[i] > min_area]
        for start in range(0, len(scorable), batch_size):
            batch = scorable[start : start + batch_size]
            crops = [
                _masked_square_crop(pixels, candidates.boxes[i], candidates.crops[i], fill)
                for i in batch
            ]
            inputs = self.processor(images=crops, return_tensors="pt")
            with torch.inference_mode():
                features = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
            embeddings[batch] = _normalised(features.pooler_output)
        return embeddings

    def embed_text(self, text: str) -> np.ndarray:
        """The text's embedding: float32 (D,), L2-normalised. Texts longer than the model's context
        (77 tokens for CLIP) are truncated."""
        import torch

        inputs = self.processor.tokenizer([text], padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            features = self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
            )
        return _normalised(features.pooler_output)[0]

    def score(self, image_embeddings: np.ndarray, text: str) -> np.ndarray:
        """Cosine similarity of each candidate with ``text``: float64 (N,), in [-1, 1].

        Rows of NaN (candidates too small to embed) score ``-inf``, so they rank last and get
        probability 0 in :func:`core.segment.top_k_by_text`; when every row is ``-inf`` there is
        nothing to rank (check ``np.isfinite(...).any()`` first).
        """
        similarities = np.asarray(image_embeddings, np.float64) @ self.embed_text(text).astype(np.float64)
        similarities[np.isnan(similarities)] = -np.inf
        return similarities


def _load_message(path: str, reason: str) -> str:
    return (
        f"CLIP (selecting objects by name) could not be loaded from {path!r}: {reason}. "
        f"Set INPAINT_STUDIO_MODEL_CLIP to a local directory holding a CLIPModel and its CLIPProcessor "
        "(saved with save_pretrained, or a download of openai/clip-vit-base-patch32 made on a "
        "machine with internet)."
    )


def _looks_local(path: str) -> bool:
    """Whether ``path`` names a directory rather than a hub id (``owner/name``)."""
    return Path(path).expanduser().is_absolute() or path.startswith((".", "~")) or path.count("/") > 1


def _tokenizer_problem(tokenizer, text_vocab_size: int) -> str:
    """Why ``tokenizer`` cannot feed a text model with ``text_vocab_size`` embeddings ("" if it can).

    A tokenizer loaded without its vocabulary files knows only its special tokens and maps every
    word to ``<|endoftext|>``; tokenizing a plain word shows it.
    """
    if len(tokenizer) > text_vocab_size:
        return f"its tokenizer has {len(tokenizer)} tokens but the text model only {text_vocab_size}"
    word_ids = set(tokenizer("photo")["input_ids"]) - set(tokenizer.all_special_ids)
    if not word_ids:
        return (
            "its tokenizer knows no words (only its special tokens): the tokenizer files "
            "(tokenizer.json, or vocab.json and merges.txt) are missing"
        )
    return ""


def _fill_colour(image_mean) -> np.ndarray:
    """The colour for blanked pixels: the processor's normalisation mean, as uint8 RGB.

    After CLIP's normalisation ``(x - mean) / std`` these pixels are zero (to within uint8
    rounding), and CLIP's patch embedding has no bias, so a fully blanked patch contributes little
    more than its position embedding: the most neutral input there is. White or black would be
    seen as a real white or black background and pull the text match towards it.
    """
    return np.round(np.asarray(image_mean, np.float64) * 255).astype(np.uint8)


def _masked_square_crop(
    pixels: np.ndarray, box: np.ndarray, mask_crop: np.ndarray, fill: np.ndarray
) -> np.ndarray:
    """The box's crop of ``pixels`` (uint8 H×W×3) with the pixels outside ``mask_crop`` set to
    ``fill``, centred on a square of ``fill``."""
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = y1 - y0, x1 - x0
    side = max(height, width)
    square = np.empty((side, side, 3), np.uint8)
    square[:] = fill
    top, left = (side - height) // 2, (side - width) // 2
    crop = square[top : top + height, left : left + width]
    np.copyto(crop, pixels[y0:y1, x0:x1], where=mask_crop[:, :, None])
    return square


def _normalised(features) -> np.ndarray:
    """A torch (N, D) batch of features as float32 numpy rows of unit length."""
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True)).cpu().numpy()
