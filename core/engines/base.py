"""What every engine shares: its catalog entry, and what an inpainting engine receives and returns.

``core.region`` owns the shared work (cropping around the mask, scaling to the engine's native
resolution, pasting back, blending); an engine only loads its model and fills one prepared crop.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from core.catalog import BUILTIN, EngineEntry, FewStep
from core.errors import Cancelled, ModelUnavailable, UserError, require_all

if TYPE_CHECKING:
    from core.manager import LoadRequest

__all__ = ["Cancelled", "require_all"]

ProgressCallback = Callable[[int, int], None]  # (step done, total steps)
CancelCheck = Callable[[], bool]  # True = stop as soon as possible


class InpaintError(UserError):
    """An edit that cannot be made as asked; the message says why and what to do instead."""


class ModelLoadError(ModelUnavailable):
    """A model that is there but could not be loaded; the message names it and says how to fix it."""


class CatalogEngine:
    """What an engine knows of its catalog entry: its name (with a few-step preset's), title, native
    size and capabilities. ``model_id`` is what it loaded (a path or hub id)."""

    entry: EngineEntry
    preset: FewStep | None = None
    model_id: str = ""

    @classmethod
    def from_catalog(cls, request: LoadRequest) -> CatalogEngine:
        """Load the engine ``request`` describes (its entry, each role's local path, the device)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return f"{self.entry.name}+{self.preset.name}" if self.preset else self.entry.name

    @property
    def title(self) -> str:
        return self.entry.title

    @property
    def native_resolution(self) -> int:
        return self.entry.native_size

    @property
    def supports_prompt(self) -> bool:
        return self.entry.can("prompt")

    @property
    def supports_negative_prompt(self) -> bool:
        return self.entry.can("negative_prompt")

    @property
    def supports_strength(self) -> bool:
        return self.entry.can("strength")

    def how_to_provide(self, role: str | None = None) -> str:
        return how_to_provide(self.entry, role)


def how_to_provide(entry: EngineEntry, role: str | None = None) -> str:
    """A sentence saying which setting points ``entry``'s model (``role``, default its main one) at a local copy."""
    name = role or (entry.roles[0] if entry.roles else "")
    setting = f"INPAINT_STUDIO_MODEL_{name.upper()}"
    default = BUILTIN.models[name].default if name in BUILTIN.models else "the model"
    return f"Set {setting} to a local copy of {default}."


@dataclass(frozen=True)
class EngineRequest:
    """One crop to fill.

    ``image``: RGB, width and height multiples of 8, at (about) the engine's native resolution.
    ``mask``: mode L, same size, 255 = repaint, 0 = keep. ``seeds``: one output per seed, in
    order; each output must be reproducible from its seed alone. ``steps``, ``guidance_scale``,
    ``strength``, ``scheduler`` and the prompts are ignored by engines that do not support them.
    ``mode``: "fill" (the prompt says what should be in the region) or "instruct" (the prompt says
    what to change there; engines with the "instruction" capability). ``reference_image``: an RGB
    picture of what to put there, any size (engines with the "reference_image" capability).
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
    mode: str = "fill"
    reference_image: Image.Image | None = None


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
    """The interface of an inpainting engine (diffusion and removal entries of the catalog)."""

    name: str
    title: str
    native_resolution: int  # the side length the model was trained at (512, 1024)
    supports_strength: bool
    model_id: str

    def generate(
        self,
        request: EngineRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> EngineOutput:
        """Fill ``request``; raise Cancelled when ``should_cancel`` says so between steps."""
        ...


def check_request(request: EngineRequest) -> None:
    """InpaintError unless ``request`` has seeds, an RGB image and a mode L mask of the same size."""
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
