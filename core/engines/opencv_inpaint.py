"""OpenCV inpainting (Telea's fast marching, Navier-Stokes): object removal without model weights.

Both methods propagate the colours around the hole into it, from its border inwards; they invent no
texture, so they suit small or thin holes in smooth surroundings (blemishes, wires, text). No
prompt, no seed: every variant is the same image. They work at any size; their cost grows with the
hole's area, which ``native_resolution`` bounds by having ``core.region`` scale larger crops down.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
from PIL import Image

from core.catalog import BUILTIN, EngineEntry
from core.engines.base import (
    CancelCheck,
    Cancelled,
    CatalogEngine,
    EngineOutput,
    EngineRequest,
    ProgressCallback,
    check_request,
)

DEFAULT_RADIUS = 5  # px around each filled pixel from whose known neighbours it is computed
METHODS = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}


class OpenCVInpaint(CatalogEngine):
    """``cv2.inpaint`` with the method its catalog entry names (``options["method"]``: Telea's fast
    marching, quick and smooth; Navier-Stokes, which continues edges into the hole). Always
    available; thread-safe."""

    upscales_small_crops = False  # more pixels add nothing to a diffusion-free fill
    schedulers: tuple[str, ...] = ()
    model_id = "opencv"

    def __init__(self, entry: EngineEntry | str = "telea", radius: int = DEFAULT_RADIUS) -> None:
        self.entry = BUILTIN.engines[entry] if isinstance(entry, str) else entry
        if radius < 1:
            raise ValueError(f"radius must be at least 1 px (got {radius}).")
        self.radius = radius
        self.method = METHODS[self.entry.options["method"]]

    @classmethod
    def from_catalog(cls, request) -> OpenCVInpaint:
        return cls(request.entry)

    def generate(
        self,
        request: EngineRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> EngineOutput:
        """Fill the mask's pixels (mask value 128 or more) from their surroundings; keep the rest.

        Returns one copy of the same image per seed. Prompts, steps, guidance, strength and
        scheduler are ignored.
        """
        image, mask = request.image, request.mask
        check_request(request)
        if should_cancel is not None and should_cancel():
            raise Cancelled("Inpainting was cancelled before it started.")

        started = time.perf_counter()
        hole = (np.asarray(mask) >= 128).astype(np.uint8)
        # cv2.inpaint treats the channels alike, so RGB needs no conversion to BGR.
        filled = cv2.inpaint(np.asarray(image), hole, self.radius, self.method)
        elapsed = (time.perf_counter() - started) * 1000
        if progress is not None:
            progress(1, 1)
        return EngineOutput(
            images=[Image.fromarray(filled, "RGB") for _ in request.seeds],
            timings={"inpaint": elapsed},
        )
