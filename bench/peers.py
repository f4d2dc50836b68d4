"""Object removal on a folder of 12 MP photos, next to IOPaint doing the same work in the same run.

Six 12 MP JPEGs (4000×3000) are made here as a camera would write them: a scene with smooth
gradients, texture and sensor noise, one small dark object each, quality 90 with 4:2:0 chroma and
the standard Huffman tables, an EXIF block and an sRGB ICC profile; a mask per photo covers its
object. Both tools run as the commands people type, start-up included, with OpenCV's fill:

* this app: ``python -m core batch --recipe R --input DIR --masks DIR --output DIR`` with a recipe that
  removes each photo's mask with the OpenCV engine (Telea), results in the default format (a JPEG
  stays a JPEG, only the blocks the edit changed re-encoded);
* IOPaint 1.6.0: ``iopaint run --model cv2 --device cpu --image DIR --mask DIR --output DIR`` (PNG
  results), from its own virtual environment under ``.cache/peers/iopaint`` (``make bench-peers``
  installs it there; the row says so when it is missing).

Three runs, alternating the two; the figures are medians. Each output is checked: pixels beyond the
mask identical to the photo's (for this app's JPEGs: beyond one 16-pixel MCU of the mask and its
soft edge, as the format allows), EXIF and ICC profile kept. A row splits this app's time per photo
into reading, the fill and writing, from the batch manifest.
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

import numpy as np
from PIL import ExifTags, Image, ImageCms

ROOT = Path(__file__).resolve().parent.parent
IOPAINT = ROOT / ".cache" / "peers" / "iopaint" / "bin" / "iopaint"
IOPAINT_VERSION = "1.6.0"
COUNT = 6
SIZE = (4000, 3000)
RUNS = 3
MASK_BLUR = 8  # the recipe's soft edge outside the mask, px
MCU = 16  # 4:2:0


def _scene(index: int) -> np.ndarray:
    """A 12 MP photo-like image: sky and ground gradients, low-frequency texture, detail, sensor noise."""
    width, height = SIZE
    rng = np.random.default_rng(index)
    small = rng.normal(0, 1, (height // 50, width // 50, 3)).astype(np.float32)
    texture = np.asarray(Image.fromarray(((small + 3) * 40).clip(0, 255).astype(np.uint8)).resize(
        SIZE, Image.BICUBIC), dtype=np.float32) - 120
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    horizon = 0.45 + 0.05 * index / COUNT
    sky = np.array([120, 160, 220], np.float32) * (1 - 0.3 * y)
    ground = np.array([90 + 10 * index, 110, 60], np.float32) * (0.7 + 0.5 * y)
    image = np.where(y < horizon, sky, ground) + texture * np.where(y < horizon, 0.15, 0.5)
    image = image + rng.normal(0, 4, (height, width, 3)).astype(np.float32)
    return image.clip(0, 255).astype(np.uint8)


def _object_box(index: int) -> tuple[int, int, int]:
    """Centre x, y and radius of the small object in photo ``index``."""
    return 700 + 480 * index, 1900 - 60 * index, 90 + 10 * index


def make_inputs(photos: Path, masks: Path, count: int = COUNT) -> None:
    photos.mkdir(parents=True)
    masks.mkdir(parents=True)
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    width, height = SIZE
    for index in range(count):
        pixels = _scene(index)
        cx, cy, radius = _object_box(index)
        yy, xx = np.ogrid[:height, :width]
        body = (xx - cx) ** 2 + ((yy - cy) * 1.3) ** 2 <= radius ** 2
        pixels[body] = (pixels[body] * 0.25 + np.array([40, 30, 25]) * 0.75).astype(np.uint8)  # a dark stone
        exif = Image.Exif()
        exif[ExifTags.Base.Make] = "BenchCam"
        exif[ExifTags.Base.Model] = f"Peer {index}"
        exif[ExifTags.Base.Orientation] = 1
        Image.fromarray(pixels).save(photos / f"photo{index}.jpg", quality=90, subsampling="4:2:0",
                                     exif=exif.tobytes(), icc_profile=profile)
        mask = (xx - cx) ** 2 + ((yy - cy) * 1.3) ** 2 <= (radius + 12) ** 2  # the object and a margin
        Image.fromarray((mask * 255).astype(np.uint8)).save(masks / f"photo{index}.png")


def _recipe(path: Path) -> None:
    from core.operations.inpaint import InpaintParams
    from core.recipe import Action, Recipe, Selection

    params = InpaintParams(engine="telea", mask_blur=MASK_BLUR)
    path.write_text(Recipe(Selection(kind="mask_file"), Action("remove", params), name="bench-peers").to_json())


def _ours(recipe: Path, photos: Path, masks: Path, output: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INPAINT_STUDIO_OFFLINE": "1", "INPAINT_STUDIO_DEVICE": "cpu"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "core", "batch", "--recipe", str(recipe), "--input", str(photos),
                             "--masks", str(masks), "--output", str(output)], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"python -m core batch failed: {result.stderr[-2000:]}")
    return seconds


def _iopaint(photos: Path, masks: Path, output: Path, count: int) -> float:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    started = time.perf_counter()
    result = subprocess.run([str(IOPAINT), "run", "--model", "cv2", "--device", "cpu", "--image", str(photos),
                             "--mask", str(masks), "--output", str(output)], env=env, capture_output=True, text=True,
                            check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0 or len(list(output.glob("*.png"))) != count:
        raise RuntimeError(f"iopaint run failed: {(result.stderr or result.stdout)[-2000:]}")
    return seconds


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _to_mcus(region: np.ndarray, extra: int) -> np.ndarray:
    """``region`` widened to whole MCUs, and ``extra`` more MCUs around."""
    height, width = region.shape
    rows, cols = -(-height // MCU), -(-width // MCU)
    padded = np.zeros((rows * MCU, cols * MCU), bool)
    padded[:height, :width] = region
    touched = padded.reshape(rows, MCU, cols, MCU).any(axis=(1, 3))
    for _ in range(extra):  # every neighbour, diagonals too: chroma upsampling reaches across corners
        grown = touched.copy()
        grown[1:] |= touched[:-1]
        grown[:-1] |= touched[1:]
        touched = grown.copy()
        touched[:, 1:] |= grown[:, :-1]
        touched[:, :-1] |= grown[:, 1:]
    return np.repeat(np.repeat(touched, MCU, 0), MCU, 1)[:height, :width]


def check(photos: Path, masks: Path, output: Path, suffix: str, mcu_margin: bool, count: int = COUNT) -> dict:
    """Per photo: pixels beyond the mask (and its soft edge; for a block-keeping JPEG one MCU more)
    equal to the photo's, EXIF and ICC profile kept; and the outputs' total size."""
    same = exif = icc = 0
    size = 0
    worst = 0
    for index in range(count):
        source = Image.open(photos / f"photo{index}.jpg")
        result = Image.open(output / f"photo{index}{suffix}")
        size += (output / f"photo{index}{suffix}").stat().st_size
        mask = np.asarray(Image.open(masks / f"photo{index}.png")) > 127
        changed_region = _grow(mask, MASK_BLUR + 1)
        if mcu_margin:
            changed_region = _to_mcus(changed_region, 1)
        beyond = ~changed_region
        before, after = np.asarray(source.convert("RGB")), np.asarray(result.convert("RGB"))
        differing = int((before[beyond] != after[beyond]).any(axis=1).sum())
        worst = max(worst, differing)
        same += differing == 0
        exif += result.getexif().get(ExifTags.Base.Make) == "BenchCam"
        icc += result.info.get("icc_profile") == source.info.get("icc_profile")
    return {"identical": same, "exif": exif, "icc": icc, "bytes": size, "worst_pixels": worst, "count": count}


def _describe(checks: dict) -> str:
    count = checks["count"]
    return (f"beyond the mask identical {checks['identical']}/{count}"
            + (f" (worst: {checks['worst_pixels']} pixels differ)" if checks["identical"] < count else "")
            + f", EXIF {checks['exif']}/{count}, ICC {checks['icc']}/{count}")


def run(quick: bool = False) -> list[dict]:
    runs, count = (1, 2) if quick else (RUNS, COUNT)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as folder:
        folder = Path(folder)
        photos, masks, recipe = folder / "photos", folder / "masks", folder / "recipe.json"
        make_inputs(photos, masks, count)
        _recipe(recipe)
        inputs_bytes = sum(path.stat().st_size for path in photos.iterdir())
        has_peer = IOPAINT.exists()
        ours, theirs = [], []
        for attempt in range(runs):
            out = folder / f"ours{attempt}"
            ours.append(_ours(recipe, photos, masks, out))
            if has_peer:
                theirs.append(_iopaint(photos, masks, folder / f"iopaint{attempt}", count))
        ours_checks = check(photos, masks, folder / "ours0", ".jpg", mcu_margin=True, count=count)
        manifest = json.loads((folder / "ours0" / "manifest.json").read_text())
        stages = {stage: statistics.median(row["timings"].get(key, 0.0) for row in manifest["items"])
                  for stage, key in (("read", "read"), ("edit", "edit.total"), ("fill", "edit.inpaint"),
                                     ("write", "write"), ("total", "total"))}
        ours_s = statistics.median(ours)
        label = f"remove an object from {count} 12 MP JPEGs, OpenCV fill, median of {runs} paired run(s), s"
        if has_peer:
            theirs_s = statistics.median(theirs)
            peer_checks = check(photos, masks, folder / "iopaint0", ".png", mcu_margin=False, count=count)
            rows.append({"name": f"{label} (this app {ours_s / theirs_s:.2g}× IOPaint's time)", "ms": ours_s,
                         "unit": "s", "reference": f"IOPaint {IOPAINT_VERSION} `iopaint run --model cv2 --device cpu`,"
                                                   " same photos and masks, same run",
                         "reference_ms": theirs_s})
            rows.append({"name": f"output size of the {count} results (inputs {inputs_bytes / 1e6:.1f} MB)",
                         "ms": ours_checks["bytes"] / 1e6, "unit": "MB",
                         "reference": "IOPaint's PNGs", "reference_ms": peer_checks["bytes"] / 1e6})
            rows.append({"name": f"checks: this app (JPEG, unchanged blocks): {_describe(ours_checks)}; "
                                 f"IOPaint (PNG): {_describe(peer_checks)}",
                         "ms": 0.0, "reference": None, "reference_ms": None})
        else:
            rows.append({"name": f"{label}; IOPaint: not installed (make bench-peers installs it into "
                                 ".cache/peers/iopaint), its row skipped", "ms": ours_s, "unit": "s",
                         "reference": None, "reference_ms": None})
            rows.append({"name": f"output size of the {count} results (inputs {inputs_bytes / 1e6:.1f} MB)",
                         "ms": ours_checks["bytes"] / 1e6, "unit": "MB", "reference": None, "reference_ms": None})
            rows.append({"name": f"checks: this app (JPEG, unchanged blocks): {_describe(ours_checks)}",
                         "ms": 0.0, "reference": None, "reference_ms": None})
        rows.append({"name": f"this app per photo (medians, ms): read {stages['read']:.0f}, edit {stages['edit']:.0f} "
                             f"(OpenCV fill {stages['fill']:.0f}), write the JPEG {stages['write']:.0f}; total",
                     "ms": stages["total"], "reference": None, "reference_ms": None})
    return rows


if __name__ == "__main__":  # python -m bench.peers: this benchmark alone, without writing results
    from bench.__main__ import table

    print(table(run(quick="--quick" in sys.argv)))
