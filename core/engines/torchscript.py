"""What the learned removal engines share (LaMa, MI-GAN, as IOPaint publishes them): loading a
TorchScript ``.pt`` file with errors that say what is wrong and what to do, checking at load time
that the module keeps its published contract, and the fill around each model call.

A removal engine fills one prepared crop (see :mod:`core.engines.base`) from its surroundings. No
prompt and no seed: the models are deterministic, so every variant is the same image. The hole is
the request mask's pixels of value :data:`HOLE_LEVEL` or more (the app's masks are 0 or 255; IOPaint
thresholds soft masks at 1 for LaMa and 121 for MI-GAN). Every pixel outside the hole is the
request's own, bit for bit: the model's output is used inside the hole only.

Both models run in float32 (as IOPaint runs them) under ``torch.inference_mode()``. torch is imported
inside the functions that need it.
"""
from __future__ import annotations

import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.catalog import BUILTIN, EngineEntry
from core.engines.base import (
    CancelCheck,
    Cancelled,
    CatalogEngine,
    EngineOutput,
    EngineRequest,
    ModelLoadError,
    ProgressCallback,
    check_request,
)
from core.engines.pipelines import is_out_of_memory
from core.errors import GenerationFailed

HOLE_LEVEL = 128  # a mask value at or above it is hole (filled), below it kept, as OpenCVInpaint reads it
DEVICES = ("cpu", "cuda", "mps")


def pad_bottom_right(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``pixels`` (H×W or H×W×C) grown to ``height``×``width`` by mirroring its last rows and columns
    (numpy's ``symmetric`` mode, IOPaint's ``pad_img_to_modulo``; any amount, even beyond its size)."""
    extra = ((0, height - pixels.shape[0]), (0, width - pixels.shape[1])) + ((0, 0),) * (pixels.ndim - 2)
    return np.pad(pixels, extra, mode="symmetric")


def round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def load_torchscript(path: str | Path, device: str, what: str) -> Any:
    """The TorchScript module saved at ``path`` (``torch.jit.save``), on ``device``, in eval mode.

    ``what`` names the model in errors ("The LaMa model file"). Raises :class:`ModelLoadError` naming
    ``path`` when it does not exist, is a folder, is not a TorchScript archive (a text or HTML page,
    a download cut short, weights saved with ``torch.save``) or cannot be loaded onto ``device``.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{what} {path} does not exist.")
    if path.is_dir():
        raise ModelLoadError(f"{what} {path} is a folder; it must be the .pt file itself.")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{what} {path} is not a TorchScript file: TorchScript files are zip archives and this one "
            "is not (a text or HTML page saved in place of the download, or a download cut short?)."
        )
    with zipfile.ZipFile(path) as archive:
        has_code = any("/code/" in name for name in archive.namelist())
    if not has_code:
        raise ModelLoadError(
            f"{what} {path} holds weights saved with torch.save (a state dict or checkpoint), not a "
            "TorchScript module saved with torch.jit.save: it has no code to run."
        )
    try:
        import torch

        with warnings.catch_warnings():
            # torch marks TorchScript as deprecated; the published files are TorchScript all the same.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
            module = torch.jit.load(str(path), map_location=device)
    except Exception as error:  # noqa: BLE001 (torch raises RuntimeError, ValueError, pickle errors)
        raise ModelLoadError(
            f"{what} {path} could not be loaded as TorchScript onto {device} ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:300]})."
        ) from error
    return module.eval()


class TorchScriptRemoval(CatalogEngine):
    """A removal engine around one TorchScript module; a subclass says which file it expects, checks
    the module's contract (:meth:`check_contract`) and runs it (:meth:`fill`).

    ``upscales_small_crops`` (read by the crop path): False, a crop smaller than the native size is
    filled at its own size. Not thread-safe by promise (hold the manager's lock per engine).
    """

    upscales_small_crops = False
    schedulers: tuple[str, ...] = ()
    engine_name: str  # the catalog entry used when none is given
    model_title: str  # how errors name the model: "LaMa"
    published: str  # the file IOPaint publishes: "big-lama.pt"
    not_on_mps = ""  # why the model runs on the CPU when the device is Apple MPS ("": it runs there)

    def __init__(self, entry: EngineEntry, module: Any, model_id: str, device: str = "cpu",
                 notes: list[str] | None = None) -> None:
        self.entry = entry
        self.module = module
        self.model_id = model_id
        self.device = device
        self.load_notes = list(notes or [])

    @classmethod
    def from_catalog(cls, request) -> TorchScriptRemoval:
        """Load ``request``'s file (its main role's path) onto ``request.device``."""
        return cls.load(request.path(), request.device.kind, entry=request.entry)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", *,
             entry: EngineEntry | None = None) -> TorchScriptRemoval:
        """Load the TorchScript file at ``path`` onto ``device`` (cpu, cuda or mps) and check with one
        small call that it keeps the model's published contract.

        Raises :class:`ModelLoadError` naming ``path``, saying what is wrong and which setting to
        point at the published file.
        """
        entry = entry or BUILTIN.engines[cls.engine_name]
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {device!r}).")
        notes = []
        if device == "mps" and cls.not_on_mps:
            device = "cpu"
            notes.append(f"{cls.model_title} runs on the CPU: {cls.not_on_mps}")
        what = f"The {cls.model_title} model file"
        try:
            module = load_torchscript(path, device, what)
        except ModelLoadError as error:
            raise ModelLoadError(f"{error} {cls.advice(entry)}") from error
        engine = cls(entry, module, str(path), device, notes)
        try:
            engine.check_contract()
        except ModelLoadError as error:
            raise ModelLoadError(
                f"{what} {path} is not the {cls.model_title} TorchScript model ({cls.published} from "
                f"IOPaint's releases): {error} {cls.advice(entry)}"
            ) from error
        return engine

    @classmethod
    def advice(cls, entry: EngineEntry) -> str:
        """What to do about a wrong file: the setting to point at the published one, and how to get it."""
        role = entry.roles[0] if entry.roles else cls.engine_name
        return (f"Set INPAINT_STUDIO_MODEL_{role.upper()} to {cls.published} (python -m core models download "
                f"{role} fetches it on a machine with internet).")

    # --- what a subclass provides ---------------------------------------------------------------

    def check_contract(self) -> None:
        """Call the module once on a small input; ModelLoadError saying what came back otherwise."""
        raise NotImplementedError

    def fill(self, pixels: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """The model's fill of ``pixels`` (uint8 H×W×3 RGB) where ``hole`` (bool H×W) is True, as a
        uint8 H×W×3 RGB array of the same size (pixels outside the hole are replaced afterwards)."""
        raise NotImplementedError

    def _call(self, *inputs: Any) -> Any:
        """The module on ``inputs`` (torch tensors on the engine's device), without autograd."""
        import torch

        with torch.inference_mode():
            return self.module(*inputs)

    def _probe(self, *inputs: Any) -> tuple[int, ...]:
        """The output shape of the module on ``inputs``; ModelLoadError when the call fails or returns
        something other than one tensor."""
        import torch

        shapes = " and ".join(str(tuple(tensor.shape)) for tensor in inputs)
        try:
            output = self._call(*(tensor.to(self.device) for tensor in inputs))
        except Exception as error:  # noqa: BLE001 (a TorchScript call raises torch.jit.Error or others)
            raise ModelLoadError(f"calling it on {shapes} failed ({type(error).__name__}: "
                                 f"{' '.join(str(error).split())[:200]}).") from error
        if not isinstance(output, torch.Tensor):
            raise ModelLoadError(f"its output for {shapes} is a {type(output).__name__}, not one tensor.")
        return tuple(output.shape)

    # --- filling --------------------------------------------------------------------------------

    def generate(
        self,
        request: EngineRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> EngineOutput:
        """Fill the mask's pixels (value 128 or more) from their surroundings; keep the rest exactly.

        Returns one copy of the same image per seed (the model is deterministic). Prompts, steps,
        guidance, strength and scheduler are ignored. Raises InpaintError for an invalid request,
        Cancelled when ``should_cancel()`` is True before the model runs, GenerationFailed when the
        device runs out of memory. Timings: ``inpaint`` (ms, preparing, the model and pasting).
        """
        # 1. Check inputs
        check_request(request)
        if should_cancel is not None and should_cancel():
            raise Cancelled("Inpainting was cancelled before it started.")

        # 2. Fill the hole
        started = time.perf_counter()
        original = np.asarray(request.image)
        hole = np.asarray(request.mask) >= HOLE_LEVEL
        filled = self._within_memory(lambda: self.fill(original, hole), request)

        # 3. Keep every pixel outside the hole
        kept = np.where(hole[..., None], filled, original)
        elapsed = (time.perf_counter() - started) * 1000
        if progress is not None:
            progress(1, 1)
        return EngineOutput(
            images=[Image.fromarray(kept, "RGB") for _ in request.seeds],
            notes=list(self.load_notes),
            timings={"inpaint": elapsed},
        )

    def _within_memory(self, fill, request: EngineRequest) -> np.ndarray:
        out_of_memory = None
        try:
            return fill()
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            out_of_memory = str(error).splitlines()[0]
        # Only now: until its except block ended, the error's traceback held the call's tensors.
        import torch

        if self.device == "cuda":
            torch.cuda.empty_cache()
        raise GenerationFailed(
            f"Out of memory on {self.device} while removing with {self.model_title} in a "
            f"{request.image.width}x{request.image.height} crop ({out_of_memory}). Use less padding, a "
            "smaller selection, or the CPU."
        )
