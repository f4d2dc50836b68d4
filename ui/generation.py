"""Running one generation from a page: a progress bar, a Cancel button, and errors said plainly.

Cancel works by Streamlit's rerun: clicking it starts a new run of the page, which stops this one
between two steps (the engine's step callback is where the script yields). The new run sees the
button's value and says that the generation was cancelled; earlier results stay.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from core.engines import ModelLoadError
from core.engines.base import Cancelled, InpaintError

CANCEL = "cancel_generation"

Progress = Callable[[int, int], None]


def run_generation(work: Callable[[Progress], Any], what: str = "Generation") -> Any | None:
    """``work(progress)`` under a progress bar with a Cancel button; its result, or None.

    A clear error (bad settings, a missing or broken model, out of memory) is shown, not raised;
    the page's earlier results are untouched.
    """
    cancel_slot = st.empty()
    cancel_slot.button("Cancel", key=CANCEL, help="Stops after the current step.")
    bar = st.progress(0.0, text="Starting…")
    result = None
    try:
        result = work(lambda done, total: bar.progress(min(done / max(total, 1), 1.0), text=f"Step {done} of {total}"))
    except (InpaintError, ModelLoadError) as error:
        st.error(str(error))
    except Cancelled:
        st.warning(f"{what} cancelled.")
    finally:
        bar.empty()
        cancel_slot.empty()
    return result


def show_cancelled(what: str = "Generation") -> None:
    """On the run that a Cancel click started, say so (the generation it interrupted is gone)."""
    if st.session_state.get(CANCEL):
        st.warning(f"{what} cancelled; earlier results are kept.", icon=":material/info:")
