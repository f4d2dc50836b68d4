"""Running one generation from a page: a progress bar, a Cancel button, and errors said plainly.

The generation runs in the page's own script run. While other requests for the same model are
ahead of it in the model's queue (``core.queue``), the bar says so and keeps the numbers up to date:
"Waiting for SD 1.5 inpainting: 2 requests ahead of yours, about 20 s" (``ui.waiting``, the wording
every page uses). A full queue is the page's usual clear error.

Cancel works by Streamlit's rerun: clicking it starts a new run of the page, which stops this one
at its next update of the page: between two steps (the engine's step callback is where the script
yields), or at once while it waits in the queue (the wait updates the bar several times a second,
and leaving the wait takes the request out of the queue). The new run sees the button's value and
says that the generation was cancelled; earlier results stay.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from core import operations
from core.errors import Cancelled, StudioError
from ui import forms, resources
from ui.waiting import wait_message

CANCEL = "cancel_generation"

Progress = Callable[[int, int], None]


class GenerationProgress:
    """The bar of one generation: ``progress(done, total)`` for its steps (a ``Progress``), and
    :meth:`waiting` for its place in the model's queue (``core.queue``'s ``on_wait``). Both are
    called in the page's own script run, which is where they update the page."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.message = ""  # what the bar says now

    def __call__(self, done: int, total: int) -> None:
        self.message = f"Step {done} of {total}"
        self.bar.progress(min(done / max(total, 1), 1.0), text=self.message)

    def waiting(self, title: str) -> Callable[[int, int, float | None], None]:
        """The ``on_wait(place, ahead, estimate_s)`` of a request for model ``title``."""
        def on_wait(place: int, ahead: int, estimate_s: float | None) -> None:
            self.message = wait_message(title, place, ahead, estimate_s)
            self.bar.progress(0.0, text=self.message)  # every call: a Cancel click is noticed here

        return on_wait


def run_generation(work: Callable[[GenerationProgress], Any], what: str = "Generation") -> Any | None:
    """``work(progress)`` under a progress bar with a Cancel button; its result, or None.

    ``progress``: a :class:`GenerationProgress` (call it with the steps; ``progress.waiting(title)``
    is the queue's ``on_wait``). A clear error (bad settings, a missing or broken model, out of
    memory, a full queue) is shown, not raised; the page's earlier results are untouched.
    """
    cancel_slot = st.empty()
    cancel_slot.button("Cancel", key=CANCEL, help="Leaves the queue, or stops after the current step.")
    progress = GenerationProgress(st.progress(0.0, text="Starting…"))
    result = None
    try:
        result = work(progress)
    except Cancelled:
        st.warning(f"{what} cancelled.")
    except StudioError as error:
        st.error(str(error))
    finally:
        progress.bar.empty()
        cancel_slot.empty()
    return result


def run_edit(edit: operations.Edit, image, mask, what: str = "Generation") -> Any | None:
    """Run ``edit`` on the page (see :func:`run_generation`) with the server's models; its result,
    or None (an error or a cancel was shown; the page's earlier results are untouched)."""
    def work(progress: GenerationProgress) -> Any:
        if edit.engine is not None:
            with resources.loading(edit.engine):
                resources.manager().load(edit.engine)
        on_wait = progress.waiting(resources.engine_title(edit.engine)) if edit.engine is not None else None
        return operations.run(edit, image, mask, resources.manager(), progress=progress, on_wait=on_wait)

    return run_generation(work, what)


def show_cancelled(what: str = "Generation") -> None:
    """On the run that a Cancel click started, say so (the generation it interrupted is gone)."""
    if st.session_state.get(CANCEL):
        st.warning(f"{what} cancelled; earlier results are kept.", icon=":material/info:")


# --- The settings every generation asks for, the same on each page --------------------------------------
def prompt_inputs(prompt_key: str, negative_key: str, *, label: str = "Prompt", placeholder: str = "",
                  prompt_disabled: bool = False, negative_disabled: bool = False) -> tuple[str, str]:
    """The prompt and the negative prompt."""
    prompt = st.text_area(label, key=prompt_key, height=80, disabled=prompt_disabled, placeholder=placeholder)
    negative = st.text_input("Negative prompt", key=negative_key, disabled=negative_disabled)
    return prompt, negative


def seed_inputs(seed_key: str, random_key: str) -> int | None:
    """The seed, or None when "Random seed" is on."""
    seed_col, random_col = st.columns(2)
    random_seed = random_col.toggle("Random seed", key=random_key)
    seed = seed_col.number_input("Seed", 0, 2**31 - 1, key=seed_key, disabled=random_seed)
    return None if random_seed else int(seed)


def sampling_inputs(steps_key: str, guidance_key: str) -> tuple[int, float]:
    """Steps and guidance (classifier-free guidance scale)."""
    steps = st.slider("Steps", 1, 100, key=steps_key)
    guidance = st.slider("Guidance", 0.0, 30.0, step=0.5, key=guidance_key,
                         help="How closely to follow the prompt; higher follows it more literally.")
    return steps, guidance


def paste_inputs() -> tuple[int, int, int, str, bool]:
    """How the result goes back into the photo, shared by the Inpaint and Relight pages: context
    around the mask, soft edge outside and inside, blending, colour matching."""
    padding = st.slider("Context around the mask (px)", 0, 512, step=8, key=forms.INPAINT_PADDING)
    blur_outside = st.slider("Soft edge outside (px)", 0, 100, key=forms.FEATHER_OUTER)
    blur_inside = st.slider("Soft edge inside (px)", 0, 100, key=forms.FEATHER_INNER)
    blend_mode = st.radio("Blending", ["feather", "poisson"], key=forms.INPAINT_BLEND, horizontal=True,
                          format_func={"feather": "Soft edge", "poisson": "Poisson (seamless)"}.get)
    color_match = st.toggle("Match colours to the surroundings", key=forms.INPAINT_COLOR_MATCH)
    return padding, blur_outside, blur_inside, blend_mode, color_match
