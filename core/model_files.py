"""The models on disk: where each role's model is, how large, and fetching it on a machine with internet.

``python -m core models list`` and ``python -m core models download`` are built on this module.
Downloads take only the files the app loads (the catalog entry's ``download`` kind): safetensors
weights (the fp16 variant of the diffusion pipelines, which every device can load: the CPU
upcasts it), configs and tokenizers; never ``.bin``/``.ckpt`` duplicates, EMA or ONNX/Flax
exports. Hub models go through ``huggingface_hub`` (into its cache, or into ``--dir``), FastSAM
checkpoints through ultralytics' own asset downloader, files published outside the hub (LaMa and
MI-GAN's TorchScript files) over HTTPS, kept only when their MD5 matches the catalog's.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import catalog as catalogs
from core.catalog import Catalog, ModelEntry
from core.config import MAIN_MODELS, Settings, SettingsError, hub_reachable
from core.errors import Cancelled, ModelUnavailable, UserError

PIPELINE_FILES = ["model_index.json", "*/config.json", "*/*.txt", "*/*.json", "*/*.model", "*/*.jinja",
                  "*/*.fp16.safetensors"]
PIPELINE_CONFIGS = PIPELINE_FILES[:6]  # configs, tokenizers (a T5's spiece.model, a chat template), shard indexes
PATTERNS: dict[str, list[str] | None] = {
    "pipeline": PIPELINE_FILES,
    "transformers": ["*.json", "*.txt", "model.safetensors"],
    "lora": ["pytorch_lora_weights.safetensors"],
    "file": None,
    "ultralytics": None,
    "url": None,
}
URL_TIMEOUT_SECONDS = 30  # for the connection and each read, not the whole download
URL_ATTEMPTS = 3  # tries of a plain download whose connection drops while bytes still come


@dataclass(frozen=True)
class ModelStatus:
    """Where a role's model was looked for and whether it was found."""

    role: ModelEntry
    configured: str
    path: Path | None

    @property
    def available(self) -> bool:
        return self.path is not None

    @property
    def summary(self) -> str:
        if self.available:
            return f"{self.role.title}: available ({self.path})"
        return (
            f"{self.role.title}: missing ({self.configured}); fallback: {self.role.fallback}. "
            f"Set {self.role.setting} to a local copy."
        )

    def require(self) -> Path:
        """The model's path; ModelUnavailable saying how to provide it when it is not here."""
        if self.path is None:
            raise ModelUnavailable(
                f"{self.role.title} ({self.configured}) is not on this machine. Download it on a machine with "
                f"internet (python -m core models download {self.role.name}) and set {self.role.setting} to its "
                "local path."
            )
        return self.path


def _hub_cache_path(repo_id: str, probe: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, probe)
    return Path(found).parent if isinstance(found, str) else None


def locate(role_name: str, settings: Settings, catalog: Catalog | None = None) -> ModelStatus:
    """Find ``role_name``'s model: a configured local path, the models folder, then the hub cache."""
    role = (catalog or catalogs.current(settings)).model(role_name)
    configured = settings.model(role.name, role.default)
    candidate = Path(configured).expanduser()
    if candidate.exists():
        return ModelStatus(role, configured, candidate)
    in_models_dir = settings.models_dir / (candidate.name if role.kind == "file" else configured)
    if in_models_dir.exists():
        return ModelStatus(role, configured, in_models_dir)
    if role.kind == "repo" and "/" in configured and not candidate.is_absolute():
        return ModelStatus(role, configured, _hub_cache_path(configured, role.probe))
    if role.kind == "file" and role.repo and configured == role.default:
        folder = _hub_cache_path(role.repo, role.default)
        return ModelStatus(role, configured, folder / role.default if folder else None)
    return ModelStatus(role, configured, None)


def model_statuses(settings: Settings, catalog: Catalog | None = None) -> list[ModelStatus]:
    """Every role's status, in the catalog's order."""
    catalog = catalog or catalogs.current(settings)
    return [locate(name, settings, catalog) for name in catalog.models]


def roles_to_fetch(names: tuple[str, ...], catalog: Catalog) -> tuple[str, ...]:
    """``INPAINT_STUDIO_DOWNLOAD_ON_START``'s roles: the main models for "main", else the names,
    each checked against the catalog (SettingsError naming the unknown ones)."""
    if names == (MAIN_MODELS,):
        return catalog.main_models()
    unknown = [name for name in names if name not in catalog.models]
    if unknown:
        raise SettingsError(f"INPAINT_STUDIO_DOWNLOAD_ON_START: unknown role(s) {', '.join(unknown)}; use 1 or "
                            f"role names ({', '.join(catalog.models)}).")
    return names


class DownloadError(UserError):
    """A download that cannot start or finish; the message says what to do."""


@dataclass(frozen=True)
class LocalModel:
    """A role's model as found on this machine (size in bytes, 0 when missing)."""

    status: ModelStatus
    size: int

    @property
    def role(self) -> ModelEntry:
        return self.status.role


def disk_size(path: Path | None) -> int:
    """Bytes under ``path`` (a file or a folder; symlinks into the hub cache followed), 0 for None."""
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def local_models(settings: Settings, catalog: Catalog | None = None) -> list[LocalModel]:
    """Every role, where its model was found and how large it is."""
    return [LocalModel(status, disk_size(status.path)) for status in model_statuses(settings, catalog)]


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def patterns(role: ModelEntry) -> list[str] | None:
    """The files of ``role``'s hub repository the app needs (None: a single file, or FastSAM)."""
    return PATTERNS[role.download]


def check_online(settings: Settings) -> None:
    """Raise DownloadError at once when this machine is offline (configured, or the hub's name
    does not resolve)."""
    if settings.offline:
        raise DownloadError(
            "INPAINT_STUDIO_OFFLINE is on, so nothing is downloaded. Run this command on a machine with "
            "internet (with --dir DIR), copy DIR here and set the printed settings."
        )
    if settings.offline is None and not hub_reachable():
        raise DownloadError(
            "No internet here: huggingface.co does not resolve. Run this command on a machine with internet "
            "(with --dir DIR), copy DIR here and set the printed settings."
        )


def download(role_name: str, settings: Settings, folder: Path | None = None,
             log: Callable[[str], None] = print, catalog: Catalog | None = None) -> Path:
    """Fetch ``role_name``'s default model; its local path. Into ``folder`` when given (each hub
    repository in a subfolder named after it), else the Hugging Face cache (FastSAM: the models folder)."""
    role = (catalog or catalogs.current(settings)).model(role_name)
    configured = settings.model(role.name, role.default)
    if configured != role.default and Path(configured).expanduser().exists():
        log(f"{role.name}: configured to a local copy ({configured}), nothing to fetch")
        return Path(configured).expanduser()
    if role.download == "ultralytics":
        return _download_fastsam(role, folder or settings.models_dir, log)
    if role.download == "url":
        return download_url(role, folder or settings.models_dir, log)
    from huggingface_hub import hf_hub_download, snapshot_download

    os.environ.pop("HF_HUB_OFFLINE", None)
    with _hub_errors(role):
        if role.kind == "file":
            repo = role.repo or ""
            log(f"{role.name}: {repo}/{role.default}")
            path = hf_hub_download(repo, role.default, local_dir=str(folder) if folder else None)
            return Path(path)
        target = folder / role.default.split("/")[-1] if folder else None
        wanted = patterns(role)
        if wanted == PIPELINE_FILES:  # the fp16 weights where the repository has them, else the plain ones
            from huggingface_hub import list_repo_files

            wanted = pipeline_patterns(list_repo_files(role.default))
        log(f"{role.name}: {role.default} ({', '.join(wanted)})")
        path = snapshot_download(role.default, allow_patterns=wanted, local_dir=str(target) if target else None)
        return Path(path)


def _gated_message(role: ModelEntry, reason: str) -> str:
    repo = role.repo or role.default
    return (f"{role.title} ({repo}) is gated on the Hugging Face hub: {reason}. Accept its licence at "
            f"https://huggingface.co/{repo} while signed in, create a read token at "
            "https://huggingface.co/settings/tokens, then set HF_TOKEN to it (or run `hf auth login`) and run "
            "this again.")


def has_hub_token() -> bool:
    """Whether a Hugging Face token is set on this machine (HF_TOKEN or a saved login)."""
    from huggingface_hub import get_token

    return bool(get_token())


def gated_hint(role: ModelEntry) -> str:
    """What a gated model needs before ``models download`` can fetch it."""
    repo = role.repo or role.default
    return (f"{role.title} ({repo}) is gated: accept its licence at https://huggingface.co/{repo}, then set "
            "HF_TOKEN (or run `hf auth login`) on the machine that downloads it.")


class _hub_errors:
    """Turn the hub's refusals of a gated repository (no token, licence not accepted) into a
    DownloadError saying what to do; check for a token before asking."""

    def __init__(self, role: ModelEntry) -> None:
        self.role = role

    def __enter__(self) -> None:
        if self.role.gated:
            from huggingface_hub import get_token

            if not get_token():
                raise DownloadError(_gated_message(self.role, "no hub token is set on this machine"))

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None:
            return False
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(error, GatedRepoError) or (
            self.role.gated and isinstance(error, HfHubHTTPError) and status in (401, 403)
        ):
            raise DownloadError(_gated_message(
                self.role, "the hub refused the token (its licence is not accepted for this account, "
                "or the token is invalid)")) from error
        return False


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_url(role: ModelEntry, folder: Path, log: Callable[[str], None] = print,
                 progress: Callable[[int, int | None], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> Path:
    """Fetch ``role.url`` into ``folder/role.default``; the file is kept only when its MD5 is
    ``role.md5`` (DownloadError otherwise, nothing left behind). A file already there with the right
    checksum is not fetched again; an interrupted or cancelled fetch leaves ``<name>.part``, which
    the next one continues (HTTP Range). ``progress(done, total)`` is called as bytes arrive;
    ``should_cancel()`` returning True stops the fetch with Cancelled."""
    if not role.url or not role.md5:
        raise DownloadError(f"{role.title} has no download address in the catalog; set {role.setting} "
                            "to a local copy.")
    target = Path(folder) / role.default
    if target.exists() and file_md5(target) == role.md5:
        log(f"{role.name}: {target} is already here (checksum verified)")
        return target
    log(f"{role.name}: {role.url}")
    return fetch_url(role, role.url, target, md5=role.md5, progress=progress, should_cancel=should_cancel)


PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 16


def partial_path(target: Path) -> Path:
    """Where an unfinished download of ``target`` is kept (never where the app looks for a model)."""
    return target.with_name(target.name + PART_SUFFIX)


def fetch_url(role: ModelEntry, url: str, target: Path, *, md5: str | None = None, min_bytes: int = 0,
              progress: Callable[[int, int | None], None] | None = None,
              should_cancel: Callable[[], bool] | None = None, attempts: int = URL_ATTEMPTS) -> Path:
    """Fetch ``url`` into ``target`` through ``target.part``, continuing a partial file with an HTTP
    Range request (also after a connection cut mid-file, up to ``attempts`` times while bytes keep
    coming); moved into place only when complete (its MD5 ``md5`` when given, else its size the
    server's). A failed or cancelled fetch keeps the partial file for the next attempt, except when
    the checksum is wrong (then nothing is kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    for attempt in range(1, attempts + 1):
        before = partial.stat().st_size if partial.exists() else 0
        try:
            done, total = _fetch_range(role, url, partial, progress, should_cancel)
            break
        except (OSError, http.client.HTTPException) as error:
            done = partial.stat().st_size if partial.exists() else 0
            if isinstance(error, urllib.error.HTTPError) or attempt == attempts or done == before:
                raise _url_failure(role, url, error, done) from error
    if total is not None and done != total:
        raise DownloadError(f"{role.title}: the connection ended after {human_size(done)} of {human_size(total)}. "
                            "Try again: it continues where it stopped.")
    if md5 is not None and (found := file_md5(partial)) != md5:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{role.title} from {url} does not have the published checksum (MD5 "
                            f"{found}, expected {md5}), so it was not kept. Try again; if "
                            "it persists, the file at that address has changed: download it elsewhere, check "
                            f"it, and set {role.setting} to its path.")
    if done < min_bytes:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{role.title} from {url} is only {done} bytes, not a model, so it was not kept. "
                            f"Download it elsewhere and set {role.setting} to its path.")
    shutil.move(partial, target)
    return target


def _fetch_range(role: ModelEntry, url: str, partial: Path, progress, should_cancel) -> tuple[int, int | None]:
    """One request for the bytes ``partial`` lacks, appended to it; (bytes in the file, the file's size)."""
    done = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=URL_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code != 416:
            raise
        partial.unlink()  # asked past the end: the partial file is not one to trust
        return _fetch_range(role, url, partial, progress, should_cancel)
    with response:
        if done and response.status != 206:  # the server ignored the Range: start again
            done = 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        with open(partial, "ab" if done else "wb") as out:
            if progress:
                progress(done, total)
            while block := response.read(CHUNK_BYTES):
                if should_cancel and should_cancel():
                    raise Cancelled(f"The download of {role.title} was cancelled; it continues from "
                                    f"{human_size(done)} next time.")
                out.write(block)
                out.flush()
                done += len(block)
                if progress:
                    progress(done, total)
    if total is not None and done < total:
        raise ConnectionError(f"the connection ended after {human_size(done)} of {human_size(total)}")
    return done, total


def _url_failure(role: ModelEntry, url: str, error: Exception, done: int) -> DownloadError:
    if isinstance(error, urllib.error.HTTPError):
        return DownloadError(f"{role.title} could not be fetched from {url} (HTTP {error.code} {error.reason}). "
                             f"Try again later, or download it elsewhere and set {role.setting} to its path.")
    kept = f" ({human_size(done)} are here and the next try continues from there)" if done else ""
    return DownloadError(f"{role.title} could not be fetched from {url} ({error or type(error).__name__}). Check "
                         f"this machine's internet access and try again{kept}, or download it elsewhere and set "
                         f"{role.setting} to its path.")


def pipeline_patterns(files: list[str]) -> list[str]:
    """What to fetch of a diffusers pipeline repository holding ``files``: its configs, and the
    fp16 safetensors weights when it has them, else its plain safetensors (else its .bin files)."""
    weights = [f for f in files if "/" in f]
    if any(f.endswith(".fp16.safetensors") for f in weights):
        return PIPELINE_FILES
    if any(f.endswith(".safetensors") for f in weights):  # one file or shards (FLUX, Qwen-Image)
        return [*PIPELINE_CONFIGS, "*/diffusion_pytorch_model*.safetensors", "*/model*.safetensors"]
    return [*PIPELINE_CONFIGS, "*/diffusion_pytorch_model*.bin", "*/pytorch_model*.bin"]


def _download_fastsam(role: ModelEntry, folder: Path, log: Callable[[str], None]) -> Path:
    from ultralytics.utils.downloads import attempt_download_asset

    folder.mkdir(parents=True, exist_ok=True)
    log(f"{role.name}: {role.default} from the ultralytics assets")
    os.environ.pop("YOLO_OFFLINE", None)
    path = Path(attempt_download_asset(str(folder / role.default)))
    if not path.exists():
        raise DownloadError(f"{role.default} could not be fetched from the ultralytics assets.")
    return path


def setting_line(role: ModelEntry, path: Path) -> str:
    return f"{role.setting}={path}"


class BackgroundFetch:
    """Fetch the missing models among ``roles`` in a background thread (a server's first start on
    a machine with internet, e.g. a Hugging Face Space). ``state`` says, per role, "waiting",
    "fetching", "done", "present" or "failed: <reason>"."""

    def __init__(self, roles: tuple[str, ...], settings: Settings, fetch: Callable[..., Path] | None = None) -> None:
        self.roles, self.settings = roles, settings
        self._fetch = fetch or download
        self.state: dict[str, str] = {role: "waiting" for role in roles}
        self.thread = threading.Thread(target=self._run, name="model-fetch", daemon=True)

    def start(self) -> BackgroundFetch:
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        for role in self.roles:
            if locate(role, self.settings).available:
                self.state[role] = "present"
                continue
            self.state[role] = "fetching"
            try:
                self._fetch(role, self.settings, None, log=lambda text: None)
            except Exception as error:  # noqa: BLE001 (the hub, the network and the disk raise many types)
                self.state[role] = f"failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            else:
                self.state[role] = "done"
