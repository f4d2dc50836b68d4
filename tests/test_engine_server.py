"""The engine server on a local Ray Serve instance (CPU, the tiny models): ``python -m core serve`` in
its own process with two replicas of SD 1.5 and two of IC-Light, a quarter CPU each (two whole-CPU
actors on two cores would leave Ray nothing to schedule with). Two app servers generating through
it at once get exactly the in-process results; waiting requests hear their places; Cancel reaches
the replica and frees it; a replica killed mid-request gives a clear message and the next request
succeeds; an error keeps its kind; and once the server stops, the Inpaint page says so and keeps
its no-model fallbacks. Every wait is bounded, so a hang fails fast."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install -r requirements-distributed.txt "
                                        "(part of requirements-dev.txt)")

from core import operations  # noqa: E402 (after the import check)
from core.config import Settings  # noqa: E402
from core.engine_client import EngineServer, EngineServerUnreachable, RequestLost  # noqa: E402
from core.engine_server import READY_LINE  # noqa: E402
from core.errors import Cancelled, UserError  # noqa: E402
from core.light import LightParams  # noqa: E402
from core.manager import ModelManager  # noqa: E402
from core.operations.inpaint import InpaintParams  # noqa: E402
from core.operations.relight import RelightParams  # noqa: E402
from tests.test_engine_client import free_port  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 420  # two cores start Ray, Serve's controller and proxy, and four replicas importing torch
SERVED = {"sd15_inpaint", "iclight_base", "iclight"}


class Server:
    """The ``serve`` command's process and its address."""

    def __init__(self, process: subprocess.Popen, address: str, log: Path) -> None:
        self.process, self.address, self.log = process, address, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit code (killed after 90 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(90)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
                raise AssertionError(f"the engine server did not stop in 90 s:\n{self.output()[-3000:]}") from None
        return self.process.returncode


@pytest.fixture(scope="module")
def settings(tiny_models, tmp_path_factory) -> Settings:
    """This process's settings: every tiny model (the in-process references use them)."""
    return Settings(models={role: str(path) for role, path in tiny_models.items()}, device="cpu",
                    models_dir=tmp_path_factory.mktemp("no-models"), offline=True)


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    env = {key: value for key, value in os.environ.items() if not key.startswith("INPAINT_STUDIO_")}
    env.update({f"INPAINT_STUDIO_MODEL_{role.upper()}": str(path) for role, path in tiny_models.items()
                if role in SERVED})
    env.update(INPAINT_STUDIO_MODELS_DIR=str(folder / "no-models"), INPAINT_STUDIO_DEVICE="cpu",
               INPAINT_STUDIO_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    port = free_port()
    log = folder / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "core", "serve", "--engines", "sd15,iclight", "--port", str(port),
             "--num-cpus", "2", "--cpus-per-replica", "0.25", "--min-replicas", "2"],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    running = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + READY_SECONDS
    while READY_LINE not in running.output():
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            pytest.fail(f"the engine server did not start in {READY_SECONDS} s:\n{running.output()[-4000:]}")
        time.sleep(1)
    yield running
    if process.poll() is None:
        running.stop()


@contextlib.contextmanager
def one_thread():
    """Torch on one thread, as each replica computes (its CPU sums depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def photo() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), "RGB")


def region() -> np.ndarray:
    mask = np.zeros((96, 128), bool)
    mask[30:70, 40:100] = True
    return mask


def remote(settings: Settings, server: Server) -> ModelManager:
    """An app server's manager: the same settings, the engine server set."""
    return ModelManager(dataclasses.replace(settings, engine_server=server.address, engine_timeout=300))


def inpaint(prompt: str, seed: int, steps: int = 3, variants: int = 1) -> operations.Edit:
    return operations.Edit("inpaint", InpaintParams(prompt=prompt, seed=seed, steps=steps, variants=variants,
                                                    engine="sd15"))


def test_the_app_server_offers_what_is_served(settings, server):
    manager = remote(settings, server)
    assert manager.engine_server_problem() is None
    assert set(manager.engine_server.engines()) == {"sd15", "iclight"}
    # The LCM LoRA is on this machine, but the server does not serve SD 1.5 + LCM, nor LaMa.
    assert manager.engines("diffusion") == ["sd15"]
    assert "lama" not in manager.engines("removal") and "telea" in manager.engines("removal")
    assert manager.missing("iclight") == []
    info = manager.engine_server.info("sd15")
    assert info["model_id"].endswith("sd15_inpaint") and info["native_resolution"] == 512 and info["pid"] > 0


def test_two_app_servers_at_once_get_the_in_process_results(settings, server):
    edits = {"first": inpaint("a wooden bench", 11, variants=2), "second": inpaint("a red door", 12)}
    results, errors = {}, []

    def generate(name: str) -> None:
        try:
            results[name] = operations.run(edits[name], photo(), region(), remote(settings, server))
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=generate, args=(name,)) for name in edits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors and len(results) == 2, errors
    local = ModelManager(settings)
    with one_thread():
        for name, edit in edits.items():
            expected = operations.run(edit, photo(), region(), local)
            assert results[name].seeds == expected.seeds
            for got, want in zip(results[name].images, expected.images, strict=True):
                assert np.array_equal(np.asarray(got), np.asarray(want)), name
            assert results[name].crops == expected.crops


def test_relighting_through_the_server_equals_in_process(settings, server):
    edit = operations.Edit("relight", RelightParams(steps=3, seed=5, prompt="warm light"),
                           light=LightParams(azimuth=45, elevation=30))
    steps: list = []
    through = operations.run(edit, photo(), region(), remote(settings, server), progress=lambda *s: steps.append(s))
    with one_thread():
        expected = operations.run(edit, photo(), region(), ModelManager(settings))
    assert steps and np.array_equal(np.asarray(through.images[0]), np.asarray(expected.images[0]))


def test_waiting_requests_hear_their_places(settings, server):
    """Five at once on two replicas: three wait in a replica's queue, and each hears its place fall."""
    places: dict[int, list[int]] = {number: [] for number in range(5)}
    finished, errors = [], []

    def generate(number: int) -> None:
        def on_wait(place: int, ahead: int, estimate) -> None:
            places[number].append(ahead)

        try:
            operations.run(inpaint("a bench", number, steps=8), photo(), region(), remote(settings, server),
                           on_wait=on_wait)
            finished.append(number)
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=generate, args=(number,)) for number in places]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(300)
    assert not errors and sorted(finished) == list(range(5)), errors
    waited = [seen for seen in places.values() if seen]
    assert len(waited) >= 3, places  # two run at once, the others wait
    for seen in waited:
        assert seen == sorted(seen, reverse=True) and seen[-1] >= 1, places  # places only fall


def test_cancel_reaches_the_replica_and_frees_it(settings, server):
    manager = remote(settings, server)
    steps: list = []
    request = inpaint("a bench", 1, steps=150)
    begun = time.monotonic()
    with pytest.raises(Cancelled):
        operations.run(request, photo(), region(), manager, progress=lambda *s: steps.append(s),
                       should_cancel=lambda: len(steps) >= 2)
    assert time.monotonic() - begun < 120 and len(steps) < 150
    # The replica stopped its engine: its queue empties (asked until that replica answers).
    server_client = EngineServer(server.address)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(server_client.info("sd15")["queue"] == 0 for _ in range(4)):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("a replica still runs the cancelled request")
    result = operations.run(inpaint("a bench", 1, steps=2), photo(), region(), manager)
    assert len(result.images) == 1


def test_an_error_at_the_replica_keeps_its_kind(settings, server):
    client = EngineServer(server.address)
    blank = Image.new("RGB", (64, 64))
    with pytest.raises(UserError, match="At least one seed"):
        client.call("sd15", "generate", {"image": blank, "mask": Image.new("L", (64, 64), 255), "seeds": []})
    with pytest.raises(EngineServerUnreachable, match="does not serve"):
        client.call("lama", "generate", {})


def test_a_replica_killed_mid_request(settings, server):
    client = EngineServer(server.address, timeout=120)
    blank, mask = Image.new("RGB", (64, 64), (90, 90, 90)), Image.new("L", (64, 64), 255)
    args = {"image": blank, "mask": mask, "seeds": [1], "steps": 150, "prompt": "x"}
    replica: dict = {}

    def kill_on_first_step(step: int, total: int) -> None:
        if "killed" not in replica:
            replica["killed"] = True
            os.kill(replica["pid"], signal.SIGKILL)  # the replica's process dies (out of memory, a crash)

    with pytest.raises(RequestLost, match=r"replica running it \(.+\) stopped.*try again"):
        client.call("sd15", "generate", args, title="SD 1.5", on_start=replica.update, progress=kill_on_first_step)
    assert replica.get("killed")
    # The next request goes to the other replica (Serve replaces the dead one meanwhile).
    manager = remote(settings, server)
    result = operations.run(inpaint("a bench", 2, steps=2), photo(), region(), manager)
    assert len(result.images) == 1


def test_the_command_line_and_its_batches_use_the_server(server, tiny_models, tmp_path, monkeypatch):
    """The same commands, once with the model here and once with only the engine server: the same files."""
    from core.cli import main
    from core.recipe import SeedPolicy
    from tests.helpers import inpaint_recipe, write_photos

    photos = write_photos(tmp_path / "photos", 2)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(inpaint_recipe(SeedPolicy("per_image", 11)).to_json())
    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.ones((20, 30), np.uint8) * 255, ((10, 40), (20, 50))), "L").resize(
        Image.open(photos[0]).size).save(mask)
    for key in list(os.environ):
        if key.startswith("INPAINT_STUDIO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("INPAINT_STUDIO_DEVICE", "cpu")

    def both(name: str) -> list:
        return [str(photos[0]), "--mask", str(mask), "--engine", "sd15", "--steps", "2", "--seed", "4",
                "--out", str(tmp_path / f"{name}.png")], \
            ["--recipe", str(recipe), "--input", str(tmp_path / "photos"), "--output", str(tmp_path / name)]

    monkeypatch.setenv("INPAINT_STUDIO_MODEL_SD15_INPAINT", str(tiny_models["sd15_inpaint"]))
    with one_thread():
        edit, batch = both("here")
        assert main(["inpaint", *edit]) == 0 and main(["batch", *batch]) == 0
    monkeypatch.delenv("INPAINT_STUDIO_MODEL_SD15_INPAINT")  # no model on this machine now
    edit, batch = both("served")
    assert main(["inpaint", *edit]) == 1  # without the server nothing can generate here
    monkeypatch.setenv("INPAINT_STUDIO_ENGINE_SERVER", server.address)
    assert main(["inpaint", *edit]) == 0 and main(["batch", *batch]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "here.png")), np.asarray(Image.open(tmp_path / "served.png")))
    written = sorted(path.name for path in (tmp_path / "served").iterdir() if path.suffix in (".png", ".jpg"))
    assert written == sorted(path.name for path in photos)
    for name in written:
        assert (tmp_path / "served" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name


def test_when_the_server_stops_the_page_says_so(server, app_without_models):
    assert server.stop() == 0
    assert "Engine server stopped." in server.output()
    app_without_models.setenv("INPAINT_STUDIO_ENGINE_SERVER", server.address)
    from tests.helpers import inpaint_page

    at = inpaint_page()
    assert not at.exception
    warnings = " ".join(warning.value for warning in at.warning)
    assert f"The engine server at {server.address} cannot be reached" in warnings
    from ui import forms

    offered = at.selectbox(key=forms.INPAINT_ENGINE).options
    assert not any("Stable Diffusion" in option for option in offered)
    assert any("Telea" in option or "OpenCV" in option for option in offered), offered  # the fallbacks stay
