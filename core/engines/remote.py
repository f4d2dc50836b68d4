"""An engine whose model runs on the engine server (``inpaint-studio serve``), not in this process.

The model manager hands one out for every engine with a model when ``INPAINT_STUDIO_ENGINE_SERVER``
is set (:meth:`core.manager.ModelManager.runs_remotely`). It has the interface of the engine it
stands for, the inpainting engines' :meth:`generate` and IC-Light's :meth:`relight`, and sends each
call to a replica through :class:`core.engine_client.EngineServer`: the prepared crop, its mask
and the params go there, the filled crops come back. Everything around the call (planning crops,
pasting back, blending) runs here as it does for a local engine, so the pixels beyond the soft
edge stay the photo's, bit for bit.

The request waits in the replica's fair queue, not in this process's: :meth:`for_call` binds a
caller's ``on_wait`` (and the batch job it works for) to one use, so its place there is reported.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from PIL import Image

from core.catalog import EngineEntry, FewStep
from core.engine_client import EngineServer
from core.engines.base import CancelCheck, CatalogEngine, EngineOutput, EngineRequest, ProgressCallback
from core.queue import CURRENT_JOB, WaitCallback

log = logging.getLogger(__name__)


class RemoteEngine(CatalogEngine):
    """Engine ``entry`` (with ``preset``) served at ``server``; ``info``: how its replica loaded it."""

    remote = True

    def __init__(self, server: EngineServer, entry: EngineEntry, preset: FewStep | None, info: Mapping[str, Any]):
        self.server = server
        self.entry = entry
        self.preset = preset
        self.info = dict(info)
        self.model_id = str(info.get("model_id", ""))
        self.upscales_small_crops = bool(info.get("upscales_small_crops", True))
        self._work_sizes: dict[tuple[int, int], tuple[int, int]] = {}
        self._on_wait: WaitCallback | None = None

    @classmethod
    def connect(cls, server: EngineServer, entry: EngineEntry, preset: FewStep | None) -> RemoteEngine:
        """The engine as the server describes it; EngineServerUnreachable when it cannot be reached
        or does not serve it."""
        name = f"{entry.name}+{preset.name}" if preset else entry.name
        return cls(server, entry, preset, server.info(name))

    @property
    def native_resolution(self) -> int:
        return int(self.info.get("native_resolution") or self.entry.native_size)

    def for_call(self, on_wait: WaitCallback | None) -> RemoteEngine:
        """This engine for one use, reporting its place in the replica's queue to ``on_wait``."""
        bound = copy.copy(self)
        bound._on_wait = on_wait
        return bound

    def work_size(self, crop_size: tuple[int, int]) -> tuple[int, int]:
        """The size the served engine fills a crop of ``crop_size`` at (asked once per size)."""
        key = (int(crop_size[0]), int(crop_size[1]))
        if key not in self._work_sizes:
            width, height = self._call("work_size", {"crop_size": key})
            self._work_sizes[key] = (int(width), int(height))
        return self._work_sizes[key]

    def generate(self, request: EngineRequest, progress: ProgressCallback | None = None,
                 should_cancel: CancelCheck | None = None) -> EngineOutput:
        args = {field.name: getattr(request, field.name) for field in dataclasses.fields(request)}
        value = self._call("generate", args, progress, should_cancel)
        return EngineOutput(images=[image.convert("RGB") for image in value["images"]], notes=list(value["notes"]),
                            timings={stage: float(ms) for stage, ms in value["timings"].items()})

    def relight(self, foreground: Image.Image, light: Image.Image, prompt: str, negative_prompt: str = "",
                seeds: list[int] | tuple[int, ...] = (0,), steps: int = 25, guidance: float = 2.0,
                denoise: float = 0.9, progress: ProgressCallback | None = None,
                should_cancel: CancelCheck | None = None) -> list[Image.Image]:
        args = dict(foreground=foreground, light=light, prompt=prompt, negative_prompt=negative_prompt,
                    seeds=list(seeds), steps=steps, guidance=guidance, denoise=denoise)
        return [image.convert("RGB") for image in self._call("relight", args, progress, should_cancel)]

    def _call(self, method: str, args: Mapping[str, Any], progress: ProgressCallback | None = None,
              should_cancel: CancelCheck | None = None) -> Any:
        job = CURRENT_JOB.get()
        checks = [check for check in (should_cancel, job.should_cancel if job else None) if check is not None]
        return self.server.call(
            self.name, method, args, title=self.title, progress=progress,
            should_cancel=(lambda: any(check() for check in checks)) if checks else None,
            on_wait=self._on_wait, job={"job_id": job.job_id, "owner": job.owner} if job else None,
            on_start=lambda event: log.debug("%s %s runs on replica %s (pid %s)", self.name, method,
                                             event.get("replica"), event.get("pid")))
