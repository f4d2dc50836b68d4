"""AppTest runs of the home and Mask pages, with the tiny models configured."""
from __future__ import annotations

import base64

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.masks import bounding_box
from tests.helpers import TIMEOUT, png_bytes, upload
from ui import forms, session


def home() -> AppTest:
    return AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()


def photo_with_mask_page(size=(320, 200)) -> AppTest:
    at = home()
    upload(at, "photo.png", png_bytes(Image.new("RGB", size, (90, 120, 150))))
    return at.switch_page("pages/2_Mask.py").run()


def canvas_key(at: AppTest) -> str:
    return f"mask_canvas_{at.session_state[session.MASK_CANVAS_VERSION]}"


def paint(at: AppTest, canvas_box: tuple[int, int, int, int]) -> AppTest:
    """Inject a drawing into the canvas widget, as the component would send it, and rerun."""
    key = canvas_key(at)
    assert canvas_element(at).key == key
    width, height = _canvas_size(at)
    rgba = np.zeros((height, width, 4), np.uint8)
    x0, y0, x1, y1 = canvas_box
    rgba[y0:y1, x0:x1] = (255, 0, 80, 153)
    url = "data:image/png;base64," + base64.b64encode(png_bytes(Image.fromarray(rgba, "RGBA"))).decode()
    at.session_state[key] = {"drawing": {"raw": {"objects": []}, "data": url}, "backgroundFit": None}
    return at.run()


def canvas_element(at: AppTest):
    """The drawing canvas (a custom component, which AppTest shows as an unknown element)."""
    (element,) = [e for e in at.get("bidi_component") if (e.key or "").startswith("mask_canvas_")]
    return element


def _canvas_size(at: AppTest) -> tuple[int, int]:
    from ui.canvas import canvas_size

    return canvas_size(at.session_state[session.PHOTO].size, at.session_state[forms.CANVAS_WIDTH])


def current_mask(at: AppTest) -> np.ndarray:
    return at.session_state[session.MASK].mask


# --- home ------------------------------------------------------------------------------------


def test_home_shows_models_device_and_no_photo(app_with_tiny_models):
    at = home()
    assert not at.exception
    assert at.title[0].value == "Inpaint Studio"
    table = at.table[0].value
    statuses = dict(zip(table["Model"], table["Status"]))
    assert statuses["FastSAM-s"] == "available"
    assert statuses["SDXL inpainting 0.1"] == "available"
    assert statuses["FastSAM-x"] == "missing"  # not among the tiny models
    fallback = dict(zip(table["Model"], table["Fallback in use"]))
    assert fallback["FastSAM-x"] == "FastSAM-s"
    assert fallback["FastSAM-s"] == ""
    assert any("Device: **CPU" in caption.value for caption in at.caption)
    assert any("No photo yet" in caption.value for caption in at.sidebar.caption)


def test_home_upload_shows_the_photo_with_size_and_format(app_with_tiny_models):
    at = upload(home(), "holiday.png", png_bytes(Image.new("RGB", (640, 480), "white")))
    assert not at.exception and not at.error
    loaded = at.session_state[session.PHOTO]
    assert loaded.size == (640, 480)
    assert any("640×480 PNG" in caption.value for caption in at.sidebar.caption)


def test_bad_upload_is_a_clear_error_and_keeps_the_current_photo(app_with_tiny_models):
    at = upload(home(), "good.png", png_bytes(Image.new("RGB", (64, 48), "white")))
    at = upload(at, "notes.png", b"these are my shopping notes, not a photo\n")
    assert not at.exception
    assert len(at.error) == 1
    assert "notes.png" in at.error[0].value
    assert at.session_state[session.PHOTO].size == (64, 48)
    assert any("unchanged" in caption.value for caption in at.caption)


def test_home_example_photo(app_with_tiny_models):
    at = home()
    choice = at.selectbox(key="example_choice")
    assert len(choice.options) >= 3
    choice.select(choice.options[0]).run()
    at.button(key="use_example").click().run()
    assert not at.exception
    assert at.session_state[session.PHOTO] is not None
    assert at.session_state[session.PHOTO_SOURCE].startswith("example:")


# --- mask ------------------------------------------------------------------------------------


def test_mask_page_without_a_photo_points_home(app_with_tiny_models):
    at = home().switch_page("pages/2_Mask.py").run()
    assert not at.exception
    assert "Choose a photo first" in at.info[0].value


def test_painted_stroke_becomes_a_full_resolution_layer(app_with_tiny_models):
    at = photo_with_mask_page(size=(640, 400))
    assert "The mask is empty" in at.caption[0].value
    width, height = _canvas_size(at)
    scale = 640 / width
    at = paint(at, (width // 4, height // 4, width // 2, height // 2))
    assert not at.exception
    mask = current_mask(at)
    assert mask.shape == (400, 640)
    x0, y0, x1, y1 = bounding_box(mask)
    assert abs(x0 - width // 4 * scale) <= scale and abs(x1 - width // 2 * scale) <= scale
    assert at.session_state[session.MASK].history == ["brush stroke"]
    assert any("Mask covers" in caption.value for caption in at.caption)
    # The canvas was given a new key, so it starts empty over the updated overlay.
    assert canvas_key(at) != "mask_canvas_1" and canvas_element(at).key == canvas_key(at)


def test_erase_undo_redo_and_clear(app_with_tiny_models):
    at = photo_with_mask_page()
    width, height = _canvas_size(at)
    at = paint(at, (0, 0, width // 2, height))
    painted = current_mask(at).sum()
    at.button_group(key=forms.MASK_TOOL).set_value("Erase").run()
    at = paint(at, (0, 0, width // 4, height))
    assert 0 < current_mask(at).sum() < painted
    assert at.session_state[session.MASK].history == ["brush stroke", "eraser stroke"]

    at.button[0].click().run()  # Undo
    assert current_mask(at).sum() == painted
    at.button[1].click().run()  # Redo
    assert current_mask(at).sum() < painted
    next(b for b in at.button if b.label == "Clear").click().run()
    assert not current_mask(at).any()
    assert not at.exception


def test_grow_previews_live_and_applies_on_demand(app_with_tiny_models):
    at = photo_with_mask_page()
    width, height = _canvas_size(at)
    at = paint(at, (width // 3, height // 3, width // 2, height // 2))
    before = current_mask(at).sum()
    caption_before = next(c.value for c in at.caption if "Mask covers" in c.value)
    at.slider(key=forms.GROW_PREVIEW).set_value(10).run()
    # Preview only: the history is unchanged, the shown coverage grows.
    assert current_mask(at).sum() == before
    assert next(c.value for c in at.caption if "Mask covers" in c.value) != caption_before
    next(b for b in at.button if b.label == "Apply grow / shrink").click().run()
    assert current_mask(at).sum() > before
    assert at.session_state[session.MASK].history[-1] == "grow 10 px"
    assert at.slider(key=forms.GROW_PREVIEW).value == 0


def test_invert_and_feather_settings_survive_a_page_switch(app_with_tiny_models):
    at = photo_with_mask_page()
    width, height = _canvas_size(at)
    at = paint(at, (0, 0, width // 2, height // 2))
    at.slider(key=forms.FEATHER_OUTER).set_value(20).run()
    next(b for b in at.button if b.label == "Invert").click().run()
    inverted = current_mask(at).copy()
    assert inverted[-1, -1] and not inverted[0, 0]

    at.switch_page("streamlit_app.py").run()
    at.switch_page("pages/2_Mask.py").run()
    assert not at.exception
    assert np.array_equal(current_mask(at), inverted)
    assert at.slider(key=forms.FEATHER_OUTER).value == 20


def test_uploaded_mask_replaces_the_mask_and_wrong_size_is_explained(app_with_tiny_models):
    at = photo_with_mask_page(size=(320, 200))
    mask_image = np.zeros((200, 320), np.uint8)
    mask_image[50:100, 60:120] = 255
    at.file_uploader(key="mask_upload").set_value(("mask.png", png_bytes(Image.fromarray(mask_image)), "image/png"))
    at.run()
    next(b for b in at.button if b.label == "Use this mask").click().run()
    assert not at.exception
    assert bounding_box(current_mask(at)) == (60, 50, 120, 100)

    small = png_bytes(Image.fromarray(mask_image[::2, ::2]))
    at.file_uploader(key="mask_upload").set_value(("small.png", small, "image/png"))
    at.run()
    next(b for b in at.button if b.label == "Use this mask").click().run()
    assert "small.png is 160×100 but the photo is 320×200" in at.error[0].value
    assert bounding_box(current_mask(at)) == (60, 50, 120, 100)  # the mask is kept

    at.checkbox(key="mask_upload_resize").check().run()
    next(b for b in at.button if b.label == "Use this mask").click().run()
    assert not at.error
    assert bounding_box(current_mask(at)) == (60, 50, 120, 100)


def test_download_buttons_enable_once_there_is_a_mask(app_with_tiny_models):
    at = photo_with_mask_page()
    assert at.get("download_button")[0].disabled
    at = paint(at, (10, 10, 40, 40))
    assert not at.get("download_button")[0].disabled


def test_the_home_page_says_what_does_each_task_on_this_machine(app_without_models, tiny_models):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    def tasks(at) -> str:
        return next(m.value for m in at.markdown if "**Remove objects**" in m.value)

    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    bare = tasks(at)
    assert "**Remove objects**: OpenCV Telea (a smooth fill: no LaMa or MI-GAN here)" in bare
    assert "**Select by click or box**: GrabCut" in bare and "**Refine a selection**: FastSAM's candidates" in bare
    assert "**Select by text**: not available" in bare and "**Regenerate from a prompt**: not available" in bare

    for role in ("migan", "sam", "sam3", "fastsam", "clip"):
        app_without_models.setenv(f"INPAINT_STUDIO_MODEL_{role.upper()}", str(tiny_models[role]))
    st.cache_resource.clear()  # a new server process, as after installing models
    st.cache_data.clear()
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    equipped = tasks(at)
    assert "**Remove objects**: MI-GAN\n" in equipped  # no LaMa here: the next best
    assert "**Refine a selection**: SAM ViT-Base" in equipped and "**Select by text**: SAM 3, every instance" in equipped
    assert "**Select by click or box**: FastSAM-s" in equipped


def test_home_introduction_describes_the_whole_app(app_with_tiny_models):
    at = home()
    intro = next(m.value for m in at.markdown if "region by region" in m.value)
    for page in ("**Segment**", "**Mask**", "**Inpaint**", "**Relight**", "**Batch**"):
        assert page in intro
    for what in ("prompt", "reference picture", "instruction", "remove the object", "recipe"):
        assert what in intro
    assert "download the mask" not in intro


def test_the_mask_canvas_hides_its_own_toolbar(app_with_tiny_models, monkeypatch):
    """Its undo, redo and bin act on a stroke the page takes over at once; the page's Undo, Redo and
    Clear act on the mask."""
    import inspect
    from types import SimpleNamespace

    at = photo_with_mask_page()  # the canvas component registers itself when a page first imports it
    import ui.canvas

    # streamlit-drawable-canvas 0.13 has no display_toolbar: nothing is passed that it would refuse.
    real = inspect.signature(ui.canvas.st_canvas).parameters
    assert ui.canvas._no_toolbar() == ({"display_toolbar": False} if "display_toolbar" in real else {})
    calls = []

    def fake_canvas(*, display_toolbar=True, **kwargs):
        calls.append(display_toolbar)
        return SimpleNamespace(json_data=None, image_data=None, background_fit=None)

    monkeypatch.setattr(ui.canvas, "st_canvas", fake_canvas)
    at.run()
    assert not at.exception
    assert calls and not any(calls)
    assert [b.label for b in at.button if b.label in ("Undo", "Redo", "Clear")] == ["Undo", "Redo", "Clear"]
