"""AppTest runs of the Inpaint page's Extend canvas mode, without models and with the tiny ones."""
from __future__ import annotations

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import masks
from tests.helpers import INPAINT_PAGE_PHOTO_SIZE as PHOTO_SIZE
from tests.helpers import TIMEOUT, inpaint_page, make_photo, png_bytes, region, upload
from ui import forms, session


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def extend_mode() -> AppTest:
    at = inpaint_page()
    at.button_group(key=forms.INPAINT_TASK).set_value("Extend canvas").run()
    return at


def photo_kept(image, offset, feather) -> bool:
    """The photo's pixels beyond ``feather`` px of the new border, bit-identical at ``offset``."""
    width, height = PHOTO_SIZE
    x, y = offset
    out = np.asarray(image)[y:y + height, x:x + width]
    border = np.ones((image.height, image.width), bool)
    border[y:y + height, x:x + width] = False
    kept = ~masks.grow(border, feather)[y:y + height, x:x + width]
    return np.array_equal(out[kept], np.asarray(make_photo())[kept])


def test_extend_without_models_previews_the_canvas_and_fills_it_with_the_labelled_fallback(app_without_models):
    at = extend_mode()
    assert not at.exception and not at.error
    assert not any("mask is empty" in w.value for w in at.warning)
    # The default: to 16:9, photo centred; 300×200 → 356×200; the preview shows the new canvas.
    preview = at.session_state[session.OUTPAINT_PREVIEW][1]
    assert preview.size == (356, 200) and at.get("image")  # at display size (the canvas is narrower)
    placed = np.asarray(preview)[2:198, 30:326]  # inside the outline drawn around the photo
    assert np.array_equal(placed, np.asarray(make_photo())[2:198, 2:298])
    at = button(at, "Generate").click().run()
    assert not at.exception and not at.error
    result = at.session_state[session.OUTPAINT_RESULT]
    assert result.engine in ("telea", "navier_stokes") and len(result.images) == 1
    assert result.images[0].size == (356, 200) and result.canvas.offset == (28, 0)
    assert photo_kept(result.images[0], (28, 0), at.session_state[forms.OUTPAINT_FEATHER])
    assert any("nothing new was generated" in info.value for info in at.info)
    assert at.session_state.get(session.INPAINT_RESULT) is None  # the fill mode's results are apart
    # Before / after as one slider: the photo placed on the new canvas lines up with the result.
    (comparison,) = at.get("html")
    assert "aspect-ratio: 720 / 404" in comparison.proto.body


def test_pixels_per_side_and_a_zero_extension_says_what_to_do(app_without_models):
    at = extend_mode()
    at.button_group(key=forms.OUTPAINT_BY).set_value("By pixels").run()
    for key in (forms.OUTPAINT_LEFT, forms.OUTPAINT_RIGHT, forms.OUTPAINT_TOP, forms.OUTPAINT_BOTTOM):
        at.number_input(key=key).set_value(0)
    at.run()
    assert not at.exception
    assert any("Nothing to extend" in w.value for w in at.warning)
    assert button(at, "Generate").disabled
    at.number_input(key=forms.OUTPAINT_TOP).set_value(32).run()
    assert not button(at, "Generate").disabled and not any("Nothing to extend" in w.value for w in at.warning)


def test_extend_with_the_tiny_sd15_variants_new_base_step_back_and_recipe(app_with_tiny_models):
    at = extend_mode()
    at.button_group(key=forms.OUTPAINT_BY).set_value("By pixels").run()
    at.number_input(key=forms.OUTPAINT_RIGHT).set_value(0)
    at.number_input(key=forms.OUTPAINT_LEFT).set_value(40)
    at.number_input(key=forms.OUTPAINT_BOTTOM).set_value(16)
    at.slider(key=forms.INPAINT_STEPS).set_value(2)  # 1 step at strength 0.95
    at.run()
    assert at.selectbox(key=forms.INPAINT_ENGINE).value == "sd15"
    at = button(at, "Generate").click().run()
    assert not at.exception and not at.error
    result = at.session_state[session.OUTPAINT_RESULT]
    assert result.seeds == [42, 43] and len(result.images) == 2
    feather = at.session_state[forms.OUTPAINT_FEATHER]
    for image in result.images:
        assert image.size == (340, 216) and photo_kept(image, (40, 0), feather)
    assert any("seed 43" in c.value and "340×216" in c.value for c in at.caption)

    # Use as new base: the photo grows, the mask moves with it; Step back brings both back.
    at.radio(key=forms.OUTPAINT_CHOICE).set_value(1).run()
    button(at, "Use as new base").click().run()
    assert not at.exception
    assert np.array_equal(np.asarray(at.session_state[session.PHOTO].rgb), np.asarray(result.images[1]))
    moved = at.session_state[session.MASK].mask
    assert moved.shape == (216, 340) and np.array_equal(moved[0:200, 40:340], region()) and not moved[:, :40].any()
    button(at, "Step back").click().run()
    assert at.session_state[session.PHOTO].size == PHOTO_SIZE
    assert np.array_equal(at.session_state[session.MASK].mask, region())

    # Save the edit as a recipe: it selects nothing and replays the chosen variant's seed.
    at.radio(key=forms.OUTPAINT_CHOICE).set_value(1).run()
    assert not any(r.key == forms.RECIPE_SELECTION for r in at.radio)
    button(at, "Use for a batch").click().run()
    recipe = at.session_state[session.BATCH_RECIPE]
    assert recipe.action.operation == "outpaint" and recipe.selection.kind == "whole"
    assert recipe.seed.seed == 43 and recipe.action.params.left == 40 and not recipe.needs_mask_file


def test_the_batch_page_runs_an_outpaint_recipe_without_masks(app_without_models):
    from core.operations import Edit
    from core.operations.outpaint import OutpaintParams
    from core.recipe import Recipe, Selection
    from tests.test_app_batch import batch_page, photo_bytes, wait_for_job
    from tests.test_app_batch import button as exact_button

    recipe = Recipe(Selection(kind="whole"), Edit("outpaint", OutpaintParams(engine="telea", top=16, mask_blur=4)))
    at = batch_page(recipe)
    at.file_uploader(key="batch_photos").set_value(
        [("a.png", photo_bytes(1), "image/png"), ("b.png", photo_bytes(2), "image/png")]).run()
    assert not any("mask file" in w.value for w in at.warning)
    exact_button(at, "Preview the selection on the first photo").click().run()
    assert not at.exception and not at.error
    assert any("96×64 → 96×80" in c.value for c in at.caption)
    exact_button(at, "Run the batch").click().run()
    wait_for_job(at)
    rows = at.session_state[session.BATCH_JOB].rows
    assert [row["status"] for row in rows] == ["done", "done"]


def test_transparency_moves_with_the_photo_and_a_result_of_an_earlier_version_is_no_crash(app_without_models):
    rgba = make_photo().convert("RGBA")
    alpha = np.full((200, 300), 255, np.uint8)
    alpha[:50, :50] = 0
    rgba.putalpha(Image.fromarray(alpha))
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    upload(at, "photo.png", png_bytes(rgba))
    at.switch_page("pages/3_Inpaint.py").run()
    at.button_group(key=forms.INPAINT_TASK).set_value("Extend canvas").run()
    at.button_group(key=forms.OUTPAINT_BY).set_value("By pixels").run()
    at.number_input(key=forms.OUTPAINT_RIGHT).set_value(0)
    at.number_input(key=forms.OUTPAINT_LEFT).set_value(24).run()
    at = button(at, "Generate").click().run()
    assert not at.exception and not at.error
    button(at, "Use as new base").click().run()
    moved = np.asarray(at.session_state[session.PHOTO].alpha)
    assert moved.shape == (200, 324) and (moved[:50, 24:74] == 0).all() and (moved[:, :24] == 255).all()
    assert (moved[50:, 24:] == 255).all()
    # The result is still shown, made from the photo before: using it again replaces the pixels, no more.
    button(at, "Use as new base").click().run()
    assert not at.exception and not at.error
    assert at.session_state[session.PHOTO].size == (324, 200)
    assert at.session_state[session.MASK].size == (324, 200)
