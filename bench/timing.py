"""Small timing helpers shared by the benchmarks."""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable


def best_of(function: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls, in milliseconds (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def machine() -> str:
    """A one-line description of the machine the figures were taken on."""
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
