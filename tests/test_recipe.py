"""Recipes: JSON round trips, clear validation errors, seed policies, selections and mask operations
on a photo, and replaying a saved recipe to get the interactive edit's pixels back."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import masks
from core.light import LightParams
from core.operations.inpaint import MAX_SEED, MAX_VARIANTS, InpaintParams, inpaint
from core.operations.relight import RelightParams
from core.recipe import (
    RECIPE_VERSION,
    Action,
    MaskOp,
    Recipe,
    RecipeError,
    SeedPolicy,
    Selection,
    apply_recipe,
    recipe_from_result,
    select_region,
)
from tests.helpers import SD15, FakeEngine, disk, manager_with, noise_photo

ROOT = Path(__file__).resolve().parent.parent
SIZE = (160, 120)
# The tiny diffusion models are noise whatever the size: crops at 128 px instead of 512 keep every
# generation here well under a second on a small CPU (the crop planning is the same).
TEST_RESOLUTION = 128


def rect(size, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros((size[1], size[0]), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def disk_photo(size=SIZE, seed=0) -> Image.Image:
    """Noisy grey with a saturated red disk in the middle: something GrabCut can find."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 150, (size[1], size[0], 3), dtype=np.uint8)
    pixels[disk(size, (size[0] // 2, size[1] // 2), min(size) // 4)] = (220, 30, 40)
    return Image.fromarray(pixels, "RGB")


# --- JSON ------------------------------------------------------------------------------------------

SELECTIONS = {
    "mask_file": Selection(kind="mask_file"),
    "whole": Selection(kind="whole"),
    "text": Selection(kind="text", text="the cat", top_k=2),
    "points": Selection(kind="points", points=((0.5, 0.25, 1), (0.1, 0.9, 0)), step=1, backend="sam"),
    "box": Selection(kind="box", box=(0.1, 0.2, 0.6, 0.9), backend="fastsam"),
    "mask": Selection.from_mask(rect((40, 30), (5, 5, 20, 25))),
}
LIGHT = LightParams(azimuth=200, elevation=40, intensity=1.3, color=(255, 210, 160), ambient=0.2)
ACTIONS = {
    "inpaint": Action("inpaint", InpaintParams(prompt="a bench", negative_prompt="people", steps=12, seed=3,
                                               variants=2, strength=0.9, blend="poisson", engine="sdxl")),
    "remove": Action("remove", InpaintParams(engine="telea", mask_blur=2, color_match=False)),
    "relight_iclight": Action("relight", RelightParams(prompt="sunset", steps=9, seed=4, mode="whole",
                                                       highres_scale=1.5), light=LIGHT, method="iclight"),
    "relight_shading": Action("relight", RelightParams(), light=LIGHT, method="shading"),
    "lit_fill": Action("lit_fill", InpaintParams(prompt="a lamp", strength=0.6, steps=5), light=LIGHT,
                       start="removal"),
}


@pytest.mark.parametrize("kind", SELECTIONS)
def test_every_selection_kind_survives_json(kind):
    recipe = Recipe(SELECTIONS[kind], ACTIONS["remove"], (MaskOp("grow", px=3),), SeedPolicy("per_image", 9),
                    "sel")
    text = recipe.to_json()
    back = Recipe.from_json(text)
    assert back == recipe
    assert back.selection.kind == kind
    assert json.loads(text)["version"] == RECIPE_VERSION
    assert back.to_json() == text


@pytest.mark.parametrize("name", ACTIONS)
def test_every_action_survives_json(name):
    ops = (MaskOp("grow", px=4), MaskOp("shrink", px=1), MaskOp("invert"), MaskOp("fill_holes"),
           MaskOp("remove_islands", min_area=30), MaskOp("feather", inner=2, outer=6))
    recipe = Recipe(SELECTIONS["box"], ACTIONS[name], ops, SeedPolicy("fixed", 77), name)
    data = json.loads(recipe.to_json())
    back = Recipe.from_dict(data)
    assert back == recipe
    assert type(back.action.params) is type(recipe.action.params)
    assert back.action.light == recipe.action.light
    assert [op.op for op in back.mask_ops] == [op.op for op in ops]
    # What belongs to other action types is not written.
    assert ("light" in data["action"]) == (name.startswith("relight") or name == "lit_fill")
    assert "method" not in data["action"]  # the weight-free relight is its own type, "shade"
    assert data["action"]["type"] == {"relight_iclight": "relight", "relight_shading": "shade"}.get(name, name)
    assert ("start" in data["action"]) == (name == "lit_fill")


def test_save_and_load_a_file(tmp_path):
    recipe = Recipe(SELECTIONS["text"], ACTIONS["lit_fill"], name="lamp")
    path = tmp_path / "lamp.json"
    path.write_text(recipe.to_json())
    assert Recipe.load(path) == recipe
    with pytest.raises(RecipeError, match="missing.json"):
        Recipe.load(tmp_path / "missing.json")


# --- validation ------------------------------------------------------------------------------------


def valid() -> dict:
    return json.loads(Recipe(SELECTIONS["points"], ACTIONS["inpaint"], (MaskOp("grow", px=2),)).to_json())


def lit_fill() -> dict:
    return json.loads(Recipe(SELECTIONS["whole"], ACTIONS["lit_fill"]).to_json())


def relight() -> dict:
    return json.loads(Recipe(SELECTIONS["whole"], ACTIONS["relight_iclight"]).to_json())


def changed(data: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    "base, path, value, words",
    [
        (valid, "selection.kind", "lasso", "selection.kind: unknown 'lasso'"),
        (valid, "selection.colour", "red", "selection: unknown field colour"),
        (valid, "colour", "red", "the recipe: unknown field colour"),
        (valid, "action.params.colour", "red", "action.params: unknown field colour"),
        (valid, "action.size", 3, "action: unknown field size"),
        (valid, "mask_ops.0.radius", 3, "mask_ops[0]: unknown field radius"),
        (valid, "action.params.steps", 0, "action.params: Steps must be between 1 and 150"),
        (valid, "action.params.variants", 9, "action.params: Variants must be between 1 and 8"),
        (valid, "action.params.guidance_scale", 99, "action.params: Guidance"),
        (valid, "selection.points", [[1.5, 0.5, 1]], "selection: points and box are fractions"),
        (valid, "selection.points", [[0.5, -0.1, 1]], "from 0 to 1"),
        (valid, "selection.points", [[0.5, 0.5, 0]], "selection.points: at least one include point"),
        (valid, "selection.points", [[0.5, 0.5, 2]], "selection.points: a point's label"),
        (valid, "selection.kind", "box", "selection.box: give [x0, y0, x1, y1]"),
        (valid, "selection", {"kind": "box", "box": [0.1, 0.2, 1.2, 0.9]}, "selection: points and box"),
        (valid, "selection", {"kind": "text", "text": "  "}, "selection.text: say what to select"),
        (valid, "selection", {"kind": "text", "text": "a cat", "top_k": 0}, "selection.top_k"),
        (valid, "selection", {"kind": "mask"}, "selection.mask_png: the mask is missing"),
        (valid, "mask_ops.0.op", "blur", "mask_ops: unknown operation 'blur'"),
        (valid, "mask_ops.0.px", -1, "mask_ops: grow takes sizes of 0 or more"),
        (valid, "mask_ops", {"op": "grow"}, "mask_ops: a list is expected"),
        (valid, "action.type", "paint", "action.type: unknown 'paint'"),
        (valid, "action", DELETE, "action: missing"),
        (valid, "selection", "everything", "selection: an object"),
        (valid, "seed.policy", "random", "seed.policy"),
        (valid, "seed.seed", -1, "seed.seed: a whole number"),
        (valid, "seed.seed", 1.5, "seed.seed: a whole number"),
        (valid, "version", 4, "version: this app reads recipe versions 1 to 3 (got 4)"),
        (valid, "version", DELETE, "version: this app reads recipe versions"),
        (lit_fill, "action.params.strength", 1.0,
         "action.params.strength: filling with light needs a strength below 1"),
        (lit_fill, "action.start", "blank", "action.start"),
        (lit_fill, "action.light", DELETE, "action.light: lit_fill needs the light"),
        (lit_fill, "action.light.colour", "red", "action.light: unknown field colour"),
        (relight, "action.method", "magic", "action.method"),
        (relight, "action.params.denoise", 0, "action.params: Denoise"),
        (relight, "action.params.strength", 0.5, "action.params: unknown field strength"),
        (valid, "action.type", "remove", "action.params.engine: remove cannot use 'sdxl'; use one of lama, migan, telea"),
    ],
)
def test_bad_recipes_name_the_field(base, path, value, words):
    data = changed(base(), path, value)
    with pytest.raises(RecipeError) as caught:
        Recipe.from_json(json.dumps(data), "steps.json")
    message = str(caught.value)
    assert message.startswith("steps.json: ")
    assert words in message
    assert "\n" not in message


def test_not_json_or_not_an_object_is_a_clear_error():
    with pytest.raises(RecipeError, match=r"r\.json is not valid JSON"):
        Recipe.from_json("{'version': 2", "r.json")
    with pytest.raises(RecipeError, match=r"A recipe is a JSON object"):
        Recipe.from_json("[1, 2]")


def test_a_version_1_file_from_the_result_page_reads_with_each_photos_mask_file():
    photo, region = noise_photo((200, 100)), disk((200, 100), (100, 50), 20)
    result = inpaint(photo, region, InpaintParams(prompt="a bench", steps=7, seed=40, variants=2), FakeEngine())
    # What the result page downloaded before recipes (ui/results.py): version 1 and the metadata.
    text = json.dumps({"version": 1, "app": "inpaint-studio", **result.metadata(1)})
    recipe = Recipe.from_json(text)
    assert recipe.selection.kind == "mask_file" and recipe.needs_mask_file
    assert recipe.action.operation == "inpaint"
    assert recipe.action.params == replace(result.params, seed=41, variants=1)
    assert recipe.seed == SeedPolicy("fixed", 41)

    removal = inpaint(photo, region, InpaintParams(engine="telea", seed=0), FakeEngine())
    old = {"version": 1, "app": "inpaint-studio", **removal.metadata(0)}
    assert Recipe.from_dict(old).action.operation == "remove"

    lit = {"version": 1, "app": "inpaint-studio", **result.metadata(0),
           "light": LIGHT.to_dict(), "start": "removal"}  # a fill with light saved its light too
    lit["params"]["strength"] = 0.6
    recipe = Recipe.from_dict(lit)
    assert recipe.action.operation == "lit_fill" and recipe.action.light == LIGHT and recipe.action.start == "removal"

    with pytest.raises(RecipeError, match="version 1: only inpainting"):
        Recipe.from_dict({"version": 1, "action": "relight", "light": LIGHT.to_dict()})
    with pytest.raises(RecipeError, match="params: Steps"):
        Recipe.from_dict({"version": 1, "action": "inpaint", "params": {"steps": 0}})


# --- seeds -----------------------------------------------------------------------------------------


def test_a_fixed_seed_is_the_same_for_every_photo():
    policy = SeedPolicy("fixed", 1234)
    assert {policy.seed_for(stem) for stem in ("a", "b", "IMG_0001", "")} == {1234}
    recipe = Recipe(Selection("whole"), ACTIONS["inpaint"], seed=policy)
    assert recipe.with_seed(policy.seed_for("x")).seed == 1234


def test_per_image_seeds_differ_between_photos_and_repeat_on_every_call():
    policy = SeedPolicy("per_image", 42)
    stems = [f"IMG_{i:04d}" for i in range(50)] + ["a", "a-2", "b"]
    seeds = [policy.seed_for(stem) for stem in stems]
    assert len(set(seeds)) == len(stems)
    assert seeds == [SeedPolicy("per_image", 42).seed_for(stem) for stem in stems]
    # Every variant's seed (seed + i) is still a valid seed.
    assert all(0 <= seed and seed + MAX_VARIANTS - 1 <= MAX_SEED for seed in seeds)
    # The base seed matters.
    assert SeedPolicy("per_image", 43).seed_for("a") != policy.seed_for("a")


def test_per_image_seeds_are_the_same_in_another_process():
    stems = ["a", "holiday/IMG_0001", "ß-photo"]
    code = ("import json, sys; from core.recipe import SeedPolicy; "
            "print(json.dumps([SeedPolicy('per_image', 7).seed_for(s) for s in json.loads(sys.argv[1])]))")
    # A different hash seed: a seed built on hash() would change here.
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(stems)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out) == [SeedPolicy("per_image", 7).seed_for(stem) for stem in stems]


# --- selecting the region --------------------------------------------------------------------------


def test_whole_selects_everything():
    recipe = Recipe(Selection("whole"), ACTIONS["remove"])
    mask, notes = select_region(recipe, noise_photo((30, 20)))
    assert mask.shape == (20, 30) and mask.all() and notes == []


def test_a_carried_mask_lands_in_the_same_place_on_any_size():
    made_on = (64, 48)
    original = rect(made_on, (16, 24, 32, 36))  # x 1/4..1/2, y 1/2..3/4
    selection = Selection.from_mask(original)
    assert np.array_equal(selection.mask_at(made_on), original)  # the same size: exactly the mask
    recipe = Recipe(selection, ACTIONS["remove"])
    for size in ((200, 150), (90, 200), (33, 17)):
        mask, _ = select_region(recipe, noise_photo(size))
        assert mask.dtype == bool and mask.shape == (size[1], size[0])
        ys, xs = np.nonzero(mask)
        # Where the rectangle was, give or take a pixel of either size.
        x_tolerance, y_tolerance = 1 / size[0] + 1 / made_on[0], 1 / size[1] + 1 / made_on[1]
        assert abs(xs.min() / size[0] - 0.25) <= x_tolerance
        assert abs((xs.max() + 1) / size[0] - 0.5) <= x_tolerance
        assert abs(ys.min() / size[1] - 0.5) <= y_tolerance
        assert abs((ys.max() + 1) / size[1] - 0.75) <= y_tolerance
        # Hard: one filled rectangle and nothing else (no grey, half-selected edge).
        box_area = (xs.max() + 1 - xs.min()) * (ys.max() + 1 - ys.min())
        assert mask.sum() == box_area


def test_a_carried_mask_that_is_not_a_png_is_a_clear_error():
    recipe = Recipe(Selection(kind="mask", mask_png="bm90IGEgcG5n"), ACTIONS["remove"])
    with pytest.raises(RecipeError, match="selection.mask_png: not a base64 PNG"):
        select_region(recipe, noise_photo((20, 20)))


def test_each_photos_own_mask_file():
    recipe = Recipe(Selection("mask_file"), ACTIONS["remove"])
    own = rect((40, 30), (3, 4, 10, 12))
    mask, _ = select_region(recipe, noise_photo((40, 30)), mask_file=own)
    assert np.array_equal(mask, own)
    with pytest.raises(RecipeError, match="No mask file for this photo"):
        select_region(recipe, noise_photo((40, 30)))
    with pytest.raises(RecipeError, match="Nothing was selected"):
        select_region(recipe, noise_photo((40, 30)), mask_file=np.zeros((30, 40), bool))


@pytest.fixture
def no_models(tmp_path):
    """The selection service as the command line builds it, on a machine without any model."""
    from core.config import Settings
    from core.device import detect_device
    from core.manager import ModelManager
    from core.segmenter import Segmenter

    missing = {role: str(tmp_path / f"no-{role}") for role in ("fastsam", "fastsam_x", "clip", "sam")}
    return Segmenter(ModelManager(Settings(device="cpu", models_dir=tmp_path / "no-models", models=missing),
                                  detect_device("cpu")))


def test_box_and_clicks_fall_back_to_grabcut_without_models(no_models):
    photo = disk_photo()
    subject = disk(SIZE, (SIZE[0] // 2, SIZE[1] // 2), min(SIZE) // 4)
    for selection in (Selection(kind="box", box=(0.2, 0.1, 0.8, 0.9)),
                      Selection(kind="points", points=((0.5, 0.5, 1),))):
        mask, notes = select_region(Recipe(selection, ACTIONS["remove"]), photo, segmenter=no_models)
        iou = (mask & subject).sum() / (mask | subject).sum()
        assert iou > 0.7, (selection.kind, iou)
        assert any("Used GrabCut instead" in note for note in notes)
        assert any("not on this machine" in note for note in notes)  # why: the model is missing
    box_mask, _ = select_region(Recipe(Selection(kind="box", box=(0.2, 0.1, 0.8, 0.9)), ACTIONS["remove"]), photo,
                                segmenter=no_models)
    outside = np.ones_like(box_mask)
    outside[12:108, 32:128] = False
    assert not (box_mask & outside).any()  # nothing outside the box


def test_text_needs_its_models_and_says_so(no_models):
    from core.segmenter import Segmenter

    recipe = Recipe(Selection(kind="text", text="the red ball"), ACTIONS["remove"])
    with pytest.raises(RecipeError, match="needs the selection models"):
        select_region(recipe, disk_photo())
    for segmenter in (no_models, Segmenter(manager_with())):  # nothing adopted, nothing on disk
        with pytest.raises(RecipeError, match="Selecting by text needs CLIP"):
            select_region(recipe, disk_photo(), segmenter=segmenter)


def test_mask_operations_run_in_order():
    size = (100, 80)
    body = rect(size, (20, 20, 60, 60))
    body[35:45, 35:45] = False  # a hole
    island = rect(size, (80, 10, 83, 13))  # 9 px
    selection = Selection.from_mask(body | island)
    photo = noise_photo(size)

    def selected(*ops: MaskOp) -> np.ndarray:
        return select_region(Recipe(selection, ACTIONS["remove"], ops), photo)[0]

    start = selected()
    assert np.array_equal(start, body | island)
    grown = selected(MaskOp("grow", px=3))
    assert (grown & ~start).any() and not (start & ~grown).any()
    assert grown[20 - 3, 40] and not grown[20 - 5, 40]  # 3 px beyond the top edge, not 5
    shrunk = selected(MaskOp("shrink", px=2))
    assert not (shrunk & ~start).any() and shrunk[30, 30] and not shrunk[20, 40] and not island[shrunk].any()
    assert np.array_equal(selected(MaskOp("invert")), ~start)
    assert np.array_equal(selected(MaskOp("invert"), MaskOp("invert")), start)
    filled = selected(MaskOp("fill_holes"))
    assert filled[40, 40] and np.array_equal(filled & ~rect(size, (35, 35, 45, 45)), start)
    no_islands = selected(MaskOp("remove_islands", min_area=20))
    assert np.array_equal(no_islands, body)
    everything = selected(MaskOp("remove_islands", min_area=20), MaskOp("fill_holes"), MaskOp("grow", px=1))
    assert np.array_equal(everything, masks.grow(rect(size, (20, 20, 60, 60)), 1))
    # The order matters: growing first makes the island big enough to stay.
    assert selected(MaskOp("grow", px=2), MaskOp("remove_islands", min_area=20))[11, 81]
    assert np.array_equal(selected(MaskOp("feather", inner=3, outer=9)), start)  # a soft edge, not a mask change
    with pytest.raises(RecipeError, match="Nothing was selected"):
        select_region(Recipe(Selection("whole"), ACTIONS["remove"], (MaskOp("invert"),)), photo)


class RecordingEngine(FakeEngine):
    name = "sd15"


def test_feather_sets_the_soft_edge_of_the_edit():
    photo = noise_photo((120, 90))
    region = disk((120, 90), (60, 45), 15)
    engine = RecordingEngine()
    manager = manager_with(sd15=engine)
    base = Recipe(Selection.from_mask(region), Action("inpaint", InpaintParams(mask_blur=0, color_match=False)))
    hard = apply_recipe(base, photo, stem="p", manager=manager)
    soft = apply_recipe(replace(base, mask_ops=(MaskOp("feather", inner=2, outer=7),)), photo, stem="p",
                        manager=manager)
    assert soft.metadata[0]["params"]["mask_blur"] == 7 and soft.metadata[0]["params"]["mask_blur_inside"] == 2
    assert hard.metadata[0]["params"]["mask_blur"] == 0
    original, hard_px, soft_px = (np.asarray(image).astype(int)
                                  for image in (photo, hard.images[0], soft.images[0]))
    ring = masks.grow(region, 7) & ~region
    assert np.array_equal(hard_px[ring], original[ring])  # a hard edge changes nothing outside
    assert (soft_px[ring] != original[ring]).any()  # the soft edge reaches outside
    beyond = ~masks.grow(region, 7)
    assert np.array_equal(soft_px[beyond], original[beyond])  # but no further than 7 px
    assert np.array_equal(soft.mask, region)

    relight_recipe = Recipe(Selection.from_mask(region), Action("relight", RelightParams(mask_blur=4), light=LIGHT),
                            (MaskOp("feather", outer=11),))
    from core.recipe import _action_params

    assert _action_params(relight_recipe, 5).mask_blur == 11 and _action_params(relight_recipe, 5).seed == 5


def test_a_photo_that_is_not_rgb_is_refused():
    recipe = Recipe(Selection("whole"), ACTIONS["remove"])
    with pytest.raises(RecipeError, match="must be RGB"):
        apply_recipe(recipe, Image.new("L", (10, 10)), stem="g", manager=manager_with())


# --- replay: a recipe saved from an edit gives the edit's pixels back ------------------------------


@pytest.fixture(scope="module")
def sd15(tiny_models):
    from core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"])
    engine.entry = replace(engine.entry, native_size=TEST_RESOLUTION)
    return engine


@pytest.fixture(scope="module")
def iclight(tiny_models):
    from core.engines.iclight import ICLightEngine

    engine = ICLightEngine.load(tiny_models["iclight_base"], tiny_models["iclight"])
    engine.entry = replace(engine.entry, native_size=TEST_RESOLUTION)
    return engine


REPLAY_SIZE = (128, 96)


def replay(result, index: int, mask: np.ndarray, photo: Image.Image, manager, tmp_path: Path, stem="p"):
    """Save variant ``index`` of ``result`` as a recipe file, load it, apply it to ``photo``."""
    path = tmp_path / f"recipe-{index}.json"
    path.write_text(recipe_from_result(result, index, Selection.from_mask(mask), name="replay").to_json())
    recipe = Recipe.load(path)
    assert recipe.seed == SeedPolicy("fixed", result.seeds[index])
    return recipe, apply_recipe(recipe, photo, stem=stem, manager=manager)


def assert_replayed(applied, result, index: int, photo: Image.Image, mask: np.ndarray, edge: int):
    assert applied.seeds == [result.seeds[index]]
    assert applied.metadata[0]["params"] == result.metadata(index)["params"]
    out = np.asarray(applied.images[0]).astype(int)
    want = np.asarray(result.images[index]).astype(int)
    others = [np.asarray(image).astype(int) for i, image in enumerate(result.images) if i != index]
    beyond = ~masks.grow(mask, edge)
    assert np.array_equal(out[beyond], np.asarray(photo).astype(int)[beyond])
    assert np.array_equal(out, want)  # every variant is its own pipeline call: bit for bit
    for other in others:  # the tiny models' variants are far apart, so the seed really was replayed
        assert np.abs(out - other).mean() > 0.5


def test_replaying_an_inpaint_gives_its_pixels(sd15, tmp_path):
    photo = noise_photo(REPLAY_SIZE, seed=3)
    region = disk(REPLAY_SIZE, (60, 50), 18)
    manager = manager_with(sd15=sd15)
    params = InpaintParams(prompt="a bench", negative_prompt="blurry", steps=2, seed=21, variants=2, mask_blur=4,
                           padding=8)
    result = inpaint(photo, region, params, sd15)
    for index in (0, 1):
        recipe, applied = replay(result, index, region, photo, manager, tmp_path)
        assert recipe.action.operation == "inpaint" and recipe.action.params.variants == 1
        assert_replayed(applied, result, index, photo, region, edge=4)
        assert applied.metadata[0]["recipe"] == "replay"
    # One variant, as the page makes by default: every pixel the same.
    single = inpaint(photo, region, replace(params, seed=99, variants=1), sd15)
    _, applied = replay(single, 0, region, photo, manager, tmp_path)
    assert np.array_equal(np.asarray(applied.images[0]), np.asarray(single.images[0]))


def test_replaying_an_inverted_removal_gives_its_pixels(tmp_path):
    from core.engines.opencv_inpaint import OpenCVInpaint

    photo = noise_photo(REPLAY_SIZE, seed=5)
    subject = disk(REPLAY_SIZE, (64, 48), 30)
    result = inpaint(photo, subject, InpaintParams(engine="telea", seed=0, invert_mask=True, mask_blur=3),
                     OpenCVInpaint("telea"))
    recipe, applied = replay(result, 0, subject, photo, manager_with(), tmp_path)
    assert recipe.action.operation == "remove" and recipe.action.params.invert_mask
    assert np.array_equal(np.asarray(applied.images[0]), np.asarray(result.images[0]))
    kept = masks.shrink(subject, 3)  # the soft edge of the inverted mask reaches 3 px into the subject
    assert np.array_equal(np.asarray(applied.images[0])[kept], np.asarray(photo)[kept])


def test_replaying_a_fill_with_light_gives_its_pixels(sd15, tmp_path):
    from core.operations.lit_fill import light_aware_inpaint

    photo = noise_photo(REPLAY_SIZE, seed=4)
    region = disk(REPLAY_SIZE, (70, 40), 16)
    manager = manager_with(sd15=sd15)
    params = InpaintParams(prompt="a lamp", steps=3, seed=8, variants=2, strength=0.6, mask_blur=3, padding=8)
    result = light_aware_inpaint(photo, region, LIGHT, params, sd15, start="removal")
    for index in (0, 1):
        recipe, applied = replay(result, index, region, photo, manager, tmp_path)
        assert recipe.action.operation == "lit_fill" and recipe.action.start == "removal"
        assert recipe.action.light == LIGHT
        assert_replayed(applied, result, index, photo, region, edge=3)
        assert applied.metadata[0]["light"] == LIGHT.to_dict() and applied.metadata[0]["start"] == "removal"
    single = light_aware_inpaint(photo, region, LIGHT, replace(params, seed=50, variants=1), sd15, start="current")
    recipe, applied = replay(single, 0, region, photo, manager, tmp_path)
    assert recipe.action.start == "current"
    assert_replayed(applied, single, 0, photo, region, edge=3)


def test_replaying_a_shading_relight_gives_its_pixels(tmp_path):
    from core.operations.shade import relight_by_shading

    photo = noise_photo(REPLAY_SIZE, seed=6)
    subject = disk(REPLAY_SIZE, (64, 48), 25)
    result = relight_by_shading(np.asarray(photo), subject, LIGHT)
    manager = manager_with()  # no model is needed: none may be loaded

    def no_load(name):
        raise AssertionError(f"shading loaded a model: {name}")

    manager.load = no_load  # type: ignore[method-assign]
    recipe, applied = replay(result, 0, subject, photo, manager, tmp_path)
    assert recipe.action.operation == "shade" and recipe.action.engine is None
    assert np.array_equal(np.asarray(applied.images[0]), np.asarray(result.images[0]))
    assert not np.array_equal(np.asarray(applied.images[0]), np.asarray(photo))


def test_replaying_an_iclight_relight_gives_its_pixels(iclight, tmp_path):
    from core.operations.relight import relight

    photo = noise_photo(REPLAY_SIZE, seed=7)
    subject = disk(REPLAY_SIZE, (64, 48), 25)
    manager = manager_with(iclight=iclight)
    params = RelightParams(prompt="warm sunlight", steps=3, seed=5, variants=2, mask_blur=4, padding=8)
    result = relight(np.asarray(photo), subject, LIGHT, params, iclight)
    for index in (0, 1):
        recipe, applied = replay(result, index, subject, photo, manager, tmp_path)
        assert recipe.action.operation == "relight" and recipe.action.engine == "iclight"
        assert recipe.action.params == replace(result.params, seed=result.seeds[index], variants=1)
        assert_replayed(applied, result, index, photo, subject, edge=4)
    single = relight(np.asarray(photo), subject, LIGHT, replace(params, seed=31, variants=1), iclight)
    _, applied = replay(single, 0, subject, photo, manager, tmp_path)
    assert_replayed(applied, single, 0, photo, subject, edge=4)


def test_describe_says_what_the_recipe_does_in_one_line():
    recipe = Recipe(Selection(kind="text", text="the cat"), Action("inpaint", InpaintParams(prompt="a bench")),
                    (MaskOp("grow", px=4), MaskOp("fill_holes")), SeedPolicy("per_image", 7), name="benches")
    line = recipe.describe()
    assert line.startswith("**benches**") and "\n" not in line
    for words in ("the object named by a text prompt", "grow, fill holes", "“a bench”", "a seed per photo", "base 7"):
        assert words in line
    assert "seed 3" in Recipe(Selection(kind="whole"), Action("remove", InpaintParams(engine="telea")),
                              seed=SeedPolicy("fixed", 3)).describe()
