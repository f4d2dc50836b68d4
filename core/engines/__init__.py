"""Model engines: one module per model family, each loading its model through the real library
loader and running it behind a small, typed interface.

Which engines exist is the catalog's business (:mod:`core.catalog`): each entry names its class
here as ``"module:Class"``, and :class:`core.manager.ModelManager` loads it with
``Class.from_catalog(request)``. Engines only load and run: they never cache per-photo results,
lock, or import the operations above them (the crop / paste work they are given is done by
:mod:`core.region`).
"""
