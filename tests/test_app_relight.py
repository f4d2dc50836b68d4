"""AppTest runs of the Relight page: presets, live preview, shading, clamping, without a subject."""
from __future__ import annotations

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import masks
from core.images import read_params
from tests.helpers import TIMEOUT, png_bytes, upload
from ui import forms, session
from ui.results import RESULT_VIEWS

PHOTO_SIZE = (320, 240)


def subject() -> np.ndarray:
    yy, xx = np.mgrid[0 : PHOTO_SIZE[1], 0 : PHOTO_SIZE[0]]
    return (xx - 160) ** 2 + (yy - 120) ** 2 <= 70**2


def relight_page(with_subject: bool = True) -> AppTest:
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    upload(at, "photo.png", png_bytes(Image.new("RGB", PHOTO_SIZE, (128, 128, 128))))
    if with_subject:
        at.session_state[session.MASK].apply(masks.layer_edit("add", subject(), "subject"))
    return at.switch_page("pages/4_Relight.py").run()


def downloaded_png(at: AppTest, result) -> bytes:
    """The bytes behind the page's "Download PNG" button (encoded once per result and variant)."""
    views = next(views for held, views in at.session_state[RESULT_VIEWS] if held is result)
    return views[(at.session_state[forms.RELIGHT_CHOICE], "png")]


def preview(at: AppTest) -> np.ndarray:
    cache = at.session_state[session.RELIGHT_PREVIEW][2]
    from core.light import LightParams

    params = LightParams(azimuth=at.slider(key=forms.LIGHT_AZIMUTH).value,
                         elevation=at.slider(key=forms.LIGHT_ELEVATION).value)
    return cache.render(params)


def test_presets_set_the_direction_and_the_preview_follows(app_without_models):
    at = relight_page()
    assert not at.exception
    assert any("IC-Light" in info.value and "INPAINT_STUDIO_MODEL_ICLIGHT" in info.value for info in at.info)
    at.button_group(key=forms.LIGHT_PRESET).set_value("left").run()
    assert (at.slider(key=forms.LIGHT_AZIMUTH).value, at.slider(key=forms.LIGHT_ELEVATION).value) == (180, 0)
    left = preview(at)
    assert left[:, :40].mean() > left[:, -40:].mean()  # brighter on the side the light comes from
    at.button_group(key=forms.LIGHT_PRESET).set_value("right").run()
    right = preview(at)
    assert right[:, -40:].mean() > right[:, :40].mean()


def test_apply_shading_relights_only_the_subject_and_can_become_the_base(app_without_models):
    at = relight_page()
    at.button_group(key=forms.LIGHT_PRESET).set_value("right").run()
    next(b for b in at.button if b.label == "Apply shading").click().run()
    assert not at.exception
    result = at.session_state[session.RELIGHT_RESULT]
    relit = result.images[0]
    out = np.asarray(relit).astype(int)
    original = np.full_like(out, 128)
    inside = subject()
    assert np.array_equal(out[~inside], original[~inside])
    assert out[inside][:, 0].std() > 0  # shaded, not flat
    assert out[120, 215:225].mean() > out[120, 95:105].mean()  # lit from the right
    png = downloaded_png(at, result)
    assert read_params(png)["engine"] == "shading" and read_params(png)["light"]["azimuth"] == 0
    next(b for b in at.button if b.label == "Use as new base").click().run()
    assert np.array_equal(np.asarray(at.session_state[session.PHOTO].rgb), np.asarray(relit))


def test_without_a_subject_the_page_explains_and_still_previews(app_without_models):
    at = relight_page(with_subject=False)
    assert not at.exception
    assert any("No subject is selected" in w.value for w in at.warning)
    assert next(b for b in at.button if b.label == "Apply shading").disabled
    assert at.session_state[session.RELIGHT_PREVIEW][2].alpha is None
    assert len(at.image) >= 1


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def fast_settings(at: AppTest) -> None:
    at.slider(key=forms.RELIGHT_STEPS).set_value(3)
    at.slider(key=forms.RELIGHT_VARIANTS).set_value(2)


def test_generate_relights_the_subject_with_ic_light_and_keeps_the_background(app_with_tiny_models):
    at = relight_page()
    assert not any("IC-Light" in info.value for info in at.info)  # the models are here
    at.button_group(key=forms.LIGHT_PRESET).set_value("left").run()
    fast_settings(at)
    button(at, "Generate").click().run()
    assert not at.exception and not at.error
    result = at.session_state[session.RELIGHT_RESULT]
    assert result.engine == "iclight" and result.seeds == [12345, 12346] and len(result.images) == 2
    band = masks.grow(subject(), result.params.mask_blur)
    for image in result.images:
        out = np.asarray(image)
        assert out.shape == (PHOTO_SIZE[1], PHOTO_SIZE[0], 3)
        assert np.array_equal(out[~band], np.full_like(out, 128)[~band])  # background untouched
        assert (out[subject()] != 128).any()
    assert any("light from 180°" in caption.value for caption in at.caption)
    at.radio(key=forms.RELIGHT_CHOICE).set_value(1).run()
    meta = read_params(downloaded_png(at, result))
    assert meta["params"]["seed"] == 12346 and meta["light"]["azimuth"] == 180 and meta["engine"] == "iclight"
    button(at, "Use as new base").click().run()
    assert np.array_equal(np.asarray(at.session_state[session.PHOTO].rgb), np.asarray(result.images[1]))
    assert button(at, "Step back (1)") is not None


def test_whole_mode_and_the_second_pass_run_from_the_page(app_with_tiny_models):
    at = relight_page()
    fast_settings(at)
    at.slider(key=forms.RELIGHT_VARIANTS).set_value(1)
    at.radio(key=forms.RELIGHT_MODE).set_value("whole")
    at.toggle(key=forms.RELIGHT_HIGHRES).set_value(True).run()
    button(at, "Generate").click().run()
    assert not at.exception and not at.error
    result = at.session_state[session.RELIGHT_RESULT]
    assert result.params.mode == "whole" and result.params.highres_scale == 1.5
    assert "highres" in result.timings
    out = np.asarray(result.images[0])
    assert (out[~subject()] != 128).mean() > 0.5  # the background was relit too


def test_a_subject_covering_the_whole_photo_is_a_clear_error_and_keeps_the_last_result(app_with_tiny_models):
    at = relight_page()
    button(at, "Apply shading").click().run()
    kept = at.session_state[session.RELIGHT_RESULT]
    at.session_state[session.MASK].apply(masks.layer_edit("add", np.ones((PHOTO_SIZE[1], PHOTO_SIZE[0]), bool), "all"))
    at.run()
    fast_settings(at)
    button(at, "Generate").click().run()
    assert not at.exception
    assert any("covers the whole photo" in error.value for error in at.error)
    assert at.session_state[session.RELIGHT_RESULT] is kept


def test_fill_with_light_regenerates_the_region_lit_from_the_chosen_side(app_with_tiny_models):
    at = relight_page()
    at.button_group(key=forms.RELIGHT_ACTION).set_value("fill").run()
    assert at.selectbox(key=forms.LIT_ENGINE).value == "sd15"
    at.button_group(key=forms.LIGHT_PRESET).set_value("top").run()
    at.text_area(key=forms.INPAINT_PROMPT).input("a stone")
    at.slider(key=forms.INPAINT_STEPS).set_value(4)
    at.slider(key=forms.INPAINT_VARIANTS).set_value(1).run()
    button(at, "Fill with this light").click().run()
    assert not at.exception and not at.error
    result = at.session_state[session.RELIGHT_RESULT]
    assert result.engine == "sd15" and result.params.strength == 0.75
    assert result.extra["light"]["azimuth"] == 90 and result.extra["start"] == "current"
    band = masks.grow(subject(), result.params.mask_blur)
    out = np.asarray(result.images[0])
    assert np.array_equal(out[~band], np.full_like(out, 128)[~band])
    assert any("Lighting-aware" in info.value for info in at.info)


def test_fill_without_an_inpainting_model_says_what_is_missing(app_without_models):
    at = relight_page()
    at.button_group(key=forms.RELIGHT_ACTION).set_value("fill").run()
    assert not at.exception
    assert any("Filling with light needs an inpainting model" in info.value and "INPAINT_STUDIO_MODEL_" in info.value
               for info in at.info)
    assert button(at, "Fill with this light").disabled
    assert not any(b.label == "Generate" for b in at.button)  # the fill has its own button


def test_a_wrong_shaped_ic_light_file_is_named_on_the_page_and_shading_still_works(app_with_tiny_models, tmp_path):
    from tests.helpers import write_offsets
    from tests.tiny_models import iclight_offsets

    bad = write_offsets(tmp_path / "iclight_sd15_fbc.safetensors", iclight_offsets(in_channels=12))
    app_with_tiny_models.setenv("INPAINT_STUDIO_MODEL_ICLIGHT", str(bad))
    at = relight_page()
    fast_settings(at)
    button(at, "Generate").click().run()
    assert not at.exception
    assert any("iclight_sd15_fbc.safetensors" in error.value for error in at.error)
    assert session.RELIGHT_RESULT not in at.session_state
    button(at, "Apply shading").click().run()
    assert at.session_state[session.RELIGHT_RESULT].engine == "shading"
