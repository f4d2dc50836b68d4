"""Per-session views of generated results: thumbnails and download files, made once per result.

A result is any object with ``images`` (full-size PIL images, one per variant) and
``metadata(index)`` (what produced variant ``index``): ``core.inpaint.InpaintResult`` and
``core.relight.RelightResult`` both are.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import streamlit as st
from PIL import Image

from core.images import encode_image
from ui import state

RESULT_VIEWS = "result_views"  # [(result, {(variant, what): image or bytes})], the latest results
KEPT_RESULTS = 3  # one per page that shows results, so switching pages recomputes nothing


def _cached(result: Any, key: tuple, make):
    # Matched by identity; the list holds each result, so its id cannot be reused while listed.
    cached = st.session_state.setdefault(RESULT_VIEWS, [])
    views = next((views for held, views in cached if held is result), None)
    if views is None:
        views = {}
        cached.append((result, views))
        del cached[:-KEPT_RESULTS]
    if key not in views:
        views[key] = make()
    return views[key]


def variant_view(result: Any, index: int, width: int) -> Image.Image:
    """Variant ``index`` scaled to ``width`` px for the screen."""
    image = result.images[index]

    def make() -> Image.Image:
        height = max(1, round(image.height * width / image.width))
        return image.resize((width, height), Image.LANCZOS, reducing_gap=2.0)

    return _cached(result, (index, "view", width), make)


def variant_png(result: Any, index: int) -> bytes:
    """Variant ``index`` as a PNG at full size, with the photo's alpha, profile, EXIF and the edit's
    parameters embedded."""
    loaded = state.photo()

    def make() -> bytes:
        return encode_image(result.images[index], format="PNG", alpha=loaded.alpha,
                            icc_profile=loaded.icc_profile, exif=loaded.exif, params=result.metadata(index))

    return _cached(result, (index, "png"), make)


def recipe_json(result: Any, index: int) -> str:
    """The edit that made variant ``index``, replayable on another photo with its own mask."""
    return json.dumps({"version": 1, "app": "inpaint-studio", **result.metadata(index)}, indent=2)


def show_result(
    result: Any,
    *,
    choice_key: str,
    describe: Callable[[int], str],
    footer: str,
    file_suffix: str,
    key_prefix: str,
) -> None:
    """The variants side by side, a choice among them, before/after, notes, and what to do next:
    use the chosen one as the new base, step back, download it (PNG with the edit's parameters) or
    its recipe. ``describe(i)`` captions variant i; ``footer`` says what produced the result."""
    count = len(result.images)
    for index, column in enumerate(st.columns(count)):
        column.image(variant_view(result, index, 320))
        column.caption(describe(index))
    if st.session_state.get(choice_key, 0) >= count:
        st.session_state[choice_key] = 0
    choice = st.radio("Variant", list(range(count)), key=choice_key, horizontal=True,
                      format_func=lambda i: f"#{i + 1} (seed {result.seeds[i]})")
    before_col, after_col = st.columns(2)
    before_col.image(state.display_copy(480), caption="Before")
    after_col.image(variant_view(result, choice, 480), caption=f"After · {describe(choice)}")
    for note in result.notes:
        st.info(note, icon=":material/info:")
    timing = " · ".join(f"{stage} {ms:.0f} ms" for stage, ms in result.timings.items())
    st.caption(f"{footer} · {timing}")
    base_col, back_col = st.columns(2)
    base_col.button("Use as new base", type="primary", width="stretch", key=f"{key_prefix}_use_as_base",
                    on_click=state.use_as_base, args=(result.images[choice],),
                    help="Continue editing from this variant; the mask stays.")
    back_col.button(f"Step back ({len(state.base_history())})", width="stretch", key=f"{key_prefix}_step_back",
                    on_click=state.step_back, disabled=not state.base_history(),
                    help="Return to the photo before the last new base.")
    stem = (state.photo().name or "photo").rsplit(".", 1)[0]
    png_col, recipe_col = st.columns(2)
    png_col.download_button("Download PNG", variant_png(result, choice), file_name=f"{stem}-{file_suffix}.png",
                            mime="image/png", on_click="ignore", width="stretch", key=f"{key_prefix}_download")
    recipe_col.download_button("Download recipe (JSON)", recipe_json(result, choice),
                               file_name=f"{stem}-recipe.json", mime="application/json", on_click="ignore",
                               width="stretch", key=f"{key_prefix}_download_recipe")
