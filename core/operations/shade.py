"""Relighting without a model: the subject shaded by the light (``core.light.shade``) at full size."""
from __future__ import annotations

import time

import numpy as np
from PIL import Image

from core.light import LightParams, shade
from core.masks import check_mask
from core.operations.relight import RelightParams, RelightResult


def relight_by_shading(image: np.ndarray, mask: np.ndarray, light: LightParams) -> RelightResult:
    """The weight-free relight (:func:`shade`) at full size, as a one-variant :class:`RelightResult`."""
    started = time.perf_counter()
    shaded = Image.fromarray(shade(image, mask, light), "RGB")
    timings = {"total": (time.perf_counter() - started) * 1000}
    return RelightResult([shaded], [0], RelightParams(variants=1), light, "none", timings, engine="shading",
                         mask=check_mask(mask, (image.shape[1], image.shape[0])))


