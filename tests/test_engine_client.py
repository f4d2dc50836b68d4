"""The engine server's protocol without Ray: the wire format, the client's messages when the server
cannot be reached, a replica's event stream (places, progress, result, errors, cancel when the client
leaves) run directly, a remote engine over a local HTTP server speaking the protocol, and the serve
command's checks before it starts anything."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from core import engine_client
from core.catalog import BUILTIN
from core.cli import main
from core.config import Settings
from core.engine_client import EngineServer, EngineServerUnreachable, RequestLost, decode, encode
from core.engines.base import EngineOutput, EngineRequest
from core.errors import Cancelled, GenerationFailed, ModelUnavailable, UserError
from core.manager import ModelManager
from core.queue import QueueFull
from core.region import engine_size
from tests.helpers import run_in_own_loop


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_pictures_travel_losslessly_with_the_other_values():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8), "RGB")
    mask = Image.fromarray(rng.integers(0, 2, (24, 40), dtype=np.uint8) * 255, "L")
    sent = {"image": rgb, "mask": mask, "seeds": (3, 4), "prompt": "a bench", "strength": 0.5, "ref": None}
    back = decode(json.loads(json.dumps(encode(sent))))
    assert np.array_equal(np.asarray(back["image"]), np.asarray(rgb)) and back["image"].mode == "RGB"
    assert np.array_equal(np.asarray(back["mask"]), np.asarray(mask)) and back["mask"].mode == "L"
    assert (back["seeds"], back["prompt"], back["strength"], back["ref"]) == ([3, 4], "a bench", 0.5, None)


def test_each_error_kind_comes_back_as_the_same_kind():
    assert engine_client.error_kind(QueueFull("busy")) == "busy"
    assert engine_client.error_kind(UserError("bad")) == "input"
    assert engine_client.error_kind(ModelUnavailable("gone")) == "model"
    assert engine_client.error_kind(Cancelled("stop")) == "cancelled"
    assert engine_client.error_kind(RuntimeError("boom")) == "generation"
    for kind, error_type in engine_client.ERROR_KINDS.items():
        assert engine_client.error_kind(error_type("x")) == kind


def test_a_server_that_is_not_there_gets_a_clear_message():
    address = f"http://127.0.0.1:{free_port()}"
    server = EngineServer(address, timeout=5)
    assert server.engines() == {}
    assert "cannot be reached" in server.problem() and address in server.problem()
    with pytest.raises(EngineServerUnreachable, match="cannot be reached.*inpaint-studio serve"):
        server.call("sd15", "generate", {})
    manager = ModelManager(Settings(engine_server=address))
    assert manager.runs_remotely("sd15") and not manager.runs_remotely("telea")  # no model: runs here
    assert not manager.has("sd15") and manager.engines("diffusion") == []
    assert set(manager.engines("removal")) >= {"telea", "navier_stokes"}  # the fallbacks stay
    assert "cannot be reached" in manager.engine_server_problem()
    with pytest.raises(ModelUnavailable, match="cannot be reached"):
        manager.load("sd15")


# --- a replica's event stream, run directly (no Ray) ------------------------------------------------


class SlowEngine:
    """A fake engine: ``steps`` steps of ``pause`` seconds each, checking should_cancel between them."""

    name = title = "slow"
    model_id = "fake"
    native_resolution = 64

    def __init__(self, pause: float = 0.05) -> None:
        self.pause = pause
        self.stopped_at: int | None = None

    def generate(self, request, progress=None, should_cancel=None):
        for step in range(1, request.steps + 1):
            if should_cancel is not None and should_cancel():
                self.stopped_at = step
                raise Cancelled("stopped")
            time.sleep(self.pause)
            if progress is not None:
                progress(step, request.steps)
        if not request.seeds:
            raise UserError("At least one seed is needed.")
        return EngineOutput(images=[request.image.copy() for _ in request.seeds], notes=["a note"], timings={"x": 1.0})


def replica(engine: SlowEngine):
    """An EngineReplica of ``telea`` (no model to load) whose engine is ``engine``."""
    from core.engine_server import EngineReplica

    made = EngineReplica("telea", threads=4)
    made.manager.adopt("telea", engine)
    made.engine = engine
    return made


def request_args(steps: int, seeds=(1,)) -> dict:
    image = Image.new("RGB", (16, 16), (10, 20, 30))
    return encode({"image": image, "mask": Image.new("L", (16, 16), 255), "seeds": list(seeds), "steps": steps})


async def collect(stream, stop_after: int | None = None) -> list[dict]:
    events = []
    async for line in stream:
        events.append(json.loads(line))
        if stop_after is not None and len(events) >= stop_after:
            await stream.aclose()  # the client went away
            break
    return events


def test_a_replica_streams_its_place_its_steps_and_the_result():
    engine = SlowEngine()
    served = replica(engine)

    async def both():
        # The first call holds the engine; the second waits behind it and hears its place.
        return await asyncio.gather(collect(served.events("generate", request_args(6), None)),
                                    collect(served.events("generate", request_args(3, seeds=(5, 6)), None)))

    first, second = run_in_own_loop(both)
    assert first[0]["event"] == "start" and first[-1]["event"] == "result"
    assert [e["step"] for e in first if e["event"] == "progress"] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in second if e["event"] == "progress"] == [1, 2, 3]
    # Whichever reached the engine's queue second waited there, first in line behind the running one.
    waits = [[e for e in events if e["event"] == "wait"] for events in (first, second)]
    assert sum(1 for seen in waits if seen) == 1
    assert all(e["place"] == 1 and e["ahead"] == 1 for e in waits[0] + waits[1])
    result = decode(second[-1]["value"])
    assert len(result["images"]) == 2 and result["notes"] == ["a note"]


def test_a_replica_reports_the_engine_error_by_kind():
    events = run_in_own_loop(lambda: collect(replica(SlowEngine()).events("generate", request_args(1, seeds=()), None)))
    assert events[-1] == {"event": "error", "kind": "input", "message": "At least one seed is needed."}
    events = run_in_own_loop(lambda: collect(replica(SlowEngine()).events("nonsense", {}, None)))
    assert events[-1]["kind"] == "input" and "different versions" in events[-1]["message"]


def test_a_client_leaving_stops_the_engine_and_frees_the_replica():
    engine = SlowEngine(pause=0.1)
    served = replica(engine)
    events = run_in_own_loop(lambda: collect(served.events("generate", request_args(100), None), stop_after=3))
    assert events[0]["event"] == "start"
    for _ in range(50):  # the engine notices at its next step
        if engine.stopped_at is not None and len(served.manager.queue("telea")) == 0:
            break
        time.sleep(0.1)
    assert engine.stopped_at is not None and engine.stopped_at < 20
    assert len(served.manager.queue("telea")) == 0  # free for the next request
    again = run_in_own_loop(lambda: collect(served.events("generate", request_args(2), None)))
    assert again[-1]["event"] == "result"


# --- a remote engine over HTTP, against a replica behind a plain local server --------------------------


class ReplicaHandler(BaseHTTPRequestHandler):
    """Serves one EngineReplica over HTTP the way Ray Serve's proxy does (GET describes, POST streams)."""

    replica = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/engines":
            self._send(200, {"protocol": 1, "engines": {"sd15": {"title": "SD", "kind": "diffusion"}}})
        elif self.path == "/engines/sd15":
            self._send(200, self.replica.describe())
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/engines/sd15":
            self._send(404, {"error": "not found"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        async def relay():
            stream = self.replica.events(body["method"], body["args"], body.get("job"))
            try:
                async for line in stream:
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                await stream.aclose()
                return
            self.wfile.write(b"0\r\n\r\n")

        asyncio.run(relay())

    def _send(self, status: int, value: dict) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def http_replica():
    engine = SlowEngine(pause=0.05)
    handler = type("Handler", (ReplicaHandler,), {"replica": replica(engine)})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", engine
    httpd.shutdown()
    httpd.server_close()


def test_a_remote_engine_forwards_steps_places_and_cancel(http_replica):
    address, engine = http_replica
    manager = ModelManager(Settings(engine_server=address, engine_timeout=60))
    assert manager.has("sd15") and "sd15" in manager.engines("diffusion") and manager.engine_server_problem() is None
    request = EngineRequest(image=Image.new("RGB", (16, 16)), mask=Image.new("L", (16, 16), 255), seeds=(1,), steps=4)
    steps: list = []
    with manager.use("sd15") as remote:
        output = remote.generate(request, progress=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)] and output.notes == ["a note"] and len(output.images) == 1
    # The replica's answer: its engine's size rule at its native resolution (64), not the catalog's 512.
    assert remote.work_size((100, 60)) == engine_size((100, 60), 64) != engine_size((100, 60), 512)

    # Two at once: the second waits at the replica and hears its place; neither waits here.
    places: list = []
    long = EngineRequest(image=request.image, mask=request.mask, seeds=(1,), steps=20)
    worker = threading.Thread(target=lambda: manager.load("sd15").generate(long))
    worker.start()
    time.sleep(0.3)
    with manager.use("sd15", on_wait=lambda place, ahead, estimate: places.append((place, ahead))) as remote:
        remote.generate(request)
    worker.join(30)
    assert places and places[0] == (1, 1)

    # Cancel: the connection closes and the replica's engine stops.
    engine.stopped_at = None
    with pytest.raises(Cancelled):
        manager.load("sd15").generate(long, progress=None, should_cancel=lambda: True)
    for _ in range(50):
        if engine.stopped_at is not None:
            break
        time.sleep(0.1)
    assert engine.stopped_at is not None and engine.stopped_at < 20


def test_another_program_at_the_address_is_not_taken_for_an_engine_server():
    """Something answers HTTP there, but has no engine list: the message says so, not "does not serve"."""

    class Elsewhere(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_error(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        server = EngineServer(f"http://127.0.0.1:{httpd.server_address[1]}")
        assert server.engines() == {}
        assert "is not an Inpaint Studio engine server (it answered 404 for /engines)" in server.problem()
        assert "INPAINT_STUDIO_ENGINE_SERVER" in server.problem()
        server.close()
    finally:
        httpd.shutdown()


def test_a_silent_or_cut_server_is_a_lost_request():
    """A server that accepts the request and then goes quiet, or closes the stream without a result."""
    port = free_port()
    behaviour = {"mode": "silent"}

    class Quiet(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            line = b'{"event":"start","replica":"r1","pid":1}\n'
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()
            if behaviour["mode"] == "silent":
                time.sleep(3)
            self.wfile.write(b"0\r\n\r\n")  # the end, without a result

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        server = EngineServer(f"http://127.0.0.1:{port}", timeout=60, silence=1)
        with pytest.raises(RequestLost, match="sent nothing .* for 1 s"):
            server.call("sd15", "generate", {}, title="SD 1.5")
        behaviour["mode"] = "cut"
        with pytest.raises(RequestLost, match=r"replica running it \(r1\) stopped.*try again"):
            server.call("sd15", "generate", {}, title="SD 1.5")
        assert issubclass(RequestLost, GenerationFailed)
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- the serve command's checks (nothing started) ------------------------------------------------------


def test_serve_refuses_what_it_cannot_serve(monkeypatch, tmp_path, capsys):
    for key in list(__import__("os").environ):
        if key.startswith("INPAINT_STUDIO_MODEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "none"))
    assert main(["serve", "--engines", "telea"]) == 2
    assert "needs no model" in capsys.readouterr().err
    assert main(["serve", "--engines", "sd15"]) == 2
    assert "its model is not on this machine" in capsys.readouterr().err
    assert main(["serve"]) == 1
    assert "nothing to serve" in capsys.readouterr().err
    assert main(["serve", "--min-replicas", "2", "--max-replicas", "1"]) == 2
    assert "--max-replicas must be at least" in capsys.readouterr().err


def test_the_serve_plan_follows_the_settings(monkeypatch):
    from core.config import ServeSettings
    from core.engine_server import plan

    entry = BUILTIN.engines["sd15"]
    assert entry.roles  # what the plan below serves needs a model
    settings = Settings(serve=ServeSettings(min_replicas=1, max_replicas=3, cpus=2), queue_max=5)
    monkeypatch.setattr("core.engine_server.servable", lambda manager: ["sd15"])

    chosen = plan(settings)
    assert chosen.gpus is None  # no GPU count set: the cluster decides
    assert chosen.on_cluster(0).gpus == 0.0 and plan(settings, gpus=0.5).on_cluster(2).gpus == 0.5
    chosen = chosen.on_cluster(2)
    assert (chosen.engines, chosen.gpus, chosen.max_ongoing) == (("sd15",), 1.0, 6)
    assert chosen.listing == {"sd15": {"title": entry.title, "kind": "diffusion"}}
    options = chosen.deployment_options("sd15")
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2}
    assert options["ray_actor_options"]["num_gpus"] == 1.0 and options["ray_actor_options"]["num_cpus"] == 2
    assert options["max_ongoing_requests"] == 6 and options["name"] == "engine-sd15"
    assert engine_client.route("sd15+lcm") == "sd15--lcm"


def test_the_pages_offer_and_use_what_the_engine_server_serves(http_replica, app_without_models):
    """No model on this machine; the (fake) engine server serves SD 1.5: the Inpaint page offers it,
    generates through it, and the Models page says where the generating models are."""
    from streamlit.testing.v1 import AppTest  # noqa: F401 (AppTest runs below)

    from tests.helpers import inpaint_page
    from ui import forms, session

    address, _ = http_replica
    app_without_models.setenv("INPAINT_STUDIO_ENGINE_SERVER", address)
    at = inpaint_page()
    assert not at.exception and not at.warning
    assert at.selectbox(key=forms.INPAINT_ENGINE).value == "sd15"  # served there, not here
    at.slider(key=forms.INPAINT_STEPS).set_value(3)
    next(b for b in at.button if b.label.startswith("Generate")).click()
    at = at.run()
    assert not at.exception and not at.error
    result = at.session_state[session.INPAINT_RESULT]
    variants = at.slider(key=forms.INPAINT_VARIANTS).value
    assert result.engine == "sd15" and result.model_id == "fake" and len(result.images) == variants
    host = address.split("://", 1)[1]
    assert any(f"fake · on the engine server at {host}" in caption.value for caption in at.caption)  # where it ran
    at = at.switch_page("pages/6_Models.py").run()
    notes = " ".join(info.value for info in at.info)
    assert f"engine server at {address} (it serves: SD)" in notes


def test_serve_says_when_its_http_port_does_not_answer():
    from core.engine_server import ServeUnavailable, _check_answers

    port = free_port()
    with pytest.raises(ServeUnavailable, match=f"does not answer at http://127.0.0.1:{port}.*--port"):
        _check_answers("0.0.0.0", port, seconds=1)


def test_serve_says_when_the_ray_cluster_is_not_there(monkeypatch, tiny_models, tmp_path, capsys):
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_LAMA", str(tiny_models["lama"]))
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "none"))
    assert main(["serve", "--engines", "lama", "--ray-address", f"127.0.0.1:{free_port()}"]) == 2
    assert "Nothing answers at the Ray cluster address" in capsys.readouterr().err
