"""The batch runner: a folder or zip of photos through one recipe, one failed row per bad file,
the manifest, cancel and resume, safe zips, distinct outputs, masks by name, models and prompts
loaded once, and reproducible seeds."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.batch
from core.batch import MANIFEST, MANIFEST_CSV, BatchModels, process_item, run, zip_results
from core.batch_inputs import BatchInputError, InputItem, list_inputs, mask_files
from core.catalog import BUILTIN
from core.images import read_image, read_params
from core.operations.inpaint import InpaintParams
from core.recipe import Action, Recipe, SeedPolicy, Selection
from tests.helpers import (
    REGION,
    SD15,
    FakeEngine,
    disk,
    inpaint_recipe,
    manager_with,
    photo_pixels,
    remove_recipe,
    scenario_folder,
    truncated_jpeg,
    write_photo,
    write_photos,
)


def fast() -> BatchModels:
    """Telea behind a BatchModels, at a small working size (Telea scales every crop to its native
    1024 px, and its time grows with the hole's area: at 128 px a photo takes milliseconds)."""
    from core.engines.opencv_inpaint import OpenCVInpaint

    engine = OpenCVInpaint(replace(BUILTIN.engines["telea"], native_size=128))
    return BatchModels(manager_with(telea=engine))


def run_fast(recipe, inputs, output, **options):
    """PNG results unless told otherwise, so the runner's tests can compare files and read the
    edit's parameters back; the default format (auto: JPEGs stay JPEGs) has its own tests below."""
    options.setdefault("output_format", "png")
    return run(recipe, inputs, output, models=options.pop("models", None) or fast(), **options)


def outputs_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.suffix in (".png", ".jpg", ".webp")}


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def zip_folder(folder: Path, path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


class Counter:
    """Wraps core.batch.process_item, recording the names it is called for."""

    def __init__(self, monkeypatch) -> None:
        self.names: list[str] = []
        original = core.batch.process_item

        def counting(recipe, item, *args, **kwargs):
            self.names.append(item.name)
            return original(recipe, item, *args, **kwargs)

        monkeypatch.setattr(core.batch, "process_item", counting)


# --- the scenario -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    folder = scenario_folder(tmp_path_factory.mktemp("scenario") / "photos")
    output = tmp_path_factory.mktemp("scenario-out") / "results"
    progress = []
    summary = run_fast(remove_recipe(), folder, output, on_progress=progress.append)
    return folder, output, summary, progress


def test_ten_photos_are_done_and_the_two_bad_files_are_failed_rows(scenario):
    folder, output, summary, progress = scenario
    assert summary.total == 12
    assert summary.counts == {"done": 10, "failed": 2, "skipped": 0, "cancelled": 0}
    assert not summary.ok
    assert summary.describe().startswith("12 files: 10 done, 2 failed")
    failed = {row["name"]: row["error"] for row in summary.rows if row["status"] == "failed"}
    assert set(failed) == {"broken.jpg", "notes.png"}
    assert "broken.jpg" in failed["broken.jpg"] and "damaged" in failed["broken.jpg"]
    assert "notes.png" in failed["notes.png"] and "not an image" in failed["notes.png"]
    assert [(p.finished, p.total) for p in progress] == [(i, 12) for i in range(1, 13)]
    assert [p.row["name"] for p in progress] == sorted(path.name for path in folder.iterdir())
    # Every good photo has its result: the photo's size, the region edited, everything else kept.
    for row in summary.rows:
        if row["status"] != "done":
            assert row["outputs"] == [] and row["seeds"] == []
            continue
        assert row["outputs"] == [Path(row["name"]).stem + ".png"]
        source = np.asarray(read_image(folder / row["name"]).rgb).astype(int)
        result = np.asarray(Image.open(output / row["outputs"][0]).convert("RGB")).astype(int)
        assert result.shape == source.shape
        height, width = source.shape[:2]
        x0, y0, x1, y1 = REGION
        kept = np.ones((height, width), bool)
        kept[int(y0 * height) - 4:int(y1 * height) + 4, int(x0 * width) - 4:int(x1 * width) + 4] = False
        assert np.array_equal(result[kept], source[kept])
        centre = (height // 2, width // 2)
        assert np.abs(result[centre] - source[centre]).sum() > 60  # the disk is gone
    assert sorted(path.name for path in output.glob("*.png")) == [f"p{i:02d}.png" for i in range(10)]


def test_the_manifests_agree_with_each_other_and_the_files(scenario):
    folder, output, summary, _ = scenario
    data = manifest(output)
    recipe = remove_recipe()
    assert data["recipe"] == recipe.to_dict() and data["engine"] == "local"
    assert data["total"] == 12 and data["finished"] is not None
    assert data["counts"] == summary.counts
    rows = data["items"]
    assert [row["index"] for row in rows] == list(range(12))
    assert [row["name"] for row in rows] == sorted(path.name for path in folder.iterdir())
    seeds = []
    for row in rows:
        if row["status"] == "done":
            assert row["seeds"] == [recipe.seed.seed_for(row["stem"])]
            seeds.append(row["seeds"][0])
            for name in row["outputs"]:
                stored = read_params((output / name).read_bytes())
                assert stored["source"] == row["name"] and stored["recipe"] == "clean"
                assert stored["params"]["seed"] == row["seeds"][0]
            assert row["timings"]["total"] > 0 and row["error"] == ""
    assert len(set(seeds)) == 10  # per-image seeds
    with open(output / MANIFEST_CSV, newline="") as file:
        table = list(csv.DictReader(file))
    assert len(table) == len(rows)
    for line, row in zip(table, rows):
        assert line["name"] == row["name"] and line["status"] == row["status"]
        assert int(line["index"]) == row["index"]
        assert line["outputs"].split() == row["outputs"]
        assert [int(seed) for seed in line["seeds"].split()] == row["seeds"]
        assert line["error"] == row["error"]
        assert all((output / name).exists() for name in line["outputs"].split())


def test_zip_results_holds_the_outputs_and_the_manifests(scenario):
    _, output, summary, _ = scenario
    (output / ".p00.png.partial").write_bytes(b"half")  # a write in progress is not a result
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_results(output)))
    finally:
        (output / ".p00.png.partial").unlink()
    expected = {name for row in summary.rows for name in row["outputs"]} | {MANIFEST, MANIFEST_CSV}
    assert set(archive.namelist()) == expected
    for name in expected:
        assert archive.read(name) == (output / name).read_bytes()


def test_a_text_file_is_a_skipped_row_and_hidden_files_are_ignored(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, 2)
    (folder / "readme.txt").write_text("photos from the trip")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._p00.jpg").write_bytes(b"\0\5\26\7")
    summary = run_fast(remove_recipe(), folder, tmp_path / "out")
    assert summary.counts == {"done": 2, "failed": 0, "skipped": 1, "cancelled": 0}
    assert summary.ok
    (skipped,) = [row for row in summary.rows if row["status"] == "skipped"]
    assert skipped["name"] == "readme.txt" and "not a photo (.txt)" in skipped["error"]
    assert [row["name"] for row in summary.rows] == ["p00.jpg", "p01.png", "readme.txt"]
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == ["p00.png", "p01.png"]


def test_a_folder_without_photos_is_refused(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    with pytest.raises(BatchInputError, match="no photos found"):
        run_fast(remove_recipe(), folder, tmp_path / "out")
    with pytest.raises(BatchInputError, match="no such folder or zip"):
        run_fast(remove_recipe(), tmp_path / "missing", tmp_path / "out")


# --- cancel and resume ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """Five good photos and a complete run over them."""
    folder = tmp_path_factory.mktemp("five") / "photos"
    write_photos(folder, 5)
    full = tmp_path_factory.mktemp("five-full") / "out"
    run_fast(remove_recipe(), folder, full)
    return folder, full


def test_cancelling_keeps_what_is_done_and_marks_the_rest(five, tmp_path):
    folder, full = five
    seen = []
    summary = run_fast(remove_recipe(), folder, tmp_path / "out", on_progress=seen.append,
                  should_cancel=lambda: len(seen) >= 2)
    assert summary.counts == {"done": 2, "failed": 0, "skipped": 0, "cancelled": 3}
    assert not summary.ok
    statuses = [row["status"] for row in manifest(tmp_path / "out")["items"]]
    assert statuses == ["done", "done", "cancelled", "cancelled", "cancelled"]
    assert outputs_of(tmp_path / "out") == {name: data for name, data in outputs_of(full).items()
                                            if name in ("p00.png", "p01.png")}
    cancelled = [row for row in summary.rows if row["status"] == "cancelled"]
    assert all(row["error"] == "cancelled before it started" for row in cancelled)


def test_resume_does_only_what_is_missing_and_ends_like_a_full_run(five, tmp_path, monkeypatch):
    folder, full = five
    output = tmp_path / "out"
    seen = []
    run_fast(remove_recipe(), folder, output, on_progress=seen.append, should_cancel=lambda: len(seen) >= 2)
    counter = Counter(monkeypatch)
    summary = run_fast(remove_recipe(), folder, output, resume=True)
    assert counter.names == ["p02.jpg", "p03.png", "p04.jpg"]
    assert summary.counts["done"] == 5 and summary.resumed == 2 and summary.ok
    assert "(2 from an earlier run)" in summary.describe()
    assert outputs_of(output) == outputs_of(full)
    rows, full_rows = manifest(output)["items"], manifest(full)["items"]
    assert [(r["name"], r["status"], r["seeds"], r["outputs"]) for r in rows] == \
        [(r["name"], r["status"], r["seeds"], r["outputs"]) for r in full_rows]

    # A result that went missing is made again; nothing else is.
    (output / "p01.png").unlink()
    counter.names.clear()
    summary = run_fast(remove_recipe(), folder, output, resume=True)
    assert counter.names == ["p01.png"] and summary.resumed == 4
    assert outputs_of(output) == outputs_of(full)
    counter.names.clear()
    run_fast(remove_recipe(), folder, output, resume=True)
    assert counter.names == []
    # Without resume everything is made again.
    run_fast(remove_recipe(), folder, output)
    assert len(counter.names) == 5


def test_resuming_with_another_recipe_is_refused(five, tmp_path):
    from dataclasses import replace

    folder, _ = five
    run_fast(remove_recipe(), folder, tmp_path / "out")
    other = replace(remove_recipe(), name="another")
    with pytest.raises(BatchInputError, match="another recipe"):
        run_fast(other, folder, tmp_path / "out", resume=True)
    assert run_fast(other, folder, tmp_path / "out").ok  # without resume it starts over


def test_an_unreadable_manifest_is_a_clear_error_on_resume(five, tmp_path):
    folder, _ = five
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MANIFEST).write_text("{not json")
    with pytest.raises(BatchInputError, match="cannot be read to resume"):
        run_fast(remove_recipe(), folder, tmp_path / "out", resume=True)


# --- zips -----------------------------------------------------------------------------------------


def test_a_zip_gives_the_same_results_as_the_folder(scenario, tmp_path):
    folder, output, summary, _ = scenario
    archive = zip_folder(folder, tmp_path / "photos.zip", {"__MACOSX/._p00.jpg": b"\0\5", "sub/": b""})
    zipped = run_fast(remove_recipe(), archive, tmp_path / "out")
    assert [(r["name"], r["status"], r["seeds"]) for r in zipped.rows] == \
        [(r["name"], r["status"], r["seeds"]) for r in summary.rows]
    assert outputs_of(tmp_path / "out") == outputs_of(output)
    errors = {row["name"]: row["error"] for row in zipped.rows if row["status"] == "failed"}
    assert "broken.jpg" in errors["broken.jpg"] and "notes.png" in errors["notes.png"]


@pytest.mark.parametrize("entry", ["../evil.png", "photos/../../evil.png", "/tmp/evil.png", "..\\evil.png",
                                   "C:/evil.png"])
def test_zip_entries_pointing_outside_are_refused(tmp_path, entry):
    path = tmp_path / "slip.zip"
    good = io.BytesIO()
    Image.fromarray(photo_pixels((40, 30), 1)).save(good, format="PNG")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fine.png", good.getvalue())
        archive.writestr(zipfile.ZipInfo(entry), good.getvalue())
    assert entry in [info.filename for info in zipfile.ZipFile(path).infolist()]
    with pytest.raises(BatchInputError) as caught:
        list_inputs(path)
    assert repr(entry) in str(caught.value) and "outside the archive" in str(caught.value)
    with pytest.raises(BatchInputError, match="outside the archive"):
        run_fast(remove_recipe(), path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.png").exists()


def test_too_many_entries_or_too_many_bytes_are_refused(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    write_photos(folder, 3)
    archive = zip_folder(folder, tmp_path / "three.zip")
    total = sum(info.file_size for info in zipfile.ZipFile(archive).infolist())
    assert len(list_inputs(archive, max_entries=3, max_total_bytes=total)) == 3  # at the limits: fine
    with pytest.raises(BatchInputError, match="3 entries, more than the limit of 2"):
        list_inputs(archive, max_entries=2)
    with pytest.raises(BatchInputError, match="uncompressed, more than the limit"):
        list_inputs(archive, max_total_bytes=total - 1)
    with pytest.raises(BatchInputError, match="3 files, more than the limit of 2"):
        list_inputs(folder, max_entries=2)
    # The runner uses the module's limits.
    monkeypatch.setitem(list_inputs.__kwdefaults__, "max_total_bytes", total - 1)
    with pytest.raises(BatchInputError, match="uncompressed"):
        run_fast(remove_recipe(), archive, tmp_path / "out")
    monkeypatch.setitem(list_inputs.__kwdefaults__, "max_total_bytes", total)
    monkeypatch.setitem(list_inputs.__kwdefaults__, "max_entries", 2)
    with pytest.raises(BatchInputError, match="more than the limit of 2"):
        run_fast(remove_recipe(), archive, tmp_path / "out")


def lying_zip(path: Path, declared: int) -> tuple[Path, bytes]:
    """A zip whose ``big.png`` holds a whole PNG but whose headers say ``declared`` bytes."""
    png = io.BytesIO()
    Image.fromarray(photo_pixels((64, 48), 3)).save(png, format="PNG")
    good = io.BytesIO()
    Image.fromarray(photo_pixels((64, 48), 4)).save(good, format="PNG")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.png", png.getvalue())
        archive.writestr("good.png", good.getvalue())
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02")
    assert raw[central + 46:central + 46 + len(b"big.png")] == b"big.png"
    raw[central + 24:central + 28] = struct.pack("<I", declared)  # uncompressed size, central directory
    local = struct.unpack("<I", raw[central + 42:central + 46])[0]
    raw[local + 22:local + 26] = struct.pack("<I", declared)  # and in the local header
    path.write_bytes(bytes(raw))
    return path, png.getvalue()


def test_an_entry_larger_than_its_header_says_is_refused_when_read(tmp_path):
    path, real = lying_zip(tmp_path / "lie.zip", declared=200)
    items = {item.name: item for item in list_inputs(path)}
    assert items["big.png"].size == 200 < len(real)
    with pytest.raises(BatchInputError, match="big.png"):
        items["big.png"].read()
    assert read_image(items["good.png"].read()).size == (64, 48)
    summary = run_fast(remove_recipe(), path, tmp_path / "out")
    rows = {row["name"]: row for row in summary.rows}
    assert rows["big.png"]["status"] == "failed" and "big.png" in rows["big.png"]["error"]
    assert "zip" in rows["big.png"]["error"]
    assert rows["good.png"]["status"] == "done"


def test_duplicate_stems_get_distinct_outputs(tmp_path):
    folder = tmp_path / "photos"
    for name, seed in (("a.jpg", 0), ("a.png", 1), ("a-2.jpg", 2), ("b.png", 3)):
        write_photo(folder / name, (64, 48), seed)
    summary = run_fast(remove_recipe(), folder, tmp_path / "out")
    assert summary.counts["done"] == 4
    outputs = [name for row in summary.rows for name in row["outputs"]]
    assert len(set(outputs)) == 4 and set(outputs) == {path.name for path in (tmp_path / "out").glob("*.png")}
    for row in summary.rows:  # each output is its own photo's (the background corner is kept)
        (name,) = row["outputs"]
        assert read_params((tmp_path / "out" / name).read_bytes())["source"] == row["name"]
        result = np.asarray(Image.open(tmp_path / "out" / name).convert("RGB"))
        assert np.array_equal(result[:5, :5], np.asarray(read_image(folder / row["name"]).rgb)[:5, :5])
    # The per-image seed follows the output's name, so the two a's get different seeds.
    seeds = {row["name"]: row["seeds"][0] for row in summary.rows}
    assert seeds["a.jpg"] != seeds["a.png"]

    nested = tmp_path / "nested"
    write_photo(nested / "x" / "a.jpg", (64, 48), 5)
    write_photo(nested / "y" / "a.jpg", (64, 48), 6)
    archive = zip_folder(nested, tmp_path / "nested.zip")
    zipped = run_fast(remove_recipe(), archive, tmp_path / "zip-out")
    assert [(row["name"], row["outputs"]) for row in zipped.rows] == \
        [("x/a.jpg", ["a.png"]), ("y/a.jpg", ["a-2.png"])]
    corners = {name: np.asarray(Image.open(tmp_path / "zip-out" / name).convert("RGB"))[:5, :5]
               for name in ("a.png", "a-2.png")}
    assert np.array_equal(corners["a.png"], np.asarray(read_image(nested / "x" / "a.jpg").rgb)[:5, :5])
    assert np.array_equal(corners["a-2.png"], np.asarray(read_image(nested / "y" / "a.jpg").rgb)[:5, :5])


def test_variant_outputs_and_names_differing_in_case_do_not_collide(tmp_path):
    folder = tmp_path / "photos"
    for name, seed in (("a.jpg", 0), ("a-v2.jpg", 1), ("B.png", 2), ("b.jpg", 3)):
        write_photo(folder / name, (64, 48), seed)
    recipe = remove_recipe()
    two = replace(recipe, action=replace(recipe.action, params=replace(recipe.action.params, variants=2)))
    summary = run_fast(two, folder, tmp_path / "out")
    assert summary.counts["done"] == 4
    outputs = [name for row in summary.rows for name in row["outputs"]]
    assert len(outputs) == 8
    assert len({name.casefold() for name in outputs}) == 8  # distinct on a case-insensitive disk too
    assert {path.name for path in (tmp_path / "out").glob("*.png")} == set(outputs)
    for row in summary.rows:  # every file is its own photo's
        for name in row["outputs"]:
            assert read_params((tmp_path / "out" / name).read_bytes())["source"] == row["name"]


def test_an_output_folder_inside_the_input_folder_is_refused(five, tmp_path):
    folder, _ = five
    copy = tmp_path / "photos"
    shutil.copytree(folder, copy)
    for output in (copy / "results", copy, copy / "deeper" / "results"):
        with pytest.raises(BatchInputError, match="must not be inside the input folder"):
            run_fast(remove_recipe(), copy, output)
        assert output == copy or not output.exists()
    assert sorted(path.name for path in copy.iterdir()) == sorted(path.name for path in folder.iterdir())
    assert run_fast(remove_recipe(), copy, tmp_path / "beside").counts["done"] == 5  # next to it is fine


# --- masks by name --------------------------------------------------------------------------------


def test_each_photo_uses_its_own_mask_file_and_a_missing_one_is_a_failed_row(tmp_path):
    photos, mask_folder = tmp_path / "photos", tmp_path / "masks"
    for name, seed in (("left.jpg", 0), ("right.png", 1), ("lonely.png", 2), ("small.jpg", 3)):
        write_photo(photos / name, (80, 60), seed)
    own = {"left": np.zeros((60, 80), bool), "right": np.zeros((60, 80), bool)}
    own["left"][10:30, 5:25] = True
    own["right"][30:55, 50:75] = True
    mask_folder.mkdir()
    for stem, mask in own.items():
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_folder / f"{stem}.png")
    Image.new("L", (40, 30), 255).save(mask_folder / "small.png")  # the wrong size
    recipe = Recipe(Selection("mask_file"), Action("remove", InpaintParams(engine="telea", mask_blur=0,
                                                                           color_match=False)))
    summary = run_fast(recipe, photos, tmp_path / "out", masks=mask_folder)
    rows = {row["name"]: row for row in summary.rows}
    assert {name: row["status"] for name, row in rows.items()} == \
        {"left.jpg": "done", "right.png": "done", "lonely.png": "failed", "small.jpg": "failed"}
    assert "no mask file named lonely.*" in rows["lonely.png"]["error"]
    assert "small.png" in rows["small.jpg"]["error"] and "40×30" in rows["small.jpg"]["error"]
    for stem, mask in own.items():
        name = next(n for n in rows if n.startswith(stem))
        source = np.asarray(read_image(photos / name).rgb)
        result = np.asarray(Image.open(tmp_path / "out" / f"{stem}.png").convert("RGB"))
        assert np.array_equal(result[~mask], source[~mask])  # only its own mask was edited
        assert (result[mask] != source[mask]).any()

    zipped = zip_folder(mask_folder, tmp_path / "masks.zip")
    assert set(mask_files(zipped)) == set(mask_files(mask_folder)) == {"left", "right", "small"}
    (mask_folder / "left.jpg").write_bytes((mask_folder / "left.png").read_bytes())
    with pytest.raises(BatchInputError, match="two masks for 'left'"):
        run_fast(recipe, photos, tmp_path / "out2", masks=mask_folder)


# --- models and prompts, once per batch -----------------------------------------------------------


def test_the_engine_loads_once_per_batch(five, tmp_path, monkeypatch):
    from core.config import Settings
    from core.device import detect_device
    from core.engines.opencv_inpaint import OpenCVInpaint
    from core.manager import ModelManager

    folder, full = five
    loads = []
    original = OpenCVInpaint.from_catalog.__func__

    def counting(cls, request):
        loads.append(request.name)
        return original(cls, request)

    monkeypatch.setattr(OpenCVInpaint, "from_catalog", classmethod(counting))
    summary = run(remove_recipe(), folder, tmp_path / "out", output_format="png",
                  models=BatchModels(ModelManager(Settings(device="cpu"), detect_device("cpu"))))
    assert summary.counts["done"] == 5
    assert loads == ["telea"]
    assert sorted(outputs_of(tmp_path / "out")) == sorted(outputs_of(full))


@pytest.fixture(scope="module")
def sd15(tiny_models):
    from core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"])
    engine.entry = replace(engine.entry, native_size=128)  # noise at any size; small crops keep the CPU time down
    return engine


def shared(engine) -> BatchModels:
    return BatchModels(manager_with(sd15=engine))


def test_the_prompt_is_encoded_once_per_batch(sd15, tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, 3)
    calls = []
    hook = sd15.pipe.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        after_each = []
        summary = run(inpaint_recipe(SeedPolicy("per_image", 1), prompt="a prompt only this test uses"), folder,
                      tmp_path / "out", models=shared(sd15), on_progress=lambda p: after_each.append(len(calls)))
    finally:
        hook.remove()
    assert summary.counts["done"] == 3
    assert after_each[0] > 0  # the first photo encoded the prompt (and the negative prompt)
    assert after_each == [after_each[0]] * 3  # the others reused it


def test_encoding_the_prompt_once_gives_the_same_pixels(sd15, monkeypatch):
    from core.operations.inpaint import inpaint

    photo = Image.fromarray(photo_pixels((96, 72), 2), "RGB")
    mask = disk((96, 72), (48, 36), 16)
    params = InpaintParams(prompt="a red bicycle", negative_prompt="rain", steps=2, seed=12, mask_blur=2,
                           padding=8)
    cached = inpaint(photo, mask, params, sd15)
    # The pipeline encoding the strings itself, as before the embeddings were kept.
    monkeypatch.setattr(sd15, "_prompt_embeddings",
                        lambda prompt, negative, guidance: {"prompt": prompt, "negative_prompt": negative or None})
    strings = inpaint(photo, mask, params, sd15)
    assert np.array_equal(np.asarray(cached.images[0]), np.asarray(strings.images[0]))
    other = inpaint(photo, mask, replace(params, prompt="a blue car"), sd15)
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(strings.images[0]))  # the prompt matters


def test_per_image_seeds_give_the_same_files_on_every_run(sd15, tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, 2)
    recipe = inpaint_recipe(SeedPolicy("per_image", 5))
    first = run(recipe, folder, tmp_path / "first", models=shared(sd15))
    second = run(recipe, folder, tmp_path / "second", models=shared(sd15))
    assert first.counts["done"] == second.counts["done"] == 2
    assert outputs_of(tmp_path / "first") == outputs_of(tmp_path / "second")
    seeds = [row["seeds"] for row in first.rows]
    assert seeds == [row["seeds"] for row in second.rows] and seeds[0] != seeds[1]
    other = run(replace(recipe, seed=SeedPolicy("per_image", 6)), folder, tmp_path / "other",
                models=shared(sd15))
    assert [row["seeds"] for row in other.rows] != seeds
    first_pixels = {name: np.asarray(Image.open(io.BytesIO(data)))
                    for name, data in outputs_of(tmp_path / "first").items()}
    for name, data in outputs_of(tmp_path / "other").items():
        assert not np.array_equal(np.asarray(Image.open(io.BytesIO(data))), first_pixels[name])


# --- one photo ------------------------------------------------------------------------------------


def test_process_item_turns_every_problem_with_a_photo_into_a_failed_row(tmp_path):
    from core.errors import GenerationFailed

    folder = tmp_path / "photos"
    write_photo(folder / "fine.png", (64, 48), 1)
    (folder / "broken.jpg").write_bytes(truncated_jpeg())
    (folder / "notes.png").write_text("not a photo")
    (folder / "empty.png").write_bytes(b"")
    (folder / "gone.png").write_bytes(b"soon deleted")
    items = {item.name: item for item in list_inputs(folder)}
    (folder / "gone.png").unlink()
    lie, _ = lying_zip(tmp_path / "lie.zip", declared=100)
    items["big.png"] = next(item for item in list_inputs(lie) if item.name == "big.png")
    output = tmp_path / "out"
    output.mkdir()
    recipe = remove_recipe()
    for name in ("broken.jpg", "notes.png", "empty.png", "gone.png", "big.png"):
        row = process_item(recipe, items[name], 3, output, fast())
        assert row["status"] == "failed" and name in row["error"], row
        assert row["index"] == 3 and row["outputs"] == [] and "\n" not in row["error"]

    class Failing(FakeEngine):
        def generate(self, request, progress=None, should_cancel=None):
            raise GenerationFailed("Out of memory on cpu while inpainting.")

    inpainting = inpaint_recipe(SeedPolicy("fixed", 1))
    row = process_item(inpainting, items["fine.png"], 0, output, shared(Failing()))
    assert row["status"] == "failed" and "Out of memory" in row["error"]
    row = process_item(inpainting, items["fine.png"], 0, output, BatchModels(manager_with()))  # sd15 not on disk
    assert row["status"] == "failed" and "not on this machine" in row["error"]
    mask_item = InputItem("masks/fine.jpg", "fine", "fine", folder / "broken.jpg")  # a damaged mask file
    row = process_item(Recipe(Selection("mask_file"), remove_recipe().action), items["fine.png"], 0, output,
                       fast(), mask_item)
    assert row["status"] == "failed" and "masks/fine.jpg" in row["error"]
    assert list(output.iterdir()) == []
    row = process_item(recipe, items["fine.png"], 0, output, fast())
    assert row["status"] == "done" and (output / "fine.png").exists()
    assert not [path for path in output.iterdir() if path.name.startswith(".")]  # no partial file left
    assert os.listdir(output) == ["fine.png"]


# --- output formats -----------------------------------------------------------------------------------


def blocks_of(path: Path):
    import jpeglib

    jpeg = jpeglib.read_dct(str(path))
    jpeg.load()
    return jpeg


def test_by_default_a_jpeg_stays_a_jpeg_with_only_the_edited_blocks_re_encoded(tmp_path):
    from core.batch import MANIFEST

    folder = tmp_path / "photos"
    write_photos(folder, 2)  # p00.jpg, p01.png
    write_photo(folder / "wide.jpg", (256, 192), 5)
    summary = run(remove_recipe(), folder, tmp_path / "out", models=fast())  # no format: the setting, auto
    assert summary.ok
    rows = {row["name"]: row for row in summary.rows}
    assert [rows[name]["outputs"] for name in sorted(rows)] == [["p00.jpg"], ["p01.png"], ["wide.jpg"]]
    assert manifest(tmp_path / "out")["output_format"] == "auto"
    for name in ("p00.jpg", "wide.jpg"):
        assert any("re-encoded" in note and "copied unchanged" in note for note in rows[name]["notes"])
        before, after = blocks_of(folder / name), blocks_of(tmp_path / "out" / name)
        assert np.array_equal(before.qt, after.qt)
        changed = (before.Y != after.Y).any(axis=(2, 3))  # per 8×8 luma block
        width, height = Image.open(folder / name).size
        x0, y0, x1, y1 = REGION
        # The region and its soft edge (4 px), widened to whole 16-pixel MCUs (two blocks each):
        # every block outside holds the original's coefficients.
        top, bottom = (int(y0 * height) - 4) // 16 * 2, ((int(y1 * height) + 4) // 16 + 1) * 2
        left, right = (int(x0 * width) - 4) // 16 * 2, ((int(x1 * width) + 4) // 16 + 1) * 2
        outside = np.ones_like(changed)
        outside[max(0, top):bottom, max(0, left):right] = False
        assert changed.any() and not changed[outside].any()
        assert outside.any() or name == "p00.jpg"  # a 64×48 photo is all region and edge
    assert read_params((tmp_path / "out" / "p01.png").read_bytes())["source"] == "p01.png"


@pytest.mark.parametrize("fmt, extension, pillow", [("webp", ".webp", "WEBP"), ("jpeg", ".jpg", "JPEG")])
def test_another_format_names_every_output_after_it(tmp_path, fmt, extension, pillow):
    folder = tmp_path / "photos"
    write_photos(folder, 2)
    summary = run(remove_recipe(), folder, tmp_path / "out", models=fast(), output_format=fmt, quality=80)
    assert [row["outputs"] for row in summary.rows] == [[f"p00{extension}"], [f"p01{extension}"]]
    assert all(Image.open(tmp_path / "out" / f"p0{i}{extension}").format == pillow for i in range(2))


def test_jpeg_keep_for_a_png_writes_a_png_and_says_so(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, 2)
    summary = run(remove_recipe(), folder, tmp_path / "out", models=fast(), output_format="jpeg-keep")
    rows = {row["name"]: row for row in summary.rows}
    assert rows["p00.jpg"]["outputs"] == ["p00.jpg"] and rows["p01.png"]["outputs"] == ["p01.png"]
    assert any("written as PNG" in note for note in rows["p01.png"]["notes"])


def test_a_bad_format_or_quality_is_refused_before_anything_is_written(tmp_path):
    from core.output_formats import OutputFormatError

    folder = tmp_path / "photos"
    write_photos(folder, 1)
    with pytest.raises(OutputFormatError, match="--format 'tiff'"):
        run(remove_recipe(), folder, tmp_path / "out", models=fast(), output_format="tiff")
    with pytest.raises(OutputFormatError, match="--quality 0"):
        run(remove_recipe(), folder, tmp_path / "out", models=fast(), output_format="jpeg", quality=0)
    assert not (tmp_path / "out").exists()
