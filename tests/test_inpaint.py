"""The inpainting core: crops, fidelity outside the mask, seeds, variants, progress, errors."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from core import masks
from core.engines.base import Cancelled, InpaintError
from core.images import encode_image, read_image
from core.operations.fields import resolve_seeds
from core.operations.inpaint import InpaintParams, inpaint
from core.region import engine_size, plan_crops
from tests.helpers import NOISE_PHOTO_SIZE as PHOTO_SIZE
from tests.helpers import SD15, SDXL, FakeEngine, disk, noise_photo

# --- planning --------------------------------------------------------------------------------


def test_far_apart_regions_get_separate_crops_and_near_ones_share():
    size = (2000, 1000)
    far = disk(size, (200, 200), 40) | disk(size, (1700, 800), 40)
    crops = plan_crops(far, padding=32)
    assert len(crops) == 2
    for x0, y0, x1, y1 in crops:
        assert (x1 - x0) % 8 == 0 and (y1 - y0) % 8 == 0
        assert (x1 - x0) < 300 and (y1 - y0) < 300
    near = disk(size, (200, 200), 40) | disk(size, (300, 200), 40)
    assert len(plan_crops(near, padding=32)) == 1
    # Every masked pixel is inside a crop, and crops stay inside the photo.
    for mask in (far, near):
        covered = np.zeros_like(mask)
        for x0, y0, x1, y1 in plan_crops(mask, padding=32):
            assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
            covered[y0:y1, x0:x1] = True
        assert not (mask & ~covered).any()


def test_crops_at_the_photo_edge_are_clamped():
    corner = np.zeros((480, 640), bool)
    corner[470:, 630:] = True
    (x0, y0, x1, y1), = plan_crops(corner, padding=64)
    assert x1 == 640 and y1 == 480 and x0 <= 630 - 64 and y0 <= 470 - 64


def test_engine_size_keeps_the_aspect_near_the_native_area():
    assert engine_size((512, 512), 512) == (512, 512)
    width, height = engine_size((300, 150), 512)
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - 2) < 0.05
    assert abs(width * height - 512 * 512) / (512 * 512) < 0.05
    long_thin = engine_size((4000, 100), 1024)
    assert long_thin[0] <= 2048 and long_thin[1] >= 64


def test_seeds_count_up_from_the_first_and_random_is_reported():
    assert resolve_seeds(7, 3) == [7, 8, 9]
    random = resolve_seeds(None, 2)
    assert random[1] == random[0] + 1 and 0 <= random[0] < 2**31


@pytest.mark.parametrize(
    "field, value, words",
    [("steps", 0, "Steps"), ("guidance_scale", 50, "Guidance"), ("strength", 0, "Strength"),
     ("variants", 9, "Variants"), ("blend", "smudge", "Blend"), ("seed", -1, "Seed")],
)
def test_out_of_range_params_are_clear_errors(field, value, words):
    with pytest.raises(InpaintError, match=words):
        InpaintParams(**{field: value})


def test_params_round_trip_and_refuse_unknown_keys():
    params = InpaintParams(prompt="a bench", seed=3, variants=2, blend="poisson")
    assert InpaintParams.from_dict(params.to_dict()) == params
    with pytest.raises(InpaintError, match="colour"):
        InpaintParams.from_dict({"prompt": "x", "colour": "red"})


# --- the edit with a fake engine -------------------------------------------------------------


def test_pixels_outside_the_soft_edge_are_bit_identical_at_native_size():
    photo = noise_photo()
    mask = disk(PHOTO_SIZE, (700, 400), 60)
    params = InpaintParams(seed=1, variants=2, mask_blur=8, color_match=False)
    result = inpaint(photo, mask, params, FakeEngine())
    band = masks.grow(mask, params.mask_blur)
    original = np.asarray(photo)
    for image in result.images:
        assert image.size == PHOTO_SIZE and image.mode == "RGB"
        out = np.asarray(image)
        assert np.array_equal(out[~band], original[~band])
        assert (out[mask] != original[mask]).any()
    assert result.seeds == [1, 2] and result.params.seed == 1
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(result.images[1]))
    assert set(result.timings) >= {"crop", "resize", "denoise", "paste", "total"}
    assert result.notes == ["a note"] and len(result.seam_delta_e) == 2


def test_each_region_is_filled_in_its_own_small_crop():
    engine = FakeEngine()
    size = (3000, 2000)
    mask = disk(size, (300, 300), 50) | disk(size, (2600, 1700), 50)
    result = inpaint(noise_photo(size), mask, InpaintParams(seed=0), engine)
    assert len(result.crops) == 2 and len(engine.requests) == 2
    for request in engine.requests:
        assert request.image.size[0] % 8 == 0 and request.image.size[1] % 8 == 0
        assert request.mask.size == request.image.size
        # The engine's mask covers the soft edge, so everything pasted was generated.
        assert np.asarray(request.mask).max() == 255


def test_progress_runs_over_all_crops_and_cancel_stops():
    size = (3000, 2000)
    mask = disk(size, (300, 300), 50) | disk(size, (2600, 1700), 50)
    seen = []
    inpaint(noise_photo(size), mask, InpaintParams(seed=0, steps=5), FakeEngine(), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 10) for i in range(1, 11)]
    with pytest.raises(Cancelled):
        inpaint(noise_photo(size), mask, InpaintParams(seed=0, steps=5), FakeEngine(), should_cancel=lambda: True)


def test_empty_mask_and_size_mismatch_are_clear_errors():
    photo = noise_photo((200, 100))
    with pytest.raises(InpaintError, match="empty"):
        inpaint(photo, np.zeros((100, 200), bool), InpaintParams(), FakeEngine())
    with pytest.raises(InpaintError, match="photo is 200×100"):
        inpaint(photo, np.ones((50, 60), bool), InpaintParams(), FakeEngine())


def test_inverted_mask_keeps_the_subject_and_a_full_mask_works():
    photo = noise_photo((320, 240))
    subject = disk((320, 240), (160, 120), 50)
    result = inpaint(photo, subject, InpaintParams(seed=0, invert_mask=True, mask_blur=0), FakeEngine())
    out, original = np.asarray(result.images[0]), np.asarray(photo)
    assert np.array_equal(out[subject], original[subject])
    assert (out[~subject] != original[~subject]).all(axis=-1).mean() > 0.9
    everything = inpaint(photo, np.ones((240, 320), bool), InpaintParams(seed=0), FakeEngine())
    assert everything.images[0].size == (320, 240) and everything.crops == [(0, 0, 320, 240)]


def test_alpha_profile_and_exif_survive_to_the_downloaded_png():
    from PIL import ImageCms

    rgba = Image.new("RGBA", (300, 200), (10, 200, 30, 255))
    rgba.putalpha(Image.linear_gradient("L").resize((300, 200)))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG", icc_profile=icc)
    loaded = read_image(buffer.getvalue())
    result = inpaint(loaded.rgb, disk((300, 200), (150, 100), 30), InpaintParams(seed=0), FakeEngine())
    png = encode_image(result.images[0], format="PNG", alpha=loaded.alpha, icc_profile=loaded.icc_profile,
                       params=result.metadata(0))
    back = read_image(png)
    assert back.size == (300, 200)
    assert np.array_equal(np.asarray(back.alpha), np.asarray(loaded.alpha))
    assert back.icc_profile == icc
    from core.images import read_params

    assert read_params(png)["params"]["seed"] == 0


def test_poisson_blend_keeps_the_outside_too():
    photo = noise_photo((400, 300))
    mask = disk((400, 300), (200, 150), 40)
    result = inpaint(photo, mask, InpaintParams(seed=0, blend="poisson", mask_blur=6), FakeEngine())
    band = masks.grow(mask, 6)
    assert np.array_equal(np.asarray(result.images[0])[~band], np.asarray(photo)[~band])


def test_two_threads_sharing_an_engine_behind_a_lock_get_their_own_results():
    engine, lock = FakeEngine(), threading.Lock()
    photos = [noise_photo((320, 240), seed=s) for s in (1, 2)]
    mask = disk((320, 240), (160, 120), 40)
    results = {}

    def work(index: int) -> None:
        with lock:
            results[index] = inpaint(photos[index], mask, InpaintParams(seed=index), engine)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(2):
        sequential = inpaint(photos[index], mask, InpaintParams(seed=index), FakeEngine())
        assert np.array_equal(np.asarray(results[index].images[0]), np.asarray(sequential.images[0]))


# --- the edit with the tiny diffusion pipelines, through the real loaders ----------------------


@pytest.fixture(scope="module")
def engines(tiny_models):
    from core.engines.diffusion import DiffusionEngine

    return {"sd15": DiffusionEngine.load(SD15, tiny_models["sd15_inpaint"]), "sdxl": DiffusionEngine.load(SDXL, tiny_models["sdxl_inpaint"])}


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_real_pipeline_keeps_every_pixel_beyond_the_soft_edge(engines, name):
    photo = noise_photo()
    mask = disk(PHOTO_SIZE, (1100, 300), 45) | disk(PHOTO_SIZE, (200, 800), 30)  # far apart
    params = InpaintParams(prompt="a bench", steps=2, seed=11, variants=2, mask_blur=6, padding=16)
    result = inpaint(photo, mask, params, engines[name])
    assert len(result.crops) == 2
    band = masks.grow(mask, 6)
    original = np.asarray(photo)
    outputs = [np.asarray(image) for image in result.images]
    for out in outputs:
        assert out.shape == original.shape
        assert np.array_equal(out[~band], original[~band])
        assert (out[mask] != original[mask]).any()
    assert not np.array_equal(outputs[0][mask], outputs[1][mask])  # variants differ
    again = inpaint(photo, mask, params, engines[name])
    assert np.array_equal(np.asarray(again.images[1]), outputs[1])  # same seed, same pixels
    assert result.model_id == engines[name].model_id and result.engine == name


def test_two_sessions_generating_at_once_get_the_same_as_one_after_the_other(engines):
    engine, lock = engines["sd15"], threading.Lock()
    photos = [noise_photo((160, 120), seed=s) for s in (4, 5)]
    mask = disk((160, 120), (80, 60), 25)
    params = [InpaintParams(prompt=p, steps=2, seed=s) for p, s in (("a cat", 1), ("a dog", 2))]
    sequential = [inpaint(photos[i], mask, params[i], engine).images[0] for i in range(2)]
    concurrent: dict[int, Image.Image] = {}

    def session(index: int) -> None:
        with lock:  # what the app's cached resource hands out with the engine
            concurrent[index] = inpaint(photos[index], mask, params[index], engine).images[0]

    threads = [threading.Thread(target=session, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(2):
        assert np.array_equal(np.asarray(concurrent[index]), np.asarray(sequential[index]))


def test_opencv_removal_through_the_core(tiny_models):
    from core.engines.opencv_inpaint import OpenCVInpaint

    yy, xx = np.mgrid[0:200, 0:300]
    gradient = Image.fromarray(np.stack([xx % 256, yy % 256, np.full_like(xx, 90)], -1).astype(np.uint8))
    mask = disk((300, 200), (150, 100), 20)
    result = inpaint(gradient, mask, InpaintParams(seed=0, mask_blur=0, color_match=False), OpenCVInpaint("telea"))
    out, original = np.asarray(result.images[0]).astype(int), np.asarray(gradient).astype(int)
    assert np.array_equal(out[~mask], original[~mask])
    assert np.abs(out[mask] - original[mask]).mean() < 12  # filled close to the surrounding gradient


def test_opencv_fills_a_small_crop_at_its_own_size_and_diffusion_at_native():
    from core.engines.opencv_inpaint import OpenCVInpaint

    photo = noise_photo((400, 300))
    mask = disk((400, 300), (200, 150), 30)
    engine, seen = OpenCVInpaint("telea"), []
    generate = engine.generate
    engine.generate = lambda request, *args: seen.append(request.image.size) or generate(request, *args)
    result = inpaint(photo, mask, InpaintParams(engine="telea", padding=16, seed=0), engine)
    (x0, y0, x1, y1), = result.crops
    assert seen == [(x1 - x0, y1 - y0)]  # not scaled up to 1024 px: more pixels add nothing to OpenCV
    fake = FakeEngine()
    inpaint(photo, mask, InpaintParams(padding=16, seed=0), fake)
    width, height = fake.requests[0].image.size
    assert abs(width * height - 512 * 512) < 0.1 * 512 * 512  # a diffusion engine works at its native size
