"""Handing freed memory back to the system, so that a server's memory does not only ever grow.

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
