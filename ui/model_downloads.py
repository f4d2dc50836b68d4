"""The Models page's body, and the link other pages put next to a missing model.

Every model role with what it is for, its size and licence and whether it is here; Download (in the
background, shared by every session: :class:`core.downloads.DownloadManager`) with a progress bar in
bytes, Cancel, and Resume where an unfinished download left bytes behind; Delete (after a
confirmation) for what the app downloaded; the disk space left; a hub token for gated models, held in
the session only.
"""
from __future__ import annotations

import streamlit as st

from core.downloads import destination, disk_free, offline_advice, partial_size, removable
from core.model_files import DownloadError, ModelStatus, disk_size, has_hub_token, human_size
from ui import resources

MODELS_PAGE = "pages/6_Models.py"
ROLE_PARAM = "role"  # ?role=<name>: the model a link asked for, shown first
TOKEN = "models_hub_token"
CONFIRM = "models_confirm_delete"
NOTICE = "models_notice"
RERUN = "models_rerun"
WAS_RUNNING = "models_was_running"


def model_link(role: str, label: str | None = None) -> None:
    """A link to the Models page with ``role`` shown first (next to a missing-model note)."""
    title = resources.catalog().models[role].title
    st.page_link(MODELS_PAGE, label=label or f"Download {title} on the Models page", icon=":material/download:",
                 query_params={ROLE_PARAM: role})


def _start(role: str) -> None:
    token = (st.session_state.get(TOKEN) or "").strip() or None
    try:
        resources.downloads().start(role, token=token)
    except DownloadError as error:
        st.session_state[NOTICE] = ("error", str(error))
    st.session_state[RERUN] = True


def _cancel(role: str) -> None:
    resources.downloads().cancel(role)
    st.session_state[RERUN] = True


def _ask_delete(role: str) -> None:
    st.session_state[CONFIRM] = role
    st.session_state[RERUN] = True


def _delete(role: str) -> None:
    st.session_state.pop(CONFIRM, None)
    title = resources.catalog().models[role].title
    try:
        freed = resources.downloads().delete(role)
    except (DownloadError, OSError) as error:
        st.session_state[NOTICE] = ("error", f"{title} could not be deleted: {error}")
    else:
        st.session_state[NOTICE] = ("success", f"Deleted {title}: {human_size(freed)} freed.")
    st.session_state[RERUN] = True


def _keep() -> None:
    st.session_state.pop(CONFIRM, None)
    st.session_state[RERUN] = True


def models_page() -> None:
    """The whole Models page below its title."""
    manager = resources.downloads()
    settings = manager.settings
    offline = manager.offline_reason()
    if offline:
        st.info(f"{offline} {offline_advice()}", icon=":material/cloud_off:")
    server = resources.manager().engine_server
    if server is not None:
        served = ", ".join(str(info.get("title", name)) for name, info in server.engines().items()) or \
            "nothing it can reach now"
        st.info(f"The generating models run on the engine server at {server.address} (it serves: {served}); "
                "they need not be on this machine. This page manages this machine's own models: the selection "
                "models, and any engine the server does not serve.", icon=":material/dns:")
    st.caption(f"Downloads go to the models folder `{settings.models_dir}` (INPAINT_STUDIO_MODELS_DIR), where the "
               f"app finds them with no setting · **{human_size(disk_free(settings))} free** on its disk. A download "
               "runs on the server: it goes on when you switch pages, and everyone using this server sees it.")
    st.text_input("Hugging Face token (for gated models)", key=TOKEN, type="password", disabled=bool(offline),
                  help="Needed only for gated models (marked below): accept the model's licence on its hub page "
                       "first. Kept in your session only, never saved.")
    if has_hub_token():
        st.caption("A hub token is set on this server (HF_TOKEN or a saved login); the field above overrides it "
                   "for your downloads.")
    _model_list(bool(manager.running()), offline)


def _order(statuses: list[ModelStatus]) -> list[ModelStatus]:
    wanted = st.query_params.get(ROLE_PARAM)
    return sorted(statuses, key=lambda status: status.role.name != wanted)


def _model_list(running: bool, offline: str | None) -> None:
    @st.fragment(run_every=1.0 if running else None)
    def body() -> None:
        if st.session_state.pop(RERUN, False):
            st.rerun()  # the whole page: the list refreshes itself every second while a download runs
        notice = st.session_state.pop(NOTICE, None)
        if notice:
            getattr(st, notice[0])(notice[1])
        manager = resources.downloads()
        wanted = st.query_params.get(ROLE_PARAM)
        for status in _order(resources.manager().statuses()):
            _row(status, offline, highlight=status.role.name == wanted)
        now_running = bool(manager.running())
        if st.session_state.get(WAS_RUNNING) and not now_running:
            st.session_state[WAS_RUNNING] = False
            st.rerun()  # a download ended: the whole page (and the other pages' model notes) refresh
        st.session_state[WAS_RUNNING] = now_running

    body()


def _row(status: ModelStatus, offline: str | None, highlight: bool) -> None:
    role, settings = status.role, resources.downloads().settings
    manager = resources.downloads()
    job = manager.job(role.name)
    with st.container(border=True, key=f"model_{role.name}"):
        about, state, actions = st.columns([3, 3, 2], vertical_alignment="center")
        size = "" if not role.size_gb else (f"about {role.size_gb:g} GB" if role.size_gb >= 1 else
                                             f"about {role.size_gb * 1000:.0f} MB")
        facts = " · ".join(part for part in (size, f"licence: {role.licence}" if role.licence else "",
                                              "gated: needs a hub token" if role.gated else "") if part)
        about.markdown(f"**{role.title}** (`{role.name}`)" + (" ← the model you came for" if highlight else "")
                       + f"  \n{role.purpose[:1].upper() + role.purpose[1:]}.")
        if facts:
            about.caption(facts)
        kept = partial_size(role, settings)
        if job is not None and job.running:
            state.progress(job.fraction or 0.0, text=f"Downloading: {job.describe()}")
            if job.cancel_requested.is_set():
                state.caption("Cancelling…")
            actions.button("Cancel", key=f"cancel_{role.name}", on_click=_cancel, args=(role.name,),
                           width="stretch")
            return
        if status.available:
            state.markdown(f":green[**Here**] · {human_size(disk_size(status.path))}")
            state.caption(str(status.path))
        else:
            state.markdown(f":orange[**Not here**] · meanwhile: {role.fallback}")
            if kept:
                state.caption(f"{human_size(kept)} kept from an unfinished download: Resume continues from there.")
        if job is not None and job.state == "failed":
            state.error(job.message, icon=":material/error:")
        elif job is not None and job.state == "cancelled":
            state.caption(job.message)
        elif job is not None and job.state == "done" and status.available:
            state.caption("Downloaded.")
        target = destination(role, settings)
        if not status.available:
            label = "Resume" if kept else "Download"
            why = (offline or ("" if target is not None else f"{role.setting} is set to a local path "
                                                            f"({status.configured}); nothing to download."))
            actions.button(label, key=f"download_{role.name}", on_click=_start, args=(role.name,),
                           type="primary", disabled=bool(why), width="stretch", help=why or None)
        deletable = removable(status, settings) if status.available else []
        if deletable or kept:
            if st.session_state.get(CONFIRM) == role.name:
                what = ", ".join(str(path) for path in deletable) or "the unfinished download"
                state.warning(f"Delete {what}? The app falls back to {role.fallback} until it is downloaded "
                              "again.", icon=":material/delete:")
                yes, no = actions.columns(2)
                yes.button("Delete", key=f"delete_yes_{role.name}", on_click=_delete, args=(role.name,),
                           type="primary")
                no.button("Keep", key=f"delete_no_{role.name}", on_click=_keep)
            else:
                actions.button("Delete" if deletable else "Discard partial", key=f"delete_{role.name}",
                               on_click=_ask_delete, args=(role.name,), width="stretch",
                               help="Free its disk space (asks first).")
        elif status.available:
            actions.caption("Set by hand or outside the app's folders: not deleted from here.")
