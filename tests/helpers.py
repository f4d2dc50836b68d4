"""Helpers shared by the tests: catalog entries of the built-in engines, model managers that hold
engines the tests built themselves, a fake inpainting engine, test photos and masks, batch recipes,
and AppTest steps."""
from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.catalog import BUILTIN
from core.config import Settings
from core.device import DeviceInfo
from core.engines.base import Cancelled, EngineOutput, EngineRequest
from core.manager import ModelManager
from core.operations.inpaint import InpaintParams
from core.recipe import Action, Recipe, SeedPolicy, Selection

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

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


# --- photos, masks and a fake engine for the inpainting core ------------------------------------

NOISE_PHOTO_SIZE = (1500, 1000)


def noise_photo(size=NOISE_PHOTO_SIZE, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def disk(size, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


class FakeEngine:
    """Fills the crop with a flat colour derived from the seed; records its requests."""

    name = "fake"
    title = "Fake"
    native_resolution = 512
    supports_prompt = True
    supports_negative_prompt = True
    supports_strength = True
    schedulers = ("default",)
    model_id = "fake-model"

    def __init__(self) -> None:
        self.requests: list[EngineRequest] = []

    def generate(self, request, progress=None, should_cancel=None) -> EngineOutput:
        self.requests.append(request)
        for step in range(request.steps):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            if progress is not None:
                progress(step + 1, request.steps)
        images = [Image.new("RGB", request.image.size, ((seed * 40) % 256, 128, 200)) for seed in request.seeds]
        return EngineOutput(images, notes=["a note"], timings={"denoise": 1.0})


# --- batch folders and recipes -------------------------------------------------------------------

# Ten small photos of several sizes, PNG and JPEG, each a coloured disk on a noisy background.
SIZES = [(64, 48), (80, 60), (96, 72), (120, 90), (64, 64), (100, 75), (72, 54), (88, 66), (110, 80), (120, 72)]
COLOURS = [(220, 30, 40), (30, 200, 60), (40, 60, 220), (230, 200, 20), (200, 40, 200)]
# The region the recipes edit, as fractions of the photo: it covers every photo's disk.
REGION = (0.25, 0.15, 0.75, 0.85)


def photo_pixels(size, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(70, 170, (size[1], size[0], 3), dtype=np.uint8)
    pixels[disk(size, (size[0] // 2, size[1] // 2), min(size) // 4)] = COLOURS[seed % len(COLOURS)]
    return pixels


def write_photo(path: Path, size, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(photo_pixels(size, seed), "RGB")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=92)
    else:
        image.save(path)
    return path


def write_photos(folder: Path, count: int, prefix: str = "p") -> list[Path]:
    return [write_photo(folder / f"{prefix}{i:02d}.{'png' if i % 2 else 'jpg'}", SIZES[i % len(SIZES)], i)
            for i in range(count)]


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo_pixels((80, 60), 99), "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()[:300]


def scenario_folder(folder: Path) -> Path:
    """The issue's folder: 10 good photos, a truncated JPEG and a text file named like a photo."""
    write_photos(folder, 10)
    (folder / "broken.jpg").write_bytes(truncated_jpeg())
    (folder / "notes.png").write_text("Shopping list\n- eggs\n- milk\n")
    return folder


def region_mask(size=(80, 64)) -> np.ndarray:
    width, height = size
    x0, y0, x1, y1 = REGION
    mask = np.zeros((height, width), bool)
    mask[round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)] = True
    return mask


def remove_recipe(policy: SeedPolicy = SeedPolicy("per_image", 7), engine: str = "telea") -> Recipe:
    """Removal of the carried region (Telea: no model), fast and deterministic."""
    params = InpaintParams(engine=engine, mask_blur=2, color_match=False, padding=8)
    return Recipe(Selection.from_mask(region_mask()), Action("remove", params), seed=policy, name="clean")


def inpaint_recipe(policy: SeedPolicy, prompt: str = "a wooden bench") -> Recipe:
    params = InpaintParams(prompt=prompt, negative_prompt="blurry", steps=2, mask_blur=2, padding=8)
    return Recipe(Selection.from_mask(region_mask()), Action("inpaint", params), seed=policy)


# --- IC-Light offset files -----------------------------------------------------------------------


def write_offsets(path, tensors):
    from safetensors.torch import save_file

    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path))
    return path


# --- AppTest ------------------------------------------------------------------------------------

# The longest one AppTest script run may take. Generous: make test runs two workers on two cores, so a
# run that takes seconds alone can wait its turn for the CPU; a hung run still fails, just later.
TIMEOUT = 240


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="photo_upload").set_value((name, data, mime))
    return at.run()


INPAINT_PAGE_PHOTO_SIZE = (300, 200)


def make_photo() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (INPAINT_PAGE_PHOTO_SIZE[1], INPAINT_PAGE_PHOTO_SIZE[0], 3),
                                        dtype=np.uint8), "RGB")


def region() -> np.ndarray:
    mask = np.zeros((INPAINT_PAGE_PHOTO_SIZE[1], INPAINT_PAGE_PHOTO_SIZE[0]), bool)
    mask[60:120, 100:180] = True
    return mask


def inpaint_page(with_mask: bool = True) -> AppTest:
    """The Inpaint page after uploading ``make_photo()``, with ``region()`` as its mask unless
    ``with_mask`` is false."""
    from streamlit.testing.v1 import AppTest

    from core import masks
    from ui import session

    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    upload(at, "photo.png", png_bytes(make_photo()))
    if with_mask:
        at.session_state[session.MASK].apply(masks.layer_edit("add", region(), "test region"))
    return at.switch_page("pages/3_Inpaint.py").run()


# --- an AppTest script run seen while it runs (a page waiting for its model's turn) ---------------
# AppTest gives a page's elements only when its run ends; these read what the running script has sent
# so far, and click one of its buttons as a browser would, through the script thread's run context
# (Streamlit internals, kept to these helpers).


def _running_contexts() -> list:
    """The run contexts of the AppTest script runs going on now (in other threads; a spinner's timer
    thread shares its script's)."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import SCRIPT_RUN_CONTEXT_ATTR_NAME

    contexts = [getattr(thread, SCRIPT_RUN_CONTEXT_ATTR_NAME, None) for thread in threading.enumerate()]
    return list({id(context): context for context in contexts if context is not None}.values())


def _tree_so_far(context):
    from streamlit.testing.v1.element_tree import parse_tree_from_messages

    return parse_tree_from_messages(list(context._enqueue.__self__.forward_msgs()))


def shown_while_running(kind: str = "progress") -> list:
    """The elements of ``kind`` ("progress", "info", "button"…) that the running script shows now."""
    return [element for context in _running_contexts() for element in _tree_so_far(context).get(kind)]


def click_while_running(at: AppTest, label: str) -> None:
    """Click button ``label`` of ``at``'s running script, as the browser does: a rerun of the page with
    the widgets' values and the click, which stops the running script at its next update of the page."""
    from streamlit.runtime.scriptrunner import RerunData

    (context,) = _running_contexts()
    tree = _tree_so_far(context)
    tree._runner = at  # the widgets' values not sent yet are read from its session state
    next(button for button in tree.get("button") if button.label == label).click()
    context._enqueue.__self__.request_rerun(RerunData(widget_states=tree.get_widget_states(),
                                                      page_script_hash=context.page_script_hash))


def run_in_own_loop(make_coroutine):
    """Run ``make_coroutine()`` to its end in a thread with its own event loop (a browser test's sync
    Playwright may have left a loop running in this one) and return its value, or raise its error."""
    outcome: dict = {}

    def in_thread() -> None:
        try:
            outcome["value"] = asyncio.run(make_coroutine())
        except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
            outcome["error"] = error

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
