"""The models the app can use, where each one is expected, and what stands in when it is missing.

One registry entry per role. A role's setting (``INPAINT_STUDIO_MODEL_<ROLE>``) holds a hub id or a
local path; :func:`locate` says whether that model is on this machine without loading it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.config import PREFIX, Settings
from core.device import DeviceInfo


@dataclass(frozen=True)
class ModelRole:
    """What a model is for, its default id, and the fallback when it cannot be had.

    ``probe`` is a file that exists in a complete download (used to find a hub id in the local
    cache); ``kind`` is ``file`` for single-file checkpoints and ``repo`` for hub repositories;
    a file published in a hub repository names it in ``repo``.
    """

    name: str
    title: str
    purpose: str
    default: str
    kind: Literal["file", "repo"]
    probe: str
    fallback: str
    repo: str | None = None  # for a file role: the hub repository the file is published in

    @property
    def setting(self) -> str:
        return f"{PREFIX}MODEL_{self.name.upper()}"


ROLES: dict[str, ModelRole] = {
    role.name: role
    for role in (
        ModelRole(
            "fastsam", "FastSAM-s", "select objects by click or box", "FastSAM-s.pt", "file",
            "FastSAM-s.pt", "OpenCV GrabCut seeded by the clicks or box",
        ),
        ModelRole(
            "fastsam_x", "FastSAM-x", "select objects by click or box (larger, more accurate)",
            "FastSAM-x.pt", "file", "FastSAM-x.pt", "FastSAM-s",
        ),
        ModelRole(
            "clip", "CLIP ViT-B/32", "select objects by naming them", "openai/clip-vit-base-patch32",
            "repo", "config.json", "text selection is disabled",
        ),
        ModelRole(
            "sam", "SAM ViT-Base", "refine a selection by points", "facebook/sam-vit-base", "repo",
            "config.json", "FastSAM point selection",
        ),
        ModelRole(
            "sd15_inpaint", "Stable Diffusion 1.5 inpainting", "regenerate the masked region",
            "stable-diffusion-v1-5/stable-diffusion-inpainting", "repo", "model_index.json",
            "OpenCV inpainting (Telea / Navier–Stokes) to remove objects",
        ),
        ModelRole(
            "sdxl_inpaint", "SDXL inpainting 0.1", "regenerate the masked region at 1024 px",
            "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "repo", "model_index.json",
            "OpenCV inpainting (Telea / Navier–Stokes) to remove objects",
        ),
        *(
            ModelRole(
                f"{preset}_lora_{engine}", f"{title} LoRA ({family})", f"few-step {family} inpainting ({steps} steps)",
                default, "file" if weight else "repo", weight or "pytorch_lora_weights.safetensors",
                f"the full {family} step count", repo=repo,
            )
            for preset, title, steps, engine, family, default, weight, repo in (
                ("lcm", "LCM", 4, "sd15", "SD 1.5", "latent-consistency/lcm-lora-sdv1-5", None, None),
                ("lcm", "LCM", 4, "sdxl", "SDXL", "latent-consistency/lcm-lora-sdxl", None, None),
                ("tcd", "TCD", 4, "sd15", "SD 1.5", "h1t/TCD-SD15-LoRA", None, None),
                ("tcd", "TCD", 4, "sdxl", "SDXL", "h1t/TCD-SDXL-LoRA", None, None),
                ("hyper", "Hyper-SD", 8, "sd15", "SD 1.5", "Hyper-SD15-8steps-lora.safetensors",
                 "Hyper-SD15-8steps-lora.safetensors", "ByteDance/Hyper-SD"),
                ("hyper", "Hyper-SD", 8, "sdxl", "SDXL", "Hyper-SDXL-8steps-lora.safetensors",
                 "Hyper-SDXL-8steps-lora.safetensors", "ByteDance/Hyper-SD"),
            )
        ),
        ModelRole(
            "iclight", "IC-Light fc", "relight the subject from a chosen direction",
            "iclight_sd15_fc.safetensors", "file", "iclight_sd15_fc.safetensors",
            "the shading preview (no generation)", repo="lllyasviel/ic-light",
        ),
        ModelRole(
            "iclight_base", "Realistic Vision 5.1 (IC-Light base)", "the SD 1.5 model IC-Light builds on",
            "stablediffusionapi/realistic-vision-v51", "repo", "model_index.json",
            "the shading preview (no generation)",
        ),
    )
}


@dataclass(frozen=True)
class ModelStatus:
    """Where a role's model was looked for and whether it was found."""

    role: ModelRole
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


def _hub_cache_path(repo_id: str, probe: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, probe)
    return Path(found).parent if isinstance(found, str) else None


def locate(role_name: str, settings: Settings) -> ModelStatus:
    """Find ``role_name``'s model: a configured local path, the models folder, then the hub cache."""
    role = ROLES[role_name]
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


def model_statuses(settings: Settings) -> list[ModelStatus]:
    """The status of every role, in registry order."""
    return [locate(name, settings) for name in ROLES]


# Inpainting engines that need a model, and the role that model is configured under.
ENGINE_ROLES = {"sd15": "sd15_inpaint", "sdxl": "sdxl_inpaint"}


def _require(role_name: str, settings: Settings) -> ModelStatus:
    """``role_name``'s status when its model is on this machine; ModelLoadError saying how otherwise."""
    from core.engines import ModelLoadError

    status = locate(role_name, settings)
    if not status.available:
        raise ModelLoadError(
            f"{status.role.title} ({status.configured}) is not on this machine. Download it on a "
            f"machine with internet and set {status.role.setting} to its local path."
        )
    return status


def diffusion_options(settings: Settings, device: DeviceInfo, *, fp16_safe_vae: str | None = None, **options: Any):
    """:class:`core.engines.diffusion.DiffusionOptions` for ``device`` and the settings; ``options`` override."""
    from core.engines.diffusion import DiffusionOptions

    defaults = {
        "device": device.kind,
        "dtype": device.dtype,
        "cpu_offload": settings.cpu_offload,
        "compile": settings.compile,
        "fp16_safe_vae": fp16_safe_vae if device.dtype == "float16" else None,
        # The CUDA fast path: channels-last convolutions, and the first generation warmed up at load.
        "channels_last": device.kind == "cuda",
        "warm_up": device.kind == "cuda",
    }
    return DiffusionOptions(**{**defaults, **options})


def load_inpaint_engine(name: str, settings: Settings, device: DeviceInfo, **options: Any) -> Any:
    """Load inpainting engine ``name`` (see ``core.engines.INPAINT_ENGINES``) on ``device``.

    ``name`` may carry a few-step preset (``sd15+lcm``, see ``core.engines.fast``): its LoRA is
    found like any model, by its role's setting, and fused at load. Diffusion engines take their
    model from the role's setting; ``options`` override the
    :class:`core.engines.diffusion.DiffusionOptions` derived from the device. Raises
    ModelLoadError when a model is missing or unusable.
    """
    from core.engines import inpaint_engine_class
    from core.engines.fast import split_engine_name

    engine_class = inpaint_engine_class(name)
    base, preset = split_engine_name(name)
    role = ENGINE_ROLES.get(base)
    if role is None:
        return engine_class()
    status = _require(role, settings)
    if preset is not None:
        options = {"few_step": preset.name, "few_step_lora": str(_require(preset.role(base), settings).path), **options}
    # SDXL's stock VAE overflows in float16; the fp16-safe one is only needed there.
    vae = settings.sdxl_fp16_vae if base == "sdxl" else None
    return engine_class.load(str(status.path), diffusion_options(settings, device, fp16_safe_vae=vae, **options))


def available_engines(settings: Settings, device: DeviceInfo | None = None) -> list[str]:
    """The diffusion engines whose models are on this machine, each followed by its few-step
    variants whose LoRA is there too (``sd15``, ``sd15+lcm``, ``sdxl``, …). With ``device``, an
    engine whose model does not fit in its memory is left out (see :func:`memory_shortfall`)."""
    from core.engines.fast import FEW_STEP_PRESETS

    names = []
    for engine, role in ENGINE_ROLES.items():
        status = locate(role, settings)
        if status.available and (device is None or memory_shortfall(status, settings, device) is None):
            names.append(engine)
            names += [f"{engine}+{p.name}" for p in FEW_STEP_PRESETS.values() if locate(p.role(engine), settings).available]
    return names


MEMORY_OVERHEAD = 1.3  # activations, the VAE's decode and the library's own copies, over the weights


def _weight_files(folder: Path) -> tuple[list[Path], bool]:
    """The safetensors files a diffusers pipeline folder loads, and whether they are the fp16
    variant (used only when no plain files are there)."""
    files = list(Path(folder).rglob("*.safetensors"))
    plain = [f for f in files if ".fp16." not in f.name]
    return (plain, False) if plain else (files, bool(files))


def weights_bytes(folder: Path) -> int:
    """The bytes of the weights a diffusers pipeline folder loads (the fp16 variant when only it
    is there, else the plain safetensors files)."""
    return sum(f.stat().st_size for f in _weight_files(folder)[0])


def memory_needed_gb(status: ModelStatus, device: DeviceInfo) -> float:
    """About how much memory ``status``'s pipeline takes on ``device``: its weights converted to the
    device's dtype (fp16 files hold 2 bytes per weight, plain ones 4), plus working memory."""
    files, fp16 = _weight_files(Path(status.path))
    stored_bytes_per_weight = 2 if fp16 else 4
    target_bytes_per_weight = 4 if device.dtype == "float32" else 2
    stored = sum(f.stat().st_size for f in files)
    return stored * target_bytes_per_weight / stored_bytes_per_weight * MEMORY_OVERHEAD / 2**30


def memory_available_gb(settings: Settings, device: DeviceInfo) -> float | None:
    """The memory a model can use on ``device``: the GPU's (CPU offload: the machine's), else the
    machine's RAM; None when it cannot be told."""
    if device.kind == "cuda" and device.memory_gb and not settings.cpu_offload:
        return device.memory_gb
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().total / 2**30


def memory_shortfall(status: ModelStatus, settings: Settings, device: DeviceInfo) -> str | None:
    """Why ``status``'s model cannot run on ``device`` (too little memory), or None when it fits.

    ``INPAINT_STUDIO_MEMORY_CHECK=0`` turns the check off."""
    if not settings.memory_check or status.path is None or not Path(status.path).is_dir():
        return None
    needed, available = memory_needed_gb(status, device), memory_available_gb(settings, device)
    if available is None or needed <= available:
        return None
    where = f"the GPU's {available:.0f} GB" if device.kind == "cuda" and not settings.cpu_offload else (
        f"this server's {available:.1f} GB of memory" + (" and no GPU" if device.kind == "cpu" else ""))
    return (f"{status.role.title} needs about {needed:.1f} GB on {device.kind.upper()} ({device.dtype}), more than "
            f"{where}, so it is not offered; removal (OpenCV) still works. Set INPAINT_STUDIO_MEMORY_CHECK=0 to "
            "try anyway.")


def load_relight_engine(settings: Settings, device: DeviceInfo, **options: Any) -> Any:
    """Load IC-Light fc (its offset file merged into its SD 1.5 base) on ``device``.

    Raises ModelLoadError when either model is missing or unusable.
    """
    from core.engines.iclight import ICLightEngine

    offsets, base = _require("iclight", settings), _require("iclight_base", settings)
    return ICLightEngine.load(str(base.path), str(offsets.path), diffusion_options(settings, device, **options))


def build_segmenter(settings: Settings, device: DeviceInfo):
    """The selection service (``core.segmenter.Segmenter``) with every model loading on first use
    from its setting; a model that is not on this machine makes its loader raise ModelLoadError."""
    from core.engines.clip_text import ClipScorer
    from core.engines.fastsam import FastSAMEngine
    from core.engines.sam import SamEngine
    from core.segmenter import Segmenter

    def loader(role: str, load):
        return lambda: load(str(_require(role, settings).path))

    def load_fastsam(path: str) -> FastSAMEngine:
        return FastSAMEngine.load(path, device="cuda:0" if device.kind == "cuda" else device.kind)

    return Segmenter(
        {
            "fastsam": loader("fastsam", load_fastsam),
            "fastsam_x": loader("fastsam_x", load_fastsam),
            "clip": loader("clip", lambda path: ClipScorer.load(path, device=device.kind)),
            "sam": loader("sam", lambda path: SamEngine.load(path, device=device.kind)),
        }
    )
