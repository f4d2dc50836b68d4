"""The engine server: the generating engines as Ray Serve deployments (``inpaint-studio serve``).

One deployment per engine whose model is on the serving machine (diffusion, removal and IC-Light
engines, :data:`core.manager.REMOTE_KINDS`), each with its replicas (GPUs and CPUs per replica,
a fixed count or an autoscaling range, how many requests one replica takes at once: see
:class:`core.config.ServeSettings`), and a small index at ``/engines`` that lists them. App servers,
batches and the command line given ``INPAINT_STUDIO_ENGINE_SERVER`` send their calls here
(:mod:`core.engine_client` describes the protocol); Ray Serve spreads them over the replicas.

Each replica (:class:`EngineReplica`) loads its engine once, through a model manager of its own,
and runs one call at a time: the others wait in that manager's fair queue (people before batch
photos, first come first served), and their place streams back to the person waiting. A call
whose client goes away (Cancel, a closed page) is cancelled by Ray Serve; the replica then stops
the engine at its next step and takes the next request.

Install with ``pip install -r requirements-distributed.txt``. On a cluster, every node needs the
project and the models at the paths the settings name; the ``INPAINT_STUDIO_*`` and Hugging Face
settings of the ``serve`` command are passed on to the replicas.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from core.config import Settings, apply_offline_mode, load_settings, quiet_library_progress, ray_runtime_env
from core.engine_client import (
    HEARTBEAT_SECONDS,
    INDEX_ROUTE,
    PROTOCOL,
    EngineServer,
    decode,
    encode,
    error_kind,
    event_line,
    route,
)
from core.engines.base import EngineRequest
from core.errors import ModelUnavailable, StudioError, UserError, one_line
from core.manager import REMOTE_KINDS, ModelManager
from core.region import work_size

log = logging.getLogger(__name__)

INDEX_APP = "inpaint-studio"
READY_LINE = "Engine server ready"  # the first words of the line printed once every engine is up


class ServeUnavailable(UserError):
    """Ray Serve cannot be used: not installed, the cluster out of reach, its HTTP port taken."""


@dataclass(frozen=True)
class ServePlan:
    """What :func:`serve_engines` deploys: the engines (with their titles and kinds, what the index
    lists), and each deployment's replicas. ``gpus`` None: one per replica where the cluster has
    GPUs, decided by :meth:`on_cluster` once Ray is up."""

    listing: dict[str, dict[str, str]]  # engine name → its title and kind, in the order deployed
    gpus: float | None
    cpus: float
    min_replicas: int
    max_replicas: int
    max_ongoing: int

    def on_cluster(self, cluster_gpus: float) -> ServePlan:
        """This plan on a cluster with ``cluster_gpus`` GPUs (a GPU count already set stays)."""
        if self.gpus is not None:
            return self
        return dataclasses.replace(self, gpus=1.0 if cluster_gpus >= 1 else 0.0)

    @property
    def engines(self) -> tuple[str, ...]:
        return tuple(self.listing)

    def title(self, name: str) -> str:
        return self.listing[name]["title"]

    def deployment_options(self, name: str) -> dict[str, Any]:
        """Ray Serve's options for engine ``name``'s deployment."""
        options: dict[str, Any] = dict(
            name=f"engine-{route(name)}",
            max_ongoing_requests=self.max_ongoing,
            max_queued_requests=self.max_ongoing,  # beyond that every replica's queue is full: "busy"
            ray_actor_options={"num_cpus": self.cpus, "num_gpus": self.gpus or 0.0, "runtime_env": ray_runtime_env()},
            graceful_shutdown_timeout_s=5,
        )
        if self.min_replicas == self.max_replicas:
            options["num_replicas"] = self.min_replicas
        else:
            options["autoscaling_config"] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": 2}
        return options


def servable(manager: ModelManager) -> list[str]:
    """The engines ``manager`` (one without an engine server) could serve: those of
    :data:`REMOTE_KINDS` with a model, whose models are here, few-step variants included."""
    return [name for name in manager.catalog.engine_names(REMOTE_KINDS)
            if manager.catalog.engine(name)[0].roles and manager.has(name)]


def plan(settings: Settings, engines: Iterable[str] | None = None, *, gpus: float | None = None) -> ServePlan:
    """What to serve with ``settings``: ``engines`` (default: every one whose model is here), with
    ``settings.serve``'s replicas and ``gpus`` per replica (default: the setting, else see
    :meth:`ServePlan.on_cluster`). UserError for an engine that cannot be served; ModelUnavailable
    when no model is here at all."""
    manager = ModelManager(dataclasses.replace(settings, engine_server=None))
    catalog = manager.catalog
    present = servable(manager)
    if engines:
        names = list(dict.fromkeys(engines))
        for name in names:
            entry = catalog.engine(name)[0]  # UnknownName lists the engines
            if not entry.roles or entry.kind not in REMOTE_KINDS:
                raise UserError(f"{name} ({entry.title}) needs no model or does not generate, so every app server "
                                "runs it itself: leave it out of --engines.")
            if name not in present:
                missing = ", ".join(status.configured for status in manager.missing(name))
                raise UserError(f"{name} ({entry.title}) cannot be served: its model is not on this machine "
                                f"({missing}). Fetch it with `inpaint-studio models download`, or leave it out.")
    elif present:
        names = present
    else:
        raise ModelUnavailable("No generating engine's model is on this machine, so there is nothing to serve. "
                               "`inpaint-studio models list` shows what is missing and how to fetch it.")
    serve = settings.serve
    chosen_gpus = gpus if gpus is not None else serve.gpus
    maximum = serve.max_replicas if serve.max_replicas is not None else max(1, serve.min_replicas)
    listing = {name: {"title": catalog.title(name), "kind": catalog.engine(name)[0].kind} for name in names}
    return ServePlan(listing=listing,
                     gpus=None if chosen_gpus is None else float(chosen_gpus), cpus=serve.cpus,
                     min_replicas=serve.min_replicas, max_replicas=maximum,
                     max_ongoing=serve.max_ongoing or settings.queue_max + 1)


# --- the deployments -------------------------------------------------------------------------------


class EngineReplica:
    """One replica of engine ``name``'s deployment: the engine, loaded once, and its fair queue.

    ``POST`` runs one call and streams its events (see :mod:`core.engine_client`); ``GET``
    describes the engine as loaded. ``options``: the model manager's load options (tests)."""

    def __init__(self, name: str, options: dict | None = None, threads: int = 32) -> None:
        settings = dataclasses.replace(load_settings(), engine_server=None)  # it runs its engine itself
        apply_offline_mode(settings)
        quiet_library_progress()
        self.name = name
        self.manager = ModelManager(settings, options=options)
        self.engine = self.manager.load(name)  # a model that cannot load fails the replica's start
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"engine-{route(name)}")
        self.replica = _replica_id()

    def describe(self) -> dict[str, Any]:
        engine = self.engine
        return {"protocol": PROTOCOL, "name": self.name, "title": engine.title, "model_id": engine.model_id,
                "native_resolution": engine.native_resolution,
                "upscales_small_crops": bool(getattr(engine, "upscales_small_crops", True)),
                "device": self.manager.device.summary,
                "replica": self.replica, "pid": os.getpid(), "queue": len(self.manager.queue(self.name))}

    async def __call__(self, request) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        if request.method == "GET":
            return JSONResponse(self.describe())
        try:
            body = await request.json()
            method, args = body["method"], body.get("args") or {}
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "Send JSON with a method and its args."}, status_code=400)
        return StreamingResponse(self.events(method, args, body.get("job")), media_type="application/x-ndjson")

    def run(self, method: str, args: dict, job: dict | None, emit: Callable[[dict], None],
            stop: threading.Event) -> Any:
        """Run one call (in a thread of the pool): its turn in the engine's queue, then the engine."""
        if method == "work_size":  # no model work: answered at once
            return list(work_size(self.engine, tuple(args["crop_size"])))
        if method not in ("generate", "relight"):
            raise UserError(f"The engine server has no call {method!r}: the app server and the engine server run "
                            "different versions of Inpaint Studio.")

        def on_wait(place: int, ahead: int, estimate_s: float | None) -> None:
            emit({"event": "wait", "place": place, "ahead": ahead, "estimate_s": estimate_s})

        def progress(step: int, total: int) -> None:
            emit({"event": "progress", "step": step, "total": total})

        values = decode(args)
        marked = (self.manager.batch_job(str(job["job_id"]), str(job["owner"]), should_cancel=stop.is_set)
                  if job else contextlib.nullcontext())
        with marked, self.manager.use(self.name, on_wait=on_wait, should_cancel=stop.is_set) as engine:
            if method == "relight":
                return engine.relight(**values, progress=progress, should_cancel=stop.is_set)
            known = {field.name for field in dataclasses.fields(EngineRequest)}
            if set(values) - known:
                raise UserError("The app server sent settings this engine server does not know "
                                f"({', '.join(sorted(set(values) - known))}): run the same version on both.")
            values["seeds"] = tuple(values["seeds"])
            output = engine.generate(EngineRequest(**values), progress, stop.is_set)
            return {"images": output.images, "notes": output.notes, "timings": output.timings}

    async def events(self, method: str, args: dict, job: dict | None):
        """The call's events as NDJSON lines; leaving early (the client went away) stops the call."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(event: dict | None) -> None:
            if stop.is_set():  # nobody listens any more
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            try:
                emit({"event": "result", "value": encode(self.run(method, args, job, emit, stop))})
            except BaseException as error:  # noqa: BLE001 (reported to the caller, whatever it is)
                if not isinstance(error, StudioError):
                    log.exception("%s failed on %s", method, self.name)
                message = one_line(error) if isinstance(error, StudioError) else \
                    f"{self.engine.title} failed at the engine server ({type(error).__name__}: {one_line(error)})."
                emit({"event": "error", "kind": error_kind(error), "message": message})
            finally:
                emit(None)

        yield event_line({"event": "start", "engine": self.name, "replica": self.replica, "pid": os.getpid()})
        loop.run_in_executor(self.pool, work)
        getter: asyncio.Future | None = None
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter}, timeout=HEARTBEAT_SECONDS)
                if not done:
                    yield event_line({"event": "alive"})
                    continue
                event, getter = getter.result(), None
                if event is None:
                    return
                yield event_line(event)
        finally:
            stop.set()  # the client went away (or the call ended): the engine stops at its next step
            if getter is not None:
                getter.cancel()


class EngineIndex:
    """``GET /engines``: the engines served (name → title and kind)."""

    def __init__(self, engines: dict[str, dict]) -> None:
        self.engines = engines

    async def __call__(self, request) -> Any:
        from starlette.responses import JSONResponse

        if request.method != "GET" or request.url.path.rstrip("/") != INDEX_ROUTE:  # an engine not served
            return JSONResponse({"error": f"Not served here: {request.url.path}"}, status_code=404)
        return JSONResponse({"protocol": PROTOCOL, "engines": self.engines})


def _probe(address: str | None, seconds: float = 5.0) -> None:
    """ServeUnavailable when nothing answers at a Ray cluster's ``host:port`` (Ray itself would keep
    retrying for minutes); ``auto``, none and other forms are left to Ray."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as error:
        raise ServeUnavailable(f"Nothing answers at the Ray cluster address {address} ({error}). Start the cluster "
                               "(`ray start --head` on its head node), or use --ray-address auto on one of its "
                               "nodes.") from error


def _last_line(error: BaseException) -> str:
    """The last line of ``error``'s message (Ray's carry the remote traceback before it)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else type(error).__name__


def _check_answers(host: str, port: int, seconds: float = 30.0) -> None:
    """ServeUnavailable unless the index answers at ``host``:``port`` within ``seconds``, asked as an
    app server asks it (Serve's proxy cannot take a port another program holds, and says so only in
    its log)."""
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    client = EngineServer(f"http://{local}:{port}", silence=5.0)
    deadline = time.monotonic() + seconds
    try:
        while client.problem(max_age=0) is not None:
            if time.monotonic() > deadline:
                raise ServeUnavailable(f"Ray Serve's HTTP server does not answer at http://{local}:{port}: is the "
                                       "port in use by another program? Choose another with --port.")
            time.sleep(0.5)
    finally:
        client.close()


def _replica_id() -> str:
    if "ray" not in sys.modules:  # not in a Ray worker (a test running a replica directly)
        return str(os.getpid())
    try:
        from ray import serve

        context = serve.get_replica_context()
        replica = getattr(context, "replica_id", None)
        return str(getattr(replica, "unique_id", None) or getattr(context, "replica_tag", None) or os.getpid())
    except Exception:  # noqa: BLE001 (outside a replica, or another Ray version)
        return str(os.getpid())


# --- the command -----------------------------------------------------------------------------------


def serve_engines(settings: Settings, *, engines: Iterable[str] | None = None, address: str | None = None,
                  host: str = "127.0.0.1", port: int = 8000, num_cpus: float | None = None,
                  gpus: float | None = None, options: dict | None = None,
                  announce: Callable[[str], None] = print, stop: threading.Event | None = None) -> None:
    """Deploy the engines on Ray Serve and serve them until ``stop`` is set (or SIGTERM, or
    KeyboardInterrupt), then take them down (and the local Ray instance, when this started one).

    ``address``: an existing Ray cluster's (default: start a local instance with ``num_cpus``).
    ``host`` / ``port``: where Serve's HTTP proxy listens. ``announce``: where the lines for people
    go (the address to give the app servers). Raises ServeUnavailable without Ray Serve,
    UserError / ModelUnavailable for engines that cannot be served."""
    chosen = plan(settings, engines, gpus=gpus)  # checked before Ray starts
    try:
        import ray
        from ray import serve
    except ImportError as error:
        raise ServeUnavailable(f"Ray Serve is not installed ({error}): pip install -r "
                               "requirements-distributed.txt") from error
    started_ray = not ray.is_initialized()
    if started_ray:
        _probe(address)
        try:
            ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                     runtime_env=ray_runtime_env(), configure_logging=False)
        except Exception as error:  # noqa: BLE001 (Ray raises several types for a cluster out of reach)
            where = f"reach the Ray cluster at {address}" if address else "start a local Ray instance"
            raise ServeUnavailable(f"Could not {where} ({_last_line(error)}). Check --ray-address (\"auto\" on a "
                                   "node of the cluster).") from error
    stop = stop or threading.Event()
    ready = threading.Event()

    def on_sigterm(*_: Any) -> None:
        stop.set()
        if not ready.is_set():  # still deploying: stop that now (the finally below takes it down)
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # after ray.init, which sets its own handler
        signal.signal(signal.SIGTERM, on_sigterm)
    deployed: list[str] = []
    try:
        chosen = chosen.on_cluster(ray.cluster_resources().get("GPU", 0.0))
        try:
            serve.start(http_options={"host": host, "port": port})
        except Exception as error:  # noqa: BLE001 (Ray wraps the proxy's failure in its own types)
            raise ServeUnavailable(f"Ray Serve could not start its HTTP server at {host}:{port} "
                                   f"({_last_line(error)}). Is the port in use by another "
                                   "program? Choose another with --port.") from error
        for name in chosen.engines:
            announce(f"Starting {chosen.title(name)} ({chosen.min_replicas}"
                     f"{f'-{chosen.max_replicas}' if chosen.max_replicas != chosen.min_replicas else ''} "
                     f"replica(s), {chosen.gpus:g} GPU and {chosen.cpus:g} CPU each)…")
            deployment = serve.deployment(EngineReplica).options(**chosen.deployment_options(name))
            app = deployment.bind(name, options, chosen.max_ongoing + 4)
            try:
                serve.run(app, name=f"engine-{route(name)}", route_prefix=f"{INDEX_ROUTE}/{route(name)}")
            except RuntimeError as error:
                raise ModelUnavailable(f"{chosen.title(name)} could not start on the cluster ({one_line(error)}). "
                                       "Check that its model is at the same path on the nodes with GPUs.") from error
            deployed.append(f"engine-{route(name)}")
        index = serve.deployment(EngineIndex).options(name="index", ray_actor_options={"num_cpus": 0})
        serve.run(index.bind(chosen.listing), name=INDEX_APP, route_prefix=INDEX_ROUTE)
        deployed.append(INDEX_APP)
        _check_answers(host, port)
        shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
        announce(f"{READY_LINE}: {', '.join(chosen.engines)} at http://{shown}:{port}{INDEX_ROUTE}. On each app "
                 f"server set INPAINT_STUDIO_ENGINE_SERVER=http://{shown}:{port}")
        ready.set()
        while not stop.wait(0.5):
            pass
    finally:
        with contextlib.suppress(Exception):  # taking down what was deployed, as far as it got
            if started_ray and address is None:
                serve.shutdown()
            else:
                for app_name in deployed:
                    serve.delete(app_name)
        if started_ray:
            ray.shutdown()
