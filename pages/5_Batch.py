"""Batch: one recipe over many photos, with a live queue, cancel, and a zip of the results."""
from pathlib import Path

import streamlit as st

from core.batch import BatchModels
from core.batch_inputs import IMAGE_EXTENSIONS
from core.errors import StudioError
from core.images import read_image
from core.masks import overlay
from core.recipe import Recipe
from ui import batch_job, forms, resources, session
from ui.page import engine_server_notice, setup_page
from ui.results import batch_output_choice

UPLOAD_TYPES = sorted({ext.lstrip(".") for ext in IMAGE_EXTENSIONS} | {"zip"})
MOVE_ERROR = "batch_job_move_error"  # why the last Up / Down could not be done
STATUS_LABELS = {"done": "done", "failed": "FAILED", "skipped": "skipped", "cancelled": "cancelled"}

setup_page("Batch", ":material/stacks:")
st.title("Batch")
engine_server_notice()
st.caption("Apply a saved edit (a recipe) to many photos. Save a recipe from a result on the Inpaint or "
           "Relight page (**Save this edit as a recipe**), or upload one.")


def models() -> BatchModels:
    """The server's models: a batch shares them (and their locks, per photo) with the pages."""
    return BatchModels(resources.manager(), resources.segmenter())


def load_models(recipe: Recipe) -> bool:
    """Load the recipe's model here, with a spinner, so the batch thread finds it loaded."""
    name = recipe.action.engine
    if name is None:
        return True
    try:
        with resources.loading(name):
            resources.manager().load(name)
    except StudioError as error:
        st.error(str(error))
        return False
    return True


def show_preview(recipe: Recipe, photos: list, masks: list) -> None:
    """The recipe's selection on the first photo, over it."""
    try:
        with st.spinner("Selecting…"):
            shown = batch_job.preview(recipe, photos, masks, resources.segmenter())
    except StudioError as error:
        st.error(f"Preview: {error}")
        return
    if shown is None:
        st.warning("None of the uploads is a photo.")
        return
    for problem in shown.skipped:
        st.caption(f"Skipped for the preview: {problem}")
    st.image(overlay(shown.photo, shown.region),
             caption=f"{shown.name}: the region the recipe edits ({shown.region.mean():.0%} of the photo)")
    for note in shown.notes:
        st.caption(note)


# --- 1. the recipe -----------------------------------------------------------------------------------
recipe = None
session_recipe = st.session_state.get(session.BATCH_RECIPE)
sources = {"session": "This session's recipe", "upload": "Upload a recipe (JSON)"}
source = st.radio("Recipe", list(sources), key=forms.BATCH_RECIPE_SOURCE, format_func=sources.get, horizontal=True)
if source == "session":
    if session_recipe is None:
        st.info("No recipe saved in this session yet: on a result of the Inpaint or Relight page, open **Save "
                "this edit as a recipe** and click **Use for a batch**.", icon=":material/info:")
    recipe = session_recipe
else:
    upload = st.file_uploader("Recipe file", type=["json"], key="batch_recipe_upload")
    if upload is not None:
        try:
            recipe = Recipe.from_json(upload.getvalue(), upload.name)
        except StudioError as error:
            st.error(f"{error} Save the recipe again from the Inpaint or Relight page, or fix the file.")
    named = getattr(recipe.action.params, "reference", "") if recipe is not None else ""
    if named and recipe.action.reference_image is None:
        reference = st.file_uploader(f"Reference image: the recipe puts {Path(named).name} in the region",
                                     type=["png", "jpg", "jpeg", "webp"], key="batch_reference_upload")
        if reference is None:
            st.info("Upload the recipe's reference image to run it.", icon=":material/image:")
            recipe = None
        else:
            try:
                image = read_image(reference, name=reference.name).rgb
                recipe = recipe.attach_reference(image)
            except StudioError as error:
                st.error(str(error))
                recipe = None
if recipe is not None:
    st.markdown(recipe.describe())
    with st.expander("The recipe as JSON"):
        st.code(recipe.to_json()[:20_000], language="json")

# --- 2. the photos ------------------------------------------------------------------------------------
photos_col, masks_col = st.columns(2)
photos = photos_col.file_uploader("Photos, or one zip of them", type=UPLOAD_TYPES, accept_multiple_files=True,
                                  key="batch_photos")
masks = masks_col.file_uploader(
    "Masks (optional): named like the photos, e.g. cat.png for cat.jpg, or one zip", type=UPLOAD_TYPES,
    accept_multiple_files=True, key="batch_masks",
    help="Needed when the recipe selects with each photo's own mask file.")
if recipe is not None and recipe.needs_mask_file and not masks:
    st.warning("This recipe uses each photo's own mask file: upload the masks too.", icon=":material/info:")

output_format, quality = batch_output_choice()
job = st.session_state.get(session.BATCH_JOB)
preview_col, run_col = st.columns(2)
ready = recipe is not None and bool(photos) and not (job is not None and job.running)
if preview_col.button("Preview the selection on the first photo", disabled=not ready, width="stretch"):
    show_preview(recipe, photos, masks or [])
if run_col.button("Run the batch", type="primary", disabled=not ready, width="stretch") and load_models(recipe):
    try:
        new_job = batch_job.start(recipe, photos, masks or [], models(), output_format, quality, session.owner())
    except StudioError as error:
        st.error(str(error))
    else:
        if job is not None:
            job.discard()
        st.session_state[session.BATCH_JOB] = job = new_job


def move_job(job_id: str, direction: str) -> None:
    """Up / Down of one of this session's batch jobs (a button callback: the run it starts shows the
    new order)."""
    try:
        resources.manager().move_job(job_id, direction, session.owner())
    except StudioError as error:  # the job finished meanwhile
        st.session_state[MOVE_ERROR] = str(error)


def job_order() -> None:
    """The server's batch jobs in the order their photos are served (people's own generations go
    first), this session's with Up / Down, other people's without names; when there are several."""
    if MOVE_ERROR in st.session_state:
        st.warning(st.session_state.pop(MOVE_ERROR))
    rows = batch_job.order_rows(resources.manager().jobs.jobs(), session.owner())
    if len(rows) < 2:
        return
    st.markdown("**Batches on this server**, served in this order (a person's own generation on any page goes "
                "before the next batch photo):")
    for row in rows:
        text_col, up_col, down_col = st.columns([6, 1, 1])
        text_col.markdown(f"{row.place}. {row.shown}" + (" (yours)" if row.mine else ""))
        if row.mine:
            up_col.button("Up", key=f"batch_job_up_{row.job_id}", disabled=not row.can_up, on_click=move_job,
                          args=(row.job_id, "up"))
            down_col.button("Down", key=f"batch_job_down_{row.job_id}", disabled=not row.can_down, on_click=move_job,
                            args=(row.job_id, "down"))


# --- 3. the queue -----------------------------------------------------------------------------------
# Redrawn every second while this session's batch runs, every two while other people's are on the
# server (their order changes as they finish or move).
@st.fragment(run_every=1.0 if job is not None and job.running else 2.0 if resources.manager().jobs.jobs() else None)
def queue() -> None:
    job_order()
    job = st.session_state.get(session.BATCH_JOB)
    if job is None:
        return
    finished = len(job.rows)
    st.progress(finished / max(job.total, 1), text=f"{finished} of {job.total} files")
    if job.running:
        if st.button("Cancel", key="batch_cancel",
                     help="Stops after the current photo (at once while a photo waits for its model); finished "
                          "results are kept."):
            job.cancel.set()
        if job.cancel.is_set():
            st.caption("Cancelling after the current photo…")
    rows = job.rows
    if rows:
        st.dataframe(
            {
                "#": [row["index"] + 1 for row in rows],
                "file": [row["name"] for row in rows],
                "status": [STATUS_LABELS[row["status"]] for row in rows],
                "seed": [", ".join(map(str, row["seeds"])) for row in rows],
                "seconds": [round(row["timings"].get("total", 0.0) / 1000, 2) for row in rows],
                "outputs / problem": [", ".join(row["outputs"]) or row["error"] for row in rows],
            },
            hide_index=True, width="stretch",
        )
    if job.error:
        st.error(job.error)
    if not job.running and job.summary is not None:
        summary = job.summary
        message = summary.describe().split(" Results in ")[0]
        (st.success if summary.counts["failed"] == 0 else st.warning)(message)
        st.download_button("Download the results (zip, with manifest.json and .csv)", job.results_zip(),
                           file_name="inpaint-studio-batch.zip", mime="application/zip", on_click="ignore",
                           type="primary", key="batch_download")
        done = [row for row in rows if row["status"] == "done"][:4]
        if done:
            columns = st.columns(len(done))
            for column, row in zip(columns, done):
                thumbnail = read_image(job.output / row["outputs"][0]).rgb
                thumbnail.thumbnail((240, 240))
                column.image(thumbnail, caption=row["outputs"][0])
    if job.running is False and st.session_state.get("batch_was_running"):
        st.session_state["batch_was_running"] = False
        st.rerun()  # the whole page: its buttons are enabled again
    st.session_state["batch_was_running"] = job.running


queue()
