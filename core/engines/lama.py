"""LaMa (big-lama, Suvorov et al. 2022): object removal by a network of Fourier convolutions, whose
image-wide receptive field continues textures and lines through large holes. Apache-2.0.

The file is IOPaint's TorchScript export, ``big-lama.pt``
(https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt, MD5
e3aa4aaa15225a33ec84f9f4bc47e500), run as IOPaint runs it (``iopaint/model/lama.py``):

- input: ``image`` float32 (1, 3, H, W), RGB in [0, 1]; ``mask`` float32 (1, 1, H, W), 1 = hole;
  H and W multiples of 8, reached by mirroring the bottom rows and right columns
  (:func:`core.engines.torchscript.pad_bottom_right`), cropped off again afterwards;
- output: (1, 3, H, W) RGB in [0, 1], times 255, clipped, truncated to uint8.

LaMa works at the crop's own resolution, any size: a small crop is not scaled up
(``upscales_small_crops`` is False) and a large one is scaled down to about the entry's native size
(1024²) by the crop path. Its Fourier convolutions do not run on Apple MPS: there it runs on the CPU.
"""
from __future__ import annotations

import numpy as np

from core.engines.base import ModelLoadError
from core.engines.torchscript import TorchScriptRemoval, pad_bottom_right, round_up

PAD_MULTIPLE = 8  # the network downsamples three times; IOPaint's pad_mod
PROBE_SIZE = 64  # side of the image the contract is checked on at load time


class LamaEngine(TorchScriptRemoval):
    """IOPaint's TorchScript LaMa (``big-lama.pt``), filling each crop at its own resolution."""

    engine_name = "lama"
    model_title = "LaMa"
    published = "big-lama.pt"
    not_on_mps = "its Fourier convolutions do not run on MPS (IOPaint runs it on the CPU there too)."

    def check_contract(self) -> None:
        """One call on a 64×64 grey image with a hole in the middle must return (1, 3, 64, 64)."""
        import torch

        image = torch.full((1, 3, PROBE_SIZE, PROBE_SIZE), 0.5)
        mask = torch.zeros((1, 1, PROBE_SIZE, PROBE_SIZE))
        mask[..., PROBE_SIZE // 4 : 3 * PROBE_SIZE // 4, PROBE_SIZE // 4 : 3 * PROBE_SIZE // 4] = 1
        shape = self._probe(image, mask)
        if shape != (1, 3, PROBE_SIZE, PROBE_SIZE):
            side = PROBE_SIZE
            raise ModelLoadError(f"its output is {shape} for a (1, 3, {side}, {side}) image and a "
                                 f"(1, 1, {side}, {side}) mask, not (1, 3, {side}, {side}).")

    def fill(self, pixels: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """LaMa's fill of ``pixels`` (uint8 H×W×3 RGB), ``hole`` (bool H×W) True where to fill."""
        import torch

        height, width = hole.shape
        padded = (round_up(height, PAD_MULTIPLE), round_up(width, PAD_MULTIPLE))
        image = pad_bottom_right(pixels, *padded).astype(np.float32) / 255
        mask = pad_bottom_right(hole, *padded).astype(np.float32)
        image_tensor = torch.from_numpy(image.transpose(2, 0, 1)[None].copy()).to(self.device)
        mask_tensor = torch.from_numpy(mask[None, None].copy()).to(self.device)
        output = self._call(image_tensor, mask_tensor)
        result = output[0].permute(1, 2, 0).float().cpu().numpy()
        return np.clip(result * 255, 0, 255).astype(np.uint8)[:height, :width]
