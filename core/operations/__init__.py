"""The operations a person can apply to a region, and the one registry every caller dispatches through.

An :class:`Edit` is one operation with its parameters (and, for the light-driven ones, the light):
what a page runs, what a recipe saves and replays, what the command line and the batch runner
apply. :func:`run` takes an edit, the photo and the mask, holds the engine the edit needs through
the model manager, and calls the operation's own ``run``. Each operation lives in one module of
this package (its params type and its ``run``); **a new operation is one module, one line in
:data:`OPERATIONS` and its form on a page.**

Contracts: the photo is an RGB ``PIL.Image``, the mask a bool H×W array at its size (True = the
region to change); results carry ``images``, ``seeds``, ``metadata(i)``, ``notes``, ``timings``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from core import catalog as catalogs
from core.catalog import Catalog
from core.engines.base import CancelCheck, ProgressCallback
from core.errors import UserError
from core.light import LightParams
from core.operations import inpaint, lit_fill, outpaint, relight, shade
from core.operations.inpaint import InpaintParams
from core.operations.outpaint import OutpaintParams
from core.operations.relight import RelightParams


@dataclass(frozen=True)
class Operation:
    """What the registry knows of an operation.

    ``params``: its params type. ``engine_kinds``: the catalog kinds of engine it runs on (its
    params' ``engine`` field names one); ``fixed_engine``: the one engine it always uses; neither:
    it needs no model. ``light``: it takes a light. ``takes_mask``: False for an operation that
    needs no region (extending the canvas): callers pass no mask and recipes select nothing.
    ``runner(edit, image, mask, engine, progress, should_cancel)`` returns the result.
    ``describe(edit)``: a few words for people.
    """

    name: str
    title: str
    params: type
    runner: Callable[..., Any]
    describe: Callable[[Edit], str]
    engine_kinds: tuple[str, ...] = ()
    fixed_engine: str | None = None
    light: bool = False
    needs: Callable[[Any], str | None] = lambda params: None  # "field: problem" of params for this operation
    requires: tuple[str, ...] = ()  # engine capabilities it needs (core.catalog.CAPABILITIES)
    takes_mask: bool = True


def _inpaint(edit, image, mask, engine, progress, should_cancel):
    return inpaint.inpaint(image, mask, edit.params, engine, reference_image=edit.reference_image,
                           progress=progress, should_cancel=should_cancel)


def _lit_fill(edit, image, mask, engine, progress, should_cancel):
    return lit_fill.light_aware_inpaint(image, mask, edit.light, edit.params, engine, start=edit.start,
                                        progress=progress, should_cancel=should_cancel)


def _outpaint(edit, image, mask, engine, progress, should_cancel):
    return outpaint.outpaint(image, edit.params, engine, reference_image=edit.reference_image,
                             progress=progress, should_cancel=should_cancel)


def _relight(edit, image, mask, engine, progress, should_cancel):
    return relight.relight(np.asarray(image), mask, edit.light, edit.params, engine, progress=progress,
                           should_cancel=should_cancel)


def _shade(edit, image, mask, engine, progress, should_cancel):
    return shade.relight_by_shading(np.asarray(image), mask, edit.light)


OPERATIONS: dict[str, Operation] = {
    operation.name: operation
    for operation in (
        Operation("inpaint", "Inpaint", InpaintParams, _inpaint,
                  lambda e: f"inpaint “{e.params.prompt}” ({e.params.engine})",
                  engine_kinds=("diffusion", "removal")),
        Operation("remove", "Remove", InpaintParams, _inpaint, lambda e: f"remove ({e.params.engine})",
                  engine_kinds=("removal",)),
        Operation("lit_fill", "Fill with light", InpaintParams, _lit_fill,
                  lambda e: f"fill with light ({e.params.engine})", engine_kinds=("diffusion",), light=True,
                  requires=("strength",),
                  needs=lambda p: (None if p.strength < 1
                                   else "strength: filling with light needs a strength below 1.")),
        Operation("outpaint", "Extend canvas", OutpaintParams, _outpaint,
                  lambda e: f"extend the canvas {e.params.describe_extension()} ({e.params.engine})",
                  engine_kinds=("diffusion", "removal"), takes_mask=False),
        Operation("relight", "Relight", RelightParams, _relight, lambda e: "relight (iclight)",
                  fixed_engine="iclight", light=True),
        Operation("shade", "Relight by shading", RelightParams, _shade, lambda e: "relight (shading)",
                  light=True),
    )
}


@dataclass(frozen=True)
class Edit:
    """One operation and everything it needs besides the photo and the mask.

    ``params``: the operation's params type. ``light``: for the light-driven operations. ``start``:
    lit fill only, "current" or "removal" (see ``core.operations.lit_fill``). ``reference_image``:
    the picture ``params.reference`` names, loaded (inpaint; engines that take one). Validated on
    construction (UserError naming the field); whether its engine exists in the catalog and suits
    the operation is checked where a recipe is read and where the edit runs (against the manager's
    catalog)
    """

    operation: str
    params: Any
    light: LightParams | None = None
    start: str = "current"
    reference_image: Image.Image | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise UserError(f"action.type: unknown {self.operation!r}; use one of {', '.join(OPERATIONS)}.")
        op = OPERATIONS[self.operation]
        if type(self.params) is not op.params:  # exactly: an outpaint is no inpaint
            raise UserError(f"action.params: {self.operation} takes {op.params.__name__}.")
        if op.light and self.light is None:
            raise UserError(f"action.light: {self.operation} needs the light (azimuth, elevation, …).")
        if self.operation == "lit_fill" and self.start not in lit_fill.FILL_STARTS:
            raise UserError(f"action.start: use \"current\" or \"removal\" (got {self.start!r}).")
        if (problem := op.needs(self.params)) is not None:
            raise UserError(f"action.params.{problem}")

    @property
    def engine(self) -> str | None:
        """The engine this edit runs on (None: no model)."""
        op = OPERATIONS[self.operation]
        return op.fixed_engine or (self.params.engine if op.engine_kinds else None)

    def describe(self) -> str:
        return OPERATIONS[self.operation].describe(self)


def check_engine(name: str, op: Operation, catalog: Catalog | None = None) -> None:
    """UserError naming the engines ``op`` can use when ``name`` is not one of them."""
    catalog = catalog or catalogs.current()
    fitting = catalog.engine_names(op.engine_kinds)
    if name not in fitting:
        raise UserError(f"action.params.engine: {op.name} cannot use {name!r}; "
                        f"use one of {', '.join(fitting)}.")


def needed_capabilities(edit: Edit) -> dict[str, str]:
    """The engine capabilities ``edit`` asks for (capability → what asks for it)."""
    params = edit.params
    needed = {capability: f"a strength below 1 ({edit.operation})"
              for capability in OPERATIONS[edit.operation].requires}
    if getattr(params, "mode", "fill") == "instruct":
        needed["instruction"] = "an instruction (mode \"instruct\")"
    if getattr(params, "reference", "") or edit.reference_image is not None:
        needed["reference_image"] = "a reference image"
    return needed


def check_capabilities(edit: Edit, catalog: Catalog | None = None) -> None:
    """UserError naming the engines that can do what ``edit`` asks (an instruction, a reference
    image) when its engine cannot; also when its reference image is named but not loaded."""
    catalog = catalog or catalogs.current()
    entry = catalog.engine(edit.engine)[0]
    for capability, what in needed_capabilities(edit).items():
        if not entry.can(capability):
            able = [name for name, e in catalog.engines.items() if e.can(capability)]
            raise UserError(f"action.params.engine: {entry.title} cannot take {what}; "
                            f"use {' or '.join(able) or 'another engine'}.")
    if getattr(edit.params, "reference", "") and edit.reference_image is None:
        raise UserError(f"action.params.reference: the reference image {edit.params.reference} "
                        "was not loaded; give it with --reference, or put it next to the recipe.")


def run(
    edit: Edit,
    image: Image.Image,
    mask: np.ndarray | None,
    manager,
    *,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_wait: Callable[[int, int, float | None], None] | None = None,
) -> Any:
    """Apply ``edit`` to ``mask`` of ``image`` (None for an operation that takes no mask), holding
    its engine (from ``manager``, a ``core.manager.ModelManager``) for the call. Raises the errors
    of ``core.errors``.

    While other requests for the engine are ahead in its queue, ``on_wait(place, ahead, estimate_s)``
    reports where this one stands, and ``should_cancel()`` is polled there too (Cancelled leaves the
    queue at once); a full queue raises ``core.queue.QueueFull``."""
    op = OPERATIONS[edit.operation]
    if op.engine_kinds:
        check_engine(edit.engine, op, manager.catalog)
        check_capabilities(edit, manager.catalog)
    if edit.engine is None:
        with manager.running():
            return op.runner(edit, image, mask, None, progress, should_cancel)
    with manager.use(edit.engine, on_wait=on_wait, should_cancel=should_cancel) as engine:
        return op.runner(edit, image, mask, engine, progress, should_cancel)
