"""What an edit can ask of its engine beyond a prompt: a reference image ("put this there") and an
instruction ("make it red"). Checked against the catalog's capabilities, carried to the engine in
the request, recorded (the reference's hash) and replayed from recipes, the CLI and batches."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import operations
from core.batch import BatchModels, run
from core.errors import UserError
from core.operations import Edit
from core.operations.inpaint import InpaintParams, reference_sha256
from core.recipe import Recipe, RecipeError, Selection, recipe_from_result
from tests.helpers import FakeEngine, manager_with

ROOT = Path(__file__).resolve().parent.parent


class ReferenceEngine(FakeEngine):
    """Fills with the reference image's mean colour (so the reference decides the pixels)."""

    def generate(self, request, progress=None, should_cancel=None):
        output = super().generate(request, progress, should_cancel)
        if request.reference_image is not None:
            colour = tuple(int(v) for v in np.asarray(request.reference_image).reshape(-1, 3).mean(axis=0))
            output.images = [Image.new("RGB", request.image.size, colour) for _ in request.seeds]
        return output


def photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8))


def region() -> np.ndarray:
    mask = np.zeros((96, 128), bool)
    mask[30:60, 40:90] = True
    return mask


def reference(colour=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (40, 30), colour)


def params(**changes) -> InpaintParams:
    return InpaintParams(**{"engine": "flux2_klein", "seed": 3, "steps": 2, "padding": 8, "mask_blur": 2,
                            "color_match": False, **changes})


def test_a_reference_image_reaches_the_engine_and_its_hash_is_recorded():
    engine = ReferenceEngine()
    manager = manager_with(flux2_klein=engine)
    result = operations.run(Edit("inpaint", params(), reference_image=reference()), photo(), region(), manager)
    assert engine.requests[0].reference_image is not None and engine.requests[0].mode == "fill"
    assert result.params.reference_sha256 == reference_sha256(reference())
    assert result.metadata(0)["params"]["reference_sha256"] == reference_sha256(reference())
    assert np.asarray(result.images[0])[45, 65].tolist() == [200, 30, 30]  # the reference decided the fill


def test_an_engine_without_the_capability_is_refused_naming_the_engines_that_have_it():
    manager = manager_with(sd15=FakeEngine())
    with pytest.raises(UserError, match="cannot take a reference image; use flux2_klein"):
        operations.run(Edit("inpaint", params(engine="sd15"), reference_image=reference()), photo(), region(), manager)
    with pytest.raises(UserError, match="cannot take an instruction .*; use qwen_image_edit"):
        operations.run(Edit("inpaint", params(engine="sd15", mode="instruct")), photo(), region(), manager)
    with pytest.raises(UserError, match="Mode must be one of"):
        params(mode="paint")


def test_the_instruction_mode_reaches_the_engine():
    engine = FakeEngine()
    manager = manager_with(qwen_image_edit=engine)
    edit = Edit("inpaint", params(engine="qwen_image_edit", mode="instruct", prompt="make it red"))
    operations.run(edit, photo(), region(), manager)
    assert engine.requests[0].mode == "instruct" and engine.requests[0].prompt == "make it red"


def test_a_recipe_finds_its_reference_next_to_it_checks_its_hash_and_replays_the_same_pixels(tmp_path):
    manager = manager_with(flux2_klein=ReferenceEngine())
    reference().save(tmp_path / "object.png")
    edit = Edit("inpaint", params(reference="object.png"), reference_image=reference())
    result = operations.run(edit, photo(), region(), manager)
    recipe = recipe_from_result(result, 0, Selection.from_mask(region()))
    assert recipe.action.reference_image is not None
    saved = tmp_path / "recipe.json"
    saved.write_text(recipe.to_json())
    assert json.loads(saved.read_text())["action"]["params"]["reference_sha256"] == reference_sha256(reference())

    replayed = Recipe.load(saved)
    assert replayed.action.params.reference == str((tmp_path / "object.png").resolve())
    photos = tmp_path / "photos"
    photos.mkdir()
    photo().save(photos / "a.png")
    summary = run(replayed, photos, tmp_path / "out", models=BatchModels(manager))
    assert summary.ok
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png").convert("RGB")),
                          np.asarray(result.images[0]))

    reference((10, 200, 10)).save(tmp_path / "object.png")  # the picture changed since
    with pytest.raises(RecipeError, match="not the one this edit was made with"):
        Recipe.load(saved)
    other = Recipe.load(saved, tmp_path / "object.png")  # given explicitly: used, its hash recorded
    assert other.action.params.reference_sha256 == reference_sha256(reference((10, 200, 10)))
    with pytest.raises(RecipeError, match="cannot be read"):
        Recipe.load(saved, tmp_path / "missing.png")


def test_the_command_line_takes_a_reference_and_a_mode_and_refuses_what_the_engine_cannot_do(tmp_path):
    image, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    photo().save(image)
    Image.fromarray(region().astype(np.uint8) * 255).save(mask)
    reference().save(tmp_path / "object.png")
    base = [sys.executable, "-m", "core", "inpaint", str(image), "--mask", str(mask), "--out", str(tmp_path / "o.png")]
    refused = subprocess.run([*base, "--engine", "telea", "--reference", str(tmp_path / "object.png")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2 and "cannot take a reference image; use flux2_klein" in refused.stderr
    unreadable = subprocess.run([*base, "--engine", "flux2_klein", "--reference", str(tmp_path / "nothing.png")],
                                cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert unreadable.returncode == 2 and "nothing.png" in unreadable.stderr
    instruct = subprocess.run([*base, "--engine", "sd15", "--mode", "instruct", "--prompt", "make it red"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert instruct.returncode == 2 and "use qwen_image_edit" in instruct.stderr
    help_text = subprocess.run([sys.executable, "-m", "core", "inpaint", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120, check=False).stdout
    assert "--reference" in help_text and "--mode {fill,instruct}" in help_text and "--reference-sha256" not in help_text


def test_an_uploaded_reference_is_checked_against_the_recipes_hash():
    manager = manager_with(flux2_klein=ReferenceEngine())
    result = operations.run(Edit("inpaint", params(reference="object.png"), reference_image=reference()), photo(),
                            region(), manager)
    recipe = Recipe.from_json(recipe_from_result(result, 0, Selection.from_mask(region())).to_json())
    assert recipe.action.reference_image is None  # a JSON file carries the hash, not the picture
    with pytest.raises(UserError, match="was not loaded"):
        operations.run(recipe.action, photo(), region(), manager)
    with pytest.raises(RecipeError, match="not the picture the recipe was made with"):
        recipe.attach_reference(reference((0, 0, 255)))
    attached = recipe.attach_reference(reference())
    again = operations.run(replace(attached.action, params=replace(attached.action.params, seed=3)), photo(),
                           region(), manager)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))


def test_a_flux2_klein_edit_with_a_reference_replays_bit_for_bit_from_its_recipe(tiny_modern_models, tmp_path):
    from core.catalog import BUILTIN
    from core.engines.flux import Flux2KleinEngine

    small = replace(BUILTIN.engines["flux2_klein"], native_size=64)  # the tiny pipeline, at a tiny size
    manager = manager_with(flux2_klein=Flux2KleinEngine.load(small, tiny_modern_models["flux2_klein"]))
    reference().save(tmp_path / "object.png")
    edit = Edit("inpaint", params(reference="object.png", prompt="a red box", steps=2, variants=2),
                reference_image=reference())
    result = operations.run(edit, photo(), region(), manager)
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(result.images[1]))  # variants differ
    saved = tmp_path / "recipe.json"
    saved.write_text(recipe_from_result(result, 1, Selection.from_mask(region())).to_json())
    photos = tmp_path / "photos"
    photos.mkdir()
    photo().save(photos / "a.png")
    summary = run(Recipe.load(saved), photos, tmp_path / "out", models=BatchModels(manager))
    assert summary.ok
    replayed = np.asarray(Image.open(tmp_path / "out" / "a.png").convert("RGB"))
    assert np.array_equal(replayed, np.asarray(result.images[1]))  # the chosen variant, alone, bit for bit


def test_a_ray_worker_loads_the_reference_the_recipe_names_by_its_absolute_path(tmp_path):
    pytest.importorskip("ray", reason="Ray is installed by make test (requirements-distributed.txt)")
    from core.batch_ray import ItemWorker

    manager = manager_with(flux2_klein=ReferenceEngine())
    reference().save(tmp_path / "object.png")
    result = operations.run(Edit("inpaint", params(reference="object.png"), reference_image=reference()), photo(),
                            region(), manager)
    saved = tmp_path / "recipe.json"
    saved.write_text(recipe_from_result(result, 0, Selection.from_mask(region())).to_json())
    loaded = Recipe.load(saved)  # what `batch --engine ray` hands its workers, as JSON
    worker = ItemWorker(loaded.to_json(), str(tmp_path / "out"))
    assert worker.recipe.action.reference_image is not None
    assert worker.recipe.action.params.reference_sha256 == reference_sha256(reference())
