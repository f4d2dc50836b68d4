"""Extending the canvas: geometry, the pre-fill, the crops along the border, the kept photo, seeds,
recipes and batch, and the outpaint command."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from core import masks, operations
from core.batch import BatchModels, run
from core.canvas import ANCHORS, ASPECTS, Canvas, CanvasError, extend_by, extend_to, fit_alpha, plan_tiles, prefill
from core.catalog import BUILTIN
from core.cli import EXIT_BAD_INPUT, EXIT_OK, main
from core.engines.base import Cancelled, InpaintError
from core.engines.opencv_inpaint import OpenCVInpaint
from core.errors import UserError
from core.images import read_params
from core.operations import OPERATIONS, Edit
from core.operations.inpaint import InpaintParams
from core.operations.outpaint import OutpaintParams, OutpaintResult, outpaint, tile_seed
from core.recipe import Recipe, RecipeError, SeedPolicy, Selection, apply_recipe, recipe_from_result
from tests.helpers import FakeEngine, manager_with, write_photos

SIZE = (64, 48)


def photo(size=SIZE, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def small_fake(native: int = 64) -> FakeEngine:
    engine = FakeEngine()
    engine.native_resolution = native
    return engine


def telea(native: int = 128) -> OpenCVInpaint:
    return OpenCVInpaint(replace(BUILTIN.engines["telea"], native_size=native))


# --- geometry ---------------------------------------------------------------------------------------


def test_extend_by_pixels_places_the_photo_at_the_offset():
    canvas = extend_by((64, 48), left=7, right=30, top=5, bottom=0)
    assert canvas.size == (101, 53) and canvas.offset == (7, 5) and canvas.photo_box == (7, 5, 71, 53)
    border = canvas.border_mask()
    assert border.shape == (53, 101) and not border[5:53, 7:71].any()
    assert border.sum() == 101 * 53 - 64 * 48


@pytest.mark.parametrize("aspect", list(ASPECTS))
@pytest.mark.parametrize("size", [(64, 48), (47, 63), (33, 33), (101, 7)])
def test_extend_to_an_aspect_gives_that_ratio_along_one_axis(aspect, size):
    ratio_w, ratio_h = ASPECTS[aspect]
    if size[0] * ratio_h == size[1] * ratio_w:
        with pytest.raises(CanvasError, match="already"):
            extend_to(size, aspect)
        return
    canvas = extend_to(size, aspect)
    width, height = canvas.size
    assert width >= size[0] and height >= size[1] and (width == size[0] or height == size[1])
    # The smallest whole-pixel canvas of the ratio: one pixel less would fall short of it.
    if width > size[0]:
        assert width * ratio_h >= height * ratio_w > (width - 1) * ratio_h
    else:
        assert height * ratio_w >= width * ratio_h > (height - 1) * ratio_w


def test_the_anchor_says_where_the_photo_sits():
    wide = {anchor: extend_to((40, 40), "16:9", anchor) for anchor in ANCHORS}  # adds width: 72×40
    assert all(canvas.size == (72, 40) for canvas in wide.values())
    assert wide["centre"].offset == (16, 0) and wide["top"].offset == (16, 0)  # an odd split: 16 + 16
    assert wide["left"].offset == (0, 0) and wide["top-left"].offset == (0, 0)
    assert wide["right"].offset == (32, 0) and wide["bottom-right"].offset == (32, 0)
    tall = extend_to((40, 41), "9:16", "centre")  # adds height: 40×72, 31 px split 15 / 16
    assert tall.size == (40, 72) and (tall.top, tall.bottom) == (15, 16)
    assert extend_to((40, 41), "9:16", "bottom-left").offset == (0, 31)


def test_bad_extensions_say_what_to_do():
    with pytest.raises(CanvasError, match="Nothing to extend"):
        extend_by((64, 48))
    with pytest.raises(CanvasError, match="0 or more"):
        extend_by((64, 48), left=-3)
    with pytest.raises(CanvasError, match="not offered; use one of 1:1"):
        extend_to((64, 48), "5:4")
    with pytest.raises(CanvasError, match="Anchor"):
        extend_to((64, 48), "16:9", "middle")
    with pytest.raises(CanvasError, match="most is"):
        extend_by((64, 48), right=20000)
    with pytest.raises(InpaintError, match="Nothing to extend"):
        OutpaintParams()
    with pytest.raises(InpaintError, match="not both"):
        OutpaintParams(left=8, aspect="16:9")
    with pytest.raises(UserError, match="Left must be between 0"):
        OutpaintParams(left=-1)
    assert isinstance(CanvasError("x"), UserError)


# --- the pre-fill -----------------------------------------------------------------------------------


def test_the_prefill_fills_every_border_pixel_and_keeps_the_photo():
    image = np.asarray(photo())
    canvas = extend_by(SIZE, left=40, right=3, top=30, bottom=9)
    blank = np.zeros_like(canvas.place(image))
    filled = prefill(image, canvas)
    x0, y0, x1, y1 = canvas.photo_box
    assert np.array_equal(filled[y0:y1, x0:x1], image)
    # No holes: a photo with no black pixel gives a border with no black pixel either.
    bright = np.clip(image, 20, 255).astype(np.uint8)
    border = canvas.border_mask()
    assert (prefill(bright, canvas)[border] > 0).any(axis=-1).all()
    assert not np.array_equal(filled, blank)
    # Far from the photo it is smooth: the blur leaves far less contrast than the noise photo has.
    assert filled[:20, :30].std() < image.std() / 3


def test_the_prefill_of_a_large_canvas_works_at_a_reduced_size_and_keeps_the_photo():
    image = np.asarray(photo((1200, 300)))
    canvas = extend_to((1200, 300), "1:1", "top")
    filled = prefill(image, canvas)
    assert filled.shape == (1200, 1200, 3)
    assert np.array_equal(filled[:300], image)
    assert filled[300:].std() < image.std() / 3  # smooth, from the edge's colours


# --- the crops along the border ---------------------------------------------------------------------


@pytest.mark.parametrize("extension", [
    {"left": 700, "right": 5, "top": 300, "bottom": 1},
    {"right": 1500},
    {"top": 90, "bottom": 90},
])
def test_crops_cover_the_whole_border_overlap_and_start_next_to_the_photo(extension):
    canvas = extend_by((900, 500), **extension)
    border = canvas.border_mask()
    tiles = plan_tiles(canvas, border, tile=256, overlap=48)
    covered = np.zeros_like(border)
    for x0, y0, x1, y1 in tiles:
        assert x1 - x0 <= 256 and y1 - y0 <= 256
        assert border[y0:y1, x0:x1].any()
        covered[y0:y1, x0:x1] = True
    assert covered[border].all()
    px0, py0, px1, py1 = canvas.photo_box
    # The first crop reaches into the photo; each later one overlaps one before it or the photo.
    first = tiles[0]
    assert first[0] < px1 and first[2] > px0 and first[1] < py1 and first[3] > py0
    for number, (x0, y0, x1, y1) in enumerate(tiles[1:], 1):
        earlier = [(a, b, c, d) for a, b, c, d in tiles[:number]] + [canvas.photo_box]
        overlaps = [min(x1, c) - max(x0, a) >= 48 and min(y1, d) - max(y0, b) > 0 or
                    min(y1, d) - max(y0, b) >= 48 and min(x1, c) - max(x0, a) > 0 for a, b, c, d in earlier]
        assert any(overlaps), (number, tiles[number])


def test_a_small_canvas_is_one_crop():
    canvas = extend_by(SIZE, right=30)
    assert plan_tiles(canvas, canvas.border_mask(), tile=512, overlap=64) == [(0, 0, 94, 48)]


# --- the edit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("feather", [0, 6])
def test_the_photo_stays_bit_identical_at_its_offset_beyond_the_feather(feather):
    image = photo()
    params = OutpaintParams(engine="fake", left=50, top=3, bottom=20, mask_blur=feather, seed=7, variants=2)
    result = outpaint(image, params, small_fake(64))
    canvas = result.canvas
    assert canvas.size == (114, 71) and all(out.size == canvas.size for out in result.images)
    kept = ~masks.grow(canvas.border_mask(), feather)  # photo pixels beyond the feather
    placed = canvas.place(np.asarray(image))
    changed_inside = False
    for out in result.images:
        out = np.asarray(out)
        assert np.array_equal(out[kept], placed[kept])
        assert not np.array_equal(out[canvas.border_mask()], prefill(np.asarray(image), canvas)[canvas.border_mask()])
        band = masks.grow(canvas.border_mask(), feather) & ~canvas.border_mask()
        changed_inside |= bool(band.any()) and not np.array_equal(out[band], placed[band])
    assert changed_inside == (feather > 0)  # the seam is feathered into the photo, only by the setting


def test_each_variant_has_its_seed_and_each_crop_a_seed_derived_from_it():
    engine = small_fake(64)
    params = OutpaintParams(engine="fake", right=100, seed=40, variants=2, steps=1)
    result = outpaint(photo(), params, engine)
    assert result.seeds == [40, 41] and result.params.seed == 40
    tiles = len(result.crops)
    assert tiles > 1
    seeds = [request.seeds for request in engine.requests]
    assert all(len(s) == 1 for s in seeds) and len(seeds) == 2 * tiles
    first, second = [s[0] for s in seeds[:tiles]], [s[0] for s in seeds[tiles:]]
    assert first == [tile_seed(40, i) for i in range(tiles)] and first[0] == 40
    assert second[0] == 41 and len(set(first + second)) == 2 * tiles  # no crop repeats another's noise
    assert result.metadata(1)["params"]["seed"] == 41 and result.metadata(1)["action"] == "outpaint"
    assert result.metadata(0)["canvas"] == {"source": [64, 48], "size": [164, 48], "offset": [0, 0]}


def test_a_replayed_variant_gives_the_same_pixels():
    params = OutpaintParams(engine="telea", aspect="1:1", anchor="bottom", seed=3, variants=2, mask_blur=4)
    both = outpaint(photo(), params, telea(64))
    second = outpaint(photo(), replace(params, seed=4, variants=1), telea(64))
    assert np.array_equal(np.asarray(both.images[1]), np.asarray(second.images[0]))


def test_progress_counts_every_crop_of_every_variant_and_cancel_stops():
    seen = []
    params = OutpaintParams(engine="fake", right=100, steps=3, variants=2, seed=1)
    result = outpaint(photo(), params, small_fake(64), progress=lambda done, total: seen.append((done, total)))
    total = 2 * len(result.crops) * 3
    assert seen[-1] == (total, total) and all(t == total for _, t in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    with pytest.raises(Cancelled):
        outpaint(photo(), params, small_fake(64), should_cancel=lambda: True)


def test_without_diffusion_the_fill_is_labelled_as_what_it_is():
    image = photo()
    params = OutpaintParams(engine="telea", right=60, top=30, seed=1, mask_blur=6)
    result = outpaint(image, params, telea())
    assert result.images[0].size == (124, 78)
    assert any("nothing new was generated" in note and "extended outward and blurred" in note
               for note in result.notes)
    # The border beyond the seam is the pre-fill itself; the seam is blended by OpenCV, the photo kept.
    canvas = result.canvas
    out, first = np.asarray(result.images[0]), prefill(np.asarray(image), canvas)
    seam = masks.grow(~canvas.border_mask(), 8 + 6)  # the blended band (8 px) and its soft edge (6 px)
    assert np.array_equal(out[~seam], first[~seam])
    assert not np.array_equal(out[seam & canvas.border_mask()], first[seam & canvas.border_mask()])
    kept = ~masks.grow(canvas.border_mask(), 6)
    assert np.array_equal(out[kept], canvas.place(np.asarray(image))[kept])


def test_the_registry_runs_it_without_a_mask_on_any_fitting_engine():
    op = OPERATIONS["outpaint"]
    assert op.params is OutpaintParams and not op.takes_mask and "diffusion" in op.engine_kinds
    edit = Edit("outpaint", OutpaintParams(engine="telea", top=10, seed=0))
    result = operations.run(edit, photo(), None, manager_with(telea=telea()))
    assert isinstance(result, OutpaintResult) and result.images[0].size == (64, 58)
    with pytest.raises(UserError, match="takes OutpaintParams"):
        Edit("outpaint", InpaintParams())
    with pytest.raises(UserError, match="takes InpaintParams"):
        Edit("inpaint", OutpaintParams(top=10))


def test_a_result_on_a_larger_canvas_keeps_the_photos_alpha_in_place():
    canvas = Canvas(4, 3, left=2, top=1)
    alpha = Image.fromarray(np.full((3, 4), 7, np.uint8), "L")
    placed = np.asarray(fit_alpha(alpha, canvas))
    assert placed.shape == (4, 6) and (placed[1:, 2:] == 7).all() and placed[0].min() == 255
    assert fit_alpha(alpha, None) is alpha and fit_alpha(None, canvas) is None


# --- recipes and batch --------------------------------------------------------------------------------


def test_an_outpaint_recipe_round_trips_and_needs_no_selection_or_mask():
    result = outpaint(photo(), OutpaintParams(engine="telea", aspect="16:9", seed=5, variants=2), telea(64))
    recipe = recipe_from_result(result, 1, Selection(kind="mask_file"), name="wide")
    assert recipe.action.operation == "outpaint" and recipe.seed == SeedPolicy("fixed", 6)
    assert recipe.selection.kind == "whole" and not recipe.needs_mask_file and not recipe.needs_segmenter
    again = Recipe.from_json(recipe.to_json())
    assert again == recipe and again.action.params.aspect == "16:9"
    assert "extend the canvas to 16:9" in again.describe()
    data = json.loads(recipe.to_json())
    del data["selection"]  # an outpaint recipe may leave it out
    assert Recipe.from_dict(data) == recipe
    with pytest.raises(RecipeError, match="Left must be a whole number"):
        Recipe.from_dict({**data, "action": {"type": "outpaint", "params": {"left": "wide"}}})
    with pytest.raises(RecipeError, match="Nothing to extend"):
        Recipe.from_dict({**data, "action": {"type": "outpaint", "params": {}}})
    # Replayed on the photo it was made on: the chosen variant, pixel for pixel.
    applied = apply_recipe(again, photo(), stem="photo", manager=manager_with(telea=telea(64)))
    assert np.array_equal(np.asarray(applied.images[0]), np.asarray(result.images[1]))
    assert applied.canvas == result.canvas and applied.mask.shape == (48, 86)


def test_a_batch_extends_photos_of_several_sizes_without_masks(tmp_path):
    write_photos(tmp_path / "in", 3)
    params = OutpaintParams(engine="telea", aspect="1:1", anchor="left", mask_blur=4)
    recipe = Recipe(Selection(kind="whole"), Edit("outpaint", params), seed=SeedPolicy("per_image", 1))
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "p00.png").write_bytes(b"not a mask")  # a masks folder is not read for it
    summary = run(recipe, tmp_path / "in", tmp_path / "out", masks=tmp_path / "masks", output_format="png",
                  models=BatchModels(manager_with(telea=telea(64))))
    assert summary.ok and summary.counts["done"] == 3
    for row in summary.rows:
        source = Image.open(next((tmp_path / "in").glob(row["stem"] + ".*")))
        out = Image.open(tmp_path / "out" / row["outputs"][0])
        side = max(source.size)
        assert out.size == (side, side)
        assert read_params((tmp_path / "out" / row["outputs"][0]).read_bytes())["action"] == "outpaint"


# --- the command line -----------------------------------------------------------------------------------


@pytest.fixture
def photo_file(tmp_path):
    path = tmp_path / "photo.png"
    photo().save(path)
    return path


def test_the_command_extends_by_pixels_and_writes_each_variant(photo_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(OpenCVInpaint, "native_resolution", property(lambda self: 64))
    out = tmp_path / "out" / "wide.png"
    code = main(["outpaint", str(photo_file), "--left", "10", "--right", "20", "--bottom", "6", "--engine", "telea",
                 "--variants", "2", "--seed", "9", "--feather", "4", "--out", str(out)])
    assert code == EXIT_OK
    printed = capsys.readouterr()
    for path, seed in ((out, 9), (out.with_name("wide-2.png"), 10)):
        image = Image.open(path)
        assert image.size == (94, 54)
        assert np.array_equal(np.asarray(image.convert("RGB"))[:42, 14:60], np.asarray(photo())[:42, 4:50])
        assert read_params(path.read_bytes())["params"]["seed"] == seed
    assert "seed 9" in printed.out and "94×54" in printed.out and "No diffusion model was used" in printed.err


def test_the_command_extends_to_an_aspect_ratio(photo_file, tmp_path, monkeypatch):
    monkeypatch.setattr(OpenCVInpaint, "native_resolution", property(lambda self: 64))
    out = tmp_path / "tall.jpg"
    assert main(["outpaint", str(photo_file), "--aspect", "9:16", "--anchor", "top", "--engine", "telea",
                 "--out", str(out)]) == EXIT_OK
    assert Image.open(out).size == (64, 114) and Image.open(out).format == "JPEG"


@pytest.mark.parametrize("arguments, message", [
    ([], "Nothing to extend"),
    (["--aspect", "5:4"], "not offered; use one of 1:1"),
    (["--aspect", "4:3"], "already 4:3"),
    (["--left", "8", "--aspect", "16:9"], "not both"),
    (["--left", "-8"], "Left must be between 0"),
])
def test_bad_input_exits_2_with_one_clear_line(photo_file, tmp_path, capsys, arguments, message):
    code = main(["outpaint", str(photo_file), "--engine", "telea", "--out", str(tmp_path / "o.png"), *arguments])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("error: ")
    assert not (tmp_path / "o.png").exists()


def test_a_missing_photo_or_a_bad_output_name_exits_2(tmp_path, photo_file, capsys):
    assert main(["outpaint", str(tmp_path / "none.png"), "--left", "4", "--out", str(tmp_path / "o.png")]) == 2
    assert main(["outpaint", str(photo_file), "--left", "4", "--out", str(tmp_path / "o.gif")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and ".png, .jpg or .webp" in err


@pytest.mark.slow
@pytest.mark.ray
def test_ray_runs_an_outpaint_recipe_as_the_local_runner_does(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-distributed.txt")
    from core.batch_ray import run_ray

    write_photos(tmp_path / "in", 2)
    for key in [key for key in os.environ if key.startswith("INPAINT_STUDIO_MODEL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("INPAINT_STUDIO_DEVICE", "cpu")
    params = OutpaintParams(engine="telea", aspect="16:9", mask_blur=4)
    recipe = Recipe(Selection(kind="whole"), Edit("outpaint", params), seed=SeedPolicy("per_image", 3))
    on_ray = run_ray(recipe, tmp_path / "in", tmp_path / "ray", num_cpus=2, workers=1, cpus_per_worker=1)
    local = run(recipe, tmp_path / "in", tmp_path / "local", models=BatchModels.own())
    assert on_ray.ok and local.ok and on_ray.counts["done"] == 2
    for row in local.rows:
        name = row["outputs"][0]
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_the_tiny_sd15_extends_across_crops_and_a_variant_replays_from_its_seed(tiny_models):
    from core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine.load(replace(BUILTIN.engines["sd15"], native_size=64), tiny_models["sd15_inpaint"])
    params = OutpaintParams(engine="sd15", prompt="a meadow", right=40, steps=1, strength=1.0, seed=5, variants=2,
                            mask_blur=4)
    both = outpaint(photo(), params, engine)
    assert len(both.crops) == 2 and both.seeds == [5, 6]
    again = outpaint(photo(), replace(params, seed=6, variants=1), engine)
    assert np.array_equal(np.asarray(both.images[1]), np.asarray(again.images[0]))
    assert not np.array_equal(np.asarray(both.images[0]), np.asarray(both.images[1]))
    canvas = both.canvas
    kept = ~masks.grow(canvas.border_mask(), 4)
    for image in both.images:
        assert image.size == (104, 48)
        assert np.array_equal(np.asarray(image)[kept], canvas.place(np.asarray(photo()))[kept])
