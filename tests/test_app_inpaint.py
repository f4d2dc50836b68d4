"""AppTest runs of the Inpaint page with the tiny diffusion models, and without any model."""
from __future__ import annotations

import threading
import time

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import masks
from core.catalog import BUILTIN
from tests.helpers import INPAINT_PAGE_PHOTO_SIZE as PHOTO_SIZE
from tests.helpers import inpaint_page, make_photo, region, shown_while_running
from ui import forms, session

REMOVAL_ENGINES = [name for name in BUILTIN.engine_names(("removal",))
                   if not BUILTIN.engines[name].roles]  # OpenCV's, which need no model


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def generate(at: AppTest, label: str = "Generate") -> AppTest:
    button(at, label).click()
    return at.run()


def outside_band_unchanged(image: Image.Image, blur: int) -> bool:
    band = masks.grow(region(), blur)
    return np.array_equal(np.asarray(image)[~band], np.asarray(make_photo())[~band])


def test_generate_variants_with_the_tiny_sd15(app_with_tiny_models):
    at = inpaint_page()
    assert not at.exception
    assert at.selectbox(key=forms.INPAINT_ENGINE).value == "sd15"
    at.text_area(key=forms.INPAINT_PROMPT).input("a wooden bench")
    at.slider(key=forms.INPAINT_STEPS).set_value(2)
    at.slider(key=forms.INPAINT_VARIANTS).set_value(2)
    at = generate(at)
    assert not at.exception and not at.error
    result = at.session_state[session.INPAINT_RESULT]
    assert len(result.images) == 2 and result.seeds == [42, 43]
    blur = at.session_state[forms.FEATHER_OUTER]
    for image in result.images:
        assert image.size == PHOTO_SIZE and outside_band_unchanged(image, blur)
    assert any("seed 42" in caption.value for caption in at.caption)
    assert not at.get("download_button")[0].disabled
    (comparison,) = at.get("html")  # before / after as one picture with a slider
    assert comparison.proto.body.count("data:image/jpeg;base64,") == 2 and 'type="range"' in comparison.proto.body


def test_use_as_new_base_and_step_back(app_with_tiny_models):
    at = inpaint_page()
    at.slider(key=forms.INPAINT_STEPS).set_value(1)
    at = generate(at)
    original_id = at.session_state[session.PHOTO_ID]
    chosen = at.session_state[session.INPAINT_RESULT].images[0]
    button(at, "Use as new base").click().run()
    assert np.array_equal(np.asarray(at.session_state[session.PHOTO].rgb), np.asarray(chosen))
    assert at.session_state[session.PHOTO_ID] != original_id
    assert len(at.session_state[session.BASE_HISTORY]) == 1
    assert at.session_state[session.MASK].mask.any()  # the mask carries over
    button(at, "Step back").click().run()
    assert at.session_state[session.PHOTO_ID] == original_id
    assert button(at, "Step back").disabled


def test_results_survive_a_page_switch_and_a_failed_generation(app_with_tiny_models, tmp_path):
    at = inpaint_page()
    at.slider(key=forms.INPAINT_STEPS).set_value(1)
    at = generate(at)
    result = at.session_state[session.INPAINT_RESULT]
    at.switch_page("pages/2_Mask.py").run()
    at.switch_page("pages/3_Inpaint.py").run()
    assert at.session_state[session.INPAINT_RESULT] is result
    # A generation that fails (SDXL pointed at a folder that is no model) keeps the results.
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "model_index.json").write_text("{}")
    app_with_tiny_models.setenv("INPAINT_STUDIO_MODEL_SDXL_INPAINT", str(broken))
    st.cache_resource.clear()
    at.selectbox(key=forms.INPAINT_ENGINE).set_value("sdxl").run()
    at = generate(at)
    assert not at.exception
    assert at.error and str(broken) in at.error[0].value
    assert at.session_state[session.INPAINT_RESULT] is result


def test_without_diffusion_models_remove_object_still_works(app_without_models):
    at = inpaint_page()
    assert not at.exception
    assert any("No diffusion model" in info.value for info in at.info)
    engine = at.selectbox(key=forms.INPAINT_ENGINE)
    assert engine.value in REMOVAL_ENGINES and len(engine.options) == len(REMOVAL_ENGINES)
    at = generate(at, "Remove object")
    assert not at.exception and not at.error
    result = at.session_state[session.INPAINT_RESULT]
    assert result.engine == "telea" and len(result.images) == 1
    assert outside_band_unchanged(result.images[0], at.session_state[forms.FEATHER_OUTER])
    assert any("Removal uses OpenCV" in c.value and "python -m core models download lama" in c.value
               for c in at.caption)


def test_remove_object_uses_lama_when_it_is_here_and_says_so(app_with_tiny_models):
    at = inpaint_page()
    assert "with LaMa" in [c.value for c in at.caption]
    assert not any("Removal uses OpenCV" in c.value for c in at.caption)
    at = generate(at, "Remove object")
    assert not at.exception and not at.error
    result = at.session_state[session.INPAINT_RESULT]
    assert result.engine == "lama" and result.model_id.endswith("big-lama.pt") and len(result.images) == 1
    assert outside_band_unchanged(result.images[0], at.session_state[forms.FEATHER_OUTER])


def test_empty_mask_disables_generation(app_without_models):
    at = inpaint_page(with_mask=False)
    assert any("mask is empty" in w.value for w in at.warning)
    # No diffusion model: a removal engine is chosen, so Remove object is the one button.
    assert at.selectbox(key=forms.INPAINT_ENGINE).value in REMOVAL_ENGINES
    assert not any(b.label == "Generate" for b in at.button)
    assert button(at, "Remove object").disabled


def test_a_few_step_engine_sets_its_steps_and_generates(app_with_tiny_models):
    at = inpaint_page()
    engine = at.selectbox(key=forms.INPAINT_ENGINE)
    assert "Fill · Stable Diffusion 1.5 inpainting · LCM few-step (4 steps)" in engine.options
    engine.set_value("sd15+lcm").run()
    assert at.slider(key=forms.INPAINT_STEPS).value == 4 and at.slider(key=forms.INPAINT_GUIDANCE).value == 1.0
    at.slider(key=forms.INPAINT_VARIANTS).set_value(1)
    at = generate(at)
    assert not at.exception and not at.error
    result = at.session_state[session.INPAINT_RESULT]
    assert result.engine == "sd15+lcm" and result.params.engine == "sd15+lcm" and result.params.steps == 4
    assert outside_band_unchanged(result.images[0], result.params.mask_blur)
    assert any("LCM few-step" in caption.value for caption in at.caption)


def test_without_a_diffusion_model_the_note_gives_the_command_and_links_to_the_models(app_without_models):
    at = inpaint_page()
    (note,) = [info.value for info in at.info if "No diffusion model" in info.value]
    best = BUILTIN.engines[BUILTIN.engine_names(("diffusion",), variants=False)[0]]  # the one named
    role = BUILTIN.model(best.roles[0])
    assert f"`python -m core models download {role.name}`" in note
    assert role.setting in note and "model table" in note
    links = [link for link in at.page_link if "Models page" in link.value and role.title in link.value]
    assert len(links) == 1
    models = next(link for link in at.page_link if link.value == "Models")  # the navigation's
    assert links[0].proto.page_script_hash == models.proto.page_script_hash  # pages/6_Models.py
    assert links[0].proto.query_string == f"role={role.name}"  # shown first there


def test_a_removal_engine_shows_only_remove_object_and_uses_that_engine(app_with_tiny_models):
    at = inpaint_page()
    both = ["Generate", "Remove object"]
    assert [b.label for b in at.button if b.label in both] == both
    at.selectbox(key=forms.INPAINT_ENGINE).set_value("telea").run()
    assert not at.exception
    labels = [b.label for b in at.button]
    assert "Generate" not in labels and labels.count("Remove object") == 1
    assert button(at, "Remove object").proto.type == "primary"
    assert "with LaMa" not in [c.value for c in at.caption]  # the chosen engine removes, not the best one
    at = generate(at, "Remove object")
    assert not at.exception and not at.error
    result = at.session_state[session.INPAINT_RESULT]
    assert result.engine == "telea" and len(result.images) == 1
    # Back to a diffusion engine: both buttons again.
    at.selectbox(key=forms.INPAINT_ENGINE).set_value("sd15").run()
    assert {"Generate", "Remove object"} <= {b.label for b in at.button}


def test_a_jpeg_photo_can_be_downloaded_as_a_jpeg_that_keeps_its_unchanged_blocks(app_without_models):
    import io

    from tests.helpers import TIMEOUT, upload

    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    buffer = io.BytesIO()
    make_photo().save(buffer, "JPEG", quality=90)
    upload(at, "photo.jpg", buffer.getvalue(), "image/jpeg")
    at.session_state[session.MASK].apply(masks.layer_edit("add", region(), "test region"))
    at = generate(at.switch_page("pages/3_Inpaint.py").run(), "Remove object")
    assert not at.exception
    choice = at.selectbox(key="inpaint_download_format")
    assert choice.value == "png" and choice.options == [
        "PNG (lossless)", "JPEG, unchanged blocks", "JPEG (re-encoded)", "WebP lossless"]
    assert at.get("download_button")[0].proto.label == "Download PNG"
    at = choice.set_value("jpeg-keep").run()
    assert not at.exception
    assert at.get("download_button")[0].proto.label == "Download JPEG"
    assert any(caption.value.startswith("Re-encoded") and "copied unchanged" in caption.value for caption in at.caption)
    result = at.session_state[session.INPAINT_RESULT]
    views = next(views for held, views in at.session_state["result_views"] if held is result)
    encoded = views[(0, "file", "jpeg-keep", 95)]
    kept = np.asarray(Image.open(io.BytesIO(encoded.data)).convert("RGB"))
    assert np.array_equal(kept[:32], np.asarray(Image.open(buffer).convert("RGB"))[:32])  # far from the region
    at = at.selectbox(key="inpaint_download_format").set_value("jpeg").run()
    assert at.slider(key="inpaint_jpeg_quality").value == 95 and not at.exception


# --- the model's queue, as the page shows it -------------------------------------------------------


def page_manager():
    """The server's model manager, the one the page's runs use (a process-wide cache)."""
    from ui import resources

    return resources.manager()


def bar_texts() -> list[str]:
    """What the progress bars of the page's running script say now."""
    return [element.proto.text for element in shown_while_running("progress")]


def wait_until(condition, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_a_generation_waiting_for_its_model_shows_its_place_and_runs_when_the_model_is_free(app_without_models):
    at = inpaint_page()
    queue = page_manager().queue("telea")
    head = queue.enter()  # another person's generation holds OpenCV Telea
    try:
        button(at, "Remove object").click()
        runs = []
        page = threading.Thread(target=lambda: runs.append(at.run()), daemon=True)
        page.start()
        wait_until(lambda: len(queue.waiting()) == 1, "the page's request to queue")
        wait_until(lambda: any(text.startswith("Waiting for") for text in bar_texts()), "the message")
        assert "Waiting for OpenCV Telea: 1 request ahead of yours." in bar_texts()
    finally:
        queue.leave(head)
    page.join(60)
    assert not page.is_alive()
    at = runs[0]
    assert not at.exception and not at.error
    assert at.session_state[session.INPAINT_RESULT].engine == "telea"
    assert len(queue) == 0


def test_a_full_queue_is_a_clear_error_and_earlier_results_stay(app_without_models):
    app_without_models.setenv("INPAINT_STUDIO_QUEUE_MAX", "1")
    at = generate(inpaint_page(), "Remove object")
    earlier = at.session_state[session.INPAINT_RESULT]
    queue = page_manager().queue("telea")
    head = queue.enter()
    waiting = threading.Thread(target=_take_turn, args=(queue,), daemon=True)
    waiting.start()
    try:
        wait_until(lambda: len(queue.waiting()) == 1, "someone else waiting")
        at = generate(at, "Remove object")
        assert not at.exception
        assert [error.value for error in at.error] == ["OpenCV Telea is busy: 1 request is waiting. Try again in a minute."]
        assert at.session_state[session.INPAINT_RESULT] is earlier
        assert len(queue.waiting()) == 1  # the page's request did not join
    finally:
        queue.leave(head)
    waiting.join(30)
    assert not waiting.is_alive() and len(queue) == 0


def _take_turn(queue) -> None:
    with queue.turn():
        pass


def test_the_wait_message_counts_the_requests_ahead_and_rounds_the_estimate():
    from ui.waiting import wait_message

    assert wait_message("SD 1.5 inpainting", 2, 2, 19.2) == "Waiting for SD 1.5 inpainting: 2 requests ahead of yours, about 20 s."
    assert wait_message("SD 1.5 inpainting", 1, 1, None) == "Waiting for SD 1.5 inpainting: 1 request ahead of yours."
    assert wait_message("OpenCV Telea", 1, 0, 0.2) == "Waiting for OpenCV Telea: yours is next, about 1 s."
    assert wait_message("SDXL inpainting", 7, 7, 150.0) == "Waiting for SDXL inpainting: 7 requests ahead of yours, about 3 min."
