"""The Ray runner on a local Ray instance: the same files, seeds and manifest rows as the local runner,
for a removal (no model) and for the tiny SD 1.5 loaded by the Ray worker from the settings, and a
damaged photo is one failed row there too."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip(
    "ray",
    reason="Ray is not installed: pip install -r requirements-distributed.txt (part of requirements-dev.txt)",
)

from core.batch import MANIFEST, BatchModels, run  # noqa: E402 (after the import check)
from core.batch_ray import run_ray  # noqa: E402
from core.recipe import SeedPolicy  # noqa: E402
from tests.helpers import inpaint_recipe, remove_recipe, truncated_jpeg, write_photos  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(600)]

# One actor of one CPU on a two-CPU instance (two one-CPU actors there would leave Ray Data nothing).
RAY_OPTIONS = dict(num_cpus=2, workers=1, cpus_per_worker=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_models):
    """Both recipes over the same folder, on Ray and with core.batch.run: (recipe name → (ray, local))."""
    root = tmp_path_factory.mktemp("ray")
    folder = root / "photos"
    write_photos(folder, 3)
    (folder / "broken.jpg").write_bytes(truncated_jpeg())
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        # Set before Ray starts: run_ray hands the INPAINT_STUDIO_* settings on to its workers.
        for key in list(os.environ):
            if key.startswith("INPAINT_STUDIO_MODEL_"):
                patch.delenv(key)
        patch.setenv("INPAINT_STUDIO_MODEL_SD15_INPAINT", str(tiny_models["sd15_inpaint"]))
        patch.setenv("INPAINT_STUDIO_MODEL_LAMA", str(tiny_models["lama"]))
        patch.setenv("INPAINT_STUDIO_MODELS_DIR", str(root / "no-models"))
        patch.setenv("INPAINT_STUDIO_DEVICE", "cpu")
        # On the CPU, torch's sums depend on its thread count (a level of 255 here and there): the
        # worker and this process compute with one thread each, as Ray gives a one-CPU actor anyway.
        patch.setenv("OMP_NUM_THREADS", "1")
        threads = torch.get_num_threads()
        try:
            for name, recipe in (("remove", remove_recipe(engine="lama")),  # a learned remover's file on each worker
                                 ("inpaint", inpaint_recipe(SeedPolicy("per_image", 11)))):
                progress = []
                on_ray = run_ray(recipe, folder, root / f"{name}-ray", on_progress=progress.append, **RAY_OPTIONS)
                assert not ray.is_initialized()  # run_ray stopped the instance it started
                torch.set_num_threads(1)
                local = run(recipe, folder, root / f"{name}-local", models=BatchModels.own())
                torch.set_num_threads(threads)
                results[name] = (on_ray, local, progress)
        finally:
            torch.set_num_threads(threads)
            if ray.is_initialized():
                ray.shutdown()
    return folder, results


def files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.suffix in (".png", ".jpg")}


@pytest.mark.parametrize("name", ["remove", "inpaint"])
def test_ray_writes_the_same_files_as_the_local_runner(runs, name):
    photos, results = runs
    on_ray, local, _ = results[name]
    ray_files, local_files = files(on_ray.output), files(local.output)
    assert sorted(ray_files) == ["p00.jpg", "p01.png", "p02.jpg"]  # JPEGs stay JPEGs (--format auto)
    assert sorted(ray_files) == sorted(local_files)
    for file, data in ray_files.items():  # the pixels and the stored parameters, byte for byte
        assert data == local_files[file], file
    # And the photos really were edited (the same wrong nothing on both would pass the above).
    for file, data in ray_files.items():
        source = next(path for path in (photos / file, photos / file.replace(".png", ".jpg")) if path.exists())
        assert not np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")),
                                  np.asarray(Image.open(source).convert("RGB")))


@pytest.mark.parametrize("name", ["remove", "inpaint"])
def test_the_manifests_agree_and_a_damaged_photo_is_one_failed_row(runs, name):
    folder, results = runs
    on_ray, local, progress = results[name]
    ray_manifest = json.loads((on_ray.output / MANIFEST).read_text())
    local_manifest = json.loads((local.output / MANIFEST).read_text())
    assert ray_manifest["engine"] == "ray" and local_manifest["engine"] == "local"
    assert ray_manifest["recipe"] == local_manifest["recipe"]

    def rows(manifest):
        return [(row["index"], row["name"], row["status"], row["outputs"], row["seeds"])
                for row in manifest["items"]]

    assert rows(ray_manifest) == rows(local_manifest)
    assert on_ray.counts == local.counts == {"done": 3, "failed": 1, "skipped": 0, "cancelled": 0}
    (failed,) = [row for row in ray_manifest["items"] if row["status"] == "failed"]
    assert failed["name"] == "broken.jpg" and "broken.jpg" in failed["error"] and "damaged" in failed["error"]
    assert failed["error"] == next(row["error"] for row in local_manifest["items"] if row["name"] == "broken.jpg")
    assert sorted(p.row["name"] for p in progress) == sorted(path.name for path in folder.iterdir())
    assert [p.finished for p in progress] == [1, 2, 3, 4]
    if name == "inpaint":  # the worker loaded the tiny SD 1.5 from the settings and used per-image seeds
        seeds = [row["seeds"][0] for row in ray_manifest["items"] if row["status"] == "done"]
        assert len(set(seeds)) == 3
        photo = np.asarray(Image.open(on_ray.output / "p01.png").convert("RGB"))
        source = np.asarray(Image.open(folder / "p01.png").convert("RGB"))
        assert not np.array_equal(photo, source)
