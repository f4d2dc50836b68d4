"""Recipes: an edit described independently of one photo, saved as JSON and replayed on many.

A recipe says how to select the region (a mask carried in the recipe and scaled to each photo,
each photo's own mask file matched by name, a text prompt, clicks or a box in coordinates relative
to the photo, or the whole photo), what to do to that mask (grow, shrink, invert, fill holes,
remove islands, the soft edge), the action (inpaint, remove, relight, fill with light) with its
parameters, and how seeds are chosen (one fixed seed, or one derived from each file's name, so a
rerun gives the same pixels). Applying a recipe saved from an edit to the photo it was made on
reproduces that edit pixel for pixel, whichever variant was chosen (each variant is generated
on its own; same device and dtype, and on a CPU the same number of threads).

JSON layout (``version`` 3)::

    {"version": 3, "app": "inpaint-studio", "name": "…",
     "selection": {"kind": "text", "text": "logo", "top_k": 1, "all_instances": true, "min_score": 0.5},
     "mask_ops": [{"op": "grow", "px": 8}, {"op": "feather", "inner": 0, "outer": 12}],
     "action": {"type": "inpaint", "params": {…InpaintParams…}},
     "seed": {"policy": "per_image", "seed": 42}}

``action`` is an edit of :mod:`core.operations` (``type`` names the operation in its registry):
"outpaint" (extend the canvas) selects nothing, so its ``selection`` may be left out (it is
``{"kind": "whole"}``); "relight" and "shade" add ``"light": {…LightParams…}``; "lit_fill" adds ``"light"`` and ``"start"``
("current" or "removal"). Version 2 files (the same layout, written before the params' defaults
became the pages') read too: their weight-free relight, ``"relight"`` with ``"method": "shading"``,
is "shade", and a params field they leave out keeps its version 2 default (:data:`VERSION_2_DEFAULTS`). Version 1 files (a single edit's settings, as downloaded
before recipes) are read with each photo's own mask file as the selection.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core import catalog, masks, operations
from core.errors import UserError
from core.images import content_hash
from core.light import LightParams
from core.operations import OPERATIONS, Edit
from core.operations.fields import MAX_SEED, MAX_VARIANTS
from core.operations.inpaint import InpaintParams, load_reference, reference_sha256
from core.operations.outpaint import OutpaintParams
from core.operations.relight import RelightParams
from core.segment import SegmentError, SegmentPrompt

RECIPE_VERSION = 3
# Version 2 files were written before the params' defaults became the pages' (padding 64, the page's
# negative prompt, the Relight page's prompt): a field a version 2 file leaves out keeps its old default,
# so the file replays as it did.
VERSION_2_DEFAULTS: dict[str, dict[str, Any]] = {
    "InpaintParams": {"negative_prompt": "", "padding": 32},
    "RelightParams": {"prompt": "soft natural light"},
}
SELECTION_KINDS = {
    "mask": "the mask saved in the recipe, scaled to each photo",
    "mask_file": "each photo's own mask file, matched by file name",
    "text": "the object named by a text prompt",
    "points": "the object at the clicks (relative coordinates)",
    "box": "the object in the box (relative coordinates)",
    "whole": "the whole photo",
}
MASK_OPS = ("grow", "shrink", "invert", "fill_holes", "remove_islands", "feather")
SEED_POLICIES = ("fixed", "per_image")


class RecipeError(UserError):
    """A recipe that cannot be read or applied; the message says where and what to change."""


# --- the parts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """How to find the region in each photo. Coordinates are fractions of the width and height."""

    kind: str = "mask_file"
    text: str = ""
    top_k: int = 1  # text: the union of the best k objects
    points: tuple[tuple[float, float, int], ...] = ()  # (x, y, label 1 include / 0 exclude)
    box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1)
    step: int = 0  # clicks: FastSAM 0 = the smallest object at the click, +1 the next larger…; SAM: from its best
    backend: str = "fastsam"
    refiner: str = "sam2"  # backend "sam": which SAM (SAM 2.1 by default; another one present if it is not)
    all_instances: bool = False  # text: every instance SAM 3 finds (else the best top_k)
    min_score: float = 0.5  # text with SAM 3: the lowest instance score kept
    mask_png: str = ""  # kind "mask": the mask as a base64 PNG (white = edit)

    def __post_init__(self) -> None:
        if self.kind not in SELECTION_KINDS:
            raise RecipeError(f"selection.kind: unknown {self.kind!r}; use one of {', '.join(SELECTION_KINDS)}.")
        points = tuple((float(x), float(y), int(label)) for x, y, label in self.points)
        if any(label not in (0, 1) for *_, label in points):
            raise RecipeError("selection.points: a point's label is 1 (include) or 0 (exclude).")
        object.__setattr__(self, "points", points)
        if self.box is not None:
            object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        coords = [v for x, y, _ in points for v in (x, y)] + list(self.box or ())
        if any(not 0.0 <= v <= 1.0 for v in coords):
            raise RecipeError("selection: points and box are fractions of the photo's width and height, from 0 to 1.")
        problems = {
            "text": (not self.text.strip(), "selection.text: say what to select, e.g. \"the cat\"."),
            "points": (not any(label == 1 for *_, label in points),
                       "selection.points: at least one include point (label 1) is needed."),
            "box": (self.box is None or len(self.box) != 4, "selection.box: give [x0, y0, x1, y1]."),
            "mask": (not self.mask_png, "selection.mask_png: the mask is missing."),
        }
        bad, message = problems.get(self.kind, (False, ""))
        if bad:
            raise RecipeError(message)
        if self.top_k < 1:
            raise RecipeError("selection.top_k must be at least 1.")
        if not 0.0 <= self.min_score <= 1.0:
            raise RecipeError("selection.min_score is a score from 0 to 1.")

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Selection:
        """A selection carrying ``mask`` itself (scaled to each photo it is applied to)."""
        return cls(kind="mask", mask_png=base64.b64encode(masks.encode_mask_png(mask)).decode("ascii"))

    def mask_at(self, size: tuple[int, int]) -> np.ndarray:
        """Kind "mask": the carried mask at ``size`` (nearest neighbour, so it stays hard)."""
        try:
            image = Image.open(io.BytesIO(base64.b64decode(self.mask_png, validate=True)))
            image.load()
        except Exception as error:  # noqa: BLE001 (binascii and PIL raise several types)
            raise RecipeError(f"selection.mask_png: not a base64 PNG ({error}).") from error
        return masks.mask_from_image(image.convert("L"), size, resize=True, source="luminance", name="The recipe's mask")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        keep = {"text": ("text", "top_k", "all_instances", "min_score"),
                "points": ("points", "step", "backend", "refiner"), "box": ("box", "backend", "refiner"),
                "mask": ("mask_png",)}.get(self.kind, ())
        for name in keep:
            value = getattr(self, name)
            data[name] = [list(v) for v in value] if name == "points" else list(value) if name == "box" else value
        return data


@dataclass(frozen=True)
class MaskOp:
    """One operation on the selected mask, in photo pixels."""

    op: str
    px: int = 0  # grow / shrink
    min_area: int = 0  # remove_islands
    inner: int = 0  # feather: the soft edge inside the mask
    outer: int = 0  # feather: the soft edge outside the mask

    def __post_init__(self) -> None:
        if self.op not in MASK_OPS:
            raise RecipeError(f"mask_ops: unknown operation {self.op!r}; use one of {', '.join(MASK_OPS)}.")
        if min(self.px, self.min_area, self.inner, self.outer) < 0:
            raise RecipeError(f"mask_ops: {self.op} takes sizes of 0 or more pixels.")

    def to_dict(self) -> dict[str, Any]:
        keep = {"grow": ("px",), "shrink": ("px",), "remove_islands": ("min_area",),
                "feather": ("inner", "outer")}.get(self.op, ())
        return {"op": self.op, **{name: getattr(self, name) for name in keep}}


def action_to_dict(edit: Edit) -> dict[str, Any]:
    """An edit as the recipe's ``action`` object."""
    data: dict[str, Any] = {"type": edit.operation, "params": asdict(edit.params)}
    if edit.light is not None:
        data["light"] = edit.light.to_dict()
    if edit.operation == "lit_fill":
        data["start"] = edit.start
    return data


def Action(type: str, params: Any, light: LightParams | None = None, method: str = "iclight",  # noqa: N802
           start: str = "current") -> Edit:
    """The edit a recipe's action describes, as version 2 files wrote it (``method`` "shading"
    of "relight" is the "shade" operation); RecipeError naming the field otherwise."""
    if type == "relight" and method not in ("iclight", "shading"):
        raise RecipeError(f"action.method: use \"iclight\" or \"shading\" (got {method!r}).")
    operation = "shade" if type == "relight" and method == "shading" else type
    try:
        return Edit(operation, params, light=light, start=start)
    except RecipeError:
        raise
    except UserError as error:
        raise RecipeError(str(error)) from error


@dataclass(frozen=True)
class SeedPolicy:
    """``fixed``: every photo uses ``seed``; ``per_image``: a seed derived from ``seed`` and the
    file's name, different per photo and the same on every rerun."""

    policy: str = "fixed"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in SEED_POLICIES:
            raise RecipeError(f"seed.policy: use \"fixed\" or \"per_image\" (got {self.policy!r}).")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise RecipeError(f"seed.seed: a whole number from 0 to {MAX_SEED} (got {self.seed!r}).")

    def seed_for(self, stem: str) -> int:
        """The first variant's seed for the photo named ``stem``."""
        if self.policy == "fixed":
            return self.seed
        digest = hashlib.sha256(f"{self.seed}:{stem}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % (MAX_SEED - MAX_VARIANTS)


# --- the recipe -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    selection: Selection
    action: Edit
    mask_ops: tuple[MaskOp, ...] = ()
    seed: SeedPolicy = field(default_factory=SeedPolicy)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECIPE_VERSION,
            "app": "inpaint-studio",
            "name": self.name,
            "selection": self.selection.to_dict(),
            "mask_ops": [op.to_dict() for op in self.mask_ops],
            "action": action_to_dict(self.action),
            "seed": asdict(self.seed),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        """Build and validate a recipe; RecipeError says which field is wrong and how."""
        if not isinstance(data, dict):
            raise RecipeError("A recipe is a JSON object ({…}).")
        version = data.get("version")
        if version == 1:
            return _from_version_1(data)
        if version not in (2, RECIPE_VERSION):
            raise RecipeError(f"version: this app reads recipe versions 1 to {RECIPE_VERSION} (got {version!r}).")
        _known(data, {"version", "app", "name", "selection", "mask_ops", "action", "seed"}, "the recipe")
        if "action" not in data:
            raise RecipeError("action: missing.")
        selection = _build(Selection, data["selection"], "selection") if "selection" in data else None
        action = _action(data["action"], version)
        if selection is None and OPERATIONS[action.operation].takes_mask:
            raise RecipeError("selection: missing.")
        return cls(
            selection=selection or Selection(kind="whole"),  # an operation that selects nothing
            action=action,
            mask_ops=tuple(_build(MaskOp, op, f"mask_ops[{i}]") for i, op in enumerate(_list(data, "mask_ops"))),
            seed=_build(SeedPolicy, data.get("seed", {}), "seed"),
            name=str(data.get("name", "")),
        )

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "The recipe") -> Recipe:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RecipeError(f"{source} is not valid JSON ({error}).") from error
        try:
            return cls.from_dict(data)
        except RecipeError as error:
            raise RecipeError(f"{source}: {error}") from error

    @classmethod
    def load(cls, path: str | Path, reference: str | Path | None = None) -> Recipe:
        """The recipe in file ``path``, with its reference image loaded (``reference``, else the
        file its action names, looked for as given, then next to the recipe)."""
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as error:
            raise RecipeError(f"{path}: cannot be read ({error.strerror or error}).") from error
        return cls.from_json(text, str(path)).with_reference(path.parent, reference)

    def attach_reference(self, image: Image.Image) -> Recipe:
        """This recipe with ``image`` as its reference picture, checked against the recorded hash
        (RecipeError when it is another picture)."""
        params = self.action.params
        expected = getattr(params, "reference_sha256", "")
        if expected and reference_sha256(image) != expected:
            raise RecipeError(f"action.params.reference: this is not the picture the recipe was made with "
                              f"({Path(params.reference).name}); upload that one.")
        return replace(self, action=replace(self.action, reference_image=image.convert("RGB")))

    def with_reference(self, base: Path | None = None, override: str | Path | None = None) -> Recipe:
        """This recipe with its action's reference image loaded: ``override`` (a new picture, whose
        hash is recorded), else the file the action names (as given, else under ``base``), checked
        against its recorded hash. The recipe itself when its action takes no reference."""
        params = self.action.params
        named = getattr(params, "reference", "")
        if override is None and (not named or self.action.reference_image is not None):
            return self
        if not hasattr(params, "reference"):
            raise RecipeError(f"--reference: a {self.action.operation} recipe takes no reference image.")
        path = Path(override if override is not None else named).expanduser()
        if override is None and not path.is_absolute() and not path.exists() and base is not None:
            path = base / path
        try:
            image = load_reference(path, "" if override is not None else params.reference_sha256)
        except UserError as error:
            raise RecipeError(f"action.params.reference: {error}") from error
        params = replace(params, reference=str(path.resolve()), reference_sha256=reference_sha256(image))
        return replace(self, action=replace(self.action, params=params, reference_image=image))

    def with_seed(self, seed: int) -> InpaintParams | RelightParams:
        """The action's params with the first variant's ``seed``."""
        return replace(self.action.params, seed=seed)

    def describe(self) -> str:
        """One line (Markdown) saying what the recipe does, for people."""
        seeds = (f"seed {self.seed.seed}" if self.seed.policy == "fixed"
                 else f"a seed per photo from its name (base {self.seed.seed})")
        ops = ", ".join(op.op.replace("_", " ") for op in self.mask_ops)
        if not self.takes_mask:
            return f"**{self.name or 'Unnamed recipe'}**: {self.action.describe()}; {seeds}."
        return (f"**{self.name or 'Unnamed recipe'}**: select {SELECTION_KINDS[self.selection.kind]}"
                + (f", then {ops}" if ops else "") + f"; {self.action.describe()}; {seeds}.")

    @property
    def takes_mask(self) -> bool:
        """Whether the action edits a selected region (extending the canvas does not)."""
        return OPERATIONS[self.action.operation].takes_mask

    @property
    def needs_mask_file(self) -> bool:
        return self.takes_mask and self.selection.kind == "mask_file"

    @property
    def needs_segmenter(self) -> bool:
        return self.takes_mask and self.selection.kind in ("text", "points", "box")


def _known(data: dict, names: set[str], where: str) -> None:
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}.")


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise RecipeError(f"{key}: a list is expected.")
    return value


def _build(cls: type, data: Any, where: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: an object ({{…}}) is expected.")
    _known(data, {f.name for f in fields(cls)}, where)
    try:
        return cls(**data)
    except RecipeError:
        raise
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{where}: {error}") from error


def _action(data: Any, version: int = RECIPE_VERSION) -> Edit:
    if not isinstance(data, dict):
        raise RecipeError("action: an object ({…}) is expected.")
    _known(data, {"type", "params", "light", "method", "start"}, "action")
    kind = data.get("type")
    if not isinstance(kind, str) or (kind not in OPERATIONS and kind != "relight"):
        raise RecipeError(f"action.type: unknown {kind!r}; use one of {', '.join(OPERATIONS)}.")
    params_class = OPERATIONS["shade" if kind == "relight" else kind].params
    given = data.get("params", {})
    if version == 2 and isinstance(given, dict):
        given = {**VERSION_2_DEFAULTS.get(params_class.__name__, {}), **given}
    params = _build(params_class, given, "action.params")
    light = _build(LightParams, data["light"], "action.light") if data.get("light") is not None else None
    extra = {key: data[key] for key in ("method", "start") if key in data}
    edit = Action(kind, params, light=light, **extra)
    if edit.engine is not None and OPERATIONS[edit.operation].engine_kinds:
        try:
            operations.check_engine(edit.engine, OPERATIONS[edit.operation])
        except UserError as error:
            raise RecipeError(str(error)) from error
    return edit


def _from_version_1(data: dict) -> Recipe:
    """A version 1 file: one edit's settings, as the result pages downloaded them before recipes."""
    kind, params = data.get("action"), data.get("params", {})
    if kind != "inpaint":
        raise RecipeError(f"version 1: only inpainting edits can be read (got action {kind!r}).")
    action_params = _build(InpaintParams, params, "params")
    if data.get("light") is not None:  # a fill with light saved its light and start next to the params
        light = _build(LightParams, data["light"], "light")
        action = Action("lit_fill", action_params, light=light, start=data.get("start", "current"))
    else:
        action = Action("remove" if _is_removal(action_params.engine) else "inpaint", action_params)
    return Recipe(Selection(kind="mask_file"), action, seed=SeedPolicy("fixed", action_params.seed or 0))


# --- from an interactive edit ------------------------------------------------------------------------


def _is_removal(engine: str) -> bool:
    return engine in catalog.current().engine_names(("removal",))


def recipe_from_result(result: Any, index: int, selection: Selection, mask_ops: tuple[MaskOp, ...] = (),
                       name: str = "") -> Recipe:
    """The recipe that replays variant ``index`` of an Inpaint or Relight page result.

    ``result`` is an inpaint result (inpaint, remove, or fill with light when it carries a light)
    or a relight result (IC-Light or shading). The seed policy is fixed at the variant's seed,
    with one variant.
    """
    seed = SeedPolicy("fixed", int(result.seeds[index]))
    params = replace(result.params, seed=seed.seed, variants=1)
    if isinstance(params, OutpaintParams):
        action = Edit("outpaint", params, reference_image=getattr(result, "reference_image", None))
        selection = Selection(kind="whole")  # it selects nothing
    elif isinstance(params, RelightParams):
        action = Edit("shade" if result.engine == "shading" else "relight", params, light=result.light)
    elif "light" in getattr(result, "extra", {}):
        action = Edit("lit_fill", params, light=LightParams.from_dict(result.extra["light"]),
                      start=result.extra.get("start", "current"))
    else:
        action = Edit("remove" if _is_removal(params.engine) else "inpaint", params,
                      reference_image=getattr(result, "reference_image", None))
    return Recipe(selection, action, tuple(mask_ops), seed, name)


# --- applying a recipe to one photo ------------------------------------------------------------------


@dataclass
class Applied:
    """A recipe's result on one photo: the images (full size), their seeds, the mask used and
    what produced each image (for the PNG's text chunk). ``canvas``: where the photo lies on
    larger images (``core.canvas.Canvas``, extending the canvas), None when they are its size."""

    images: list[Image.Image]
    seeds: list[int]
    mask: np.ndarray
    metadata: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    canvas: Any = None


def select_region(
    recipe: Recipe, image: Image.Image, *, mask_file: np.ndarray | None = None, segmenter: Any = None,
    image_id: str = "",
) -> tuple[np.ndarray, list[str]]:
    """The recipe's selection on ``image`` followed by its mask operations; (mask, notes).

    ``mask_file`` is the photo's own mask (kind "mask_file"); ``segmenter`` a
    ``core.segmenter.Segmenter`` (kinds "text", "points", "box"). Raises RecipeError when nothing
    is selected or what the selection needs is missing.
    """
    selection, (width, height) = recipe.selection, image.size
    notes: list[str] = []
    if not recipe.takes_mask:
        return np.zeros((height, width), bool), [f"This recipe does not select a region: it will "
                                                  f"{recipe.action.describe()}."]
    if selection.kind == "whole":
        mask = np.ones((height, width), bool)
    elif selection.kind == "mask":
        mask = selection.mask_at(image.size)
    elif selection.kind == "mask_file":
        if mask_file is None:
            raise RecipeError("No mask file for this photo: give one with the same name (e.g. photo.png for photo.jpg).")
        mask = masks.check_mask(mask_file, image.size)
    else:
        if segmenter is None:
            raise RecipeError(f"Selecting {SELECTION_KINDS[selection.kind]} needs the selection models.")
        prompt = SegmentPrompt(
            points=tuple((x * width, y * height, label) for x, y, label in selection.points),
            box=tuple(v * s for v, s in zip(selection.box, (width, height, width, height))) if selection.box else None,
            text=selection.text if selection.kind == "text" else "",
            top_k=selection.top_k, step=selection.step, backend=selection.backend, refiner=selection.refiner,
            min_score=selection.min_score,
        )
        try:
            result = segmenter.segment(image, image_id or content_hash(image), prompt)
        except SegmentError as error:
            raise RecipeError(str(error)) from error
        if result.fallback:
            notes.append(result.fallback)
        if result.message:
            notes.append(result.message)
        if selection.kind != "text":
            chosen = result.masks[:1]
        elif selection.all_instances and result.instances:
            chosen = result.masks  # every instance of the concept SAM 3 found
        else:
            chosen = result.masks[: selection.top_k]
        mask = np.logical_or.reduce(chosen) if chosen else np.zeros((height, width), bool)
    for op in recipe.mask_ops:
        mask = _apply_op(mask, op)
    if not mask.any():
        raise RecipeError(f"Nothing was selected ({SELECTION_KINDS[selection.kind]}).")
    return mask, notes


def _apply_op(mask: np.ndarray, op: MaskOp) -> np.ndarray:
    if op.op == "grow":
        return masks.grow(mask, op.px)
    if op.op == "shrink":
        return masks.shrink(mask, op.px)
    if op.op == "invert":
        return masks.invert(mask)
    if op.op == "fill_holes":
        return masks.fill_holes(mask)
    if op.op == "remove_islands":
        return masks.remove_islands(mask, op.min_area)
    return mask  # feather: a soft edge, applied by the action (see _action_params)


def _action_params(recipe: Recipe, seed: int):
    """The action's params with ``seed`` and the recipe's feather operation, if any."""
    params = recipe.with_seed(seed)
    for op in recipe.mask_ops:
        if op.op == "feather":
            if isinstance(params, RelightParams):
                params = replace(params, mask_blur=op.outer)
            else:
                params = replace(params, mask_blur=op.outer, mask_blur_inside=op.inner)
    return params


def apply_recipe(
    recipe: Recipe,
    image: Image.Image,
    *,
    stem: str,
    manager: Any,
    segmenter: Any = None,
    mask_file: np.ndarray | None = None,
    image_id: str = "",
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Applied:
    """Apply ``recipe`` to ``image`` (RGB, full size), the photo named ``stem``.

    ``manager`` (a ``core.manager.ModelManager``) holds the models; ``segmenter`` (a
    ``core.segmenter.Segmenter``) answers text, click and box selections. Raises the errors of
    ``core.errors`` with a message for a person.
    """
    import time

    if image.mode != "RGB":
        raise RecipeError(f"The photo must be RGB (got {image.mode}).")
    started = time.perf_counter()
    mask, notes = (select_region(recipe, image, mask_file=mask_file, segmenter=segmenter, image_id=image_id)
                   if recipe.takes_mask else (None, []))
    select_ms = (time.perf_counter() - started) * 1000
    edit = replace(recipe.action, params=_action_params(recipe, recipe.seed.seed_for(stem)))
    result = operations.run(edit, image, mask, manager, progress=progress, should_cancel=should_cancel)
    metadata = [{**result.metadata(i), "recipe": recipe.name or None} for i in range(len(result.images))]
    if mask is None:
        mask = result.mask  # the region it made: the new border
    return Applied(list(result.images), list(result.seeds), mask, metadata, notes + list(result.notes),
                   {"select": select_ms, **result.timings}, canvas=getattr(result, "canvas", None))
