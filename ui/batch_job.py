"""A batch started from the Batch page, running in a background thread of the server.

The page saves the uploads into a temporary folder, starts the job and returns; a fragment
redraws the job's rows every second while it runs. The job uses the process-wide models through
their queues, one photo at a time, as batch requests: people using the other pages meanwhile go
before its next photo, so they wait at most for one photo's generation. Jobs of several people wait
in a job order each owner may change. Cancel stops after the current photo (at once while a photo
waits for its model).
"""
from __future__ import annotations

import io
import shutil
import tempfile
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.batch import BatchModels, BatchProgress, BatchSummary, run, zip_results
from core.batch_inputs import BatchInputError, list_inputs, mask_files
from core.canvas import prefill
from core.errors import UserError
from core.images import ImageError, read_image
from core.masks import mask_from_image
from core.recipe import Recipe, select_region

WORKDIR_PREFIX = "inpaint-studio-batch-"


class UploadError(UserError):
    """Uploads that cannot form a batch (mixed zip and photos, several zips)."""


@dataclass
class BatchJob:
    recipe: Recipe
    workdir: Path
    inputs: Path
    output: Path
    masks: Path | None
    total: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    summary: BatchSummary | None = None
    error: str = ""
    thread: threading.Thread | None = None
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # its place in the models' job order
    _zip: bytes | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def results_zip(self) -> bytes:
        """The results and the manifest as one zip, made once when the job has finished."""
        if self._zip is None:
            self._zip = zip_results(self.output)
        return self._zip

    def discard(self) -> None:
        """Remove the job's files (only when it is not running)."""
        if not self.running:
            shutil.rmtree(self.workdir, ignore_errors=True)


def save_uploads(files: list, folder: Path) -> Path:
    """Write uploaded files into ``folder``; the path to give the runner (the folder, or the one
    zip). Names are reduced to their base name, so an upload cannot write outside ``folder``."""
    zips = [f for f in files if f.name.lower().endswith(".zip")]
    if zips and len(files) > 1:
        raise UploadError("Upload either one zip or the photos themselves, not both (nor several zips).")
    folder.mkdir(parents=True, exist_ok=True)
    if zips:
        path = folder / "upload.zip"
        path.write_bytes(zips[0].getvalue())
        return path
    seen: set[str] = set()
    for upload in files:
        name = Path(upload.name).name or "photo"
        while name in seen:  # two uploads with one name: keep both
            name = f"_{name}"
        seen.add(name)
        (folder / name).write_bytes(upload.getvalue())
    return folder


@dataclass
class Preview:
    """The region a recipe selects on the first readable photo of a batch."""

    name: str
    photo: Image.Image
    region: Any  # bool array, the photo's size
    notes: list[str]
    skipped: list[str]  # photos before it that could not be read, and why


def preview(recipe: Recipe, photos: list, masks: list, segmenter: Any) -> Preview | None:
    """Select with ``recipe`` on the first photo that can be read (with its mask upload, when the
    recipe uses each photo's own mask); None when no upload is a photo. ``segmenter``: as for
    ``core.recipe.select_region``.

    Raises UploadError, BatchInputError, ImageError (no photo can be read), MaskError, RecipeError.
    """
    folder = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    try:
        items = [item for item in list_inputs(save_uploads(photos, folder / "inputs")) if not item.skip]
        if not items:
            return None
        skipped = []
        for first in items:
            try:
                photo = read_image(io.BytesIO(first.read()), name=first.name)
                break
            except ImageError as error:
                skipped.append(str(error))
        else:
            raise ImageError("None of the photos can be read. " + " ".join(skipped[:3]))
        mask = None
        if masks:
            found = mask_files(save_uploads(masks, folder / "masks")).get(first.source_stem)
            if found is not None:
                mask_image = read_image(io.BytesIO(found.read()), name=found.name)
                mask = mask_from_image(mask_image.rgb, photo.size, alpha=mask_image.alpha, name=found.name)
        if not recipe.takes_mask:  # extending the canvas: the new canvas, its border as the region
            canvas = recipe.action.params.canvas(photo.size)
            filled = Image.fromarray(prefill(np.asarray(photo.rgb), canvas), "RGB")
            return Preview(first.name, filled, canvas.border_mask(), [f"The new canvas: {canvas.describe()}."],
                           skipped)
        region, notes = select_region(recipe, photo.rgb, mask_file=mask, segmenter=segmenter)
        return Preview(first.name, photo.rgb, region, list(notes), skipped)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class OrderRow:
    """One batch job of the server as a session sees it in the job order: its own with its label and
    moves, someone else's with neither (no file or recipe names)."""

    job_id: str
    place: int  # 1 = served first
    shown: str
    mine: bool
    can_up: bool
    can_down: bool


def order_rows(jobs: list, owner: str) -> list[OrderRow]:
    """The server's batch jobs (``core.queue.JobInfo``, first served first) as ``owner`` sees them."""
    rows = []
    for index, job in enumerate(jobs):
        mine = job.owner == owner
        rows.append(OrderRow(job.job_id, index + 1, job.label if mine else "Someone else's batch", mine,
                             mine and index > 0, mine and index < len(jobs) - 1))
    return rows


def job_label(recipe: Recipe, total: int) -> str:
    """How its owner sees a job in the job order."""
    return f"{recipe.name or 'Batch'}: {total} file{'s' if total != 1 else ''}"


def start(recipe: Recipe, photos: list, masks: list, models: BatchModels, output_format: str | None = None,
          quality: int | None = None, owner: str = "") -> BatchJob:
    """Save the uploads and start the batch in a background thread, writing its results in
    ``output_format`` (a name of ``core.output_formats.CHOICES``; None: the setting).

    Its photos are batch requests of job ``job.job_id`` of ``owner`` (the session): people's
    generations go first, and the job waits in the models' job order, which its owner may change.

    Raises UploadError / BatchInputError for uploads that cannot be used (nothing is started).
    """
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    try:
        inputs = save_uploads(photos, workdir / "inputs")
        mask_source = save_uploads(masks, workdir / "masks") if masks else None
        total = len(list_inputs(inputs))
    except (UploadError, BatchInputError):
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    job = BatchJob(recipe, workdir, inputs, workdir / "results", mask_source, total)
    # The files go when the job does: with the session that holds it, or when it starts another.
    weakref.finalize(job, shutil.rmtree, str(workdir), True)

    def progress(update: BatchProgress) -> None:
        job.rows.append(update.row)

    def work() -> None:
        try:
            job.summary = run(recipe, job.inputs, job.output, masks=job.masks, models=models,
                              on_progress=progress, should_cancel=job.cancel.is_set, output_format=output_format,
                              quality=quality, job_id=job.job_id, owner=owner, label=job_label(recipe, total))
        except BatchInputError as error:
            job.error = str(error)
        except Exception as error:  # noqa: BLE001 (shown on the page, the server goes on)
            job.error = f"The batch stopped: {type(error).__name__}: {error}"

    job.thread = threading.Thread(target=work, name="batch", daemon=True)
    job.thread.start()
    return job
