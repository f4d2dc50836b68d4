"""The models on disk: what each role has locally, and fetching the defaults on a machine with internet.

``python -m core models list`` and ``python -m core models download`` are built on this module.
Downloads take only the files the app loads: safetensors weights (the fp16 variant of the
diffusion pipelines, which every device can load: the CPU upcasts it), configs and tokenizers;
never ``.bin``/``.ckpt`` duplicates, EMA or ONNX/Flax exports. Hub models go through
``huggingface_hub`` (into its cache, or into ``--dir``), FastSAM checkpoints through ultralytics'
own asset downloader.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings, hub_reachable
from core.models import ROLES, ModelRole, ModelStatus, locate

# The roles fetched when none is named: what the app's pages use (the few-step LoRAs and FastSAM-x
# are extras, fetched by name).
DEFAULT_ROLES = ("fastsam", "clip", "sam", "sd15_inpaint", "sdxl_inpaint", "iclight", "iclight_base")

PIPELINE_FILES = ["model_index.json", "*/config.json", "*/*.txt", "*/*.json", "*/*.fp16.safetensors"]
PIPELINE_CONFIGS = PIPELINE_FILES[:4]
TRANSFORMERS_FILES = ["*.json", "*.txt", "model.safetensors"]
LORA_FILES = ["pytorch_lora_weights.safetensors"]


class DownloadError(RuntimeError):
    """A download that cannot start or finish; the message says what to do."""


@dataclass(frozen=True)
class LocalModel:
    """A role's model as found on this machine (size in bytes, 0 when missing)."""

    status: ModelStatus
    size: int

    @property
    def role(self) -> ModelRole:
        return self.status.role


def disk_size(path: Path | None) -> int:
    """Bytes under ``path`` (a file or a folder; symlinks into the hub cache followed), 0 for None."""
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def local_models(settings: Settings) -> list[LocalModel]:
    """Every role, where its model was found and how large it is."""
    return [LocalModel(status, disk_size(status.path)) for status in (locate(name, settings) for name in ROLES)]


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def patterns(role: ModelRole) -> list[str] | None:
    """The files of ``role``'s hub repository the app needs (None: a single file, or FastSAM)."""
    if role.kind == "file":
        return None
    if role.probe == "model_index.json":
        return PIPELINE_FILES
    if role.name.endswith(("_lora_sd15", "_lora_sdxl")):
        return LORA_FILES
    return TRANSFORMERS_FILES


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
             log: Callable[[str], None] = print) -> Path:
    """Fetch ``role_name``'s default model; its local path. Into ``folder`` when given (each hub
    repository in a subfolder named after it), else the Hugging Face cache (FastSAM: the models folder)."""
    role = ROLES[role_name]
    configured = settings.model(role.name, role.default)
    if configured != role.default and Path(configured).expanduser().exists():
        log(f"{role.name}: configured to a local copy ({configured}), nothing to fetch")
        return Path(configured).expanduser()
    if role.name.startswith("fastsam"):
        return _download_fastsam(role, folder or settings.models_dir, log)
    from huggingface_hub import hf_hub_download, snapshot_download

    os.environ.pop("HF_HUB_OFFLINE", None)
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


def pipeline_patterns(files: list[str]) -> list[str]:
    """What to fetch of a diffusers pipeline repository holding ``files``: its configs, and the
    fp16 safetensors weights when it has them, else its plain safetensors (else its .bin files)."""
    weights = [f for f in files if "/" in f]
    if any(f.endswith(".fp16.safetensors") for f in weights):
        return PIPELINE_FILES
    if any(f.endswith(".safetensors") for f in weights):
        return [*PIPELINE_CONFIGS, "*/diffusion_pytorch_model.safetensors", "*/model.safetensors"]
    return [*PIPELINE_CONFIGS, "*/diffusion_pytorch_model.bin", "*/pytorch_model.bin"]


def _download_fastsam(role: ModelRole, folder: Path, log: Callable[[str], None]) -> Path:
    from ultralytics.utils.downloads import attempt_download_asset

    folder.mkdir(parents=True, exist_ok=True)
    log(f"{role.name}: {role.default} from the ultralytics assets")
    os.environ.pop("YOLO_OFFLINE", None)
    path = Path(attempt_download_asset(str(folder / role.default)))
    if not path.exists():
        raise DownloadError(f"{role.default} could not be fetched from the ultralytics assets.")
    return path


def setting_line(role_name: str, path: Path) -> str:
    return f"{ROLES[role_name].setting}={path}"


class BackgroundFetch:
    """Fetch the missing models among ``roles`` in a background thread (a server's first start on
    a machine with internet, e.g. a Hugging Face Space). ``state`` says, per role, "waiting",
    "fetching", "done", "present" or "failed: <reason>"."""

    def __init__(self, roles: tuple[str, ...], settings: Settings, fetch: Callable[..., Path] | None = None) -> None:
        import threading

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
