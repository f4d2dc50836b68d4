"""The learned removal engines, LaMa and MI-GAN, with tiny TorchScript models in IOPaint's published
contracts (``tests.tiny_models``), loaded through the real path (``torch.jit.load``, the catalog, the
model manager).

The tiny models' fills are noise; these tests check what does not depend on weights: that the engine
feeds each model exactly what IOPaint feeds it (colour range, mask polarity, padding, sizes) by
comparing with the contract computed here by hand, that every pixel outside the hole is kept, sizes,
determinism, cancelling, and the errors for files that are not the model.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from core import masks
from core.catalog import BUILTIN
from core.config import Settings
from core.engines.base import Cancelled, EngineRequest, InpaintError, ModelLoadError
from core.engines.lama import LamaEngine
from core.engines.migan import MiganEngine
from core.engines.torchscript import HOLE_LEVEL
from core.manager import engine_class
from core.operations import Edit, run
from core.operations.inpaint import InpaintParams, inpaint
from tests.helpers import disk, manager_with, noise_photo
from tests.tiny_models import build_lama, build_migan

# torch marks TorchScript (torch.jit.trace/save/load) deprecated; the published models are TorchScript.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")

ENGINES = {"lama": LamaEngine, "migan": MiganEngine}
MIGAN_SIZE = 512


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads; on a CPU shared with other work, idle threads spinning
    made each call many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("removal-models")
    return {"lama": build_lama(folder), "migan": build_migan(folder)}


@pytest.fixture(scope="module")
def engines(files) -> dict:
    return {name: ENGINES[name].load(files[name]) for name in ENGINES}


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def corner_hole(width: int, height: int) -> np.ndarray:
    """A hole reaching the bottom-right corner, where the padding is, plus a small one elsewhere."""
    hole = np.zeros((height, width), bool)
    hole[height // 3 :, width // 3 :] = True
    hole[1 : 1 + max(1, height // 8), 1 : 1 + max(1, width // 8)] = True
    return hole


def request(pixels: np.ndarray, hole: np.ndarray, seeds=(1,)) -> EngineRequest:
    mask = Image.fromarray(hole.astype(np.uint8) * 255, "L")
    return EngineRequest(Image.fromarray(pixels, "RGB"), mask, seeds)


def load_module(path: Path):
    return torch.jit.load(str(path), map_location="cpu").eval()


# --- the published contracts, computed by hand ------------------------------------------------------


def lama_reference(path: Path, pixels: np.ndarray, hole: np.ndarray, mistake: str | None = None):
    """big-lama as IOPaint calls it (``iopaint/model/lama.py``, ``_pad_forward``): mirrored padding to a
    multiple of 8, image RGB / 255, mask 1 = hole, output * 255 clipped to uint8; originals kept."""
    height, width = hole.shape
    padded = (-(-height // 8) * 8, -(-width // 8) * 8)
    mode = "constant" if mistake == "zero padding" else "symmetric"
    image = np.pad(pixels, ((0, padded[0] - height), (0, padded[1] - width), (0, 0)), mode=mode)
    mask = np.pad(hole.astype(np.uint8) * 255, ((0, padded[0] - height), (0, padded[1] - width)), mode=mode)
    image = np.transpose(image, (2, 0, 1)).astype("float32") / (1 if mistake == "0..255 image" else 255)
    mask = (mask[None].astype("float32") / 255 > 0).astype("float32")
    if mistake == "inverted mask":
        mask = 1 - mask
    with torch.no_grad():
        output = load_module(path)(torch.from_numpy(image)[None], torch.from_numpy(mask)[None])
    filled = np.clip(output[0].permute(1, 2, 0).numpy() * 255, 0, 255).astype("uint8")[:height, :width]
    return np.where(hole[..., None], filled, pixels)


def migan_reference(path: Path, pixels: np.ndarray, hole: np.ndarray, mistake: str | None = None):
    """The traced MI-GAN as IOPaint calls it (``iopaint/model/mi_gan.py``): the long side scaled to 512
    when larger (bicubic, the mask too), mirrored padding to 512×512, image RGB in [-1, 1], mask
    1 = hole, input cat([0.5 - mask, image * (1 - mask)]), output * 127.5 + 127.5 rounded and clamped,
    scaled back (bicubic); originals kept."""
    height, width = hole.shape
    image, mask = pixels, hole.astype(np.uint8) * 255
    if max(height, width) > MIGAN_SIZE:
        ratio = MIGAN_SIZE / max(height, width)
        size = (int(width * ratio + 0.5), int(height * ratio + 0.5))
        image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_CUBIC)
    work_height, work_width = mask.shape
    mode = "constant" if mistake == "zero padding" else "symmetric"
    image = np.pad(image, ((0, MIGAN_SIZE - work_height), (0, MIGAN_SIZE - work_width), (0, 0)), mode=mode)
    mask = np.pad(mask, ((0, MIGAN_SIZE - work_height), (0, MIGAN_SIZE - work_width)), mode=mode)
    image = np.transpose(image, (2, 0, 1)).astype("float32") / 255 * (255 if mistake == "0..255 image" else 1)
    image = image * 2 - 1
    mask = (mask[None] >= HOLE_LEVEL).astype("float32")  # IOPaint: > 120, the same for 0/255 masks
    if mistake == "inverted mask":
        mask = 1 - mask
    image, mask = torch.from_numpy(image)[None], torch.from_numpy(mask)[None]
    with torch.no_grad():
        output = load_module(path)(torch.cat([0.5 - mask, image * (1 - mask)], dim=1))
    filled = (output.permute(0, 2, 3, 1) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)[0].numpy()
    filled = filled[:work_height, :work_width]
    if (work_width, work_height) != (width, height):
        filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.where(hole[..., None], filled, pixels)


REFERENCES = {"lama": lama_reference, "migan": migan_reference}
# Crop sizes: multiples of 8, odd sides (LaMa pads to 8; MI-GAN pads to 512), exactly 512, over 512.
SIZES = {"lama": [(96, 64), (101, 67), (13, 9)], "migan": [(96, 64), (101, 67), (512, 512), (700, 300)]}


@pytest.mark.parametrize(("name", "size"), [(name, size) for name, sizes in SIZES.items() for size in sizes])
def test_the_fill_is_exactly_what_the_published_contract_computes(engines, files, name, size):
    pixels, hole = photo(*size), corner_hole(*size)

    output = engines[name].generate(request(pixels, hole)).images[0]

    assert output.size == size and output.mode == "RGB"
    assert np.array_equal(np.asarray(output), REFERENCES[name](files[name], pixels, hole))


@pytest.mark.parametrize("name", sorted(ENGINES))
@pytest.mark.parametrize("mistake", ["inverted mask", "0..255 image", "zero padding"])
def test_the_reference_tells_a_wrong_colour_range_polarity_or_padding_apart(engines, files, name, mistake):
    """The comparison above would catch each mistake: the contract computed with it differs."""
    size = (101, 67)
    pixels, hole = photo(*size), corner_hole(*size)

    output = np.asarray(engines[name].generate(request(pixels, hole)).images[0])

    assert not np.array_equal(output, REFERENCES[name](files[name], pixels, hole, mistake))


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_pixels_outside_the_hole_are_kept_and_the_hole_is_filled(engines, name):
    pixels, hole = photo(120, 80), corner_hole(120, 80)

    output = np.asarray(engines[name].generate(request(pixels, hole)).images[0])

    assert np.array_equal(output[~hole], pixels[~hole])
    assert np.abs(output[hole].astype(int) - pixels[hole]).mean() > 20  # noise in, the model's fill out


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_one_identical_image_per_seed_whatever_the_seeds(engines, name):
    pixels, hole = photo(96, 64), corner_hole(96, 64)

    first = engines[name].generate(request(pixels, hole, seeds=(1, 2, 3)))
    again = engines[name].generate(request(pixels, hole, seeds=(9,)))

    assert len(first.images) == 3
    for image in [*first.images, *again.images]:
        assert np.array_equal(np.asarray(image), np.asarray(first.images[0]))


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_progress_and_timings(engines, name):
    steps = []

    output = engines[name].generate(request(photo(64, 64), corner_hole(64, 64)),
                                    progress=lambda *step: steps.append(step))

    assert steps == [(1, 1)]
    assert output.timings["inpaint"] > 0 and output.notes == []


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_cancelled_before_start_the_model_never_runs(files, name):
    engine = ENGINES[name].load(files[name])
    calls = []
    engine.module = lambda *inputs: calls.append(inputs)

    with pytest.raises(Cancelled):
        engine.generate(request(photo(64, 64), corner_hole(64, 64)), should_cancel=lambda: True)
    assert calls == []


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_invalid_requests_are_refused(engines, name):
    pixels, hole = photo(64, 64), corner_hole(64, 64)
    good = request(pixels, hole)

    with pytest.raises(InpaintError, match="seed"):
        engines[name].generate(request(pixels, hole, seeds=()))
    with pytest.raises(InpaintError, match="RGB"):
        engines[name].generate(EngineRequest(good.image.convert("RGBA"), good.mask, (1,)))
    with pytest.raises(InpaintError, match="same size"):
        engines[name].generate(EngineRequest(good.image, good.mask.resize((32, 32)), (1,)))


# --- sizes: what the crop path prepares ---------------------------------------------------------------


class Recording:
    """An engine whose requests' sizes are recorded (everything else is the engine's)."""

    def __init__(self, engine) -> None:
        self.engine, self.sizes = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, request, progress=None, should_cancel=None):
        self.sizes.append(request.image.size)
        return self.engine.generate(request, progress, should_cancel)


def test_lama_fills_a_small_crop_at_its_own_size(engines):
    image, mask = noise_photo((600, 400)), disk((600, 400), (300, 200), 40)
    recording = Recording(engines["lama"])

    result = inpaint(image, mask, InpaintParams(engine="lama", padding=32, seed=0), recording)

    (x0, y0, x1, y1), = result.crops
    assert recording.sizes == [(x1 - x0, y1 - y0)] and x1 - x0 < 200  # not scaled up towards 1024²


def test_lama_scales_a_crop_beyond_its_native_size_down(engines):
    size = (3000, 2000)
    image, mask = noise_photo(size), disk(size, (1500, 1000), 900)
    recording = Recording(engines["lama"])

    inpaint(image, mask, InpaintParams(engine="lama", padding=16, seed=0), recording)

    (width, height), = recording.sizes
    assert width % 8 == 0 and height % 8 == 0 and 0.9 < width * height / 1024**2 < 1.1


@pytest.mark.parametrize(("crop", "expected"), [((160, 96), (160, 96)), ((512, 512), (512, 512)),
                                                ((1024, 768), (512, 384)), ((2000, 600), (512, 152)),
                                                ((40, 1200), (16, 512))])
def test_migan_prepares_crops_with_a_long_side_of_at_most_512(engines, crop, expected):
    assert engines["migan"].work_size(crop) == expected


def test_migan_sees_512_squares_for_any_crop(files):
    engine = MiganEngine.load(files["migan"])
    module, shapes = engine.module, []
    engine.module = lambda x: shapes.append(tuple(x.shape)) or module(x)
    size = (1500, 1000)
    image = noise_photo(size)
    mask = disk(size, (750, 500), 420) | disk(size, (60, 60), 12)  # one crop over 512, one small
    recording = Recording(engine)

    result = inpaint(image, mask, InpaintParams(engine="migan", padding=32, seed=0), recording)

    crops = [(x1 - x0, y1 - y0) for x0, y0, x1, y1 in result.crops]
    small, large = sorted(crops, key=max)
    assert max(large) > MIGAN_SIZE and max(small) < MIGAN_SIZE
    assert sorted(recording.sizes, key=max) == [small, engine.work_size(large)]  # small: not scaled up
    assert max(engine.work_size(large)) == MIGAN_SIZE
    assert shapes == [(1, 4, MIGAN_SIZE, MIGAN_SIZE)] * 2
    assert result.images[0].size == size


# --- through the inpainting core: fidelity --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_two_regions_of_a_photo_are_filled_and_nothing_beyond_the_soft_edge_changes(engines, name):
    size = (1500, 1000)
    image = noise_photo(size)
    regions = [disk(size, (300, 300), 60), disk(size, (1150, 700), 90)]
    mask = regions[0] | regions[1]
    params = InpaintParams(engine=name, padding=48, mask_blur=6, seed=0, variants=2)

    result = inpaint(image, mask, params, engines[name])

    original = np.asarray(image)
    assert len(result.crops) == 2 and result.engine == name
    beyond = ~masks.grow(mask, params.mask_blur)
    for output in result.images:
        pixels = np.asarray(output)
        assert output.size == size
        assert np.array_equal(pixels[beyond], original[beyond])
        for region in regions:
            assert np.abs(pixels[region].astype(int) - original[region]).mean() > 20
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(result.images[1]))


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_a_12_megapixel_photo_with_a_small_selection(engines, name):
    size = (4000, 3000)
    image = noise_photo(size, seed=1)
    mask = disk(size, (2900, 1100), 50)
    params = InpaintParams(engine=name, padding=32, mask_blur=4, seed=0)

    result = inpaint(image, mask, params, engines[name])

    pixels, original = np.asarray(result.images[0]), np.asarray(image)
    beyond = ~masks.grow(mask, params.mask_blur)
    assert result.images[0].size == size
    assert np.array_equal(pixels[beyond], original[beyond])
    assert np.abs(pixels[mask].astype(int) - original[mask]).mean() > 20


# --- through the catalog, the manager and the operations -------------------------------------------------


def settings_for(**paths) -> Settings:
    return Settings(device="cpu", models_dir=Path("/nonexistent/inpaint-studio-models"),
                    models={role: str(path) for role, path in paths.items()})


def test_the_catalog_names_the_engine_classes():
    assert engine_class(BUILTIN.engines["lama"]) is LamaEngine
    assert engine_class(BUILTIN.engines["migan"]) is MiganEngine
    assert {BUILTIN.engines[name].kind for name in ENGINES} == {"removal"}


def test_the_manager_loads_each_model_from_its_setting(files):
    manager = manager_with(settings=settings_for(**files))

    assert {"lama", "migan"} <= set(manager.engines("removal"))
    for name, cls in ENGINES.items():
        engine = manager.load(name)
        assert type(engine) is cls and engine.model_id == str(files[name]) and engine.name == name
        assert engine.device == "cpu" and engine.native_resolution == BUILTIN.engines[name].native_size


def test_a_remove_edit_runs_on_lama_through_the_operations_registry(files):
    manager = manager_with(settings=settings_for(lama=files["lama"]))
    size = (400, 300)
    image, mask = noise_photo(size), disk(size, (200, 150), 30)
    edit = Edit("remove", InpaintParams(engine="lama", padding=32, mask_blur=4, seed=3, variants=2))

    result = run(edit, image, mask, manager)

    assert result.engine == "lama" and result.model_id == str(files["lama"]) and result.seeds == [3, 4]
    beyond = ~masks.grow(mask, 4)
    assert np.array_equal(np.asarray(result.images[0])[beyond], np.asarray(image)[beyond])
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(result.images[1]))
    assert not manager.busy


def test_the_manager_reports_a_wrong_file_with_its_name(tmp_path):
    wrong = tmp_path / "big-lama.pt"
    wrong.write_text("<html>404: Not Found</html>\n")
    manager = manager_with(settings=settings_for(lama=wrong))

    with pytest.raises(ModelLoadError, match="not a TorchScript file") as error:
        manager.load("lama")
    assert str(wrong) in str(error.value) and "INPAINT_STUDIO_MODEL_LAMA" in str(error.value)


# --- files that are not the model ---------------------------------------------------------------------


def _state_dict_file(path: Path, files) -> Path:
    torch.save(load_module(files["lama"]).state_dict(), str(path))
    return path


def _wrong_output_file(path: Path, name: str) -> Path:
    class FourChannels(torch.nn.Module):  # returns its input (plus the mask): 4 channels, not 3
        def forward(self, image, mask):
            return torch.cat([image, mask], dim=1)

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    if name == "lama":
        module = torch.jit.trace(FourChannels(), (torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)))
    else:
        module = torch.jit.trace(Identity(), torch.zeros(1, 4, 8, 8))
    torch.jit.save(module, str(path))
    return path


@pytest.mark.parametrize("name", sorted(ENGINES))
@pytest.mark.parametrize(("what", "message"), [
    ("missing", "does not exist"),
    ("text", "is not a TorchScript file"),
    ("state dict", "saved with torch.save"),
    ("wrong output", "is not the .* TorchScript model .*: its output is \\(1, 4, "),
    ("the other model", "is not the .* TorchScript model .*: calling it on"),
])
def test_a_file_that_is_not_the_model_is_named_with_what_is_wrong(files, tmp_path, name, what, message):
    path = tmp_path / ENGINES[name].published
    if what == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 205669692\n")
    elif what == "state dict":
        _state_dict_file(path, files)
    elif what == "wrong output":
        _wrong_output_file(path, name)
    elif what == "the other model":
        path = files["migan" if name == "lama" else "lama"]

    with pytest.raises(ModelLoadError, match=message) as error:
        ENGINES[name].load(path)
    text = str(error.value)
    assert str(path) in text
    assert f"INPAINT_STUDIO_MODEL_{name.upper()} to {ENGINES[name].published}" in text


# --- devices ------------------------------------------------------------------------------------------------


def test_lama_runs_on_the_cpu_when_the_device_is_mps(files):
    engine = LamaEngine.load(files["lama"], "mps")

    output = engine.generate(request(photo(64, 64), corner_hole(64, 64)))

    assert engine.device == "cpu" and "CPU" in output.notes[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_that_is_not_there_is_a_load_error(files):
    with pytest.raises(ModelLoadError, match="onto cuda") as error:
        MiganEngine.load(files["migan"], "cuda")
    assert str(files["migan"]) in str(error.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(ENGINES))
def test_on_cuda_the_fill_matches_the_cpu(engines, files, name):
    pixels, hole = photo(101, 67), corner_hole(101, 67)
    on_gpu = ENGINES[name].load(files[name], "cuda")

    gpu = np.asarray(on_gpu.generate(request(pixels, hole)).images[0]).astype(int)
    cpu = np.asarray(engines[name].generate(request(pixels, hole)).images[0]).astype(int)

    assert on_gpu.device == "cuda" and np.abs(gpu - cpu).max() <= 2  # float kernels differ in rounding only
