"""OpenCV inpainting (Telea's fast marching, Navier-Stokes): object removal without model weights.

Both methods propagate the colours around the hole into it, from its border inwards; they invent no
texture, so they suit small or thin holes in smooth surroundings (blemishes, wires, text). No
prompt, no seed: every variant is the same image. They work at any size; their cost grows with the
hole's area, which ``native_resolution`` bounds by having ``core.inpaint`` scale larger crops down.
"""
from __future__ import annotations

import time
from typing import ClassVar

import cv2
import numpy as np
from PIL import Image

from core.engines.base import (
    CancelCheck,
    Cancelled,
    EngineOutput,
    EngineRequest,
    InpaintError,
    ProgressCallback,
)

DEFAULT_RADIUS = 5  # px around each filled pixel from whose known neighbours it is computed


class OpenCVInpaint:
    """``cv2.inpaint`` with one of its methods (set by the subclass). Always available; thread-safe."""

    name: ClassVar[str]
    title: ClassVar[str]
    method: ClassVar[int]
    native_resolution: ClassVar[int] = 1024
    upscales_small_crops: ClassVar[bool] = False  # more pixels add nothing to a diffusion-free fill
    supports_prompt: ClassVar[bool] = False
    supports_negative_prompt: ClassVar[bool] = False
    supports_strength: ClassVar[bool] = False
    schedulers: ClassVar[tuple[str, ...]] = ()
    model_id = "opencv"

    def __init__(self, radius: int = DEFAULT_RADIUS) -> None:
        if radius < 1:
            raise ValueError(f"radius must be at least 1 px (got {radius}).")
        self.radius = radius

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
        if not request.seeds:
            raise InpaintError("At least one seed is needed (one variant per seed).")
        if image.mode != "RGB" or mask.mode != "L":
            raise InpaintError(
                f"The image must be RGB and the mask mode L, 255 = repaint (got {image.mode}, {mask.mode})."
            )
        if image.size != mask.size:
            raise InpaintError(
                f"The image ({image.width}x{image.height}) and mask ({mask.width}x{mask.height}) "
                "must be the same size."
            )
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


class TeleaInpaint(OpenCVInpaint):
    """Telea's fast marching method: quick, smooth fills."""

    name = "telea"
    title = "Remove (OpenCV Telea)"
    method = cv2.INPAINT_TELEA


class NavierStokesInpaint(OpenCVInpaint):
    """Navier-Stokes based inpainting: continues edges (isophotes) into the hole."""

    name = "navier_stokes"
    title = "Remove (OpenCV Navier-Stokes)"
    method = cv2.INPAINT_NS
