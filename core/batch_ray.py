"""The batch runner on Ray: the same per-photo step as ``core.batch``, run by Ray Data actors.

Each actor loads the models once (one copy per actor, ``gpus_per_worker`` GPUs each) and applies
the recipe to one photo per call with :func:`core.batch.process_item`, writing the results into
the output folder itself; the driver collects the rows as they finish and keeps the manifest, as
the local runner does. On a cluster, the input, masks and output folders must be on storage that
every node sees at the same path, and the project must be installed on every node; the
``INPAINT_STUDIO_*`` and Hugging Face settings of the driver are passed on to the workers.

Install with ``pip install -r requirements-distributed.txt``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from core.batch import BatchModels, BatchProgress, BatchSummary, Manifest, output_options, prepare, process_item
from core.batch_inputs import InputItem
from core.config import load_settings, ray_runtime_env
from core.recipe import Recipe



class ItemWorker:
    """A Ray Data actor: the recipe, the output folder and the models, for many photos."""

    def __init__(self, recipe_json: str, output: str, output_format: str = "auto", quality: int = 95) -> None:
        self.recipe = Recipe.from_json(recipe_json).with_reference()  # the reference image, by its absolute path
        self.output = Path(output)
        self.models = BatchModels.own(self.recipe)
        self.output_format, self.quality = output_format, quality

    def __call__(self, batch: dict) -> dict:
        rows = []
        for task in batch["task"]:
            task = json.loads(task)
            item = InputItem.from_dict(task["item"])
            mask = InputItem.from_dict(task["mask"]) if task["mask"] else None
            row = process_item(self.recipe, item, task["index"], self.output, self.models, mask,
                               self.output_format, self.quality)
            rows.append(json.dumps(row))
        return {"row": rows}


def run_ray(
    recipe: Recipe,
    inputs: str | Path,
    output: str | Path,
    *,
    masks: str | Path | None = None,
    resume: bool = False,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    on_progress: Callable[[BatchProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    num_cpus: int | None = None,
    output_format: str | None = None,
    quality: int | None = None,
) -> BatchSummary:
    """Like :func:`core.batch.run`, on Ray: ``workers`` actors, each with its own models.

    ``address``: an existing cluster ("auto", "ray://host:10001"); None starts a local instance
    (with ``num_cpus`` CPUs) for this call and stops it afterwards. Leave CPUs for Ray's own
    tasks: ``workers × cpus_per_worker`` below the CPUs there are. Cancelling stops handing out
    photos; those not finished are marked cancelled. ``output_format`` and ``quality`` as in
    :func:`core.batch.run` (None: the driver's settings).
    """
    import ray

    started = time.perf_counter()
    output_format, quality = output_options(load_settings(), output_format, quality)
    items, masks_by_stem, output = prepare(inputs, output, masks)
    manifest = Manifest(output, recipe, items, engine="ray", output_format=output_format)
    earlier = Manifest.previous(output, recipe) if resume else {}
    resumed, tasks = 0, []
    for index, item in enumerate(items):
        before = earlier.get(item.name)
        if before and before["status"] == "done" and all((output / name).exists() for name in before["outputs"]):
            manifest.record({**before, "index": index})
            resumed += 1
        else:
            mask = masks_by_stem.get(item.source_stem)
            tasks.append({"task": json.dumps({"index": index, "item": item.to_dict(),
                                              "mask": mask.to_dict() if mask else None})})

    own_instance = not ray.is_initialized()
    if own_instance:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, runtime_env=ray_runtime_env(), configure_logging=False)
    try:
        if tasks:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            dataset = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map_batches(
                ItemWorker,
                fn_constructor_kwargs={"recipe_json": recipe.to_json(), "output": str(output.resolve()),
                                       "output_format": output_format, "quality": quality},
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_gpus=gpus_per_worker,
                num_cpus=cpus_per_worker,
            )
            for result in dataset.iter_rows():
                row = json.loads(result["row"])
                manifest.record(row)
                if on_progress is not None:
                    on_progress(BatchProgress(len(manifest.rows), len(items), row))
                if should_cancel is not None and should_cancel():
                    break
    finally:
        if own_instance:
            ray.shutdown()
    for index, item in enumerate(items):
        if item.name not in manifest.rows:
            manifest.record({"index": index, "name": item.name, "stem": item.stem, "status": "cancelled",
                             "outputs": [], "seeds": [], "timings": {}, "error": "cancelled before it started",
                             "notes": []})
    manifest.write(finished=True)
    rows = sorted(manifest.rows.values(), key=lambda row: row["index"])
    return BatchSummary(len(items), manifest.counts(), output, time.perf_counter() - started, resumed, rows)
