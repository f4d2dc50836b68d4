"""Model engines: one module per model family, each loading its model through the real library
loader and exposing a small, typed interface to the rest of core.

Engines never cache per-image results themselves or lock; the ``ui`` factories hold one engine
per server process with a lock, and the per-image caches (:class:`core.cache.LRUCache`).
"""
from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A model that could not be loaded; the message names it and says how to provide it."""
