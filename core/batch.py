"""The batch runner: one recipe over every photo of a folder or zip.

:func:`run` goes through the photos one at a time (only the current one is in memory), writes
each result as soon as it is done, and keeps ``manifest.json`` and ``manifest.csv`` in the output
folder up to date after every photo: its status (done, failed, skipped, cancelled), output files,
seed, timings and, for a failure, the reason. A photo that cannot be read or edited becomes one
failed row; the others go on. ``resume`` skips photos the manifest lists as done whose outputs
are still there. Cancelling stops after the current photo and keeps everything finished.

Models load once per batch (one :class:`core.manager.ModelManager`, or the server's) and each
engine encodes a prompt once, not per photo. :func:`process_item` is the whole per-photo step;
the Ray runner (``core.batch_ray``) calls the same function in its workers.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.batch_inputs import BatchInputError, InputItem, list_inputs, mask_files
from core.canvas import fit_alpha
from core.config import apply_offline_mode, load_settings, quiet_library_progress
from core.errors import Cancelled, StudioError, one_line
from core.images import read_image
from core.manager import ModelManager
from core.masks import mask_from_image
from core.output_formats import check_format, check_quality, choose, encode_result
from core.recipe import Recipe, RecipeError, apply_recipe
from core.segmenter import Segmenter

MANIFEST = "manifest.json"
MANIFEST_CSV = "manifest.csv"
STATUSES = ("done", "failed", "skipped", "cancelled")
CSV_COLUMNS = ("index", "name", "status", "outputs", "seeds", "total_ms", "error")


# --- models for a batch -------------------------------------------------------------------------


@dataclass
class BatchModels:
    """The models a batch uses: a model manager (the server's, shared with the pages, or one of
    its own) and the selection service built on it when a recipe selects by text, clicks or box."""

    manager: ModelManager
    segmenter: Segmenter | None = None

    @classmethod
    def own(cls, recipe: Recipe | None = None) -> BatchModels:
        """A manager of this process's own, from the environment's settings (the command line, a
        Ray worker). The ML libraries' own progress bars are turned off, which imports them (seconds):
        skipped for a ``recipe`` that needs no model (OpenCV removal)."""
        settings = load_settings()
        apply_offline_mode(settings)
        models = cls(ModelManager(settings))
        if recipe is None or models.needs_model(recipe):
            quiet_library_progress()
        return models

    def needs_model(self, recipe: Recipe) -> bool:
        """Whether ``recipe`` loads a model (a selection model, or an engine with model files)."""
        engine = recipe.action.engine
        if recipe.needs_segmenter or engine is None:
            return True
        try:
            return bool(self.manager.catalog.engine(engine)[0].roles)
        except StudioError:  # an unknown engine: each photo's row will say so
            return True

    def segmenter_for(self, recipe: Recipe) -> Segmenter | None:
        if recipe.needs_segmenter and self.segmenter is None:
            self.segmenter = Segmenter(self.manager)
        return self.segmenter


# --- one photo ------------------------------------------------------------------------------------


def output_names(stem: str, count: int, extension: str = ".png") -> list[str]:
    """The output files of a photo: ``stem.png``, then ``stem-v2.png``, … for more variants."""
    return [f"{stem}{extension}" if i == 0 else f"{stem}-v{i + 1}{extension}" for i in range(count)]


def process_item(
    recipe: Recipe,
    item: InputItem,
    index: int,
    output: Path,
    models: BatchModels,
    mask_item: InputItem | None = None,
    output_format: str | None = None,
    quality: int | None = None,
) -> dict[str, Any]:
    """Apply ``recipe`` to one photo and write its outputs into ``output``; its manifest row.

    ``output_format``: a name of ``core.output_formats.CHOICES`` (None: the setting, ``auto`` by
    default: a JPEG stays a JPEG with only the edited blocks re-encoded, other photos become PNGs);
    ``quality``: of plain JPEGs (None: the setting). Never raises: any failure of the photo, its
    mask, the models or the edit becomes a failed row whose ``error`` says what went wrong, and the
    batch goes on.
    """
    settings = models.manager.settings
    output_format = settings.output_format if output_format is None else output_format
    quality = settings.jpeg_quality if quality is None else quality

    row: dict[str, Any] = {"index": index, "name": item.name, "stem": item.stem, "status": "failed",
                           "outputs": [], "seeds": [], "timings": {}, "error": "", "notes": []}
    if item.skip:
        row.update(status="skipped", error=item.skip)
        return row
    started = time.perf_counter()
    timings = row["timings"]
    try:
        photo = read_image(io.BytesIO(item.read()), name=item.name)
        mask = None
        if mask_item is not None and recipe.takes_mask:  # extending the canvas uses no mask
            mask_file = read_image(io.BytesIO(mask_item.read()), name=mask_item.name)
            mask = mask_from_image(mask_file.rgb, photo.size, alpha=mask_file.alpha, name=f"The mask {mask_item.name}")
        elif recipe.needs_mask_file:
            raise RecipeError(f"no mask file named {item.source_stem}.* in the masks folder.")
        timings["read"] = (time.perf_counter() - started) * 1000
        applied = apply_recipe(recipe, photo.rgb, stem=item.stem, manager=models.manager,
                               segmenter=models.segmenter_for(recipe), mask_file=mask)
        for stage, ms in applied.timings.items():
            timings[f"edit.{stage}"] = ms
        stage = time.perf_counter()
        names = output_names(item.stem, len(applied.images), choose(output_format, photo.format)[0].extension)
        notes = list(applied.notes)
        for name, image, metadata in zip(names, applied.images, applied.metadata):
            encoded = encode_result(image, photo, output_format, params={**metadata, "source": item.name},
                                    quality=quality, png_compression=settings.png_compression,
                                    alpha=fit_alpha(photo.alpha, applied.canvas))
            _write_atomic(output / name, encoded.data)
            notes += [note for note in encoded.notes if note not in notes]
        timings["write"] = (time.perf_counter() - stage) * 1000
        row.update(status="done", outputs=names, seeds=applied.seeds, notes=notes)
    except Cancelled as error:  # the batch was cancelled while this photo waited for its model
        row.update(status="cancelled", error=one_line(error))
    except (StudioError, OSError) as error:
        row["error"] = one_line(error)
    except Exception as error:  # noqa: BLE001 (one photo's failure is one failed row; the batch goes on)
        row["error"] = f"{type(error).__name__}: {one_line(error)}"
    timings["total"] = (time.perf_counter() - started) * 1000
    return row


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


# --- the manifest ---------------------------------------------------------------------------------


class Manifest:
    """``manifest.json`` and ``manifest.csv`` in the output folder, rewritten after every photo."""

    def __init__(self, output: Path, recipe: Recipe, items: list[InputItem], engine: str = "local",
                 output_format: str = "auto") -> None:
        self.output = output
        self.header = {"recipe": recipe.to_dict(), "engine": engine, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       "total": len(items), "output_format": output_format}
        self.rows: dict[str, dict[str, Any]] = {}

    @staticmethod
    def previous(output: Path, recipe: Recipe) -> dict[str, dict[str, Any]]:
        """The rows of an earlier run of ``recipe``'s manifest, by input name ({} when there is none).

        Raises BatchInputError when the manifest cannot be read or belongs to another recipe
        (resuming would mix the two recipes' results).
        """
        path = output / MANIFEST
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            rows = {row["name"]: row for row in data["items"]}
            earlier = data["recipe"]
        except (ValueError, KeyError, TypeError) as error:
            raise BatchInputError(f"{path}: cannot be read to resume ({error}); remove it to start over.") from error
        try:  # compared as this version writes it: an earlier version's file of the same recipe matches
            earlier = Recipe.from_dict(earlier).to_dict()
        except RecipeError:
            pass
        if earlier != recipe.to_dict():
            raise BatchInputError(
                f"{path}: the results there were made with another recipe; resume with that recipe, or use a "
                "new output folder."
            )
        return rows

    def record(self, row: dict[str, Any]) -> None:
        self.rows[row["name"]] = row
        self.write()

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.rows.values():
            counts[row["status"]] += 1
        return counts

    def write(self, finished: bool = False) -> None:
        rows = sorted(self.rows.values(), key=lambda row: row["index"])
        data = {**self.header, "finished": time.strftime("%Y-%m-%dT%H:%M:%S") if finished else None,
                "counts": self.counts(), "items": rows}
        _write_atomic(self.output / MANIFEST, json.dumps(data, indent=2).encode())
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([row["index"], row["name"], row["status"], " ".join(row["outputs"]),
                             " ".join(map(str, row["seeds"])), round(row["timings"].get("total", 0.0), 1),
                             row["error"]])
        _write_atomic(self.output / MANIFEST_CSV, table.getvalue().encode())


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class BatchProgress:
    """Reported after each photo: how many of ``total`` are finished, and that photo's row."""

    finished: int
    total: int
    row: dict[str, Any]


@dataclass
class BatchSummary:
    total: int
    counts: dict[str, int]
    output: Path
    seconds: float
    resumed: int = 0  # done in an earlier run and skipped now
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.counts["failed"] == 0 and self.counts["cancelled"] == 0

    def describe(self) -> str:
        parts = [f"{self.counts['done']} done"]
        if self.resumed:
            parts[0] += f" ({self.resumed} from an earlier run)"
        parts += [f"{self.counts[status]} {status}" for status in ("failed", "skipped", "cancelled") if self.counts[status]]
        return f"{self.total} files: " + ", ".join(parts) + f" in {self.seconds:.1f} s. Results in {self.output}."


def output_options(settings, output_format: str | None, quality: int | None) -> tuple[str, int]:
    """The format name and JPEG quality a batch writes with: the given ones, checked, else the
    settings' (``INPAINT_STUDIO_OUTPUT_FORMAT``, ``INPAINT_STUDIO_JPEG_QUALITY``)."""
    output_format = check_format(settings.output_format if output_format is None else output_format)
    quality = check_quality(settings.jpeg_quality if quality is None else quality)
    return output_format, quality


def prepare(inputs: str | Path, output: str | Path, masks: str | Path | None = None,
            ) -> tuple[list[InputItem], dict[str, InputItem], Path]:
    """List the inputs and masks and make the output folder; BatchInputError for unusable ones.

    The output folder may not be inside an input folder (a rerun would take the results for
    photos) and is never one of the inputs' own folders, so no input is overwritten.
    """
    inputs, output = Path(inputs), Path(output)
    items = list_inputs(inputs)
    if not any(not item.skip for item in items):
        raise BatchInputError(f"{inputs}: no photos found (looked for .jpg, .png, .webp, .tif, .heic, … files).")
    if inputs.is_dir() and output.resolve().is_relative_to(inputs.resolve()):
        raise BatchInputError(f"{output}: the output folder must not be inside the input folder {inputs}.")
    masks_by_stem = mask_files(masks)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BatchInputError(f"{output}: the output folder cannot be created ({error.strerror or error}).") from error
    return items, masks_by_stem, output


def run(
    recipe: Recipe,
    inputs: str | Path,
    output: str | Path,
    *,
    masks: str | Path | None = None,
    models: BatchModels | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    output_format: str | None = None,
    quality: int | None = None,
    job_id: str | None = None,
    owner: str = "",
    label: str = "",
) -> BatchSummary:
    """Apply ``recipe`` to every photo of ``inputs`` (a folder or zip), writing into ``output``.

    ``masks``: a folder or zip of mask files matched to photos by file stem. ``output_format`` and
    ``quality``: how results are written (see :func:`process_item`; None: the settings). A batch of
    JPEGs gives JPEGs in which only the edited blocks are re-encoded, unless another format is
    asked for. ``on_progress`` is called after each photo; ``should_cancel`` is checked before
    each: once it returns True the remaining photos are marked cancelled. Raises BatchInputError
    before starting when the inputs, masks or output cannot be used, OutputFormatError for an
    unknown format or a quality out of range.

    Each photo's model calls are batch requests of job ``job_id`` (a new id when None) of ``owner``:
    in a manager shared with the pages, a person's generation goes before the batch's next photo,
    and the job takes its place in the manager's job order (``label``: what its owner sees there).
    """
    started = time.perf_counter()
    models = models or BatchModels.own(recipe)
    output_format, quality = output_options(models.manager.settings, output_format, quality)
    items, masks_by_stem, output = prepare(inputs, output, masks)
    manifest = Manifest(output, recipe, items, output_format=output_format)
    earlier = Manifest.previous(output, recipe) if resume else {}
    with models.manager.batch_job(job_id or uuid.uuid4().hex, owner, label or output.name, should_cancel):
        resumed = _run_items(recipe, items, masks_by_stem, output, models, manifest, earlier, on_progress,
                             should_cancel, output_format, quality)
    manifest.write(finished=True)
    rows = sorted(manifest.rows.values(), key=lambda row: row["index"])
    return BatchSummary(len(items), manifest.counts(), output, time.perf_counter() - started, resumed, rows)


def _run_items(recipe, items, masks_by_stem, output, models, manifest, earlier, on_progress, should_cancel,
               output_format, quality) -> int:
    """The photos of :func:`run`, one at a time; how many were done in an earlier run."""
    resumed = 0
    cancelled = False
    for index, item in enumerate(items):
        before = earlier.get(item.name)
        if before and before["status"] == "done" and all((output / name).exists() for name in before["outputs"]):
            row = {**before, "index": index}
            resumed += 1
        elif cancelled or (should_cancel is not None and should_cancel()):
            cancelled = True
            row = {"index": index, "name": item.name, "stem": item.stem, "status": "cancelled", "outputs": [],
                   "seeds": [], "timings": {}, "error": "cancelled before it started", "notes": []}
        else:
            with models.manager.running():  # between photos too: the memory janitor waits
                row = process_item(recipe, item, index, output, models, masks_by_stem.get(item.source_stem),
                                   output_format, quality)
        manifest.record(row)
        if on_progress is not None:
            on_progress(BatchProgress(len(manifest.rows), len(items), row))
    return resumed


def zip_results(output: Path) -> bytes:
    """The output folder's results and manifest as one zip (in memory)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for path in sorted(output.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, path.name)
    return buffer.getvalue()
