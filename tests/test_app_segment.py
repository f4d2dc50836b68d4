"""AppTest runs of the Segment page: clicks, stepping, boxes, text, sending to the mask, fallbacks,
waiting for a model's turn."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from core.engines.fastsam import FastSAMEngine, FastSAMSettings
from tests.helpers import TIMEOUT, click_while_running, png_bytes, shown_while_running, upload
from ui import forms, session

PHOTO_SIZE = (480, 320)


def make_photo() -> Image.Image:
    image = Image.new("RGB", PHOTO_SIZE, (60, 120, 60))
    ImageDraw.Draw(image).ellipse((150, 90, 330, 250), fill=(220, 30, 30))
    return image


def segment_page() -> AppTest:
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    upload(at, "photo.png", png_bytes(make_photo()))
    return at.switch_page("pages/1_Segment.py").run()


def canvas_key(at: AppTest) -> str:
    return f"segment_canvas_{at.session_state[session.SEGMENT_CANVAS_VERSION]}"


def draw(at: AppTest, *objects: dict) -> AppTest:
    """Send canvas objects as the component would (canvas = photo size here: no background fit)."""
    at.session_state[canvas_key(at)] = {"drawing": {"raw": {"objects": list(objects)}, "data": None},
                                        "backgroundFit": None}
    return at.run()


def click(at: AppTest, x: float, y: float) -> AppTest:
    """A click at photo pixel (x, y): a Fabric circle as the point tool reports it."""
    from ui.canvas import canvas_size

    width, _ = canvas_size(PHOTO_SIZE, 800)
    scale = width / PHOTO_SIZE[0]
    radius, stroke = 5, 2
    return draw(at, {"type": "Circle", "originX": "left", "originY": "center", "radius": radius,
                     "strokeWidth": stroke, "left": x * scale - radius - stroke / 2, "top": y * scale})


def rect(at: AppTest, x0: float, y0: float, x1: float, y1: float) -> AppTest:
    from ui.canvas import canvas_size

    scale = canvas_size(PHOTO_SIZE, 800)[0] / PHOTO_SIZE[0]
    return draw(at, {"type": "Rect", "originX": "left", "originY": "top", "left": x0 * scale,
                     "top": y0 * scale, "width": (x1 - x0) * scale, "height": (y1 - y0) * scale})


def selected_caption(at: AppTest) -> str | None:
    return next((c.value for c in at.caption if c.value.startswith("Selected")), None)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def an_object_spot(tiny_models) -> tuple[int, int]:
    """A photo pixel where the tiny FastSAM finds an object (it is deterministic)."""
    candidates = FastSAMEngine.load(tiny_models["fastsam"]).everything(make_photo(), FastSAMSettings())
    ys, xs = np.nonzero(candidates.mask(int(np.argmax(candidates.areas))))
    return int(xs[len(xs) // 2]), int(ys[len(ys) // 2])


def test_click_selects_with_fastsam_and_adds_to_the_mask(app_with_tiny_models, tiny_models):
    x, y = an_object_spot(tiny_models)
    at = click(segment_page(), x, y)
    assert not at.exception and not at.error
    assert at.session_state[session.SEGMENT_POINTS] == [(pytest.approx(x, abs=1), pytest.approx(y, abs=1), 1)]
    assert "with FastSAM-s (fastsam)" in selected_caption(at)
    result = at.session_state[session.SEGMENT_RESULT][1]
    assert result.mask.shape == (PHOTO_SIZE[1], PHOTO_SIZE[0]) and result.mask[y, x]

    button(at, "Add to mask").click().run()
    document = at.session_state[session.MASK]
    assert document.history == ["segment: clicks"]
    assert np.array_equal(document.mask, result.mask)
    assert any("Added to the mask" in s.value for s in at.success)
    # The Mask page shows it at once.
    at.switch_page("pages/2_Mask.py").run()
    assert any("Mask covers" in c.value for c in at.caption)


def test_bigger_and_smaller_step_through_nested_objects(app_with_tiny_models, tiny_models):
    candidates = FastSAMEngine.load(tiny_models["fastsam"]).everything(make_photo(), FastSAMSettings())
    grid = [(x, y) for x in range(5, PHOTO_SIZE[0], 20) for y in range(5, PHOTO_SIZE[1], 20)]
    x, y = max(grid, key=lambda p: len(candidates.levels_at(*p)))
    levels = len(candidates.levels_at(x, y))
    assert levels >= 2, "the tiny model should nest candidates somewhere"

    at = click(segment_page(), x, y)
    assert at.session_state[session.SEGMENT_RESULT][1].levels == levels
    first = at.session_state[session.SEGMENT_RESULT][1].mask.sum()
    assert button(at, "Smaller").disabled and not button(at, "Bigger").disabled
    button(at, "Bigger").click().run()
    assert at.session_state[session.SEGMENT_STEP] == 1
    assert at.session_state[session.SEGMENT_RESULT][1].mask.sum() > first
    assert f"size 2 of {levels}" in selected_caption(at)
    button(at, "Smaller").click().run()
    assert at.session_state[session.SEGMENT_RESULT][1].mask.sum() == first


def test_exclude_clicks_and_clear(app_with_tiny_models, tiny_models):
    x, y = an_object_spot(tiny_models)
    at = click(segment_page(), x, y)
    at.button_group(key=forms.SEGMENT_LABEL).set_value("Exclude").run()
    at = click(at, 5, 5)
    assert at.session_state[session.SEGMENT_POINTS][-1][2] == 0
    assert len(at.session_state[session.SEGMENT_POINTS]) == 2
    button(at, "Clear selection").click().run()
    assert at.session_state[session.SEGMENT_POINTS] == [] and selected_caption(at) is None


def test_text_without_sam3_ranks_fastsams_candidates_with_clip(app_with_tiny_models, tmp_path):
    app_with_tiny_models.setenv("INPAINT_STUDIO_MODEL_SAM3", str(tmp_path / "no-sam3"))
    at = segment_page()
    at.button_group(key=forms.SEGMENT_MODE).set_value("Text").run()
    assert any("CLIP** ranks FastSAM's objects" in c.value and "models download sam3" in c.value for c in at.caption)
    at.text_input(key=forms.SEGMENT_TEXT).input("a red disk")
    at.number_input(key=forms.SEGMENT_TOP_K).set_value(3)
    next(b for b in at.get("button") if b.label == "Find").click()
    at.run()
    assert not at.exception and not at.error
    result = at.session_state[session.SEGMENT_RESULT][1]
    assert 1 <= len(result.masks) <= 3
    picks = [c for c in at.checkbox if "similarity" in c.label]
    assert len(picks) == len(result.masks) == 3 and picks[0].value and not picks[1].value
    picks[1].check().run()
    union = result.masks[0] | result.masks[1]
    button(at, "Replace mask").click().run()
    assert np.array_equal(at.session_state[session.MASK].mask, union)
    assert at.session_state[session.MASK].history == ["segment: “a red disk”"]


def find(at: AppTest, text: str, min_score: float | None = None) -> AppTest:
    at.button_group(key=forms.SEGMENT_MODE).set_value("Text").run()
    at.text_input(key=forms.SEGMENT_TEXT).input(text)
    if min_score is not None:
        at.slider(key=forms.SEGMENT_MIN_SCORE).set_value(min_score)
    next(b for b in at.get("button") if b.label == "Find").click()
    return at.run()


def test_text_with_sam3_shows_every_instance_to_pick_several_or_all(app_with_tiny_models):
    at = segment_page()
    at.button_group(key=forms.SEGMENT_MODE).set_value("Text").run()
    assert any("SAM 3** finds every instance" in c.value for c in at.caption)
    at = find(at, "red disk", min_score=0.0)  # the tiny random SAM 3 scores everything low
    assert not at.exception and not at.error
    result = at.session_state[session.SEGMENT_RESULT][1]
    assert result.backend == "sam3" and result.instances and len(result.masks) >= 3
    picks = [c for c in at.checkbox if c.label.startswith("#")]
    assert len(picks) == len(result.masks) and all(pick.value for pick in picks)  # every instance, at first
    assert "(sam3)" in selected_caption(at)
    button(at, "Select none").click().run()
    assert not any(c.value for c in at.checkbox if c.label.startswith("#"))
    assert selected_caption(at) is None and button(at, "Add to mask").disabled
    picks = [c for c in at.checkbox if c.label.startswith("#")]
    picks[0].check()
    picks[2].check()
    at.run()
    button(at, "Replace mask").click().run()
    assert np.array_equal(at.session_state[session.MASK].mask, result.masks[0] | result.masks[2])
    assert at.session_state[session.MASK].history == ["segment: “red disk”"]
    button(at, f"Select all {len(result.masks)}").click().run()
    assert np.array_equal(at.session_state[session.SEGMENT_RESULT][1].masks[1], result.masks[1])
    assert all(c.value for c in at.checkbox if c.label.startswith("#"))


def test_sam3_finds_objects_like_example_boxes(app_with_tiny_models):
    at = find(segment_page(), "", min_score=0.0)
    assert session.SEGMENT_RESULT not in at.session_state  # an empty text asks nothing
    at.button_group(key=forms.SEGMENT_EXAMPLE_LABEL).set_value("Like this").run()
    at = rect(at, 150, 90, 330, 250)
    (box, label), = at.session_state[session.SEGMENT_EXAMPLES]
    assert box == pytest.approx((150, 90, 330, 250), abs=0.5) and label == 1
    at.button_group(key=forms.SEGMENT_EXAMPLE_LABEL).set_value("Not like this").run()
    at = rect(at, 0, 0, 60, 60)
    assert [label for _, label in at.session_state[session.SEGMENT_EXAMPLES]] == [1, 0]
    assert not at.exception and not at.error
    result = at.session_state[session.SEGMENT_RESULT][1]
    assert result.backend == "sam3" and result.masks
    button(at, "Clear selection").click().run()
    assert at.session_state[session.SEGMENT_EXAMPLES] == []


def test_zero_area_box_is_a_clear_error(app_with_tiny_models):
    at = rect(segment_page(), 100, 100, 100, 200)
    assert not at.exception
    assert "no area" in at.error[0].value


def test_without_models_boxes_use_grabcut_and_text_is_disabled(app_without_models):
    at = segment_page()
    assert not at.exception
    assert any("use GrabCut instead" in w.value and "INPAINT_STUDIO_MODEL_FASTSAM" in w.value for w in at.warning)
    at.button_group(key=forms.SEGMENT_MODE).set_value("Box").run()
    at = rect(at, 140, 80, 340, 260)
    assert "with grabcut" in selected_caption(at)
    mask = at.session_state[session.SEGMENT_RESULT][1].mask
    assert mask[170, 240] and not mask[10, 10]
    at.button_group(key=forms.SEGMENT_MODE).set_value("Text").run()
    assert any("needs" in w.value and "INPAINT_STUDIO_MODEL_CLIP" in w.value for w in at.warning)
    assert at.text_input(key=forms.SEGMENT_TEXT).disabled


def test_corrupt_fastsam_checkpoint_falls_back_without_crashing(app_without_models, tmp_path):
    broken = tmp_path / "FastSAM-s.pt"
    broken.write_bytes(b"\x00 not a checkpoint")
    app_without_models.setenv("INPAINT_STUDIO_MODEL_FASTSAM", str(broken))
    at = segment_page()
    assert not at.exception
    assert any("could not be loaded" in w.value and "GrabCut" in w.value for w in at.warning)
    at = click(at, 240, 170)
    assert not at.exception
    assert "with grabcut" in selected_caption(at)
    assert any("could not be loaded" in w.value and "GrabCut" in w.value for w in at.warning)


def test_sam_refinement_answers_clicks(app_with_tiny_models):
    at = segment_page()
    at.radio(key=forms.SEGMENT_BACKEND).set_value("SAM (refine)").run()
    at = click(at, 240, 170)
    assert not at.exception and not at.error
    result = at.session_state[session.SEGMENT_RESULT][1]
    assert result.backend == "sam2"  # SAM 2.1 refines by default
    assert f"({result.backend})" in selected_caption(at)
    assert result.mask.shape == (PHOTO_SIZE[1], PHOTO_SIZE[0])
    # Another click on the same photo reuses SAM's image embedding: only the decoder runs.
    at = click(at, 100, 60)
    assert "embed" not in at.session_state[session.SEGMENT_RESULT][1].timings
    assert "decode" in at.session_state[session.SEGMENT_RESULT][1].timings


# --- a click or box that selects nothing says so, and what to try ---------------------------------


def nothing_selected(at: AppTest) -> list[str]:
    """The warnings shown, once the answer selected nothing (no caption, nothing to send)."""
    assert not at.exception and not at.error
    assert selected_caption(at) is None and button(at, "Add to mask").disabled
    return [w.value for w in at.warning]


def test_fastsam_selecting_nothing_says_so_and_what_to_try(app_with_tiny_models):
    at = segment_page()
    at.button_group(key=forms.SEGMENT_LABEL).set_value("Exclude").run()
    at = click(at, 240, 170)  # only an exclude click: nothing to select
    assert at.session_state[session.SEGMENT_RESULT][1].backend == "fastsam"
    assert "Nothing was selected there; try another spot or a box." in nothing_selected(at)


def test_sam_selecting_nothing_says_so_and_what_to_try(app_with_tiny_models, monkeypatch):
    from core.engines.sam import ClickSegmenter

    empty = np.zeros((PHOTO_SIZE[1], PHOTO_SIZE[0]), bool)
    monkeypatch.setattr(ClickSegmenter, "proposals",
                        lambda self, embedding, points=(), box=None: [(empty, 0.1)])
    at = segment_page()
    at.radio(key=forms.SEGMENT_BACKEND).set_value("SAM (refine)").run()
    at = click(at, 240, 170)
    assert at.session_state[session.SEGMENT_RESULT][1].backend == "sam2"
    assert any("selected nothing there; try another spot or a box" in w for w in nothing_selected(at))


def test_grabcut_selecting_nothing_says_so_and_what_to_try(app_without_models):
    at = segment_page()
    at.button_group(key=forms.SEGMENT_LABEL).set_value("Exclude").run()
    at = click(at, 240, 170)
    assert at.session_state[session.SEGMENT_RESULT][1].backend == "grabcut"
    assert any("nothing to select from: click on the object" in w for w in nothing_selected(at))
    button(at, "Clear selection").click().run()
    at.button_group(key=forms.SEGMENT_MODE).set_value("Box").run()
    at = rect(at, 0, 0, PHOTO_SIZE[0], PHOTO_SIZE[1])  # the whole photo: no background to learn from
    warnings = nothing_selected(at)
    assert any("GrabCut needs some background" in w and "draw the box tighter" in w for w in warnings)


def test_an_empty_answer_without_a_reason_still_says_what_to_try(app_with_tiny_models, monkeypatch):
    from core.segment import SegmentResult
    from core.segmenter import Segmenter

    monkeypatch.setattr(Segmenter, "segment", lambda self, *args, **kwargs: SegmentResult([], [], "fastsam"))
    at = click(segment_page(), 240, 170)
    assert any(w.startswith("Nothing was selected there. Try another spot") for w in nothing_selected(at))
    button(at, "Clear selection").click().run()
    at.button_group(key=forms.SEGMENT_MODE).set_value("Box").run()
    at = rect(at, 140, 80, 340, 260)
    warnings = nothing_selected(at)
    assert any(w.startswith("Nothing was selected in that box. Draw it tighter") for w in warnings)


def test_the_segment_canvas_hides_its_own_toolbar(app_with_tiny_models, monkeypatch):
    """Its undo, redo and bin act on a drawing the page clears at once; Clear selection does the job."""
    from types import SimpleNamespace

    at = segment_page()
    import ui.canvas  # once a page has imported it: the canvas component registers itself then

    calls = []

    def fake_canvas(*, display_toolbar=True, **kwargs):
        calls.append(display_toolbar)
        return SimpleNamespace(json_data=None, image_data=None, background_fit=None)

    monkeypatch.setattr(ui.canvas, "st_canvas", fake_canvas)
    at.run()  # clicks
    at.button_group(key=forms.SEGMENT_MODE).set_value("Box").run()
    at.button_group(key=forms.SEGMENT_MODE).set_value("Text").run()  # SAM 3 here: example boxes on a canvas
    assert not at.exception
    assert len(calls) >= 3 and not any(calls)


# --- waiting for the model's turn while it runs for someone else -----------------------------------


def page_manager():
    """The server's model manager, the one the page's runs use (a process-wide cache)."""
    from ui import resources

    return resources.manager()


def waiting_lines() -> list[str]:
    """The waiting messages the page's running script shows now."""
    return [info.value for info in shown_while_running("info") if info.value.startswith("Waiting for")]


def wait_until(condition, what: str, limit: float = TIMEOUT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def click_in_thread(at: AppTest, x: float, y: float) -> tuple[threading.Thread, list[AppTest]]:
    """A click at photo pixel (x, y), its run in a thread (the page waits for a model meanwhile)."""
    runs: list[AppTest] = []
    page = threading.Thread(target=lambda: runs.append(click(at, x, y)), daemon=True)
    page.start()
    return page, runs


CANCELLED_CLICK = "Selection cancelled. Click again to select, or Clear selection to start over."


def refining_page() -> AppTest:
    at = segment_page()
    return at.radio(key=forms.SEGMENT_BACKEND).set_value("SAM (refine)").run()


def test_a_selection_waiting_for_its_model_shows_its_place_and_runs_when_the_model_is_free(app_with_tiny_models):
    at = refining_page()
    queue = page_manager().queue("sam2")
    head = queue.enter()  # someone else's selection holds SAM 2.1
    try:
        page, runs = click_in_thread(at, 240, 170)
        wait_until(lambda: len(queue.waiting()) == 1, "the page's selection to queue")
        wait_until(waiting_lines, "the message")
        assert waiting_lines() == ["Waiting for SAM 2.1 Hiera-S: 1 request ahead of yours."]
        assert [button.label for button in shown_while_running("button")].count("Cancel") == 1
    finally:
        queue.leave(head)
    page.join(TIMEOUT)
    assert not page.is_alive()
    at = runs[0]
    assert not at.exception and not at.error
    assert at.session_state[session.SEGMENT_RESULT][1].backend == "sam2"
    assert "(sam2)" in selected_caption(at)
    assert not any(info.value.startswith("Waiting for") for info in at.info)  # gone once the work started
    assert "Cancel" not in [b.label for b in at.button]
    assert len(queue) == 0


def test_cancel_takes_a_waiting_selection_out_of_the_queue_until_the_selection_changes(app_with_tiny_models):
    at = refining_page()
    queue = page_manager().queue("sam2")
    head = queue.enter()
    try:
        page, runs = click_in_thread(at, 240, 170)
        wait_until(lambda: "Cancel" in [button.label for button in shown_while_running("button")], "Cancel")
        click_while_running(at, "Cancel")
        page.join(TIMEOUT)
        assert not page.is_alive()
        assert queue.waiting() == [] and queue.running is head  # it left while SAM 2.1 was still busy
        at = runs[0]
        assert not at.exception and not at.error
        assert [info.value for info in at.info] == [CANCELLED_CLICK]
        assert selected_caption(at) is None and button(at, "Add to mask").disabled
        at.run()  # another run of the page does not ask again
        assert len(queue.waiting()) == 0 and [info.value for info in at.info] == [CANCELLED_CLICK]
    finally:
        queue.leave(head)
    at = click(at, 250, 180)  # a new click asks again
    assert not at.exception and not at.error
    assert at.session_state[session.SEGMENT_RESULT][1].backend == "sam2" and selected_caption(at)
    assert not any(info.value.startswith("Selection cancelled") for info in at.info)


def test_the_first_pass_over_a_photo_waiting_for_fastsam_shows_its_place(app_with_tiny_models):
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    upload(at, "photo.png", png_bytes(make_photo()))
    queue = page_manager().queue("fastsam")
    head = queue.enter()  # someone else's selection holds FastSAM-s
    try:
        runs: list[AppTest] = []
        page = threading.Thread(target=lambda: runs.append(at.switch_page("pages/1_Segment.py").run()), daemon=True)
        page.start()
        wait_until(waiting_lines, "the message")
        assert waiting_lines() == ["Waiting for FastSAM-s: 1 request ahead of yours."]
    finally:
        queue.leave(head)
    page.join(TIMEOUT)
    assert not page.is_alive()
    at = runs[0]
    assert not at.exception and not at.error and not at.warning
    assert not any(info.value.startswith("Waiting for") for info in at.info)
    assert len(queue) == 0
