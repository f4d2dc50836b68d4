"""Model engines: one module per model family, each loading its model through the real library
loader and exposing a small, typed interface to the rest of core.

Engines never cache per-image results themselves or lock; the ``ui`` factories hold one engine
per server process with a lock, and the per-image caches (:class:`core.cache.LRUCache`).

Inpainting engines (the :class:`core.engines.base.InpaintEngine` protocol) are listed in
:data:`INPAINT_ENGINES`: a new model is one module plus one line there. Diffusion engines are
created with ``cls.load(path, DiffusionOptions(...))``, removal engines (no weights) with ``cls()``.
"""
from __future__ import annotations

from importlib import import_module


class ModelLoadError(RuntimeError):
    """A model that could not be loaded; the message names it and says how to provide it."""


# Engine name -> "module:class", imported on first use so that importing core.engines stays light.
INPAINT_ENGINES: dict[str, str] = {
    "sd15": "core.engines.diffusion:SD15Inpaint",
    "sdxl": "core.engines.diffusion:SDXLInpaint",
    "telea": "core.engines.opencv_inpaint:TeleaInpaint",
    "navier_stokes": "core.engines.opencv_inpaint:NavierStokesInpaint",
}

# Engines that remove objects from their surroundings, without a prompt or model weights.
REMOVAL_ENGINES = ("telea", "navier_stokes")


def inpaint_engine_class(name: str) -> type:
    """The engine class registered as ``name`` (a few-step variant, ``sd15+lcm``, is its base
    engine's class); KeyError naming the known engines otherwise."""
    from core.engines.fast import split_engine_name

    name, _ = split_engine_name(name)
    if name not in INPAINT_ENGINES:
        raise KeyError(f"Unknown inpainting engine {name!r}: choose one of {', '.join(INPAINT_ENGINES)}.")
    module_name, class_name = INPAINT_ENGINES[name].split(":")
    return getattr(import_module(module_name), class_name)
