"""What every inpainting engine receives and returns.

``core.inpaint`` owns the shared work (cropping around the mask, scaling to the engine's native
resolution, pasting back, blending); an engine only loads its model and fills one prepared crop.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from PIL import Image

ProgressCallback = Callable[[int, int], None]  # (step done, total steps)
CancelCheck = Callable[[], bool]  # True = stop as soon as possible


class InpaintError(ValueError):
    """An edit that cannot be made as asked; the message says why and what to do instead."""


def require_all(checks: list[tuple[bool, str]]) -> None:
    """Raise InpaintError with the message of the first ``(ok, message)`` check that failed."""
    for ok, message in checks:
        if not ok:
            raise InpaintError(message)


class Cancelled(RuntimeError):
    """The person cancelled the generation; nothing was produced."""


@dataclass(frozen=True)
class EngineRequest:
    """One crop to fill.

    ``image``: RGB, width and height multiples of 8, at (about) the engine's native resolution.
    ``mask``: mode L, same size, 255 = repaint, 0 = keep. ``seeds``: one output per seed, in
    order; each output must be reproducible from its seed alone. ``steps``, ``guidance_scale``,
    ``strength``, ``scheduler`` and the prompts are ignored by engines that do not support them.
    """

    image: Image.Image
    mask: Image.Image
    seeds: tuple[int, ...]
    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    steps: int = 30
    strength: float = 1.0
    scheduler: str | None = None


@dataclass
class EngineOutput:
    """The filled crops, one per seed, each the request's size, plus what the engine observed.

    ``notes``: things a person should know (e.g. "the prompt was cut to 77 tokens").
    ``timings``: milliseconds per stage the engine can measure (encode, denoise, decode).
    """

    images: list[Image.Image]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class InpaintEngine(Protocol):
    """The interface of an inpainting engine (see ``core.engines.INPAINT_ENGINES``)."""

    name: ClassVar[str]
    title: ClassVar[str]
    native_resolution: ClassVar[int]  # the side length the model was trained at (512, 1024)
    supports_prompt: ClassVar[bool]
    supports_negative_prompt: ClassVar[bool]
    supports_strength: ClassVar[bool]
    schedulers: ClassVar[tuple[str, ...]]  # names offered; the first is the default
    model_id: str

    def generate(
        self,
        request: EngineRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> EngineOutput:
        """Fill ``request``; raise Cancelled when ``should_cancel`` says so between steps."""
        ...
