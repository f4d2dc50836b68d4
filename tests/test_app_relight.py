"""AppTest runs of the Relight page: presets, live preview, shading, clamping, without a subject."""
from __future__ import annotations

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import masks
from tests.test_app import TIMEOUT, png_bytes, upload
from ui import state

PHOTO_SIZE = (320, 240)


def subject() -> np.ndarray:
    yy, xx = np.mgrid[0 : PHOTO_SIZE[1], 0 : PHOTO_SIZE[0]]
    return (xx - 160) ** 2 + (yy - 120) ** 2 <= 70**2


def relight_page(with_subject: bool = True) -> AppTest:
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    upload(at, "photo.png", png_bytes(Image.new("RGB", PHOTO_SIZE, (128, 128, 128))))
    if with_subject:
        at.session_state[state.MASK].apply(masks.layer_edit("add", subject(), "subject"))
    return at.switch_page("pages/4_Relight.py").run()


def preview(at: AppTest) -> np.ndarray:
    cache = at.session_state[state.RELIGHT_PREVIEW][2]
    from core.relight import LightParams

    params = LightParams(azimuth=at.slider(key=state.LIGHT_AZIMUTH).value,
                         elevation=at.slider(key=state.LIGHT_ELEVATION).value)
    return cache.render(params)


def test_presets_set_the_direction_and_the_preview_follows(app_without_models):
    at = relight_page()
    assert not at.exception
    assert any("IC-Light" in info.value and "INPAINT_STUDIO_MODEL_ICLIGHT" in info.value for info in at.info)
    at.button_group(key=state.LIGHT_PRESET).set_value("left").run()
    assert (at.slider(key=state.LIGHT_AZIMUTH).value, at.slider(key=state.LIGHT_ELEVATION).value) == (180, 0)
    left = preview(at)
    assert left[:, :40].mean() > left[:, -40:].mean()  # brighter on the side the light comes from
    at.button_group(key=state.LIGHT_PRESET).set_value("right").run()
    right = preview(at)
    assert right[:, -40:].mean() > right[:, :40].mean()


def test_apply_shading_relights_only_the_subject_and_can_become_the_base(app_without_models):
    at = relight_page()
    at.button_group(key=state.LIGHT_PRESET).set_value("right").run()
    next(b for b in at.button if b.label == "Apply shading").click().run()
    assert not at.exception
    used, relit, png = at.session_state[state.RELIGHT_RESULT]
    out = np.asarray(relit).astype(int)
    original = np.full_like(out, 128)
    inside = subject()
    assert np.array_equal(out[~inside], original[~inside])
    assert out[inside][:, 0].std() > 0  # shaded, not flat
    assert out[120, 215:225].mean() > out[120, 95:105].mean()  # lit from the right
    assert png.startswith(b"\x89PNG")
    next(b for b in at.button if b.label == "Use as new base").click().run()
    assert np.array_equal(np.asarray(at.session_state[state.PHOTO].rgb), np.asarray(relit))


def test_without_a_subject_the_page_explains_and_still_previews(app_without_models):
    at = relight_page(with_subject=False)
    assert not at.exception
    assert any("No subject is selected" in w.value for w in at.warning)
    assert next(b for b in at.button if b.label == "Apply shading").disabled
    assert at.session_state[state.RELIGHT_PREVIEW][2].alpha is None
    assert len(at.image) >= 1
