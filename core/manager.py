"""The model manager: the one place that loads catalog entries, keeps them, locks them and knows
what is running.

A loaded engine is not safe to call from two threads at once (a diffusers pipeline's scheduler,
an ultralytics predictor keep state), so every engine comes with a fair queue (:mod:`core.queue`):
each call by :meth:`ModelManager.use` / :meth:`ModelManager.hold` takes its turn, people before
batch photos, first come first served, and a waiting caller hears its place and an estimate
(``on_wait``) and can cancel (``should_cancel``). Batch runners mark their calls with
:meth:`ModelManager.batch_job`; the jobs' order (:attr:`ModelManager.jobs`) is their owners' to
change. The server keeps one manager for all sessions (``ui.resources``), and the batch runner, its
Ray workers, the selection service and the command line each use one of their own, the same class.
The memory janitor asks :attr:`ModelManager.busy` before trimming.

Engines are loaded by name (``sd15``, ``sd15+lcm``, ``fastsam``): the catalog entry names the
class (``"module:Class"``, imported here on first use) and the model roles it needs; the manager
finds each role's files (:mod:`core.model_files`) and calls ``Class.from_catalog(LoadRequest)``.

With ``INPAINT_STUDIO_ENGINE_SERVER`` set, every engine that needs a model and generates (the kinds
of :data:`REMOTE_KINDS`) runs on that engine server instead (``inpaint-studio serve``): this manager
hands out a remote engine (:data:`REMOTE_ENGINE`) standing for it, offers the engines the server
serves, and lets the server's replicas queue the calls (each has a manager and queues of its own).
Engines without a model (OpenCV, the shading preview, GrabCut) and the selection models run here.
"""
from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import catalog as catalogs
from core import queue as queues
from core.catalog import Catalog, EngineEntry, FewStep
from core.config import Settings
from core.device import DeviceInfo, detect_device
from core.engine_client import EngineServer
from core.errors import ModelUnavailable
from core.memory import memory_shortfall, release_memory
from core.model_files import ModelStatus, locate
from core.queue import EngineQueue, JobOrder, WaitCallback

FAILED_LOAD_RETRY_SECONDS = 30.0  # a failed load is reported again, not retried, within this time
REMOTE_KINDS = ("diffusion", "removal", "relight")  # what runs on the engine server when one is set
REMOTE_ENGINE = "core.engines.remote:RemoteEngine"  # the engine standing for one served there


@dataclass(frozen=True)
class LoadRequest:
    """What an engine class's ``from_catalog`` receives: its entry (and few-step preset), the local
    path of every role it needs, the settings and device, and overrides of its load options."""

    entry: EngineEntry
    preset: FewStep | None
    paths: Mapping[str, Path]
    settings: Settings
    device: DeviceInfo
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.entry.name}+{self.preset.name}" if self.preset else self.entry.name

    def path(self, role: str | None = None) -> str:
        """The local path of ``role`` (default: the entry's main role)."""
        return str(self.paths[role or self.entry.roles[0]])


def engine_class(entry: EngineEntry, path: str | None = None) -> type:
    """The class named by ``entry.engine`` (or ``path``), ``"module:Class"``."""
    path = path or entry.engine
    module_name, _, class_name = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except Exception as error:  # noqa: BLE001 (importing a module of engines may raise anything)
        raise ModelUnavailable(f"The engine {entry.name!r} names {path}, which cannot be imported "
                               f"({type(error).__name__}: {error}).") from error


class ModelManager:
    """Loads, keeps and locks the engines of one process (or one batch, one worker).

    ``release_after_use``: hand freed memory back to the system after each use (a server, whose
    memory would otherwise only grow). ``options`` override every engine's load options (tests:
    ``warm_up=False``).
    """

    def __init__(self, settings: Settings, device: DeviceInfo | None = None, catalog: Catalog | None = None, *,
                 release_after_use: bool = False, options: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.catalog = catalog or catalogs.current(settings)
        self._device = device
        self.release_after_use = release_after_use
        self.options = dict(options or {})
        self._engines: dict[str, Any] = {}
        self._failures: dict[str, tuple[float, str, type[ModelUnavailable]]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._queues: dict[str, EngineQueue] = {}
        self.jobs = JobOrder()  # the order of the batch jobs using this manager
        self._guard = threading.Lock()
        self._running = 0
        self.engine_server = EngineServer(settings.engine_server, settings.engine_timeout) \
            if settings.engine_server else None

    # --- what is on this machine ----------------------------------------------------------------

    @property
    def device(self) -> DeviceInfo:
        if self._device is None:
            with self._guard:
                if self._device is None:
                    self._device = detect_device(self.settings.device)
        return self._device

    def status(self, role: str) -> ModelStatus:
        return locate(role, self.settings, self.catalog)

    def statuses(self) -> list[ModelStatus]:
        return [self.status(role) for role in self.catalog.models]

    def runs_remotely(self, name: str) -> bool:
        """Whether engine ``name`` runs on the engine server (one is set, and it needs a model and
        generates) rather than here."""
        if self.engine_server is None:
            return False
        entry, _ = self.catalog.engine(name)
        return bool(entry.roles) and entry.kind in REMOTE_KINDS

    def engine_server_problem(self) -> str | None:
        """Why the engine server cannot be used now (None: it answers, or none is set)."""
        return self.engine_server.problem() if self.engine_server is not None else None

    def missing(self, name: str) -> list[ModelStatus]:
        """The roles engine ``name`` needs that are not on this machine (for an engine that runs on
        the engine server: none when the server serves it)."""
        if self.runs_remotely(name) and name in self.engine_server.engines():
            return []
        return [status for status in map(self.status, self.catalog.roles_of(name)) if not status.available]

    def has(self, name: str) -> bool:
        """Whether every model engine ``name`` needs is on this machine (or the engine server serves it)."""
        if self.runs_remotely(name):
            return name in self.engine_server.engines()
        return not self.missing(name)

    def shortfall(self, name: str) -> str | None:
        """Why engine ``name``'s model is not offered on this device (too little memory), or None."""
        entry, _ = self.catalog.engine(name)
        if not entry.roles or entry.kind != "diffusion" or self.runs_remotely(name):  # the others are small
            return None
        removers = self.engines("removal")
        remover = self.catalog.engines[removers[0]].title if removers else "none"
        return memory_shortfall(self.status(entry.roles[0]), self.settings, self.device, remover)

    def engines(self, *kinds: str) -> list[str]:
        """The engines of ``kinds`` (all when none) that can run here: their models present and, for
        diffusion models, fitting in memory; each followed by its few-step variants whose LoRA is here."""
        names = []
        for name in self.catalog.engine_names(kinds or None, variants=False):
            entry = self.catalog.engines[name]
            if self.has(name) and (entry.kind != "diffusion" or self.shortfall(name) is None):
                names.append(name)
                names += [f"{name}+{preset}" for preset in entry.few_step if self.has(f"{name}+{preset}")]
        return names

    def memory_notes(self, *kinds: str) -> list[str]:
        """Why engines of ``kinds`` whose models are here are not offered (too little memory)."""
        return [note for name in self.catalog.engine_names(kinds or None, variants=False)
                if self.has(name) and (note := self.shortfall(name))]

    # --- loading and using ----------------------------------------------------------------------

    def lock(self, name: str) -> threading.Lock:
        """The lock held while engine ``name`` loads (its calls take turns in :meth:`queue`)."""
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def queue(self, name: str) -> EngineQueue:
        """Engine ``name``'s queue: every call into it takes its turn there."""
        with self._guard:
            found = self._queues.get(name)
            if found is None:
                try:
                    title = self.catalog.title(name)
                except Exception:  # noqa: BLE001 (a name the catalog lacks: load() says so; named as given)
                    title = name
                found = self._queues[name] = EngineQueue(title, self.settings.queue_max, self.jobs)
                self.jobs.listen(found.reorder)
            return found

    def is_loaded(self, name: str) -> bool:
        return name in self._engines

    def load(self, name: str) -> Any:
        """Engine ``name``, loaded on first use and kept (the load counts as running work). Raises
        ModelUnavailable (the catalog's UnknownName for a name it does not have) saying what is missing
        or what went wrong, whatever the engine's loader raised; a failed load is reported again
        without retrying for :data:`FAILED_LOAD_RETRY_SECONDS`."""
        if name in self._engines:
            return self._engines[name]
        entry, preset = self.catalog.engine(name)
        self._raise_recent_failure(name)
        with self.lock(name), self.running():
            self._raise_recent_failure(name)  # another caller's load failed while this one waited
            if name not in self._engines:
                try:
                    if self.runs_remotely(name):
                        remote = engine_class(entry, REMOTE_ENGINE)
                        self._engines[name] = remote.connect(self.engine_server, entry, preset)
                    else:
                        statuses = map(self.status, self.catalog.roles_of(name))
                        paths = {status.role.name: status.require() for status in statuses}
                        request = LoadRequest(entry, preset, paths, self.settings, self.device, self.options)
                        self._engines[name] = engine_class(entry).from_catalog(request)
                except Exception as error:  # noqa: BLE001 (an engine's loader may raise anything)
                    failure = error if isinstance(error, ModelUnavailable) else ModelUnavailable(
                        f"The {entry.title} model could not be loaded ({type(error).__name__}: {error}).")
                    self._failures[name] = (time.monotonic(), str(failure), type(failure))
                    if failure is error:
                        raise
                    raise failure from error
                self._failures.pop(name, None)
        return self._engines[name]

    def _raise_recent_failure(self, name: str) -> None:
        failed = self._failures.get(name)
        if failed is not None and time.monotonic() - failed[0] < FAILED_LOAD_RETRY_SECONDS:
            raise failed[2](failed[1])  # a new exception each time: no traceback shared between callers

    def adopt(self, name: str, engine: Any) -> None:
        """Keep an engine loaded elsewhere as ``name`` (a test's, a benchmark's)."""
        self.catalog.engine(name)
        self._engines[name] = engine

    @contextlib.contextmanager
    def use(self, name: str, *, on_wait: WaitCallback | None = None,
            should_cancel: Callable[[], bool] | None = None) -> Iterator[Any]:
        """Engine ``name``, this caller's turn held until the block ends, counted as running meanwhile
        (waiting for the turn included); ``on_wait`` and ``should_cancel`` as for :meth:`hold`.

        An engine on the engine server takes its turn in its replica's queue, which reports the place
        to ``on_wait`` (calls from here do not wait for one another: the server has the replicas)."""
        engine = self.load(name)
        if getattr(engine, "remote", False):
            with self.running():
                yield engine.for_call(on_wait)
            return
        with self.hold(name, on_wait=on_wait, should_cancel=should_cancel):
            yield engine

    @contextlib.contextmanager
    def hold(self, name: str, *, on_wait: WaitCallback | None = None,
             should_cancel: Callable[[], bool] | None = None) -> Iterator[None]:
        """Engine ``name``'s turn (:meth:`queue`) held and the work counted as running until the block
        ends (the engine itself from :meth:`load`).

        While others are ahead: ``on_wait(place, ahead, estimate_s)`` every moment or so (see
        :meth:`core.queue.EngineQueue.turn`), and ``should_cancel()`` returning True leaves the queue
        with Cancelled. Raises core.queue.QueueFull when ``INPAINT_STUDIO_QUEUE_MAX`` requests wait."""
        self._count(+1)
        try:
            with self.queue(name).turn(on_wait=on_wait, should_cancel=should_cancel):
                yield
        finally:
            self._count(-1)
            if self.release_after_use:
                release_memory()

    def batch_job(self, job_id: str, owner: str, label: str = "",
                  should_cancel: Callable[[], bool] | None = None) -> contextlib.AbstractContextManager:
        """Mark the calls made in the block as photos of batch job ``job_id`` of ``owner`` (they wait
        behind people's requests, in the job order, which the job joins meanwhile); ``label``: what
        its owner sees of it; ``should_cancel``: the job's cancel, which takes a waiting photo out of
        its queue at once."""
        return queues.batch_job(job_id, owner, self.jobs, label, should_cancel)

    def move_job(self, job_id: str, direction: str, owner: str) -> None:
        """Move batch job ``job_id`` ``"up"`` or ``"down"`` in the job order; only its owner may
        (core.queue.UnknownJob, NotJobOwner otherwise)."""
        self.jobs.move(job_id, direction, owner)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Count work that holds no engine (a batch between photos) as running."""
        self._count(+1)
        try:
            yield
        finally:
            self._count(-1)

    @property
    def busy(self) -> bool:
        """Whether anything runs now (the memory janitor waits meanwhile)."""
        return self._running > 0

    def _count(self, step: int) -> None:
        with self._guard:
            self._running += step
