"""Which accelerator the models run on, and in which precision."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    """The device chosen for inference: ``kind`` is ``cuda``, ``mps`` or ``cpu``."""

    kind: str
    name: str
    dtype: str
    memory_gb: float | None = None

    @property
    def summary(self) -> str:
        memory = f", {self.memory_gb:.0f} GB" if self.memory_gb else ""
        return f"{self.kind.upper()}: {self.name}{memory} ({self.dtype})"


def dtype_for(kind: str, bf16_supported: bool = False) -> str:
    """The inference dtype on a device of ``kind``: bfloat16 on CUDA GPUs that support it (same
    range as float32, no overflow), else float16; float16 on Apple MPS; float32 on the CPU."""
    if kind == "cuda":
        return "bfloat16" if bf16_supported else "float16"
    return "float16" if kind == "mps" else "float32"


def detect_device(preference: str = "auto") -> DeviceInfo:
    """Pick CUDA, then Apple MPS, then the CPU (or the one ``preference`` names, if present).

    CUDA runs in bfloat16 where the GPU supports it, else float16; MPS in float16; CPU in float32.
    A preferred device that is not present falls back to the CPU.
    """
    import torch

    if preference in ("auto", "cuda") and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        dtype = dtype_for("cuda", torch.cuda.is_bf16_supported())
        return DeviceInfo("cuda", properties.name, dtype, properties.total_memory / 2**30)
    mps = getattr(torch.backends, "mps", None)
    if preference in ("auto", "mps") and mps is not None and mps.is_available():
        return DeviceInfo("mps", "Apple GPU", dtype_for("mps"))
    import platform

    return DeviceInfo("cpu", platform.processor() or platform.machine(), dtype_for("cpu"))
