"""Start-up costs: importing the core, drawing each page the first time, and a serving process's memory.

- ``import core``: every core module imported in a fresh interpreter (time measured inside it),
  against the same imports plus torch and diffusers, which core defers until a model is used.
- First render of each page with Streamlit's AppTest, a photo chosen and no models on the
  machine, against a one-line Streamlit page in the same process (after a warm-up page, so
  neither pays Streamlit's own start). The home page's first render includes importing the app.
- Peak memory (max RSS) of a process that loads the tiny SD 1.5 inpainting pipeline through the
  app's loader and inpaints a 512×512 photo once, against a process that only imports torch and
  diffusers.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_MODULES = ("core.config", "core.images", "core.masks", "core.segment", "core.segmenter", "core.operations.inpaint",
                "core.blend", "core.light", "core.operations.relight", "core.operations.lit_fill", "core.recipe",
                "core.batch", "core.catalog", "core.manager", "core.model_files", "core.engines.diffusion",
                "core.engines.iclight", "core.cli")
PAGES = ("streamlit_app.py", "pages/1_Segment.py", "pages/2_Mask.py", "pages/3_Inpaint.py",
         "pages/4_Relight.py", "pages/5_Batch.py")


def _child(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter at the project root (no model settings inherited, plus
    ``env``); it prints one JSON object."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("INPAINT_STUDIO_MODEL")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**base, **(env or {})}, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _import_ms(modules: tuple[str, ...], repeat: int) -> float:
    code = ("import importlib, json, time\nstart = time.perf_counter()\n"
            f"for name in {list(modules)!r}: importlib.import_module(name)\n"
            "print(json.dumps({'ms': (time.perf_counter() - start) * 1000}))")
    return statistics.median(_child(code)["ms"] for _ in range(repeat))


def _first_renders(models_dir: str) -> tuple[dict[str, float], float]:
    code = f"""
import io, json, time
from PIL import Image
from streamlit.testing.v1 import AppTest
buffer = io.BytesIO(); Image.new("RGB", (1024, 768), (90, 120, 150)).save(buffer, "PNG")
AppTest.from_string("import streamlit as st\\nst.write('warm-up')", default_timeout=60).run()  # Streamlit's own start
bare = AppTest.from_string("import streamlit as st\\nst.title('A page')", default_timeout=60)
start = time.perf_counter(); bare.run(); bare_ms = (time.perf_counter() - start) * 1000
at = AppTest.from_file("streamlit_app.py", default_timeout=120)
start = time.perf_counter(); at.run(); times = {{"streamlit_app.py": (time.perf_counter() - start) * 1000}}
at.file_uploader(key="photo_upload").set_value(("photo.png", buffer.getvalue(), "image/png")); at.run()
for page in {list(PAGES[1:])!r}:
    start = time.perf_counter(); at.switch_page(page).run(); times[page] = (time.perf_counter() - start) * 1000
    assert not at.exception, (page, at.exception)
print(json.dumps({{"pages": times, "bare": bare_ms}}))
"""
    result = _child(code, {"INPAINT_STUDIO_MODELS_DIR": models_dir})
    return result["pages"], result["bare"]


# The process's own resident-memory high-water mark. (getrusage's ru_maxrss is not used: on Linux
# it keeps the high-water mark of the parent process this one was forked from.)
PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def _peak_mb(model: str) -> tuple[float, float]:
    serve = PEAK + """
import json
import numpy as np
from PIL import Image
from core.config import load_settings
from core.device import detect_device
from core.operations.inpaint import InpaintParams, inpaint
from core.manager import ModelManager
engine = ModelManager(load_settings(), detect_device("cpu")).load("sd15")
photo = Image.new("RGB", (512, 512), (90, 120, 150))
mask = np.zeros((512, 512), bool); mask[128:384, 128:384] = True
inpaint(photo, mask, InpaintParams(prompt="a bench", steps=4, seed=0, padding=32, negative_prompt=""), engine)
print(json.dumps({"mb": peak_mb()}))
"""
    baseline = PEAK + "import json, torch, diffusers\nprint(json.dumps({'mb': peak_mb()}))"
    env = {"INPAINT_STUDIO_MODEL_SD15_INPAINT": model, "INPAINT_STUDIO_DEVICE": "cpu",
           "INPAINT_STUDIO_MODELS_DIR": str(Path(model).parent / "no-models")}
    return _child(serve, env)["mb"], _child(baseline)["mb"]


def run(quick: bool = False) -> list[dict]:
    from tests.tiny_models import build_sd15_inpaint

    repeat = 1 if quick else 3
    rows = []
    core_ms = _import_ms(CORE_MODULES, repeat)
    eager_ms = _import_ms(CORE_MODULES + ("torch", "diffusers"), repeat)
    rows.append({"name": f"import every core module ({len(CORE_MODULES)}), fresh interpreter", "ms": core_ms,
                 "reference": "the same plus torch and diffusers (imported eagerly)", "reference_ms": eager_ms})

    with tempfile.TemporaryDirectory() as folder:
        pages, bare = _first_renders(str(Path(folder) / "no-models"))
        for page, ms in pages.items():
            rows.append({"name": f"first render of {page} (AppTest, a 1024×768 photo, no models)", "ms": ms,
                         "reference": "a one-line Streamlit page, same process", "reference_ms": bare})
        model = str(build_sd15_inpaint(Path(folder) / "sd15"))
        started = time.perf_counter()
        peak, baseline = _peak_mb(model)
        rows.append({"name": f"peak memory serving the tiny SD 1.5 pipeline, one 512² inpaint (MB, "
                             f"{time.perf_counter() - started:.0f} s)", "ms": peak, "unit": "MB",
                     "reference": "a process importing torch and diffusers only (MB)", "reference_ms": baseline})
    return rows
