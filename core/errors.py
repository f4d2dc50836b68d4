"""The app's errors: one base, three kinds, each message written for a person.

- :class:`UserError` (a ``ValueError``): the input, a setting, a recipe or an edit cannot be used as
  given; the message says which and what to change. The command line exits with 2.
- :class:`ModelUnavailable`: a model is missing or cannot be loaded; the message names it and says
  how to provide it. :class:`GenerationFailed`: a model ran but failed (out of memory, a black or
  NaN image). The command line exits with 1 for both.
- :class:`Cancelled`: the person stopped the work; nothing was produced.

The page's generation wrapper, the batch runner (once per photo) and the command line each catch
:class:`StudioError` once; each module's own error class derives from one of these kinds.
"""
from __future__ import annotations


class StudioError(Exception):
    """Anything the app reports to a person instead of a traceback."""


class UserError(StudioError, ValueError):
    """Input, settings, a recipe or an edit that cannot be used as given."""


class ModelUnavailable(StudioError, RuntimeError):
    """A model that is not on this machine or could not be loaded."""


class GenerationFailed(StudioError, RuntimeError):
    """A model that ran but could not produce a result (out of memory, an invalid image)."""


class Cancelled(StudioError):
    """The person cancelled the work; nothing was produced."""


def require_all(checks: list[tuple[bool, str]], error: type[StudioError] = UserError) -> None:
    """Raise ``error`` with the message of the first ``(ok, message)`` check that failed."""
    for ok, message in checks:
        if not ok:
            raise error(message)


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (its type's name when it has none)."""
    return " ".join((str(error) or type(error).__name__).split())
