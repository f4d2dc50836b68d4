"""Object removal: MI-GAN through the app's engine next to OpenCV Telea, on one 512×512 crop.

The published ``migan_traced.pt`` cannot be downloaded here, so its network is rebuilt: the MI-GAN
512 generator (Sargsyan et al., ICCV 2023; the layout of ``lib/model_zoo/migan_inference.py`` in
github.com/Picsart-AI-Research/MI-GAN) with random weights, traced and saved as TorchScript, then
loaded by :class:`core.engines.migan.MiganEngine` as the real file would be. Its cost does not depend
on the weights: the same convolutions run whatever their values. Telea (``cv2.inpaint``) fills the
same crop and mask. A second row splits the engine's call into the traced network and the engine's
own preparing and pasting around it.
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.timing import best_of
from core.engines.base import EngineRequest
from core.engines.migan import SIZE, MiganEngine
from core.engines.opencv_inpaint import OpenCVInpaint

HOLE_RADIUS = 110  # px: an object of about 15 % of the crop, a typical removal
CHANNEL_BASE = 32768  # a block at resolution r has min(CHANNEL_BASE // r, CHANNEL_MAX) channels
CHANNEL_MAX = 512
LRELU_GAIN = math.sqrt(2)
ACTIVATION_CLAMP = 256.0


def _migan_generator(resolution: int = SIZE):
    """MI-GAN's generator for ``resolution``² inputs, randomly initialised.

    Input (1, 4, r, r): ``0.5 - mask`` and the masked image in [-1, 1]; output (1, 3, r, r). An encoder
    of blocks that each halve the resolution (r → 4), every block two depthwise-separable 3×3
    convolutions, the second one downsampling with a fixed [1, 3, 3, 1] blur; a synthesis network
    back up (4 → r) whose blocks upsample with the same blur, add the encoder's features of their
    resolution, add per-pixel noise scaled by a learned strength (fixed r×r constants: the network
    takes one size only) and add their RGB to the upsampled image so far. Leaky ReLU 0.2, gain √2,
    clamped at ±256. The blur filters are fixed weights but count as parameters, as in the original:
    5,973,366 in all at 512 (checked against the original module with the same weights: the same
    outputs, bit for bit).
    """
    import torch
    from torch import nn
    from torch.nn import functional

    def channels(res: int) -> int:
        return min(CHANNEL_BASE // res, CHANNEL_MAX)

    def act(x):
        return (functional.leaky_relu(x, 0.2) * LRELU_GAIN).clamp(-ACTIVATION_CLAMP, ACTIVATION_CLAMP)

    def blur_kernel(gain: float) -> torch.Tensor:
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = torch.outer(taps, taps)
        return kernel / kernel.sum() * gain

    class Down(nn.Module):  # blur, then keep every second pixel
        def __init__(self, width: int) -> None:
            super().__init__()
            self.filter = nn.Conv2d(width, width, 4, stride=2, padding=1, groups=width, bias=False)
            self.filter.weight = nn.Parameter(blur_kernel(1).repeat(width, 1, 1, 1))

        def forward(self, x):
            return self.filter(x)

    class Up(nn.Module):  # to ``res``: zeros between the pixels (a fixed res×res pattern), then blur
        def __init__(self, width: int, res: int) -> None:
            super().__init__()
            pattern = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
            self.register_buffer("zeros", pattern.repeat(1, 1, res // 2, res // 2))
            self.filter = nn.Conv2d(width, width, 4, groups=width, bias=False)
            self.filter.weight = nn.Parameter(blur_kernel(4).repeat(width, 1, 1, 1))

        def forward(self, x):
            x = functional.interpolate(x, scale_factor=2.0, mode="nearest") * self.zeros
            return self.filter(functional.pad(x, (2, 1, 2, 1)))

    class Separable(nn.Module):  # depthwise 3×3, [down], pointwise 1×1, [up], [noise], activation
        def __init__(self, width_in: int, width_out: int, *, down=False, up_to=None, noise_res=None) -> None:
            super().__init__()
            self.depthwise = nn.Conv2d(width_in, width_in, 3, padding=1, groups=width_in)
            self.pointwise = nn.Conv2d(width_in, width_out, 1, bias=False)
            self.down = Down(width_in) if down else None
            self.up = Up(width_out, up_to) if up_to else None
            if noise_res is not None:
                self.register_buffer("noise", torch.randn(noise_res, noise_res))
                self.noise_strength = nn.Parameter(torch.zeros(()))
            else:
                self.noise = None

        def forward(self, x):
            x = act(self.depthwise(x))
            if self.down is not None:
                x = self.down(x)
            x = self.pointwise(x)
            if self.up is not None:
                x = self.up(x)
            if self.noise is not None:
                x = x + self.noise * self.noise_strength
            return act(x)

    class EncoderBlock(nn.Module):
        def __init__(self, width_in: int, width_out: int, *, from_rgb=False, down=True) -> None:
            super().__init__()
            self.from_rgb = nn.Conv2d(4, width_in, 1) if from_rgb else None
            self.conv1 = Separable(width_in, width_in)
            self.conv2 = Separable(width_in, width_out, down=down)

        def forward(self, x):
            if self.from_rgb is not None:
                x = act(self.from_rgb(x))
            features = self.conv1(x)
            return self.conv2(features), features

    class SynthesisBlock(nn.Module):
        def __init__(self, width_in: int, width_out: int, res: int, *, first: bool = False) -> None:
            super().__init__()
            noise = None if first else res
            self.conv1 = Separable(width_in, width_out, up_to=noise, noise_res=noise)
            self.conv2 = Separable(width_out, width_out, noise_res=noise)
            self.to_rgb = nn.Conv2d(width_out, 3, 1)
            self.up_rgb = None if first else Up(3, res)

        def forward(self, x, features, image):
            x = self.conv2(self.conv1(x) + features)
            rgb = self.to_rgb(x)
            return x, rgb if self.up_rgb is None else self.up_rgb(image) + rgb

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            down_res = [2**i for i in range(int(math.log2(resolution)), 2, -1)]  # r, r/2, ..., 8
            self.encoder = nn.ModuleList(
                EncoderBlock(channels(res), channels(res // 2), from_rgb=res == resolution)
                for res in down_res
            )
            self.encoder_last = EncoderBlock(channels(4), channels(4), down=False)
            self.synthesis_first = SynthesisBlock(channels(4), channels(4), 4, first=True)
            self.synthesis = nn.ModuleList(
                SynthesisBlock(channels(res // 2), channels(res), res) for res in reversed(down_res))

        def forward(self, x):
            features = []
            for block in self.encoder:
                x, feature = block(x)
                features.append(feature)
            x, feature = self.encoder_last(x)
            x, image = self.synthesis_first(x, feature, None)
            for block, feature in zip(self.synthesis, reversed(features)):
                x, image = block(x, feature, image)
            return image

    torch.manual_seed(0)
    return Generator().eval()


def _crop() -> EngineRequest:
    """A 512×512 crop (smooth gradients and a few edges) with a round hole in the middle."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    pixels = np.stack([xx * 255 // SIZE, yy * 255 // SIZE, (xx // 64 + yy // 64) % 2 * 160 + 40], axis=-1)
    hole = (xx - SIZE // 2) ** 2 + (yy - SIZE // 2) ** 2 <= HOLE_RADIUS**2
    return EngineRequest(Image.fromarray(pixels.astype(np.uint8), "RGB"),
                         Image.fromarray(hole.astype(np.uint8) * 255, "L"), seeds=(0,))


def run(quick: bool = False) -> list[dict]:
    import torch

    repeat = 1 if quick else 5
    generator = _migan_generator()
    parameters = sum(parameter.numel() for parameter in generator.parameters())
    print(f"MI-GAN 512 generator rebuilt: {parameters:,} parameters ({parameters / 1e6:.2f} M)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "migan_traced.pt"
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(generator, torch.zeros(1, 4, SIZE, SIZE)), str(path))
        engine = MiganEngine.load(path)
    crop = _crop()

    # The network's share of each call, timed inside the call (the CPU may be shared: one call's
    # split is consistent even when calls differ).
    network, network_ms = engine.module, []

    def timed_network(x):
        started = time.perf_counter()
        output = network(x)
        network_ms.append((time.perf_counter() - started) * 1000)
        return output

    engine.module = timed_network
    totals = []
    for _ in range(repeat + 1):  # the first call is a warm-up (TorchScript optimises on its first runs)
        started = time.perf_counter()
        engine.generate(crop)
        totals.append((time.perf_counter() - started) * 1000)
    migan_ms = statistics.median(totals[1:])
    own_ms = statistics.median([total - inside for total, inside in zip(totals[1:], network_ms[1:])])
    telea_ms = best_of(lambda: OpenCVInpaint("telea").generate(crop), repeat)
    hole_share = 100 * math.pi * HOLE_RADIUS**2 / SIZE**2
    return [
        {"name": f"remove 512×512, {hole_share:.0f} % hole: MI-GAN ({parameters / 1e6:.2f} M params, "
                 "rebuilt, random weights) through MiganEngine",
         "ms": migan_ms, "reference_ms": telea_ms, "unit": "ms",
         "reference": "OpenCV Telea (OpenCVInpaint) on the same crop and mask, same run"},
        {"name": "remove 512×512: MiganEngine's own work (prepare, pad, paste) around the network",
         "ms": own_ms, "reference_ms": statistics.median(network_ms[1:]), "unit": "ms",
         "reference": "the traced network inside the same calls"},
    ]
