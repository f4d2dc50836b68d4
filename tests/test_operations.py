"""The operation registry and the model manager as callers see them: one dispatch for every edit,
unknown engines refused where a recipe is read, work counted as running while it runs, and one
error base caught once by the command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from core import operations
from core.batch import BatchModels, run
from core.catalog import BUILTIN
from core.cli import EXIT_BAD_INPUT
from core.errors import ModelUnavailable, UserError
from core.light import LightParams
from core.operations import OPERATIONS, Edit
from core.operations.inpaint import InpaintParams
from core.operations.relight import RelightParams
from core.recipe import Recipe, RecipeError, Selection
from tests.conftest import ROOT
from tests.helpers import FakeEngine, manager_with


def recipe_json(engine: str) -> str:
    recipe = Recipe(Selection(kind="whole"), Edit("remove", InpaintParams(engine="telea")))
    data = recipe.to_dict()
    data["action"]["params"]["engine"] = engine
    return json.dumps(data)


def test_a_recipe_naming_an_unknown_engine_is_refused_when_read_with_the_known_ones():
    with pytest.raises(RecipeError) as error:
        Recipe.from_json(recipe_json("sd3"), "clean.json")
    message = str(error.value)
    assert message.startswith("clean.json: action.params.engine:") and "'sd3'" in message
    assert "telea" in message and "navier_stokes" in message and "\n" not in message


def test_the_batch_command_exits_2_with_one_line_for_an_unknown_engine(tmp_path):
    recipe = tmp_path / "bad.json"
    recipe.write_text(recipe_json("sd3"))
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32)).save(photos / "a.png")
    result = subprocess.run([sys.executable, "-m", "core", "batch", "--recipe", recipe, "--input", photos,
                             "--output", tmp_path / "out"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ") and "'sd3'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_operation_checks_its_engine_kind_and_light():
    photo, mask = Image.new("RGB", (32, 32)), np.ones((32, 32), bool)
    with pytest.raises(UserError, match="remove cannot use 'sd15'"):
        operations.run(Edit("remove", InpaintParams(engine="sd15")), photo, mask, manager_with())
    with pytest.raises(UserError, match="inpaint cannot use 'sd3'"):
        operations.run(Edit("inpaint", InpaintParams(engine="sd3")), photo, mask, manager_with())
    with pytest.raises(UserError, match="needs the light"):
        Edit("relight", RelightParams())
    with pytest.raises(UserError, match="strength below 1"):
        Edit("lit_fill", InpaintParams(strength=1.0), light=LightParams())
    assert Edit("relight", RelightParams(), light=LightParams()).engine == "iclight"
    assert Edit("shade", RelightParams(), light=LightParams()).engine is None
    assert set(OPERATIONS) == {"inpaint", "remove", "outpaint", "lit_fill", "relight", "shade"}


def test_run_holds_the_engines_turn_and_counts_the_edit_as_running():
    seen = {}

    class Watching(FakeEngine):
        def generate(self, request, progress=None, should_cancel=None):
            seen["busy"] = models.busy
            seen["locked"] = models.queue("telea").running is not None
            return super().generate(request, progress, should_cancel)

    models = manager_with(telea=Watching())
    photo = Image.new("RGB", (64, 48), (10, 20, 30))
    mask = np.zeros((48, 64), bool)
    mask[10:30, 10:40] = True
    result = operations.run(Edit("remove", InpaintParams(engine="telea", steps=1)), photo, mask, models)
    assert seen == {"busy": True, "locked": True}
    assert not models.busy and models.queue("telea").running is None
    assert len(result.images) == 1


def test_a_batch_counts_as_running_work_from_start_to_end(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 30), (i, 0, 0)).save(photos / f"p{i}.png")
    models = manager_with()
    seen = []
    recipe = Recipe(Selection(kind="whole"), Edit("shade", RelightParams(), light=LightParams()))
    run(recipe, photos, tmp_path / "out", models=BatchModels(models), on_progress=lambda p: seen.append(models.busy))
    summary_busy = models.busy
    assert seen and not summary_busy
    # shading needs no engine, yet each photo ran as counted work (the janitor waited)
    assert models._running == 0


def test_a_missing_model_is_one_clear_error_and_loading_is_not_retried_at_once(tmp_path, monkeypatch):
    import core.manager

    models = manager_with(models_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match="not on this machine") as first:
        models.load("sd15")
    assert "INPAINT_STUDIO_MODEL_SD15_INPAINT" in str(first.value)
    (tmp_path / "stable-diffusion-v1-5" / "stable-diffusion-inpainting").mkdir(parents=True)  # now "there"
    with pytest.raises(ModelUnavailable) as second:
        models.load("sd15")  # within the retry window: reported again, not retried
    assert str(second.value) == str(first.value) and second.value is not first.value
    monkeypatch.setattr(core.manager, "FAILED_LOAD_RETRY_SECONDS", 0.0)
    with pytest.raises(ModelUnavailable, match="could not be loaded"):  # retried: the folder is no pipeline
        models.load("sd15")


def test_an_engine_whose_loader_breaks_is_a_model_error_not_a_traceback(tmp_path, monkeypatch):
    from core.engines.opencv_inpaint import OpenCVInpaint

    def broken(request):
        raise KeyError("method")

    monkeypatch.setattr(OpenCVInpaint, "from_catalog", broken)
    with pytest.raises(ModelUnavailable, match="OpenCV Telea model could not be loaded \\(KeyError"):
        manager_with().load("telea")


def test_two_callers_wait_for_each_other_on_one_engine():
    order = []
    release = threading.Event()

    class Slow(FakeEngine):
        def generate(self, request, progress=None, should_cancel=None):
            order.append("start")
            release.wait(5)
            order.append("end")
            return super().generate(request, progress, should_cancel)

    models = manager_with(telea=Slow())
    photo = Image.new("RGB", (32, 32))
    mask = np.ones((32, 32), bool)
    edit = Edit("remove", InpaintParams(engine="telea", steps=1))
    first = threading.Thread(target=operations.run, args=(edit, photo, mask, models))
    first.start()
    while not order:
        pass
    waited = threading.Event()
    second = threading.Thread(target=operations.run, args=(edit, photo, mask, models),
                              kwargs={"on_wait": lambda place, ahead, estimate: waited.set()})
    second.start()
    assert waited.wait(10)  # told it waits, while the first holds the engine
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["start", "end", "start", "end"]


def test_catalog_names_are_unique_and_every_engine_role_is_a_model():
    assert BUILTIN.engine_names(("removal",)) == ["lama", "migan", "telea", "navier_stokes"]  # best first
    for entry in BUILTIN.engines.values():
        assert all(role in BUILTIN.models for role in entry.roles)
    assert set(BUILTIN.main_models()) >= {"fastsam", "clip", "sd15_inpaint", "iclight", "iclight_base"}


def test_a_version_2_file_leaving_out_fields_keeps_their_version_2_defaults():
    v2 = {"version": 2, "app": "inpaint-studio", "selection": {"kind": "whole"},
          "action": {"type": "inpaint", "params": {"prompt": "a bench", "engine": "telea"}},
          "seed": {"policy": "fixed", "seed": 1}}
    params = Recipe.from_dict(v2).action.params
    assert params.padding == 32 and params.negative_prompt == "" and params.prompt == "a bench"
    v3 = {**v2, "version": 3}
    assert Recipe.from_dict(v3).action.params.padding == InpaintParams().padding == 64
    shading = {**v2, "action": {"type": "relight", "method": "shading", "params": {},
                                "light": LightParams().to_dict()}}
    read = Recipe.from_dict(shading)
    assert read.action.operation == "shade" and read.action.params.prompt == "soft natural light"
    assert Recipe.from_dict(read.to_dict()) == read  # written as version 3, read back the same


def test_a_recipe_whose_action_type_is_not_a_name_is_one_clear_error():
    data = Recipe(Selection(kind="whole"), Edit("remove", InpaintParams(engine="telea"))).to_dict()
    data["action"]["type"] = ["inpaint"]
    with pytest.raises(RecipeError, match="action.type: unknown"):
        Recipe.from_dict(data)


def test_params_of_the_wrong_type_are_refused_when_read():
    data = Recipe(Selection(kind="whole"), Edit("remove", InpaintParams(engine="telea"))).to_dict()
    data["action"]["params"]["steps"] = "30"
    with pytest.raises(RecipeError, match="Steps must be a whole number"):
        Recipe.from_dict(data)
    data["action"]["params"]["steps"] = True
    with pytest.raises(RecipeError, match="Steps must be a whole number"):
        Recipe.from_dict(data)
