"""MI-GAN (Sargsyan et al., ICCV 2023): a small, fast inpainting GAN for object removal, trained on
Places2 at 512×512 (about 6 M parameters). MIT.

The file is IOPaint's TorchScript export, ``migan_traced.pt``
(https://github.com/Sanster/models/releases/download/migan/migan_traced.pt, MD5
76eb3b1a71c400ee3290524f7a11b89c), run as IOPaint runs it (``iopaint/model/mi_gan.py``):

- a crop whose long side is over 512 px is scaled down to 512 (bicubic), then every crop is mirrored
  at the bottom and right up to 512×512 (:func:`core.engines.torchscript.pad_bottom_right`): the
  traced network only takes that size;
- input: one float32 tensor (1, 4, 512, 512) = ``cat([0.5 - mask, image * (1 - mask)])``, image RGB
  in [-1, 1] (``x / 255 * 2 - 1``), mask 1 = hole;
- output: (1, 3, 512, 512) RGB in [-1, 1], to ``x * 127.5 + 127.5`` rounded and clamped to uint8,
  cropped to the crop's (scaled) size and scaled back (bicubic).

The crop path asks :meth:`MiganEngine.work_size` for the size to prepare a crop at, so it is scaled
once (long side at most 512, never up) and the engine only pads it.
"""
from __future__ import annotations

import cv2
import numpy as np

from core.engines.base import ModelLoadError
from core.engines.torchscript import HOLE_LEVEL, TorchScriptRemoval, pad_bottom_right

SIZE = 512  # the traced network's only input size
MULTIPLE = 8  # what the crop path promises every engine (sides multiples of 8)


class MiganEngine(TorchScriptRemoval):
    """IOPaint's TorchScript MI-GAN (``migan_traced.pt``), filling each crop within one 512×512 call."""

    engine_name = "migan"
    model_title = "MI-GAN"
    published = "migan_traced.pt"

    def work_size(self, crop_size: tuple[int, int]) -> tuple[int, int]:
        """The size a crop of ``crop_size`` (width, height) is prepared at: its own, or, when its long
        side is over 512, scaled so that it is 512; sides rounded to multiples of 8."""
        width, height = crop_size
        scale = min(1.0, SIZE / max(width, height))

        def side(length: int) -> int:
            return min(SIZE, max(MULTIPLE, round(length * scale / MULTIPLE) * MULTIPLE))

        return side(width), side(height)

    def check_contract(self) -> None:
        """One call on a (1, 4, 512, 512) input must return (1, 3, 512, 512)."""
        import torch

        x = torch.zeros((1, 4, SIZE, SIZE))
        x[:, 0] = 0.5  # nothing is hole: the first channel is 0.5 - mask
        shape = self._probe(x)
        if shape != (1, 3, SIZE, SIZE):
            raise ModelLoadError(f"its output is {shape} for a (1, 4, {SIZE}, {SIZE}) input, "
                                 f"not (1, 3, {SIZE}, {SIZE}).")

    def fill(self, pixels: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """MI-GAN's fill of ``pixels`` (uint8 H×W×3 RGB), ``hole`` (bool H×W) True where to fill."""
        import torch

        height, width = hole.shape
        mask = hole.astype(np.uint8) * 255
        scaled = max(height, width) > SIZE
        if scaled:  # IOPaint's resize_max_size: long side to 512, bicubic, the mask too
            ratio = SIZE / max(height, width)
            size = (int(width * ratio + 0.5), int(height * ratio + 0.5))
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_CUBIC)
        work_height, work_width = mask.shape
        image = pad_bottom_right(pixels, SIZE, SIZE).astype(np.float32) / 255 * 2 - 1
        mask = (pad_bottom_right(mask, SIZE, SIZE) >= HOLE_LEVEL).astype(np.float32)
        image_tensor = torch.from_numpy(image.transpose(2, 0, 1)[None].copy()).to(self.device)
        mask_tensor = torch.from_numpy(mask[None, None].copy()).to(self.device)
        x = torch.cat([0.5 - mask_tensor, image_tensor * (1 - mask_tensor)], dim=1)
        output = self._call(x)
        result = (output.permute(0, 2, 3, 1) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
        result = result[0].cpu().numpy()[:work_height, :work_width]
        if scaled:
            result = cv2.resize(result, (width, height), interpolation=cv2.INTER_CUBIC)
        return result
