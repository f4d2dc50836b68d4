"""Settings from environment variables and ``.streamlit/secrets.toml``.

Every setting has an environment variable ``INPAINT_STUDIO_<NAME>``; the same name as a top-level
key in ``.streamlit/secrets.toml`` works too (handy on Streamlit Community Cloud and Hugging Face
Spaces, whose secrets land there or in the environment). The environment wins over the file.
"""
from __future__ import annotations

import os
import socket
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError

PREFIX = "INPAINT_STUDIO_"
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_SECRETS = Path(".streamlit") / "secrets.toml"
DEVICES = ("auto", "cuda", "mps", "cpu")
DEFAULT_QUEUE_MAX = 20  # requests that may wait for one engine before more are turned away
# zlib level of the PNGs the app writes (downloads, command line, batch): 1 is several times faster
# than Pillow's 6 on a 12 MP photo for files a little larger; 0 = none, 9 = smallest and slowest.
DEFAULT_PNG_COMPRESSION = 1
PNG_COMPRESSION_LEVELS = range(0, 10)
# The formats results are written in (core.output_formats describes each); auto = jpeg-keep for a
# JPEG photo (only the blocks an edit changed re-encoded), png for any other.
AUTO_FORMAT = "auto"
OUTPUT_FORMAT_NAMES = (AUTO_FORMAT, "png", "jpeg-keep", "jpeg", "webp")
DEFAULT_JPEG_QUALITY = 95  # of plain JPEG results (and of jpeg-keep's fallback)

# What the ML libraries need to hear, before they are imported, to never touch the network.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
}


AUTH_MODES = ("none", "password", "oidc")
DEFAULT_ENGINE_TIMEOUT = 600.0  # seconds one request may take at the engine server, waiting included


@dataclass(frozen=True)
class ServeSettings:
    """How ``inpaint-studio serve`` deploys each engine on Ray Serve (its options override these).

    ``gpus``: GPUs per replica (None: one where the cluster has GPUs, else none); ``cpus``: CPUs per
    replica; ``min_replicas`` / ``max_replicas``: the autoscaling range (equal: a fixed count);
    ``max_ongoing``: requests one replica takes at once, the running one and those waiting in its
    queue (None: ``queue_max`` + 1, so its queue, not Serve's, says who waits and where)."""

    gpus: float | None = None
    cpus: float = 1.0
    min_replicas: int = 1
    max_replicas: int | None = None  # None: min_replicas
    max_ongoing: int | None = None


class SettingsError(UserError):
    """A setting with a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """The app's configuration, read once per process (see :func:`load_settings`)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str = "auto"
    offline: bool | None = None  # None = detect
    models_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "inpaint-studio" / "models")
    models: Mapping[str, str] = field(default_factory=dict)  # role → hub id or local path
    sdxl_fp16_vae: str | None = None  # fp16-safe SDXL VAE (hub id or folder), used in float16
    cpu_offload: bool = False  # diffusion sub-models wait on the CPU (small GPUs)
    compile: bool = False  # torch.compile the UNet or transformer (slow first call, faster after)
    fuse_qkv: bool = True  # fuse each attention's query, key and value projections (CUDA, diffusion models)
    fp8: bool = False  # FP8 weights through torchao for the transformer (CUDA GPUs of compute capability 8.9+)
    auth: str = "none"  # "none", "password" (a shared password) or "oidc" (st.login, [auth] in secrets)
    password: str | None = field(default=None, repr=False)
    auth_provider: str | None = None  # the [auth.<name>] provider st.login uses, when there are several
    allowed_users: tuple[str, ...] = ()  # OIDC: e-mail addresses or "@domain" allowed in; () = anyone
    memory_check: bool = True  # leave out diffusion engines whose model does not fit in memory
    # Roles to fetch in the background when the server starts; ("main",) = the catalog's main models.
    download_on_start: tuple[str, ...] = ()
    catalog_modules: tuple[str, ...] = ()  # importable modules whose entries extend the catalog
    memory_trim_seconds: float = 60.0  # how often an idle server hands freed memory back; 0 = never
    png_compression: int = DEFAULT_PNG_COMPRESSION  # zlib level (0-9) of the PNGs the app writes
    output_format: str = AUTO_FORMAT  # of the command line's and batches' results (OUTPUT_FORMAT_NAMES)
    jpeg_quality: int = DEFAULT_JPEG_QUALITY  # 1-100, of plain JPEG results
    queue_max: int = DEFAULT_QUEUE_MAX  # requests that may wait per engine (the running one not counted)
    # The engine server (``inpaint-studio serve``): its address makes this process send the models'
    # work there (core.engine_client) instead of loading them; the timeout bounds one request there.
    engine_server: str | None = None
    engine_timeout: float = DEFAULT_ENGINE_TIMEOUT
    serve: ServeSettings = field(default_factory=lambda: ServeSettings())

    def model(self, role: str, default: str) -> str:
        """The configured id or path for ``role``, else ``default``."""
        return self.models.get(role) or default


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"{path} could not be read: {error}") from error
    return {key: str(value) for key, value in data.items() if key.startswith(PREFIX)}


def _parse_bool(name: str, value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in ("", "auto"):
        return None
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={value!r}: use 1/0, true/false or auto.")


def load_settings(
    environ: Mapping[str, str] | None = None, secrets_path: Path | None = None
) -> Settings:
    """Read the settings from ``environ`` (default ``os.environ``) over the secrets file."""
    environ = os.environ if environ is None else environ
    values = _read_secrets(secrets_path or DEFAULT_SECRETS)
    values.update({key: value for key, value in environ.items() if key.startswith(PREFIX)})

    def get(name: str) -> str | None:
        return values.get(PREFIX + name)

    max_pixels = DEFAULT_MAX_PIXELS
    if get("MAX_PIXELS") is not None:
        try:
            max_pixels = int(float(get("MAX_PIXELS")))
        except ValueError:
            max_pixels = 0
        if max_pixels <= 0:
            raise SettingsError(
                f"{PREFIX}MAX_PIXELS={get('MAX_PIXELS')!r}: give a positive number of pixels."
            )
    device = (get("DEVICE") or "auto").strip().lower()
    if device not in DEVICES:
        raise SettingsError(f"{PREFIX}DEVICE={device!r}: use one of {', '.join(DEVICES)}.")
    models = {
        key[len(PREFIX + "MODEL_") :].lower(): value
        for key, value in values.items()
        if key.startswith(PREFIX + "MODEL_") and value
    }
    models_dir = get("MODELS_DIR")
    password = get("PASSWORD") or None
    auth = (get("AUTH") or ("password" if password else "none")).strip().lower()
    if auth not in AUTH_MODES:
        raise SettingsError(f"{PREFIX}AUTH={auth!r}: use one of {', '.join(AUTH_MODES)}.")
    if auth == "password" and not password:
        raise SettingsError(f"{PREFIX}AUTH=password needs {PREFIX}PASSWORD (the shared password).")
    allowed = tuple(item.strip().lower() for item in (get("ALLOWED_USERS") or "").split(",") if item.strip())
    return Settings(
        max_pixels=max_pixels,
        device=device,
        offline=_parse_bool(PREFIX + "OFFLINE", get("OFFLINE") or "auto"),
        models_dir=Path(models_dir).expanduser() if models_dir else Settings().models_dir,
        models=models,
        sdxl_fp16_vae=get("SDXL_FP16_VAE") or None,
        cpu_offload=bool(_parse_bool(PREFIX + "CPU_OFFLOAD", get("CPU_OFFLOAD") or "0")),
        compile=bool(_parse_bool(PREFIX + "COMPILE", get("COMPILE") or "0")),
        fuse_qkv=bool(_parse_bool(PREFIX + "FUSE_QKV", get("FUSE_QKV") or "1")),
        fp8=bool(_parse_bool(PREFIX + "FP8", get("FP8") or "0")),
        auth=auth,
        password=password,
        auth_provider=get("AUTH_PROVIDER") or None,
        allowed_users=allowed,
        memory_check=bool(_parse_bool(PREFIX + "MEMORY_CHECK", get("MEMORY_CHECK") or "1")),
        download_on_start=_roles_to_fetch(get("DOWNLOAD_ON_START") or ""),
        memory_trim_seconds=_seconds(PREFIX + "MEMORY_TRIM_SECONDS", get("MEMORY_TRIM_SECONDS") or "60"),
        catalog_modules=_names(get("CATALOG_MODULES") or ""),
        png_compression=_png_compression(get("PNG_COMPRESSION")),
        output_format=_output_format(get("OUTPUT_FORMAT")),
        jpeg_quality=_jpeg_quality(get("JPEG_QUALITY")),
        queue_max=_queue_max(get("QUEUE_MAX")),
        engine_server=_engine_server(get("ENGINE_SERVER")),
        engine_timeout=_number("ENGINE_TIMEOUT", get("ENGINE_TIMEOUT"), DEFAULT_ENGINE_TIMEOUT, kind=float, low=1,
                               what="seconds a request may take at the engine server"),
        serve=_serve_settings(get),
    )


def _output_format(value: str | None) -> str:
    """``INPAINT_STUDIO_OUTPUT_FORMAT``: one of OUTPUT_FORMAT_NAMES (unset or empty: auto)."""
    if value is None or not value.strip():
        return AUTO_FORMAT
    name = value.strip().lower()
    if name not in OUTPUT_FORMAT_NAMES:
        raise SettingsError(
            f"{PREFIX}OUTPUT_FORMAT={value!r}: use one of {', '.join(OUTPUT_FORMAT_NAMES)} ({AUTO_FORMAT} = jpeg-keep "
            "for JPEG photos, png for others)."
        )
    return name


def _number(name: str, value: str | None, default, *, kind: type = int, low: float = 0,
            high: float | None = None, what: str = "") -> int | float:
    """Setting ``INPAINT_STUDIO_<name>``: a whole number (``kind`` int) or a number from ``low`` to
    ``high`` (unset or empty: ``default``); SettingsError naming the variable and saying what to give
    (``what``: what the number is, for the message)."""
    if value is None or not str(value).strip():
        return default
    try:
        number = kind(str(value).strip())
    except ValueError:
        number = None
    if number is None or not (number >= low and (high is None or number <= high)):  # also NaN
        noun = "whole number" if kind is int else "number"
        span = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
        default_text = f"; the default is {default:g}" if isinstance(default, (int, float)) else ""
        raise SettingsError(f"{PREFIX}{name}={value!r}: give a {noun} {span}{f' ({what})' if what else ''}"
                            f"{default_text}.")
    return number


def _jpeg_quality(value: str | None) -> int:
    """``INPAINT_STUDIO_JPEG_QUALITY``: a whole number from 1 to 100 (unset or empty: the default)."""
    return _number("JPEG_QUALITY", value, DEFAULT_JPEG_QUALITY, low=1, high=100)


def _queue_max(value: str | None) -> int:
    """``INPAINT_STUDIO_QUEUE_MAX``: a whole number of at least 1 (unset or empty: the default)."""
    return _number("QUEUE_MAX", value, DEFAULT_QUEUE_MAX, low=1,
                   what="how many requests may wait for one model")


def _png_compression(value: str | None) -> int:
    """``INPAINT_STUDIO_PNG_COMPRESSION``: a whole number from 0 to 9 (unset or empty: the default)."""
    return _number("PNG_COMPRESSION", value, DEFAULT_PNG_COMPRESSION, low=0, high=9,
                   what="0: no compression, fastest; 9: smallest files, slowest")


def _engine_server(value: str | None) -> str | None:
    """``INPAINT_STUDIO_ENGINE_SERVER``: the engine server's http(s) address (unset or empty: none)."""
    if value is None or not value.strip():
        return None
    address = value.strip().rstrip("/")
    if not address.startswith(("http://", "https://")) or len(address.split("//", 1)[1]) == 0:
        raise SettingsError(f"{PREFIX}ENGINE_SERVER={value!r}: give the address `inpaint-studio serve` printed, "
                            "such as http://gpu-head:8000.")
    return address


def _serve_settings(get) -> ServeSettings:
    """The ``INPAINT_STUDIO_SERVE_*`` settings."""
    gpus = _number("SERVE_GPUS", get("SERVE_GPUS"), None, kind=float, low=0, what="GPUs per replica")
    minimum = _number("SERVE_MIN_REPLICAS", get("SERVE_MIN_REPLICAS"), 1, low=0, what="replicas kept running")
    maximum = _number("SERVE_MAX_REPLICAS", get("SERVE_MAX_REPLICAS"), None, low=max(1, minimum),
                      what="at least SERVE_MIN_REPLICAS and 1")
    return ServeSettings(
        gpus=gpus,
        cpus=_number("SERVE_CPUS", get("SERVE_CPUS"), 1.0, kind=float, low=0.01, what="CPUs per replica"),
        min_replicas=minimum,
        max_replicas=maximum,
        max_ongoing=_number("SERVE_MAX_ONGOING", get("SERVE_MAX_ONGOING"), None, low=1,
                            what="requests one replica takes at once"),
    )


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise SettingsError(f"{name}={value!r}: give a number of seconds (0 turns it off).")
    return seconds


MAIN_MODELS = "main"  # DOWNLOAD_ON_START=1: the catalog's main models


def _roles_to_fetch(value: str) -> tuple[str, ...]:
    """``INPAINT_STUDIO_DOWNLOAD_ON_START``: empty/0 = nothing, 1 = the main models, or role names
    (checked against the catalog where the fetch starts)."""
    lowered = value.strip().lower()
    if lowered in ("", "0", "false", "no", "off"):
        return ()
    if lowered in ("1", "true", "yes", "on"):
        return (MAIN_MODELS,)
    return _names(lowered)


def _names(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What a Ray worker (a batch actor, an engine replica) hears of the process that started it: the
# app's settings, the model hub's and the ML libraries', so that it finds the same models.
PASSED_ON = ("INPAINT_STUDIO_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "YOLO_", "TORCH_", "OMP_NUM_THREADS")


def ray_runtime_env(environ: Mapping[str, str] | None = None) -> dict:
    """Ray's ``runtime_env`` for this project's workers: the variables of :data:`PASSED_ON` of
    ``environ`` (default ``os.environ``), and the project on ``PYTHONPATH``."""
    environ = os.environ if environ is None else environ
    env = {key: value for key, value in environ.items() if key.startswith(PASSED_ON)}
    path = environ.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    return {"env_vars": env}


def hub_reachable(host: str = "huggingface.co", timeout: float = 1.5) -> bool:
    """Whether the model hub's name resolves within ``timeout`` seconds (no connection is made)."""
    result: list[bool] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def apply_offline_mode(settings: Settings) -> bool:
    """Put the ML libraries in offline mode when configured or when the hub is out of reach.

    Returns whether the app runs offline. Must run before torch/transformers/diffusers/ultralytics
    are imported for the library flags to take effect.
    """
    offline = settings.offline if settings.offline is not None else not hub_reachable()
    if offline:
        for key, value in OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
    # Never let ultralytics pip-install packages into the server's environment at run time.
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_VERBOSE", "0")
    return offline


def quiet_library_progress() -> None:
    """Turn off diffusers' and transformers' own progress bars (loading, denoising steps): the app
    and the command line report progress themselves. Imports those libraries: call it only where
    they are about to be used."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
