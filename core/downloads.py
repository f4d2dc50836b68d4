"""Downloads started from the app: one background download per model at a time, shared by every
session of the server, with byte-level progress, cancel and resume; deleting what the app fetched.

Where things go: every model the app fetches lands in the models folder (``INPAINT_STUDIO_MODELS_DIR``),
where :func:`core.model_files.locate` finds it with no setting: a hub repository in ``<dir>/<org>/<name>``,
a single file in ``<dir>/<file>``. Unfinished work stays out of those places, so a partial download is
never taken for a model: hub files are fetched into ``<dir>/.downloads/<role>/<commit>/`` (each file
through ``<file>.part``) and the folder is moved into place only when every file is complete and
checked; single files (LaMa, MI-GAN, FastSAM) go through ``<dir>/<file>.part``. A cancelled or cut
download keeps its partial files, and the next one continues from the bytes already there (an HTTP
Range request). Hub files go through ``huggingface_hub``: the repository listing (``model_info``), each
file's metadata (``get_hf_file_metadata``: ETag, size, where a large file is served from) and the
transfer on its HTTP session, in chunks of :data:`CHUNK_BYTES` (the progress and cancel steps); each
finished file is checked against the hub's ETag (its SHA-256 for large files, its git blob hash for the
others) before it is kept.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from core import catalog as catalogs
from core.catalog import Catalog, ModelEntry
from core.config import Settings
from core.errors import Cancelled, StudioError, one_line
from core.model_files import (
    PART_SUFFIX,
    PIPELINE_FILES,
    DownloadError,
    ModelStatus,
    disk_size,
    download_url,
    fetch_url,
    human_size,
    locate,
    partial_path,
    patterns,
    pipeline_patterns,
)

STAGING = ".downloads"  # under the models folder: unfinished hub downloads
ULTRALYTICS_ASSETS = "https://github.com/ultralytics/assets/releases/download/v8.4.0"
MIN_CHECKPOINT_BYTES = 100_000  # what ultralytics' own downloader asks of a checkpoint
CHUNK_BYTES = 1 << 18  # progress and cancel every 256 KB of a hub file
TRANSFER_RETRIES = 5  # a hub file's connection dropping or stalling, in a row without a byte, before giving up
RETRY_PAUSE_SECONDS = 1.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")

Progress = Callable[[int, "int | None"], None]


# --- where the hub is, and whether it may be asked -------------------------------------------------------


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline_reason(settings: Settings, offline: bool = False) -> str | None:
    """Why nothing can be downloaded here (offline configured or detected), or None."""
    if settings.offline or offline:
        return ("This server runs offline (INPAINT_STUDIO_OFFLINE is on, or the hub could not be reached when "
                "it started), so nothing is downloaded here.")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set on this server, so nothing is downloaded here."
    return None


def offline_advice() -> str:
    return ("Fetch models on a machine with internet (`python -m core models download ROLE --dir DIR`), copy DIR "
            "here and set the printed settings, or restart the server online.")


# --- what a download of a role fetches, and where it goes ------------------------------------------------


def hub_repo(role: ModelEntry, settings: Settings) -> str | None:
    """The hub repository ``role`` is fetched from: a configured hub id, else the catalog's; None when
    the role is set to a local path (nothing to fetch) or is not on the hub."""
    if role.download in ("url", "ultralytics"):
        return None
    configured = settings.model(role.name, role.default)
    if role.kind == "file":
        return role.repo if configured == role.default else None
    if configured == role.default or (configured.count("/") == 1 and not configured.startswith((".", "/", "~"))
                                      and not Path(configured).expanduser().exists()):
        return configured
    return None


def destination(role: ModelEntry, settings: Settings) -> Path | None:
    """Where a download of ``role`` puts the model (where ``locate`` looks), None when it is set to a
    local path."""
    if role.download in ("url", "ultralytics"):
        configured = settings.model(role.name, role.default)
        return settings.models_dir / role.default if configured == role.default else None
    repo = hub_repo(role, settings)
    if repo is None:
        return None
    return settings.models_dir / (Path(role.default).name if role.kind == "file" else repo)


def partial_files(role: ModelEntry, settings: Settings) -> list[Path]:
    """The unfinished download of ``role`` kept for resuming (empty when there is none)."""
    kept = [settings.models_dir / STAGING / role.name]  # a hub download's files
    if role.download in ("url", "ultralytics"):
        kept.append(partial_path(settings.models_dir / role.default))
    return [path for path in kept if path.exists()]


def partial_size(role: ModelEntry, settings: Settings) -> int:
    total = 0
    for path in partial_files(role, settings):
        total += path.stat().st_size if path.is_file() else sum(
            f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


def disk_free(settings: Settings) -> int:
    """Bytes free on the disk that holds the models folder."""
    folder = settings.models_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


# --- fetching from the hub -----------------------------------------------------------------------------------


def _transfer(url: str, part: Path, headers: dict[str, str], size: int | None,
              report: Callable[[int], None]) -> None:
    """Append to ``part`` the bytes of ``url`` it lacks (a Range request when it has some), through
    ``huggingface_hub``'s HTTP session (its headers, offline switch and errors); a connection that
    drops or stalls is resumed the same way, up to :data:`TRANSFER_RETRIES` times in a row without
    progress. ``report(bytes so far)`` runs for each chunk before it is written (it raises Cancelled
    to stop: the partial file then holds whole chunks only)."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

    failures = 0
    while True:
        done = part.stat().st_size if part.exists() else 0
        if size is not None and done >= size:
            break
        asked = {**headers, **({"Range": f"bytes={done}-"} if done else {})}
        try:
            with http_stream_backoff(method="GET", url=url, headers=asked, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                                     retry_on_exceptions=(), retry_on_status_codes=(408, 429)) as response:
                hf_raise_for_status(response)
                if done and response.status_code != 206:  # the Range was ignored: start again
                    done = 0
                report(done)
                with open(part, "ab" if done else "wb") as out:
                    for chunk in response.iter_bytes(chunk_size=CHUNK_BYTES):
                        report(done + len(chunk))
                        out.write(chunk)
                        done += len(chunk)
                        failures = 0
            break
        except (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError):
            failures += 1
            if failures > TRANSFER_RETRIES:
                raise
            time.sleep(RETRY_PAUSE_SECONDS)
    if size is not None and part.stat().st_size != size:
        raise DownloadError(f"{part.name[:-len(PART_SUFFIX)]}: {part.stat().st_size} bytes arrived, the hub announced "
                            f"{size}. Download again.")


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches_etag(path: Path, etag: str | None) -> bool:
    """Whether ``path`` is the file the hub describes by ``etag`` (a large file's SHA-256, a small
    file's git blob hash); True when the ETag is neither (nothing to compare against)."""
    etag = (etag or "").strip('"').lower()
    if _SHA256.match(etag):
        return _sha256(path) == etag
    if _GIT_SHA1.match(etag):
        return _git_blob_sha1(path) == etag
    return True


def gated_message(role: ModelEntry, repo: str, reason: str) -> str:
    return (f"{role.title} ({repo}) is gated on the Hugging Face hub: {reason}. Accept its licence at "
            f"https://huggingface.co/{repo} while signed in, create a read token at "
            "https://huggingface.co/settings/tokens, then paste it in the token field of the Models page (kept for "
            "your session only) or set HF_TOKEN on the server, and download again.")


def _hub_failure(role: ModelEntry, repo: str, error: Exception) -> DownloadError:
    """What to tell a person about ``error`` from the hub."""
    import httpx2
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, GatedRepoError) or (role.gated and status in (401, 403)):
        return DownloadError(gated_message(role, repo, "the hub refused access (its licence is not accepted for "
                                                       "this account, or the token is invalid)"))
    if isinstance(error, RepositoryNotFoundError):
        return DownloadError(f"{role.title}: the hub has no repository {repo} this token can see (HTTP {status}). "
                             f"Check {role.setting}, or the token if the repository is private.")
    if isinstance(error, OfflineModeIsEnabled):
        return DownloadError(f"HF_HUB_OFFLINE is set on this server, so {role.title} cannot be downloaded. "
                             + offline_advice())
    if isinstance(error, HfHubHTTPError):
        return DownloadError(f"{role.title}: the hub answered HTTP {status} for {repo}. Try again later; the bytes "
                             "already here are kept.")
    if isinstance(error, (httpx2.HTTPError, OSError)):
        return DownloadError(f"{role.title} could not be fetched from the hub ({one_line(error)}). Check this "
                             "server's internet access and download again: it continues where it stopped.")
    return DownloadError(f"{role.title} could not be fetched ({type(error).__name__}: {one_line(error)}).")


def fetch_hub(role: ModelEntry, settings: Settings, *, token: str | None = None,
              progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None) -> Path:
    """Fetch ``role``'s files from the hub into the models folder; their local path (see the module's
    docstring). ``token``: a hub token for this download (None: ``HF_TOKEN`` or a saved login)."""
    repo = hub_repo(role, settings)
    final = destination(role, settings)
    if repo is None or final is None:
        raise DownloadError(f"{role.title} is set to a local path ({settings.model(role.name, role.default)}), "
                            f"so there is nothing to download; change {role.setting} to use a download.")
    from huggingface_hub import HfApi, get_hf_file_metadata, get_token, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, filter_repo_objects

    if role.gated and not (token or get_token()):
        raise DownloadError(gated_message(role, repo, "no hub token was given"))
    endpoint = hub_endpoint()
    auth = token or None
    try:
        info = HfApi(endpoint=endpoint).model_info(repo, files_metadata=True, token=auth)
        sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
        if role.kind == "file":
            if role.default not in sizes:
                raise DownloadError(f"{role.title}: the hub repository {repo} has no file {role.default}.")
            wanted = [role.default]
        else:
            chosen = patterns(role)
            if chosen == PIPELINE_FILES:
                chosen = pipeline_patterns(list(sizes))
            wanted = list(filter_repo_objects(list(sizes), allow_patterns=chosen))
            if not wanted:
                raise DownloadError(f"{role.title}: the hub repository {repo} has none of the files the app "
                                    f"loads ({', '.join(chosen or [])}).")
        staging_root = settings.models_dir / STAGING / role.name
        staging = staging_root / (info.sha or "main")[:12]
        if staging_root.exists():  # an older revision's partial files cannot be continued
            for other in staging_root.iterdir():
                if other != staging:
                    shutil.rmtree(other, ignore_errors=True)
        total = sum(sizes.get(name) or 0 for name in wanted) or None
        finished = 0

        def report(name_done: int) -> None:
            if should_cancel and should_cancel():
                raise Cancelled(f"The download of {role.title} was cancelled; it continues from the bytes "
                                "already here next time.")
            if progress:
                progress(finished + name_done, total)

        for name in wanted:
            kept = staging / name
            if kept.exists():
                finished += kept.stat().st_size
                continue
            url = hf_hub_url(repo, name, revision=info.sha, endpoint=endpoint)
            meta = get_hf_file_metadata(url, token=auth, endpoint=endpoint)
            part = partial_path(kept)
            part.parent.mkdir(parents=True, exist_ok=True)
            resume = part.stat().st_size if part.exists() else 0
            if meta.size is not None and resume > meta.size:
                part.unlink()
                resume = 0
            report(resume)
            headers = build_hf_headers(token=auth)
            if urlsplit(meta.location).netloc != urlsplit(url).netloc:  # a large file's CDN: no hub token there
                headers.pop("authorization", None)
            _transfer(meta.location, part, headers, meta.size, report)
            if not matches_etag(part, meta.etag):
                part.unlink()
                raise DownloadError(f"{role.title}: {name} from the hub does not match its published checksum "
                                    f"({meta.etag}), so it was not kept. Download again; if it persists, the hub "
                                    "or a proxy is sending a damaged file.")
            part.rename(kept)
            finished += kept.stat().st_size
        if progress:
            progress(finished, total)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # another copy landed meanwhile (a command line download): keep it
            shutil.rmtree(staging_root, ignore_errors=True)
            return final
        os.replace(staging / role.default if role.kind == "file" else staging, final)
        shutil.rmtree(staging_root, ignore_errors=True)
        return final
    except (StudioError, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 (the hub, the network and the disk raise many types)
        raise _hub_failure(role, repo, error) from error


def fetch(role: ModelEntry, settings: Settings, *, token: str | None = None, progress: Progress | None = None,
          should_cancel: Callable[[], bool] | None = None) -> Path:
    """Fetch ``role``'s model into the models folder, whatever its download kind; its local path."""
    if destination(role, settings) is None:
        raise DownloadError(f"{role.title} is set to a local path ({settings.model(role.name, role.default)}), so "
                            f"there is nothing to download; change {role.setting} to use a download.")
    if role.download == "url":
        return download_url(role, settings.models_dir, log=lambda text: None, progress=progress,
                            should_cancel=should_cancel)
    if role.download == "ultralytics":
        return fetch_url(role, f"{ULTRALYTICS_ASSETS}/{role.default}", settings.models_dir / role.default,
                         min_bytes=MIN_CHECKPOINT_BYTES,
                         progress=progress, should_cancel=should_cancel)
    return fetch_hub(role, settings, token=token, progress=progress, should_cancel=should_cancel)


# --- deleting what the app fetched ----------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def removable(status: ModelStatus, settings: Settings) -> list[Path]:
    """What deleting ``status``'s model removes: its copy in the models folder, or its repository (a
    single file: that file and its blob) in the Hugging Face cache; never a path set by hand
    elsewhere. Empty when there is nothing the app may delete."""
    path = status.path
    if path is None:
        return []
    configured = settings.model(status.role.name, status.role.default)
    if Path(configured).expanduser().exists():  # set by hand to a local copy: not the app's to delete
        return []
    if _inside(path, settings.models_dir) and not path.is_symlink():
        return [path]
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    if not _inside(path, cache) or not path.absolute().is_relative_to(cache.absolute()):
        return []
    parts = path.absolute().relative_to(cache.absolute()).parts
    if not parts or not parts[0].startswith("models--"):
        return []
    if status.role.kind == "repo":
        return [cache / parts[0]]
    blob = path.resolve()
    return [path, *([blob] if blob != path.absolute() and _inside(blob, cache / parts[0]) else [])]


def delete(status: ModelStatus, settings: Settings) -> int:
    """Delete ``status``'s model (what :func:`removable` names) and any partial download; the bytes freed."""
    freed = 0
    for path in [*removable(status, settings), *partial_files(status.role, settings)]:
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(path)
        else:
            freed += path.stat().st_size if path.exists() and not path.is_symlink() else 0
            path.unlink()
    for empty in (settings.models_dir / status.configured).parents if status.role.kind == "repo" else ():
        if empty == settings.models_dir or not _inside(empty, settings.models_dir):
            break
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    return freed


# --- the server's downloads ------------------------------------------------------------------------------


@dataclass
class Job:
    """One role's download: its state ("fetching", "done", "failed", "cancelled"), bytes so far and in all
    (``total`` None until the server says), and the message of a failure or cancel."""

    role: str
    title: str
    state: str = "fetching"
    done: int = 0
    total: int | None = None
    message: str = ""
    path: Path | None = None
    started: float = field(default_factory=time.monotonic)
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.state == "fetching"

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    def describe(self) -> str:
        """The bytes so far, for a progress bar's text."""
        if self.total:
            return f"{human_size(self.done)} of {human_size(self.total)} ({self.fraction:.0%})"
        return human_size(self.done)

    def _progress(self, done: int, total: int | None) -> None:
        self.done = done
        if total:
            self.total = total


class DownloadManager:
    """The server's downloads, one per role at a time, each in its own thread; every session sees the
    same jobs. ``fetcher`` is :func:`fetch` (tests pass another); ``on_finish(role)`` runs when a
    download ends, however it ends (the app refreshes what it knows of the models there)."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None, *, offline: bool = False,
                 fetcher: Callable[..., Path] | None = None, on_finish: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.catalog = catalog or catalogs.current(settings)
        self.offline = offline
        self._fetch = fetcher or fetch
        self._on_finish = on_finish
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.finished = 0  # downloads ended so far (done or not)

    def offline_reason(self) -> str | None:
        return offline_reason(self.settings, self.offline)

    def job(self, role: str) -> Job | None:
        return self._jobs.get(role)

    def running(self) -> list[Job]:
        return [job for job in self._jobs.values() if job.running]

    def start(self, role: str, token: str | None = None) -> Job:
        """Start fetching ``role`` in the background (or return its running download); DownloadError
        at once when nothing can be downloaded here."""
        entry = self.catalog.model(role)
        reason = self.offline_reason()
        if reason:
            raise DownloadError(f"{reason} {offline_advice()}")
        with self._lock:
            current = self._jobs.get(role)
            if current is not None and current.running:
                return current
            self._check_space(entry)
            job = Job(role, entry.title)
            job.thread = threading.Thread(target=self._run, args=(job, entry, token), name=f"download-{role}",
                                          daemon=True)
            self._jobs[role] = job
        job.thread.start()
        return job

    def _check_space(self, entry: ModelEntry) -> None:
        """DownloadError when the disk of the models folder has clearly too little room for ``entry``."""
        if not entry.size_gb:
            return
        needed = int(entry.size_gb * 1e9) - partial_size(entry, self.settings)
        free = disk_free(self.settings)
        if needed > free:
            raise DownloadError(f"{entry.title} needs about {human_size(needed)} more, and only {human_size(free)} "
                                f"is free on the disk of {self.settings.models_dir}. Free some space (Delete on "
                                "models you do not use) or set INPAINT_STUDIO_MODELS_DIR to a larger disk.")

    def cancel(self, role: str) -> None:
        job = self._jobs.get(role)
        if job is not None and job.running:
            job.cancel_requested.set()

    def wait(self, role: str, timeout: float) -> Job | None:
        """The job of ``role`` once it ended, or as it is after ``timeout`` seconds."""
        job = self._jobs.get(role)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        return job

    def delete(self, role: str) -> int:
        """Delete ``role``'s model and partial download (not while it downloads); the bytes freed."""
        job = self._jobs.get(role)
        if job is not None and job.running:
            raise DownloadError(f"{job.title} is downloading: cancel it first.")
        freed = delete(locate(role, self.settings, self.catalog), self.settings)
        self._jobs.pop(role, None)
        if self._on_finish:
            self._on_finish(role)
        return freed

    def _run(self, job: Job, entry: ModelEntry, token: str | None) -> None:
        try:
            job.path = self._fetch(entry, self.settings, token=token, progress=job._progress,
                                   should_cancel=job.cancel_requested.is_set)
            job.state = "done"
            if job.total is None or job.done < job.total:  # already here: nothing was transferred
                job.done = job.total = max(job.done, disk_size(job.path))
        except Cancelled as cancelled:
            job.state, job.message = "cancelled", str(cancelled)
        except StudioError as error:
            job.state, job.message = "failed", str(error)
        except Exception as error:  # noqa: BLE001 (a failure must end up on the page, not in a dead thread)
            job.state, job.message = "failed", (f"{entry.title} could not be downloaded ({type(error).__name__}: "
                                                f"{one_line(error)}). Try again: it continues where it stopped.")
        finally:
            self.finished += 1
            if self._on_finish:
                try:
                    self._on_finish(job.role)
                except Exception:  # noqa: BLE001,S110 (a refresh that fails must not hide the download's end)
                    pass
