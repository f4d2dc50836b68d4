"""Memory: whether a model fits on a device (:func:`memory_shortfall`), and handing freed memory back
to the system, so that a server's memory does not only ever grow.

CPython frees an object's memory to the C allocator, but glibc keeps freed blocks in its arenas (one
per thread that allocated, and Streamlit runs each session's script in a thread of its own) and only
returns the top of each heap to the system. ``malloc_trim(0)`` returns every free page. Two moments
matter: just after a generation (its activations are gone), and after sessions have ended (their
photos, masks and results are freed when the server drops the session, which is no event a page
sees). :class:`MemoryJanitor` covers the second: a thread that trims at an interval while no
generation runs.
"""
from __future__ import annotations

import ctypes
import gc
import threading
from collections.abc import Callable
from pathlib import Path


def release_memory() -> bool:
    """Collect cycles and hand free pages back to the system; False where there is no glibc
    (macOS, musl), where collecting is all that can be done."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


class MemoryJanitor:
    """Calls :func:`release_memory` every ``interval`` seconds, skipping while ``busy()`` (a
    generation is running: it would only slow it down, and it trims when it ends anyway)."""

    def __init__(self, interval: float, busy: Callable[[], bool] = lambda: False,
                 release: Callable[[], object] = release_memory) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.busy = busy
        self.release = release
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-janitor", daemon=True)

    def start(self) -> MemoryJanitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.busy():
                continue
            try:
                self.release()
            except Exception:  # noqa: BLE001 (the janitor must outlive any one failure)
                continue
            self.runs += 1


# --- does a model fit? ---------------------------------------------------------------------------

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


def memory_needed_gb(status, device) -> float:
    """About how much memory ``status``'s pipeline takes on ``device``: its weights converted to the
    device's dtype (fp16 files hold 2 bytes per weight, plain ones 4), plus working memory."""
    files, fp16 = _weight_files(Path(status.path))
    stored_bytes_per_weight = 2 if fp16 else 4
    target_bytes_per_weight = 4 if device.dtype == "float32" else 2
    stored = sum(f.stat().st_size for f in files)
    return stored * target_bytes_per_weight / stored_bytes_per_weight * MEMORY_OVERHEAD / 2**30


def memory_available_gb(settings, device) -> float | None:
    """The memory a model can use on ``device``: the GPU's (CPU offload: the machine's), else the
    machine's RAM; None when it cannot be told."""
    if device.kind == "cuda" and device.memory_gb and not settings.cpu_offload:
        return device.memory_gb
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().total / 2**30


def memory_shortfall(status, settings, device, remover: str = "OpenCV") -> str | None:
    """Why ``status``'s model cannot run on ``device`` (too little memory), or None when it fits.
    ``remover``: what still removes objects (named in the reason).

    ``INPAINT_STUDIO_MEMORY_CHECK=0`` turns the check off."""
    if not settings.memory_check or status.path is None or not Path(status.path).is_dir():
        return None
    needed, available = memory_needed_gb(status, device), memory_available_gb(settings, device)
    if available is None or needed <= available:
        return None
    where = f"the GPU's {available:.0f} GB" if device.kind == "cuda" and not settings.cpu_offload else (
        f"this server's {available:.1f} GB of memory" + (" and no GPU" if device.kind == "cpu" else ""))
    return (f"{status.role.title} needs about {needed:.1f} GB on {device.kind.upper()} ({device.dtype}), more than "
            f"{where}, so it is not offered; removal ({remover}) still works. Set INPAINT_STUDIO_MEMORY_CHECK=0 to "
            "try anyway.")
