"""Helpers shared by the tests: catalog entries of the built-in engines, and model managers that
hold engines the tests built themselves."""
from __future__ import annotations

from pathlib import Path

from core.catalog import BUILTIN
from core.config import Settings
from core.device import DeviceInfo
from core.manager import ModelManager

SD15 = BUILTIN.engines["sd15"]
SDXL = BUILTIN.engines["sdxl"]
CPU = DeviceInfo("cpu", "test", "float32")


def manager_with(engines: dict | None = None, *, settings: Settings | None = None, models_dir: Path | None = None,
                 **named) -> ModelManager:
    """A model manager on the CPU (no model on disk unless ``settings`` say so) already holding
    ``engines`` (name → engine), e.g. ``manager_with(sd15=engine)``."""
    if settings is None:
        settings = Settings(device="cpu", models_dir=models_dir or Path("/nonexistent/inpaint-studio-models"))
    manager = ModelManager(settings, CPU, options={"warm_up": False})
    for name, engine in {**(engines or {}), **named}.items():
        manager.adopt(name, engine)
    return manager
