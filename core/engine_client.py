"""Talking to the engine server (``inpaint-studio serve``, :mod:`core.engine_server`) over HTTP.

An app server, a batch or the command line given ``INPAINT_STUDIO_ENGINE_SERVER`` loads no model
itself: the model manager hands out remote engines (:mod:`core.engines.remote`) whose calls go
through :class:`EngineServer`. Only one call travels: the prepared crop, its mask, the reference
image and the params, as JSON with the pictures as PNG (lossless, so results equal the in-process
ones for the same seeds, device and dtype). Planning crops, pasting back and blending stay here.

A call is one ``POST /engines/<route>`` whose answer streams newline-delimited JSON events:

- ``start``: the replica took the request (its id and process id, for messages and logs);
- ``wait``: its place in the replica's queue (``place``, ``ahead``, ``estimate_s``), repeated;
- ``progress``: a denoising step done (``step``, ``total``);
- ``alive``: nothing new (sent every :data:`HEARTBEAT_SECONDS`, so a lost server is noticed);
- ``result`` (``value``) or ``error`` (``kind``, ``message``): the end.

Closing the connection cancels the request at the replica (Ray Serve cancels it when its client
disconnects) and frees it; that is how Cancel reaches it. ``GET /engines`` lists what is served,
``GET /engines/<route>`` describes one engine (as its replica loaded it).
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from core.errors import Cancelled, GenerationFailed, ModelUnavailable, StudioError, UserError
from core.queue import QueueFull, WaitCallback

HEARTBEAT_SECONDS = 0.5  # the server's "alive" events while nothing else happens
SILENCE_SECONDS = 30.0  # no event for this long: the connection is taken as lost
CONNECT_SECONDS = 5.0
LIST_CONNECT_SECONDS = 1.0  # the listing is asked while a page draws: a host that is down costs at most this
INDEX_ROUTE = "/engines"  # where the engine server lists what it serves; each engine is below it
LIST_MAX_AGE = 10.0  # how long the list of served engines is trusted
PROTOCOL = 1

ProgressCallback = Callable[[int, int], None]


class EngineServerUnreachable(ModelUnavailable):
    """The engine server cannot be reached, or does not serve the engine asked for."""


class RequestLost(GenerationFailed):
    """The engine server lost a request (its replica stopped) or took longer than allowed."""


# The kinds of error a replica reports, and the error each becomes here; a subclass before its base
# (QueueFull is a UserError), so that the first match is the kind.
ERROR_KINDS: dict[str, type[StudioError]] = {
    "busy": QueueFull, "cancelled": Cancelled, "model": ModelUnavailable, "generation": GenerationFailed,
    "input": UserError,
}


def error_kind(error: BaseException) -> str:
    """The ``kind`` of an ``error`` event for ``error`` (anything unexpected: "generation")."""
    return next((kind for kind, error_type in ERROR_KINDS.items() if isinstance(error, error_type)), "generation")


def route(name: str) -> str:
    """The URL path segment of engine ``name`` (a few-step variant's ``+`` spelled ``--``)."""
    return name.replace("+", "--")


# --- the wire format -------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """``value`` as JSON: pictures as PNG in base64 (``{"__image__": …}``), tuples as lists."""
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, "PNG", compress_level=1)
        return {"__image__": base64.b64encode(buffer.getvalue()).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (lists stay lists)."""
    if isinstance(value, dict):
        if set(value) == {"__image__"}:
            image = Image.open(io.BytesIO(base64.b64decode(value["__image__"])))
            image.load()
            return image
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def event_line(event: Mapping[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


# --- the client --------------------------------------------------------------------------------------


class EngineServer:
    """The engine server at ``address`` (``http://host:port``); ``timeout``: the seconds one request
    may take there, waiting in its queue included (``INPAINT_STUDIO_ENGINE_TIMEOUT``)."""

    def __init__(self, address: str, timeout: float = 600.0, *, silence: float = SILENCE_SECONDS) -> None:
        self.address = address.rstrip("/")
        self.timeout = timeout
        self.silence = silence
        self._listed: tuple[float, dict[str, dict] | None, str | None] | None = None
        self._guard = threading.Lock()
        self._http: Any = None  # one httpx.Client, made on first use: its connections are reused

    def _client(self) -> Any:
        import httpx

        with self._guard:
            if self._http is None:
                self._http = httpx.Client(timeout=httpx.Timeout(self.silence, connect=CONNECT_SECONDS))
            return self._http

    def close(self) -> None:
        """Close the connections kept open (the next call opens new ones)."""
        with self._guard:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def __repr__(self) -> str:
        return f"EngineServer({self.address!r})"

    @property
    def host(self) -> str:
        return urlsplit(self.address).netloc or self.address

    # --- what it serves ------------------------------------------------------------------------------

    def engines(self, max_age: float = LIST_MAX_AGE) -> dict[str, dict]:
        """The engines served (name → title, kind), asked at most every ``max_age`` seconds; {} when
        the server cannot be reached (:meth:`problem` says why)."""
        with self._guard:
            listed = self._listed
        if listed is None or time.monotonic() - listed[0] > max_age:
            try:
                served, problem = self._get(INDEX_ROUTE)["engines"], None
            except (StudioError, KeyError, TypeError) as error:
                served, problem = None, str(error) if isinstance(error, StudioError) else \
                    f"The engine server at {self.address} answered in a way this app does not understand."
            listed = (time.monotonic(), served, problem)
            with self._guard:
                self._listed = listed
        return dict(listed[1] or {})

    def problem(self, max_age: float = LIST_MAX_AGE) -> str | None:
        """Why the engine server cannot be used now (unreachable, not an engine server), or None."""
        self.engines(max_age)
        with self._guard:
            return self._listed[2] if self._listed else None

    def info(self, name: str) -> dict:
        """Engine ``name`` as a replica loaded it (title, model id, native size, …)."""
        return self._get(f"{INDEX_ROUTE}/{route(name)}", name)

    def _get(self, path: str, name: str | None = None) -> dict:
        import httpx

        try:
            response = self._client().get(self.address + path,
                                          timeout=httpx.Timeout(self.silence, connect=LIST_CONNECT_SECONDS))
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        if response.status_code != 200:
            raise self._status_error(response.status_code, response.text, name)
        try:
            return response.json()
        except ValueError as error:
            raise EngineServerUnreachable(f"{self.address} is not an Inpaint Studio engine server (it answered "
                                          f"{path} with something else than JSON).") from error

    # --- one call ------------------------------------------------------------------------------------

    def call(self, name: str, method: str, args: Mapping[str, Any], *, title: str | None = None,
             progress: ProgressCallback | None = None, should_cancel: Callable[[], bool] | None = None,
             on_wait: WaitCallback | None = None, on_start: Callable[[dict], None] | None = None,
             job: Mapping[str, str] | None = None) -> Any:
        """Run ``method`` of engine ``name`` at the server with ``args`` and return its decoded value.

        ``progress(step, total)`` per denoising step, ``on_wait(place, ahead, estimate_s)`` while it
        waits in the replica's queue, ``on_start(event)`` when a replica takes it; ``should_cancel()``
        is checked at every event (several a second): when it says so the connection is closed, which
        cancels the request there, and Cancelled is raised. ``job``: the batch job the call is a photo
        of (it then waits behind people's requests). Raises what the replica raised (as the app's
        error kinds), EngineServerUnreachable, RequestLost."""
        import httpx

        title = title or name
        payload = {"protocol": PROTOCOL, "method": method, "args": encode(args), "job": dict(job) if job else None}
        deadline = time.monotonic() + self.timeout
        started: dict | None = None
        try:
            url = f"{self.address}{INDEX_ROUTE}/{route(name)}"
            with self._client().stream("POST", url, json=payload) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._status_error(response.status_code, response.text, name, title)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if should_cancel is not None and should_cancel():
                        raise Cancelled(f"The request for {title} was cancelled.")
                    if time.monotonic() > deadline:
                        raise RequestLost(f"{title} at the engine server took longer than {self.timeout:g} s, so "
                                          "the request was given up. Try again, or raise "
                                          "INPAINT_STUDIO_ENGINE_TIMEOUT.")
                    kind = event.get("event")
                    if kind == "start":
                        started = event
                        if on_start is not None:
                            on_start(event)
                    elif kind == "wait" and on_wait is not None:
                        on_wait(int(event["place"]), int(event["ahead"]), event.get("estimate_s"))
                    elif kind == "progress" and progress is not None:
                        progress(int(event["step"]), int(event["total"]))
                    elif kind == "result":
                        return decode(event["value"])
                    elif kind == "error":
                        error_type = ERROR_KINDS.get(event.get("kind"), GenerationFailed)
                        raise error_type(event.get("message") or f"{title} failed at the engine server.")
        except StudioError:
            raise  # the replica's error, a cancel, a timeout: as raised above
        except httpx.ConnectError as error:
            raise self._unreachable(error) from error
        except httpx.TimeoutException as error:
            if started is None and isinstance(error, httpx.ConnectTimeout):
                raise self._unreachable(error) from error
            raise RequestLost(f"The engine server sent nothing about this {title} request for {self.silence:g} s, "
                              "so it was given up (the server or its network may be down). Try again.") from error
        except (httpx.HTTPError, ValueError, KeyError) as error:  # a cut stream, a broken event
            raise self._lost(title, started, error) from error
        raise self._lost(title, started, None)  # the stream ended without a result

    # --- messages -----------------------------------------------------------------------------------

    def _unreachable(self, error: BaseException) -> EngineServerUnreachable:
        reason = " ".join(str(error).split()) or type(error).__name__
        return EngineServerUnreachable(
            f"The engine server at {self.address} cannot be reached ({reason}). Check that `inpaint-studio serve` "
            "runs there and that INPAINT_STUDIO_ENGINE_SERVER names it; meanwhile only what needs no model "
            "works here.")

    def _lost(self, title: str, started: dict | None, error: BaseException | None) -> RequestLost:
        where = f"the replica running it ({started.get('replica', '?')}) stopped" if started else \
            "the connection closed before a replica took it"
        detail = f" ({type(error).__name__})" if error is not None else ""
        return RequestLost(f"The engine server lost this {title} request: {where}{detail}. Nothing was changed; "
                           "try again (the server sends it to a working replica).")

    def _status_error(self, status: int, text: str, name: str | None, title: str | None = None) -> StudioError:
        what = title or name or "the engine list"
        if status == 404 and name is None:  # no engine list there: another program holds that address
            return EngineServerUnreachable(
                f"{self.address} is not an Inpaint Studio engine server (it answered 404 for {INDEX_ROUTE}). Check "
                "that INPAINT_STUDIO_ENGINE_SERVER names the address `inpaint-studio serve` printed; meanwhile "
                "only what needs no model works here.")
        if status == 404:
            return EngineServerUnreachable(
                f"The engine server at {self.address} does not serve {what}: choose another engine, or serve it "
                "(`inpaint-studio serve` deploys each engine whose model it finds).")
        if status == 503:
            return QueueFull(f"{what} at the engine server is busy: every replica is full. Try again in a minute.")
        snippet = " ".join(text.split())[:200]
        return RequestLost(f"The engine server at {self.address} answered {status} for {what}"
                           f"{f': {snippet}' if snippet else ''}. Try again.")
