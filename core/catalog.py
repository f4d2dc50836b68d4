"""Every model the app can use and every engine that runs one: one entry each, pure data.

A :class:`ModelEntry` is a file or hub repository on disk (a *role*: its setting, default id,
download files, fallback); an :class:`EngineEntry` is something that runs: the class that loads
and runs it (``"module:Class"``, imported on first use), the roles it needs, its native size,
defaults, capabilities, licence and a memory estimate. Everything else is derived from here: the
engine lists and help on every page and in the command line, ``models list`` / ``models download``,
the home page's table, the memory check and recipe validation.

**A new model is one engine module plus one entry here** (or, for a model an existing engine class
runs, such as another diffusers inpainting pipeline, one entry alone). Entries can also come from
outside the project: ``INPAINT_STUDIO_CATALOG_MODULES`` names importable modules whose ``MODELS``,
``ENGINES`` and ``FEW_STEP`` lists are added to the built-in ones.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.config import PREFIX, Settings, load_settings
from core.errors import UserError

EngineKind = Literal["diffusion", "removal", "relight", "selection"]
DownloadKind = Literal["pipeline", "transformers", "lora", "file", "ultralytics", "url"]

# What an engine can take, beyond an image and a mask.
CAPABILITIES = ("prompt", "negative_prompt", "strength", "scheduler", "reference_image", "instruction")
# The samplers offered for engines that support "scheduler"; "default" keeps the model's own.
SCHEDULERS = ("default", "DPM++ 2M Karras", "Euler a", "DDIM", "UniPC")


class UnknownName(UserError):
    """A model role or engine name the catalog does not have; the message lists the known ones."""


@dataclass(frozen=True)
class ModelEntry:
    """A model on disk (a role): its setting ``INPAINT_STUDIO_MODEL_<NAME>`` holds a hub id or a
    local path, else ``default`` is used.

    ``kind``: ``file`` for a single-file checkpoint, ``repo`` for a hub repository; ``probe``: a file
    a complete download holds (to find a hub id in the local cache); ``repo``: the hub repository a
    file is published in. ``download``: which of the repository's files ``models download`` takes.
    ``main``: fetched when ``models download`` is given no role. ``size_gb``: the download's size.
    ``url`` / ``md5``: a file published outside the hub (download kind ``url``), fetched over HTTPS and
    refused unless its MD5 matches. ``gated``: the hub repository asks each user to accept its licence
    (downloads need a token).
    """

    name: str
    title: str
    purpose: str
    default: str
    kind: Literal["file", "repo"]
    probe: str
    fallback: str
    download: DownloadKind
    repo: str | None = None
    main: bool = False
    licence: str = ""
    size_gb: float | None = None
    url: str | None = None
    md5: str | None = None
    gated: bool = False

    @property
    def setting(self) -> str:
        return f"{PREFIX}MODEL_{self.name.upper()}"


@dataclass(frozen=True)
class FewStep:
    """A few-step preset: a distillation LoRA fused into the UNet, the scheduler it was trained
    for, and its step count and guidance. An engine offers it as ``<engine>+<preset>``."""

    name: str
    title: str
    scheduler: str  # diffusers class name
    scheduler_settings: tuple[tuple[str, object], ...]
    steps: int
    guidance: float


@dataclass(frozen=True)
class EngineEntry:
    """Something that runs a model (or none: OpenCV).

    ``engine``: ``"module:Class"``, loaded with ``Class.from_catalog(request)`` (see
    :class:`core.manager.LoadRequest`). ``roles``: the models it needs, the main one first.
    ``kind``: diffusion (regenerates from a prompt), removal (fills from the surroundings),
    relight, selection. ``native_size``: the side it was trained at. ``steps``/``guidance``: its
    defaults. ``supports``: of :data:`CAPABILITIES`. ``few_step``: preset name → the role of its LoRA
    for this engine. ``memory_gb``: about what it takes on a GPU in 16-bit (``None``: measured from
    the weights on disk, or small). ``speed``: how fast, in words, for the engine picker.
    ``options``: what its class needs to know (e.g. the diffusers pipeline class it must load as);
    a selection engine's ``answers`` says which prompts it answers ("everything": segments a whole
    photo into candidates; "clicks": clicks and boxes; "concepts": every instance of a text or of
    example boxes; "text": scores candidates against a text), in order of preference.
    """

    name: str
    title: str
    kind: EngineKind
    engine: str
    roles: tuple[str, ...] = ()
    native_size: int = 512
    steps: int = 30
    guidance: float = 7.5
    supports: frozenset[str] = frozenset()
    few_step: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    licence: str = ""
    speed: str = ""
    memory_gb: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def can(self, capability: str) -> bool:
        return capability in self.supports


class Catalog:
    """The entries, by name, with the lookups the rest of the app derives its lists from."""

    def __init__(self, models: Iterable[ModelEntry], engines: Iterable[EngineEntry],
                 few_step: Iterable[FewStep]) -> None:
        self.models: dict[str, ModelEntry] = {}
        self.engines: dict[str, EngineEntry] = {}
        self.few_step: dict[str, FewStep] = {}
        self.add(models, engines, few_step)

    def add(self, models: Iterable[ModelEntry] = (), engines: Iterable[EngineEntry] = (),
            few_step: Iterable[FewStep] = ()) -> None:
        """Add entries; ValueError for a name taken or an engine needing a role the catalog lacks."""
        for entry, table in [*((m, self.models) for m in models), *((p, self.few_step) for p in few_step),
                             *((e, self.engines) for e in engines)]:
            if entry.name in table:
                raise ValueError(f"The catalog already has an entry named {entry.name!r}.")
            if isinstance(entry, EngineEntry):
                missing = [r for r in (*entry.roles, *entry.few_step.values()) if r not in self.models]
                unknown_presets = [p for p in entry.few_step if p not in self.few_step]
                if missing or unknown_presets or "+" in entry.name:
                    raise ValueError(f"Engine {entry.name!r}: unknown roles {missing} or presets {unknown_presets}, "
                                     "or a '+' in its name.")
            table[entry.name] = entry

    # --- models ---------------------------------------------------------------------------------

    def model(self, name: str) -> ModelEntry:
        if name not in self.models:
            raise UnknownName(f"Unknown model role {name!r}: use one of {', '.join(self.models)}.")
        return self.models[name]

    def main_models(self) -> tuple[str, ...]:
        """The roles ``models download`` fetches when none is named."""
        return tuple(name for name, entry in self.models.items() if entry.main)

    # --- engines --------------------------------------------------------------------------------

    def engine(self, name: str) -> tuple[EngineEntry, FewStep | None]:
        """The entry and few-step preset of ``name`` (``sd15`` or ``sd15+lcm``); UnknownName
        naming the known engines otherwise."""
        base, _, preset = name.partition("+")
        if base not in self.engines:
            raise UnknownName(f"Unknown engine {name!r}: use one of {', '.join(self.engine_names())}.")
        entry = self.engines[base]
        if not preset:
            return entry, None
        if preset not in entry.few_step:
            offered = ", ".join(f"{base}+{p}" for p in entry.few_step) or "none"
            raise UnknownName(f"Unknown few-step variant {name!r}: {base} has {offered}.")
        return entry, self.few_step[preset]

    def roles_of(self, name: str) -> tuple[str, ...]:
        """Every model role engine ``name`` needs (a few-step variant: its LoRA too)."""
        entry, preset = self.engine(name)
        return entry.roles + ((entry.few_step[preset.name],) if preset else ())

    def engine_names(self, kinds: Iterable[str] | None = None, *, variants: bool = True) -> list[str]:
        """Every engine of ``kinds`` (all when None), each followed by its few-step variants."""
        wanted = set(kinds) if kinds is not None else None
        names = []
        for entry in self.engines.values():
            if wanted is None or entry.kind in wanted:
                names.append(entry.name)
                if variants:
                    names += [f"{entry.name}+{preset}" for preset in entry.few_step]
        return names

    def answering(self, prompts: str) -> list[str]:
        """The selection engines whose ``answers`` option is ``prompts``, best first."""
        return [name for name, entry in self.engines.items()
                if entry.kind == "selection" and entry.options.get("answers") == prompts]

    def title(self, name: str) -> str:
        """How engine ``name`` is named for people (a few-step variant with its preset and steps)."""
        entry, preset = self.engine(name)
        return f"{entry.title} · {preset.title} few-step ({preset.steps} steps)" if preset else entry.title

    def defaults(self, name: str) -> tuple[int, float]:
        """Engine ``name``'s steps and guidance (a few-step variant's own)."""
        entry, preset = self.engine(name)
        return (preset.steps, preset.guidance) if preset else (entry.steps, entry.guidance)


# --- the built-in entries ------------------------------------------------------------------------------

_OPENCV = "OpenCV inpainting (Telea / Navier–Stokes) to remove objects"
_FEW_STEP_LORAS = (
    ("lcm", "LCM", 4, "sd15", "SD 1.5", "latent-consistency/lcm-lora-sdv1-5", None, None),
    ("lcm", "LCM", 4, "sdxl", "SDXL", "latent-consistency/lcm-lora-sdxl", None, None),
    ("tcd", "TCD", 4, "sd15", "SD 1.5", "h1t/TCD-SD15-LoRA", None, None),
    ("tcd", "TCD", 4, "sdxl", "SDXL", "h1t/TCD-SDXL-LoRA", None, None),
    ("hyper", "Hyper-SD", 8, "sd15", "SD 1.5", "Hyper-SD15-8steps-lora.safetensors",
     "Hyper-SD15-8steps-lora.safetensors", "ByteDance/Hyper-SD"),
    ("hyper", "Hyper-SD", 8, "sdxl", "SDXL", "Hyper-SDXL-8steps-lora.safetensors",
     "Hyper-SDXL-8steps-lora.safetensors", "ByteDance/Hyper-SD"),
)

MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("fastsam", "FastSAM-s", "select objects by click or box", "FastSAM-s.pt", "file", "FastSAM-s.pt",
               "OpenCV GrabCut seeded by the clicks or box", "ultralytics", main=True, licence="AGPL-3.0",
               size_gb=0.02),
    ModelEntry("fastsam_x", "FastSAM-x", "select objects by click or box (larger, more accurate)", "FastSAM-x.pt",
               "file", "FastSAM-x.pt", "FastSAM-s", "ultralytics", licence="AGPL-3.0", size_gb=0.14),
    ModelEntry("clip", "CLIP ViT-B/32", "select objects by naming them", "openai/clip-vit-base-patch32", "repo",
               "config.json", "text selection is disabled", "transformers", main=True, licence="MIT", size_gb=0.6),
    ModelEntry("sam", "SAM ViT-Base", "refine a selection by points", "facebook/sam-vit-base", "repo", "config.json",
               "FastSAM point selection", "transformers", licence="Apache-2.0", size_gb=0.4),
    ModelEntry("sam2", "SAM 2.1 Hiera-S", "refine a selection by include and exclude clicks",
               "facebook/sam2.1-hiera-small", "repo", "config.json", "SAM ViT-Base, else FastSAM's candidates",
               "transformers", main=True, licence="Apache-2.0", size_gb=0.18),
    ModelEntry("sam2_large", "SAM 2.1 Hiera-L", "refine a selection by clicks (larger, more accurate)",
               "facebook/sam2.1-hiera-large", "repo", "config.json", "SAM 2.1 Hiera-S", "transformers",
               licence="Apache-2.0", size_gb=0.9),
    ModelEntry("sam3", "SAM 3", "select every instance of a named concept, or objects like an example box",
               "facebook/sam3", "repo", "config.json", "CLIP over FastSAM's candidates (one object at a time)",
               "transformers", licence="SAM License", size_gb=3.4, gated=True),
    ModelEntry("lama", "LaMa (big-lama)", "remove objects without a prompt (fills from the surroundings)",
               "big-lama.pt", "file", "big-lama.pt", "MI-GAN, else OpenCV Telea", "url",
               url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
               md5="e3aa4aaa15225a33ec84f9f4bc47e500", main=True, licence="Apache-2.0", size_gb=0.2),
    ModelEntry("migan", "MI-GAN", "remove objects without a prompt (fastest)", "migan_traced.pt", "file",
               "migan_traced.pt", "OpenCV Telea", "url",
               url="https://github.com/Sanster/models/releases/download/migan/migan_traced.pt",
               md5="76eb3b1a71c400ee3290524f7a11b89c", main=True, licence="MIT", size_gb=0.03),
    ModelEntry("flux2_klein", "FLUX.2 [klein] 4B", "regenerate the masked region, optionally from a reference image",
               "black-forest-labs/FLUX.2-klein-4B", "repo", "model_index.json", _OPENCV, "pipeline", main=True,
               licence="Apache-2.0", size_gb=16.0),
    ModelEntry("flux_fill", "FLUX.1 Fill [dev]", "regenerate the masked region (highest quality)",
               "black-forest-labs/FLUX.1-Fill-dev", "repo", "model_index.json", _OPENCV, "pipeline",
               licence="FLUX.1 [dev] Non-Commercial License", size_gb=34.0, gated=True),
    ModelEntry("qwen_image_edit", "Qwen-Image-Edit", "change the masked region as instructed",
               "Qwen/Qwen-Image-Edit", "repo", "model_index.json", _OPENCV, "pipeline", licence="Apache-2.0",
               size_gb=58.0),
    ModelEntry("sd15_inpaint", "Stable Diffusion 1.5 inpainting", "regenerate the masked region",
               "stable-diffusion-v1-5/stable-diffusion-inpainting", "repo", "model_index.json", _OPENCV, "pipeline",
               main=True, licence="CreativeML Open RAIL-M", size_gb=2.1),
    ModelEntry("sdxl_inpaint", "SDXL inpainting 0.1", "regenerate the masked region at 1024 px",
               "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "repo", "model_index.json", _OPENCV, "pipeline",
               main=True, licence="CreativeML Open RAIL++-M", size_gb=6.9),
    *(
        ModelEntry(f"{preset}_lora_{engine}", f"{title} LoRA ({family})",
                   f"few-step {family} inpainting ({steps} steps)", default, "file" if weight else "repo", weight or "pytorch_lora_weights.safetensors",
                   f"the full {family} step count", "file" if weight else "lora", repo=repo)
        for preset, title, steps, engine, family, default, weight, repo in _FEW_STEP_LORAS
    ),
    ModelEntry("iclight", "IC-Light fc", "relight the subject from a chosen direction", "iclight_sd15_fc.safetensors",
               "file", "iclight_sd15_fc.safetensors", "the shading preview (no generation)", "file",
               repo="lllyasviel/ic-light", main=True, licence="Apache-2.0", size_gb=1.7),
    ModelEntry("iclight_base", "Realistic Vision 5.1 (IC-Light base)", "the SD 1.5 model IC-Light builds on",
               "stablediffusionapi/realistic-vision-v51", "repo", "model_index.json",
               "the shading preview (no generation)", "pipeline", main=True, licence="CreativeML Open RAIL-M",
               size_gb=2.1),
)

FEW_STEP: tuple[FewStep, ...] = (
    FewStep("lcm", "LCM", "LCMScheduler", (), 4, 1.0),
    FewStep("tcd", "TCD", "TCDScheduler", (), 4, 1.0),
    FewStep("hyper", "Hyper-SD", "DDIMScheduler", (("timestep_spacing", "trailing"),), 8, 1.0),
)

_DIFFUSION = frozenset({"prompt", "negative_prompt", "strength", "scheduler"})
_SD_SAFETY_OFF = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

ENGINES: tuple[EngineEntry, ...] = (
    # Diffusion engines best first: the Inpaint page offers the first that fits this machine by default.
    EngineEntry("flux2_klein", "FLUX.2 [klein] 4B", "diffusion", "core.engines.flux:Flux2KleinEngine",
                ("flux2_klein",), 1024, 4, 1.0, frozenset({"prompt", "reference_image"}),
                licence="Apache-2.0", speed="about a second on a recent GPU", memory_gb=16.0),
    EngineEntry("flux_fill", "FLUX.1 Fill [dev]", "diffusion", "core.engines.flux:FluxFillEngine",
                ("flux_fill",), 1024, 50, 30.0, frozenset({"prompt"}),  # the model card's steps and guidance
                licence="FLUX.1 [dev] Non-Commercial License", speed="several seconds on a recent GPU",
                memory_gb=33.0),
    EngineEntry("qwen_image_edit", "Qwen-Image-Edit", "diffusion", "core.engines.qwen_image:QwenImageEditEngine",
                ("qwen_image_edit",), 1024, 30, 4.0,
                frozenset({"prompt", "negative_prompt", "strength", "instruction"}),
                licence="Apache-2.0", speed="tens of seconds on a recent GPU", memory_gb=58.0),
    EngineEntry("sd15", "Stable Diffusion 1.5 inpainting", "diffusion", "core.engines.diffusion:DiffusionEngine",
                ("sd15_inpaint",), 512, 30, 7.5, _DIFFUSION,
                {preset: f"{preset}_lora_sd15" for preset in ("lcm", "tcd", "hyper")},
                licence="CreativeML Open RAIL-M", speed="seconds on a GPU, minutes on a CPU", memory_gb=3.5,
                options={"pipeline_class": "StableDiffusionInpaintPipeline", "load_overrides": _SD_SAFETY_OFF}),
    EngineEntry("sdxl", "SDXL inpainting", "diffusion", "core.engines.diffusion:DiffusionEngine",
                ("sdxl_inpaint",), 1024, 30, 7.5, _DIFFUSION,
                {preset: f"{preset}_lora_sdxl" for preset in ("lcm", "tcd", "hyper")},
                licence="CreativeML Open RAIL++-M", speed="seconds on a GPU", memory_gb=9.0,
                # SDXL's stock VAE overflows in float16; INPAINT_STUDIO_SDXL_FP16_VAE replaces it there.
                options={"pipeline_class": "StableDiffusionXLInpaintPipeline", "fp16_vae_setting": "sdxl_fp16_vae"}),
    # Removal engines in order of preference: "Remove object" uses the first one present.
    EngineEntry("lama", "LaMa", "removal", "core.engines.lama:LamaEngine", ("lama",), native_size=1024,
                licence="Apache-2.0", speed="several seconds on a CPU, instant on a GPU", memory_gb=1.0),
    EngineEntry("migan", "MI-GAN", "removal", "core.engines.migan:MiganEngine", ("migan",), native_size=512,
                licence="MIT", speed="a few seconds on a CPU (at 512 px), instant on a GPU", memory_gb=0.3),
    EngineEntry("telea", "OpenCV Telea", "removal", "core.engines.opencv_inpaint:OpenCVInpaint",
                native_size=1024, licence="Apache-2.0", speed="instant", options={"method": "telea"}),
    EngineEntry("navier_stokes", "OpenCV Navier-Stokes", "removal",
                "core.engines.opencv_inpaint:OpenCVInpaint", native_size=1024, licence="Apache-2.0", speed="instant", options={"method": "navier_stokes"}),
    EngineEntry("iclight", "IC-Light (relight)", "relight", "core.engines.iclight:ICLightEngine",
                ("iclight_base", "iclight"), 512, 25, 2.0, frozenset({"prompt", "negative_prompt"}),
                licence="Apache-2.0 (base model: CreativeML Open RAIL-M)", speed="seconds on a GPU", memory_gb=4.0),
    EngineEntry("fastsam", "FastSAM-s", "selection", "core.engines.fastsam:FastSAMEngine", ("fastsam",), 1024,
                licence="AGPL-3.0", speed="about a second on a CPU", options={"answers": "everything"}),
    EngineEntry("fastsam_x", "FastSAM-x", "selection", "core.engines.fastsam:FastSAMEngine", ("fastsam_x",), 1024,
                licence="AGPL-3.0", speed="a few seconds on a CPU", options={"answers": "everything"}),
    EngineEntry("clip", "CLIP ViT-B/32", "selection", "core.engines.clip_text:ClipScorer", ("clip",), 224,
                licence="MIT", speed="instant", options={"answers": "text"}),
    EngineEntry("sam2", "SAM 2.1 Hiera-S", "selection", "core.engines.sam2:Sam2Engine", ("sam2",), 1024,
                licence="Apache-2.0", speed="a second or two per photo on a CPU, then instant per click",
                options={"answers": "clicks"}),
    EngineEntry("sam2_large", "SAM 2.1 Hiera-L", "selection", "core.engines.sam2:Sam2Engine", ("sam2_large",), 1024,
                licence="Apache-2.0", speed="several seconds per photo on a CPU, then instant per click",
                options={"answers": "clicks"}),
    EngineEntry("sam", "SAM ViT-Base", "selection", "core.engines.sam:SamEngine", ("sam",), 1024,
                licence="Apache-2.0", speed="seconds per photo on a CPU, then instant per click",
                options={"answers": "clicks"}),
    EngineEntry("sam3", "SAM 3", "selection", "core.engines.sam3:Sam3Engine", ("sam3",), 1008,
                licence="SAM License", speed="several seconds per photo on a CPU, then about a second per text",
                options={"answers": "concepts"}),
)

BUILTIN = Catalog(MODELS, ENGINES, FEW_STEP)


@functools.cache
def _with_modules(modules: tuple[str, ...]) -> Catalog:
    if not modules:
        return BUILTIN
    catalog = Catalog(MODELS, ENGINES, FEW_STEP)
    for name in modules:
        try:
            module = importlib.import_module(name)
            catalog.add(getattr(module, "MODELS", ()), getattr(module, "ENGINES", ()), getattr(module, "FEW_STEP", ()))
        except (ImportError, ValueError) as error:
            raise UserError(f"{PREFIX}CATALOG_MODULES: {name} cannot be added "
                            f"({type(error).__name__}: {error}).") from error
    return catalog


def current(settings: Settings | None = None) -> Catalog:
    """The built-in catalog plus the entries of ``INPAINT_STUDIO_CATALOG_MODULES`` (read from
    ``settings``, else from the environment and secrets)."""
    settings = settings if settings is not None else load_settings()
    return _with_modules(settings.catalog_modules)
