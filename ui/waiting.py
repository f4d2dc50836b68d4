"""A request waiting for its model's turn (``core.queue``), as every page says it.

"Waiting for SD 1.5 inpainting: 2 requests ahead of yours, about 20 s." The generation pages say it
on their progress bar (``ui.generation``); the Segment page in a line of its own, with a Cancel
button, that goes away when the work starts (:class:`QueueWait`).

Cancel works by Streamlit's rerun, as for a generation: the click starts a new run of the page, its
callback first; the new run stops the waiting one at its next update of the page, at once, since
the wait updates the line several times a second, and leaving the wait takes the request out of the
queue.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import streamlit as st


def wait_message(title: str, place: int, ahead: int, estimate_s: float | None) -> str:
    """What the page says while a request waits for model ``title``: the requests ahead of it (the
    running one included) and, once the model has been timed, about how long."""
    if ahead <= 0:
        said = "yours is next"
    else:
        said = f"{ahead} request{'s' if ahead != 1 else ''} ahead of yours"
    return f"Waiting for {title}: {said}" + (f", about {about(estimate_s)}" if estimate_s is not None else "") + "."


def about(seconds: float) -> str:
    """A rough duration: "4 s", "20 s" (5 s steps), "3 min"."""
    if seconds < 10:
        return f"{max(1, math.ceil(seconds))} s"
    if seconds < 60:
        return f"{5 * math.ceil(seconds / 5)} s"
    return f"{math.ceil(seconds / 60)} min"


class QueueWait:
    """Where a request stands in its model's queue, shown in ``slot`` (an ``st.empty()``) while it
    waits, with a Cancel button when there is an ``on_cancel``; the slot empties when the work starts.

    Called as the selection service's ``on_wait`` (``core.segmenter.SelectionWait``):
    ``(engine, place, ahead, estimate_s)``, place 0 once the turn has come. ``title`` names an engine
    for people; ``key`` starts the Cancel buttons' keys (one button per wait of a page run);
    ``on_cancel`` is the button's callback, run at the start of the run its click starts.
    """

    def __init__(self, slot: Any, title: Callable[[str], str], key: str,
                 on_cancel: Callable[[], None] | None = None) -> None:
        self.slot, self.title, self.key, self.on_cancel = slot, title, key, on_cancel
        self.message = ""  # what the line says now ("" when nothing waits)
        self._line: Any = None
        self._waits = 0

    def __call__(self, engine: str, place: int, ahead: int, estimate_s: float | None) -> None:
        if place <= 0:
            self.done()
            return
        self.message = wait_message(self.title(engine), place, ahead, estimate_s)
        if self._line is None:
            self._waits += 1
            with self.slot.container():
                self._line = st.empty()
                if self.on_cancel is not None:
                    st.button("Cancel", key=f"{self.key}_{self._waits}", on_click=self.on_cancel,
                              help="Leaves the queue; nothing is selected.")
        self._line.info(self.message, icon=":material/hourglass_top:")  # every call: a click is noticed here

    def done(self) -> None:
        """The wait is over (the work started, or failed): the line and its button go."""
        if self._line is not None:
            self.slot.empty()
            self._line = None
        self.message = ""
