"""AppTest runs of the Batch page: recipe from a result or a file, uploads, run, cancel, zip."""
from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import masks
from core.images import read_params
from core.operations.inpaint import InpaintParams
from core.recipe import Action, Recipe, Selection
from tests.helpers import TIMEOUT, png_bytes, upload
from ui import forms, session

PHOTO = (96, 64)


def photo_bytes(seed: int, fmt: str = "PNG") -> bytes:
    yy, xx = np.mgrid[0 : PHOTO[1], 0 : PHOTO[0]]
    rgb = np.zeros((PHOTO[1], PHOTO[0], 3), np.uint8)
    rgb[:] = (30 + seed * 20, 90, 160)
    rgb[(xx - 48) ** 2 + (yy - 32) ** 2 < 15**2] = (230, 200, 40)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt)
    return buffer.getvalue()


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def batch_page(recipe: Recipe | None = None) -> AppTest:
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    at.switch_page("pages/5_Batch.py").run()
    if recipe is not None:
        at.session_state[session.BATCH_RECIPE] = recipe
        at.run()
    return at


def wait_for_job(at: AppTest, timeout: float = 120) -> None:
    job = at.session_state[session.BATCH_JOB]
    job.thread.join(timeout)
    assert not job.running, "the batch did not finish in time"
    at.run()


REMOVE = Recipe(Selection(kind="box", box=(0.3, 0.2, 0.7, 0.8)), Action("remove", InpaintParams(engine="telea")),
                name="remove-disk")


def test_without_a_recipe_the_page_says_how_to_make_one(app_without_models):
    at = batch_page()
    assert not at.exception
    assert any("Save this edit as a recipe" in info.value for info in at.info)
    assert button(at, "Run the batch").disabled


def test_run_a_batch_with_a_broken_file_and_download_the_zip(app_without_models):
    at = batch_page(REMOVE)
    assert any("remove-disk" in m.value for m in at.markdown)
    files = [(f"p{i}.png", photo_bytes(i), "image/png") for i in range(3)]
    files.append(("broken.png", b"this is text, not a photo", "image/png"))
    at.file_uploader(key="batch_photos").set_value(files).run()
    assert not button(at, "Run the batch").disabled
    button(at, "Preview the selection on the first photo").click().run()
    assert not at.exception and not at.error
    assert any("the region the recipe edits" in i.proto.imgs[0].caption for i in at.image if i.proto.imgs)
    button(at, "Run the batch").click().run()
    wait_for_job(at)
    job = at.session_state[session.BATCH_JOB]
    statuses = {row["name"]: row["status"] for row in job.rows}
    assert statuses == {"broken.png": "failed", "p0.png": "done", "p1.png": "done", "p2.png": "done"}
    assert "broken.png" in next(row["error"] for row in job.rows if row["status"] == "failed")
    assert any("3 done, 1 failed" in w.value for w in at.warning)
    archive = zipfile.ZipFile(io.BytesIO(job.results_zip()))
    assert set(archive.namelist()) == {"p0.png", "p1.png", "p2.png", "manifest.json", "manifest.csv"}
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["counts"]["done"] == 3 and manifest["recipe"]["name"] == "remove-disk"
    out = np.asarray(Image.open(io.BytesIO(archive.read("p1.png"))).convert("RGB"))
    original = np.asarray(Image.open(io.BytesIO(photo_bytes(1))).convert("RGB"))
    assert out.shape == original.shape and (out != original).any()
    assert np.array_equal(out[:, :10], original[:, :10])  # far from the box: untouched
    assert read_params(archive.read("p1.png"))["source"] == "p1.png"
    assert any(b.label.startswith("Download the results") for b in at.get("download_button"))


def test_cancel_stops_after_the_current_photo(app_without_models, monkeypatch):
    import core.batch

    at = batch_page(REMOVE)
    at.file_uploader(key="batch_photos").set_value(
        [(f"p{i}.png", photo_bytes(i), "image/png") for i in range(6)]).run()
    original = core.batch.process_item

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return original(*args, **kwargs)

    monkeypatch.setattr(core.batch, "process_item", slow)
    button(at, "Run the batch").click().run()
    job = at.session_state[session.BATCH_JOB]
    while not job.rows:
        time.sleep(0.05)
    button(at, "Cancel").click().run()
    wait_for_job(at)
    counts = job.summary.counts
    assert counts["cancelled"] >= 1 and counts["done"] >= 1 and counts["done"] + counts["cancelled"] == 6
    assert sorted(p.name for p in job.output.glob("p*.png")) == [f"p{i}.png" for i in range(counts["done"])]


def test_an_uploaded_recipe_with_a_mistake_is_explained(app_without_models):
    at = batch_page()
    at.radio(key=forms.BATCH_RECIPE_SOURCE).set_value("upload").run()
    bad = json.dumps({"version": 2, "selection": {"kind": "lasso"}, "action": {"type": "remove"}}).encode()
    at.file_uploader(key="batch_recipe_upload").set_value(("bad.json", bad, "application/json")).run()
    assert not at.exception
    assert any("bad.json" in e.value and "selection.kind" in e.value for e in at.error)
    good = REMOVE.to_json().encode()
    at.file_uploader(key="batch_recipe_upload").set_value(("good.json", good, "application/json")).run()
    assert not at.error and any("remove-disk" in m.value for m in at.markdown)


def test_an_uploaded_recipe_naming_an_unknown_engine_is_refused_and_the_uploads_kept(app_without_models):
    at = batch_page()
    at.file_uploader(key="batch_photos").set_value([("p.png", photo_bytes(0), "image/png")]).run()
    at.radio(key=forms.BATCH_RECIPE_SOURCE).set_value("upload").run()
    data = REMOVE.to_dict()
    data["action"]["params"]["engine"] = "sd3"
    at.file_uploader(key="batch_recipe_upload").set_value(("sd3.json", json.dumps(data).encode(), "application/json"))
    at.run()
    assert not at.exception
    assert any("sd3.json" in e.value and "action.params.engine" in e.value and "telea" in e.value for e in at.error)
    assert button(at, "Run the batch").disabled
    assert at.file_uploader(key="batch_photos").value  # the photos are still there


def test_a_zip_with_masks_by_name(app_without_models):
    recipe = Recipe(Selection(kind="mask_file"), Action("remove", InpaintParams(engine="telea")))
    at = batch_page(recipe)
    assert any("upload the masks" in w.value for w in at.warning)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(2):
            archive.writestr(f"photos/p{i}.jpg", photo_bytes(i, "JPEG"))
    mask = np.zeros((PHOTO[1], PHOTO[0]), bool)
    mask[20:40, 30:60] = True
    at.file_uploader(key="batch_photos").set_value([("photos.zip", buffer.getvalue(), "application/zip")])
    at.file_uploader(key="batch_masks").set_value([("p0.png", masks.encode_mask_png(mask), "image/png")]).run()
    button(at, "Run the batch").click().run()
    wait_for_job(at)
    rows = {row["name"]: row for row in at.session_state[session.BATCH_JOB].rows}
    assert rows["photos/p0.jpg"]["status"] == "done"
    assert rows["photos/p1.jpg"]["status"] == "failed" and "no mask file" in rows["photos/p1.jpg"]["error"]
    # The result files' default (auto): a JPEG stays a JPEG, only the edited blocks re-encoded.
    assert at.selectbox(key="batch_output_format").value == "auto"
    (output,) = rows["photos/p0.jpg"]["outputs"]
    assert output.endswith(".jpg") and any("copied unchanged" in note for note in rows["photos/p0.jpg"]["notes"])


def test_the_preview_skips_unreadable_photos_and_uses_the_photos_own_mask(app_without_models):
    recipe = Recipe(Selection(kind="mask_file"), Action("remove", InpaintParams(engine="telea")))
    at = batch_page(recipe)
    mask = np.zeros((PHOTO[1], PHOTO[0]), bool)
    mask[20:40, 30:60] = True  # 600 of 6144 pixels: 10%
    at.file_uploader(key="batch_photos").set_value(
        [("a-broken.png", b"not a photo", "image/png"), ("b.png", photo_bytes(1), "image/png")])
    at.file_uploader(key="batch_masks").set_value([("b.png", masks.encode_mask_png(mask), "image/png")]).run()
    button(at, "Preview the selection on the first photo").click().run()
    assert not at.exception and not at.error
    assert any("Skipped for the preview" in c.value and "a-broken.png" in c.value for c in at.caption)
    captions = [i.proto.imgs[0].caption for i in at.image if i.proto.imgs]
    assert any(c.startswith("b.png: the region the recipe edits (10% of the photo)") for c in captions), captions


def test_the_preview_says_when_no_photo_can_be_read(app_without_models):
    at = batch_page(REMOVE)
    at.file_uploader(key="batch_photos").set_value(
        [("one.png", b"not a photo", "image/png"), ("two.jpg", b"nor this", "image/jpeg")]).run()
    button(at, "Preview the selection on the first photo").click().run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("Preview: None of the photos can be read.") and "one.png" in error.value
    assert "two.jpg" in error.value
    assert not button(at, "Run the batch").disabled  # the uploads are kept: a batch can still be tried


def test_save_a_result_as_a_recipe_and_use_it_for_a_batch(app_without_models):
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    upload(at, "photo.png", png_bytes(Image.new("RGB", (160, 120), (128, 128, 128))))
    region = np.zeros((120, 160), bool)
    region[40:80, 60:100] = True
    at.session_state[session.MASK].apply(masks.layer_edit("add", region, "subject"))
    at.switch_page("pages/3_Inpaint.py").run()
    button(at, "Remove object").click().run()
    result = at.session_state[session.INPAINT_RESULT]
    at.text_input(key=forms.RECIPE_NAME).input("clean-up").run()
    button(at, "Use for a batch").click().run()
    assert not at.exception
    recipe = at.session_state[session.BATCH_RECIPE]
    assert recipe.name == "clean-up" and recipe.selection.kind == "mask" and recipe.action.operation == "remove"
    assert np.array_equal(recipe.selection.mask_at((160, 120)), result.mask)
    assert any("clean-up" in m.value for m in at.markdown)  # now on the Batch page


def test_a_jobs_files_go_when_the_session_lets_go_of_it(tmp_path):
    import gc

    from core.batch import BatchModels
    from tests.helpers import manager_with
    from ui import batch_job

    class Upload:
        def __init__(self, name, data):
            self.name, self.data = name, data

        def getvalue(self):
            return self.data

    job = batch_job.start(REMOVE, [Upload("p.png", photo_bytes(0))], [], BatchModels(manager_with()))
    job.thread.join(60)
    workdir = job.workdir
    assert (workdir / "results" / "p.png").exists()
    del job
    gc.collect()
    assert not workdir.exists()


def test_the_servers_batches_are_listed_in_order_and_only_their_owner_moves_them(app_without_models):
    from ui import resources

    at = batch_page()
    at.session_state[session.QUEUE_OWNER] = "me"
    jobs = resources.manager().jobs  # the server's job order: two batches are running
    jobs.add("theirs", "someone else", "their-holiday-photos: 9 files")
    jobs.add("mine", "me", "remove-disk: 3 files")
    try:
        at.run()
        assert not at.exception
        texts = [markdown.value for markdown in at.markdown]
        assert "1. Someone else's batch" in texts and "2. remove-disk: 3 files (yours)" in texts
        assert not any("holiday" in text for text in texts)
        assert not [b for b in at.button if b.key and b.key.endswith("_theirs")]  # no moves for others' jobs
        assert at.button(key="batch_job_down_mine").disabled  # already last
        at.button(key="batch_job_up_mine").click().run()
        assert not at.exception and not at.error
        assert [job.job_id for job in jobs.jobs()] == ["mine", "theirs"]
        assert "1. remove-disk: 3 files (yours)" in [markdown.value for markdown in at.markdown]
    finally:
        jobs.remove("theirs")
        jobs.remove("mine")
