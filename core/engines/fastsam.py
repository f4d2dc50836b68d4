"""FastSAM through ultralytics: segment everything in a photo once, as a :class:`CandidateSet`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from core.catalog import BUILTIN
from core.engines.base import CatalogEngine, ModelLoadError
from core.segment import CandidateSet, FastSAMSettings, work_copy

__all__ = ["FastSAMEngine", "FastSAMSettings", "work_copy"]


class FastSAMEngine(CatalogEngine):
    """A loaded FastSAM checkpoint (FastSAM-s or FastSAM-x). Not thread-safe: hold a lock."""

    def __init__(self, model, model_id: str, device: str) -> None:
        self.entry = BUILTIN.engines["fastsam"]
        self.model = model
        self.model_id = model_id
        self.device = device

    @classmethod
    def from_catalog(cls, request) -> FastSAMEngine:
        kind = request.device.kind
        engine = cls.load(request.path(), device="cuda:0" if kind == "cuda" else kind)
        engine.entry = request.entry
        return engine

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> FastSAMEngine:
        """Load a ``.pt`` checkpoint. Missing or unreadable files raise :class:`ModelLoadError`.

        Only existing files are passed to ultralytics, which would otherwise try to download.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelLoadError(
                f"The FastSAM checkpoint {path} does not exist. Download FastSAM-s.pt on a machine "
                "with internet and set INPAINT_STUDIO_MODEL_FASTSAM to its path."
            )
        try:
            from ultralytics import FastSAM

            model = FastSAM(str(path))
        except Exception as error:  # noqa: BLE001 (torch.load and ultralytics raise many types)
            raise ModelLoadError(
                f"The FastSAM checkpoint {path} could not be loaded ({type(error).__name__}: {error}). "
                "It may be incomplete or not a FastSAM/YOLO segmentation checkpoint; download it again."
            ) from error
        return cls(model, str(path), device)

    def everything(self, image: Image.Image, settings: FastSAMSettings = FastSAMSettings()) -> CandidateSet:
        """Every object mask in ``image`` (RGB), at a work copy whose long side is ``imgsz``."""
        work = work_copy(image, settings.imgsz)
        results = self.model(
            work,
            device=self.device,
            imgsz=settings.imgsz,
            conf=settings.conf,
            iou=settings.iou,
            retina_masks=settings.retina_masks,
            max_det=settings.max_det,
            verbose=False,
        )
        result = results[0]
        if result.masks is None or len(result.masks) == 0:
            return CandidateSet.from_masks(np.zeros((0, work.height, work.width), bool), [], image.size)
        masks = result.masks.data.cpu().numpy() > 0.5
        if masks.shape[1:] != (work.height, work.width):
            from ultralytics.utils.ops import scale_image

            # Without retina masks they come at the letterboxed model input: unpad and resize.
            masks = scale_image(masks.transpose(1, 2, 0).astype(np.uint8), (work.height, work.width))
            masks = masks.transpose(2, 0, 1) > 0
        scores = result.boxes.conf.cpu().numpy() if result.boxes is not None else None
        return CandidateSet.from_masks(masks, scores, image.size)
