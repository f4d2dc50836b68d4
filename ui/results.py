"""Per-session views of generated results: thumbnails and download files, made once per result.

A result is any object with ``images`` (full-size PIL images, one per variant) and
``metadata(index)`` (what produced variant ``index``): ``core.operations.inpaint.InpaintResult`` and
``core.operations.relight.RelightResult`` both are.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from core.canvas import fit_alpha
from core.images import encode_image
from core.output_formats import AUTO_FORMAT, CHOICES, FORMATS, EncodedResult, encode_result, offered
from core.recipe import SeedPolicy, Selection, recipe_from_result
from ui import compare, forms, resources, session

RESULT_VIEWS = "result_views"  # [(result, {(variant, what): image or bytes})], the latest results
KEPT_RESULTS = 4  # one per page and mode that shows results, so switching pages recomputes nothing
COMPARE_WIDTH = 720  # the before / after picture's display width


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
    loaded = session.photo()

    def make() -> bytes:
        image = result.images[index]
        return encode_image(image, format="PNG", alpha=_alpha_for(result, image, loaded.alpha),
                            icc_profile=loaded.icc_profile, exif=loaded.exif, params=result.metadata(index),
                            png_compression=resources.settings()[0].png_compression)

    return _cached(result, (index, "png"), make)


def before_view(result: Any, width: int) -> Image.Image | None:
    """The photo as the result's "before", ``width`` px wide: on an extended result's canvas (the
    new border grey), so that before and after line up; else the photo's display copy."""
    canvas, loaded = result_canvas(result), session.photo()
    if canvas is None or loaded is None or loaded.rgb.size != (canvas.width, canvas.height):
        return session.display_copy(width)

    def make() -> Image.Image:
        placed = Image.fromarray(canvas.place(np.asarray(loaded.rgb), fill=128))
        height = max(1, round(placed.height * width / placed.width))
        return placed.resize((width, height), Image.LANCZOS, reducing_gap=2.0)

    return _cached(result, ("before", width), make)


def result_canvas(result: Any):
    """Where the photo lies on a result larger than it (``core.canvas.Canvas``), else None."""
    return getattr(result, "canvas", None)


def _alpha_for(result: Any, image: Image.Image, alpha: Image.Image | None) -> Image.Image | None:
    """The photo's transparency for ``image``, moved onto the canvas of an extended result; None when
    it does not fit (a result of an earlier version of the photo, of another size)."""
    canvas = result_canvas(result)
    if alpha is not None and canvas is not None and alpha.size == (canvas.width, canvas.height):
        alpha = fit_alpha(alpha, canvas)
    return alpha if alpha is None or alpha.size == image.size else None


def variant_file(result: Any, index: int, format_name: str, quality: int) -> EncodedResult:
    """Variant ``index`` as a file of format ``format_name`` (``core.output_formats.FORMATS``), made
    once per variant, format and quality; PNG is :func:`variant_png`'s."""
    if format_name == "png":
        return EncodedResult(variant_png(result, index), FORMATS["png"])
    loaded = session.photo()

    def make() -> EncodedResult:
        image = result.images[index]
        return encode_result(image, loaded, format_name, params=result.metadata(index), quality=quality,
                             png_compression=resources.settings()[0].png_compression,
                             alpha=_alpha_for(result, image, loaded.alpha))

    return _cached(result, (index, "file", format_name, quality), make)


def download_choice(result: Any, index: int, file_stem: str, key_prefix: str) -> None:
    """The download of variant ``index``: a format choice beside the button (PNG first; for a JPEG
    photo also a JPEG that re-encodes only the edited blocks), and what to know about the file."""
    names = offered(session.photo().format)
    format_key = f"{key_prefix}_download_format"
    if st.session_state.get(format_key) not in names:
        st.session_state[format_key] = "png"
    format_col, button_col = st.columns(2, vertical_alignment="bottom")
    name = format_col.selectbox("File format", names, key=format_key, format_func=lambda n: FORMATS[n].label,
                                help=" · ".join(f"{FORMATS[n].label}: {FORMATS[n].help}" for n in names))
    quality = resources.settings()[0].jpeg_quality
    if name == "jpeg":
        quality = format_col.slider("JPEG quality", 50, 100, value=quality, key=f"{key_prefix}_jpeg_quality",
                                    help="Every pixel changes slightly at any quality.")
    encoded = variant_file(result, index, name, quality)
    button_col.download_button(f"Download {encoded.format.short}", encoded.data,
                               file_name=f"{file_stem}{encoded.format.extension}", mime=encoded.format.mime,
                               on_click="ignore", width="stretch", key=f"{key_prefix}_download")
    for note in encoded.notes:
        st.caption(note[0].upper() + note[1:] + ".")


BATCH_FORMAT = "batch_output_format"
BATCH_QUALITY = "batch_jpeg_quality"


def batch_output_choice() -> tuple[str, int]:
    """The Batch page's choice of result files: (format name, JPEG quality). Starts on the setting
    (``INPAINT_STUDIO_OUTPUT_FORMAT``, auto by default: JPEG photos stay JPEGs with only the edited
    blocks re-encoded, others become PNGs)."""
    settings = resources.settings()[0]
    if st.session_state.get(BATCH_FORMAT) not in CHOICES:
        st.session_state[BATCH_FORMAT] = settings.output_format
    labels = {AUTO_FORMAT: "Auto: JPEG photos as JPEG, unchanged blocks kept; others as PNG",
              **{name: fmt.label for name, fmt in FORMATS.items()}}
    name = st.selectbox("Result files", list(CHOICES), key=BATCH_FORMAT, format_func=labels.get,
                        help=" · ".join(f"{fmt.label}: {fmt.help}" for fmt in FORMATS.values()))
    quality = settings.jpeg_quality
    if name == "jpeg":
        quality = st.slider("JPEG quality", 50, 100, value=quality, key=BATCH_QUALITY,
                            help="Every pixel changes slightly at any quality.")
    return name, quality


def selection_options() -> dict[str, tuple[str, Callable[[np.ndarray], Any]]]:
    """The ways the current edit's region can be described in a recipe.

    kind → (label, make), ``make(mask)`` building the ``core.recipe.Selection`` from the mask the
    edit used. Always the mask itself, each photo's mask file and the whole photo; also the
    Segment page's text, clicks or box when there are any, relative to the photo's size.
    """
    width, height = session.photo().size
    options: dict[str, tuple[str, Callable[[np.ndarray], Any]]] = {
        "mask": ("This mask, scaled to each photo", Selection.from_mask)
    }
    query = st.session_state.get(session.SEGMENT_QUERY, "")
    answer = st.session_state.get(session.SEGMENT_RESULT)
    if query:
        every = answer is not None and answer[1].instances  # SAM 3 answered: every instance
        min_score = float(st.session_state.get(forms.SEGMENT_MIN_SCORE, 0.5))
        options["text"] = (f"Every “{query}” found" if every else f"The object named “{query}”",
                           lambda _: Selection(kind="text", text=query, all_instances=every, min_score=min_score))
    backend = {"FastSAM": "fastsam", "SAM (refine)": "sam", "GrabCut": "grabcut"}.get(
        st.session_state.get(forms.SEGMENT_BACKEND, "FastSAM"), "fastsam")
    refiner = st.session_state.get(forms.SEGMENT_REFINER, "sam2")
    points = st.session_state.get(session.SEGMENT_POINTS) or []
    if any(label == 1 for *_, label in points):
        relative = tuple((x / width, y / height, label) for x, y, label in points)
        step = st.session_state.get(session.SEGMENT_STEP, 0)
        options["points"] = ("The object at the same clicks",
                             lambda _: Selection(kind="points", points=relative, step=step, backend=backend,
                                                 refiner=refiner))
    box = st.session_state.get(session.SEGMENT_BOX)
    if box is not None:
        x0, y0, x1, y1 = box
        relative_box = (x0 / width, y0 / height, x1 / width, y1 / height)
        options["box"] = ("The object in the same box",
                          lambda _: Selection(kind="box", box=relative_box, backend=backend, refiner=refiner))
    options["mask_file"] = ("Each photo's own mask file", lambda _: Selection(kind="mask_file"))
    options["whole"] = ("The whole photo", lambda _: Selection(kind="whole"))
    return options


def recipe_for(result: Any, index: int, kind: str, policy: str, name: str):
    """The ``core.recipe.Recipe`` replaying variant ``index`` with selection ``kind`` and seed
    ``policy`` (made once per choice)."""
    def make():
        mask = result.mask if getattr(result, "mask", None) is not None else session.mask_document().mask
        selection = selection_options()[kind][1](mask)
        recipe = recipe_from_result(result, index, selection, name=name.strip())
        if policy == "per_image":
            recipe = replace(recipe, seed=SeedPolicy("per_image", recipe.seed.seed))
        return recipe

    return _cached(result, (index, "recipe", kind, policy, name), make)


def recipe_saver(result: Any, index: int, key_prefix: str) -> None:
    """"Save this edit as a recipe": how to find the region in other photos, the seed policy, a
    name; then download the recipe or send it to the Batch page."""
    options = selection_options()
    if st.session_state[forms.RECIPE_SELECTION] not in options:
        st.session_state[forms.RECIPE_SELECTION] = "mask"
    if result_canvas(result) is not None:  # extending the canvas selects nothing
        kind = "whole"
    else:
        kind = st.radio("Select in each photo", list(options), key=forms.RECIPE_SELECTION,
                        format_func=lambda k: options[k][0])
    policy = st.radio("Seeds", ["fixed", "per_image"], key=forms.RECIPE_SEED_POLICY, horizontal=True,
                      format_func={"fixed": f"This variant's ({result.seeds[index]}) for every photo",
                                   "per_image": "One per photo, from its file name"}.get)
    name = st.text_input("Recipe name", key=forms.RECIPE_NAME, placeholder="e.g. remove-logo")
    recipe = recipe_for(result, index, kind, policy, name)
    stem = (name.strip() or (session.photo().name or "photo").rsplit(".", 1)[0]).replace(" ", "-")
    download_col, batch_col = st.columns(2)
    download_col.download_button("Download recipe (JSON)", recipe.to_json(), file_name=f"{stem}-recipe.json",
                                 mime="application/json", on_click="ignore", width="stretch",
                                 key=f"{key_prefix}_download_recipe")
    if batch_col.button("Use for a batch", width="stretch", key=f"{key_prefix}_use_for_batch",
                        help="Make this the recipe on the Batch page."):
        st.session_state[session.BATCH_RECIPE] = recipe
        st.session_state[forms.BATCH_RECIPE_SOURCE] = "session"
        st.switch_page("pages/5_Batch.py")


def show_result(
    result: Any,
    *,
    choice_key: str,
    describe: Callable[[int], str],
    footer: str,
    file_suffix: str,
    key_prefix: str,
) -> None:
    """The variants side by side, a choice among them, before/after as one picture with a slider, notes, and
    what to do next: use the chosen one as the new base, step back, download it (PNG with the edit's
    parameters, or another format: :func:`download_choice`) or
    save it as a recipe (for other photos, a batch). ``describe(i)`` captions variant i; ``footer`` says what produced the result."""
    count = len(result.images)
    if st.session_state.get(choice_key, 0) >= count:
        st.session_state[choice_key] = 0
    choice = 0
    if count > 1:  # several variants: side by side, and a choice among them
        for index, column in enumerate(st.columns(count)):
            column.image(variant_view(result, index, 320))
            column.caption(describe(index))
        choice = st.radio("Variant", list(range(count)), key=choice_key, horizontal=True,
                          format_func=lambda i: f"#{i + 1} (seed {result.seeds[i]})")
    compare.comparison(before_view(result, COMPARE_WIDTH), variant_view(result, choice, COMPARE_WIDTH),
                       width=COMPARE_WIDTH)
    st.caption(f"Before / After · {describe(choice)} · drag across the picture to compare")
    for note in result.notes:
        st.info(note, icon=":material/info:")
    timing = " · ".join(f"{stage} {ms:.0f} ms" for stage, ms in result.timings.items())
    st.caption(f"{footer} · {timing}")
    base_col, back_col = st.columns(2)
    base_col.button("Use as new base", type="primary", width="stretch", key=f"{key_prefix}_use_as_base",
                    on_click=session.use_as_base, args=(result.images[choice], result_canvas(result)),
                    help="Continue editing from this variant; the mask stays.")
    back_col.button(f"Step back ({len(session.base_history())})", width="stretch", key=f"{key_prefix}_step_back",
                    on_click=session.step_back, disabled=not session.base_history(),
                    help="Return to the photo before the last new base.")
    stem = (session.photo().name or "photo").rsplit(".", 1)[0]
    download_choice(result, choice, f"{stem}-{file_suffix}", key_prefix)
    with st.expander("Save this edit as a recipe", icon=":material/receipt_long:"):
        recipe_saver(result, choice, key_prefix)
