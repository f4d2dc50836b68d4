"""Field metadata of the operations' params: the one source of their defaults, bounds and help.

A params dataclass declares each field with :func:`setting` (default, bounds, choices, help); its
``__post_init__`` calls :func:`check` to validate every field against its bounds, and the pages
(widget defaults and ranges), the command line (one option per field) and recipe validation all
read the same metadata.
"""
from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from core.errors import UserError

MAX_VARIANTS = 8
MAX_SEED = 2**31 - 1


def resolve_seeds(seed: int | None, variants: int) -> list[int]:
    """Variant seeds: seed, seed + 1, …; a random first seed when ``seed`` is None."""
    first = seed if seed is not None else secrets.randbelow(MAX_SEED - MAX_VARIANTS)
    return [(first + i) % (MAX_SEED + 1) for i in range(variants)]


def setting(default: Any, *, label: str, low: float | None = None, high: float | None = None,
            above_low: bool = False, choices: tuple[str, ...] = (), help: str = "", unit: str = "",
            flag: str | None = None, option: bool = True) -> Any:
    """A params field: ``label`` names it in messages; ``low``/``high`` bound it (``above_low``:
    strictly above ``low``); ``choices`` lists its allowed values; ``flag`` is its command-line
    option when not ``--<name>``; ``option=False``: not a command-line option (recorded, not set)."""
    return dataclasses.field(default=default, metadata={
        "label": label, "low": low, "high": high, "above_low": above_low, "choices": choices, "help": help,
        "unit": unit, "flag": flag, "option": option})


def defaults(cls: type) -> dict[str, Any]:
    """Each field's default."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


_KINDS = {"int": int, "float": float, "bool": bool, "str": str}
_KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _is(value: Any, kind: type) -> bool:
    """Whether ``value`` is of ``kind`` as JSON would give it (a whole number is a fine float; a
    boolean is no number)."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def check(params: Any, error: type[UserError] = UserError) -> None:
    """Raise ``error`` naming the first field outside its bounds or choices."""
    for f in dataclasses.fields(params):
        info, value = f.metadata, getattr(params, f.name)
        if not info or value is None:
            continue
        kind = _KINDS.get(str(f.type).replace(" | None", ""))
        if kind is not None and not _is(value, kind):
            raise error(f"{info['label']} must be {_KIND_WORDS[kind]} (got {value!r}).")
        if isinstance(value, bool):
            continue
        unit = f" {info['unit']}" if info.get("unit") else ""
        if info["choices"] and value not in info["choices"]:
            raise error(f"{info['label']} must be one of {', '.join(map(repr, info['choices']))} (got {value!r}).")
        low, high = info["low"], info["high"]
        if low is None or not isinstance(value, (int, float)):
            continue
        if info["above_low"] and not (low < value <= high):
            raise error(f"{info['label']} must be above {low:g} and at most {high:g}{unit} (got {value}).")
        if not info["above_low"] and not (low <= value <= high):
            raise error(f"{info['label']} must be between {low:g} and {high:g}{unit} (got {value}).")
