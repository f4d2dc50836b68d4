"""The engine server's cost: the same inpainting in process and through ``inpaint-studio serve``.

A local Ray Serve instance (``python -m core serve``, one replica of the tiny random SD 1.5 from
``tests.tiny_models`` on the CPU, one thread, as this process computes) and this process fill the
same 512×512 crop of an example photo with the same seed and steps; the difference is what the network hop costs: the
crop, its mask and the result as PNG over HTTP, Serve's proxy and router, and the replica's event
stream. The results are compared pixel for pixel. A second row gives the bytes that travel.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.timing import best_of

ROOT = Path(__file__).resolve().parent.parent
STEPS = 10
READY_SECONDS = 300


def _photo(size: tuple[int, int]) -> Image.Image:
    """An example photo at ``size``: what travels is what a real crop weighs as PNG."""
    return Image.open(ROOT / "assets" / "examples" / "chelsea.jpg").convert("RGB").resize(size, Image.LANCZOS)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(quick: bool = False) -> list[dict]:
    import torch

    from core import operations
    from core.config import Settings
    from core.engine_client import encode
    from core.manager import ModelManager
    from core.operations.inpaint import InpaintParams
    from tests.tiny_models import build_sd15_inpaint

    repeat = 2 if quick else 5
    with tempfile.TemporaryDirectory() as folder:
        model = build_sd15_inpaint(Path(folder))
        env = {key: value for key, value in os.environ.items() if not key.startswith("INPAINT_STUDIO_")}
        env.update(INPAINT_STUDIO_MODEL_SD15_INPAINT=str(model), INPAINT_STUDIO_MODELS_DIR=str(Path(folder) / "none"),
                   INPAINT_STUDIO_DEVICE="cpu", INPAINT_STUDIO_OFFLINE="1", OMP_NUM_THREADS="1",
                   PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
        port = _free_port()
        log = Path(folder) / "serve.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [sys.executable, "-m", "core", "serve", "--engines", "sd15", "--port", str(port), "--num-cpus", "2",
                 "--cpus-per-replica", "1"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            deadline = time.monotonic() + READY_SECONDS
            while "Engine server ready" not in log.read_text(errors="replace"):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the engine server did not start:\n{log.read_text(errors='replace')[-2000:]}")
                time.sleep(1)
            settings = Settings(models={"sd15_inpaint": str(model)}, device="cpu", offline=True,
                                models_dir=Path(folder) / "none")
            local = ModelManager(settings)
            remote = ModelManager(dataclasses.replace(settings, engine_server=f"http://127.0.0.1:{port}"))
            size = (512, 512)
            photo = _photo(size)
            yy, xx = np.mgrid[0:512, 0:512]
            mask = (xx - 256) ** 2 + (yy - 256) ** 2 <= 200**2
            edit = operations.Edit("inpaint", InpaintParams(prompt="a bench", steps=STEPS, seed=0, padding=64))
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                here = best_of(lambda: operations.run(edit, photo, mask, local), repeat)
                same = np.array_equal(np.asarray(operations.run(edit, photo, mask, local).images[0]),
                                      np.asarray(operations.run(edit, photo, mask, remote).images[0]))
            finally:
                torch.set_num_threads(threads)
            served = best_of(lambda: operations.run(edit, photo, mask, remote), repeat)
            request = {"image": photo, "mask": Image.fromarray(mask.astype(np.uint8) * 255, "L"), "seeds": [0]}
            sent = len(json.dumps(encode(request)))
            back = len(json.dumps(encode({"images": [photo]})))
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(90)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
    return [
        {"name": f"inpaint 512×512, {STEPS} steps, through the engine server (1 local replica; "
                 f"{'the same pixels' if same else 'DIFFERENT pixels'} as in process)",
         "ms": served, "reference": "in process, same model, seed and thread count", "reference_ms": here},
        {"name": "inpaint 512×512: what travels per call (crop and mask there, one result back), KB",
         "ms": (sent + back) / 1000, "unit": "KB", "reference": ""},
    ]
