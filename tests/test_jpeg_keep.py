"""Tests of core.jpeg_keep and core.output_formats: JPEG results that re-encode only the edited blocks."""
from __future__ import annotations

import functools
import io

import jpeglib
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms

from core.images import read_image
from core.jpeg_keep import CannotKeepBlocks, frame_kind, keep_unchanged_blocks
from core.output_formats import (
    FORMATS,
    OutputFormatError,
    check_format,
    check_quality,
    choose,
    encode_result,
    offered,
)

ORIENTATION = ExifTags.Base.Orientation
SIZE = (256, 192)
SUBSAMPLING = {"4:2:0": (2, 2), "4:4:4": (1, 1), "4:2:2": (1, 2)}  # → luma (vertical, horizontal) factors


def photo_pixels(size=SIZE, seed=0) -> np.ndarray:
    """A smooth gradient with sensor-like noise: every block holds detail."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x / width * 200 + 20, y / height * 180 + 30, (x + y) / (width + height) * 150 + 50], axis=-1)
    rgb += np.random.default_rng(seed).normal(0, 10, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@functools.cache  # once: lcms stamps each new profile with the time, so two calls can differ
def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_jpeg(size=SIZE, subsampling="4:2:0", orientation=1, quality=88, **options) -> bytes:
    """A JPEG as a camera writes one: standard Huffman tables, EXIF (with a maker and an
    orientation) and an ICC profile."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(photo_pixels(size)).save(buffer, "JPEG", quality=quality, subsampling=subsampling,
                                             exif=exif.tobytes(), icc_profile=srgb_profile(), **options)
    return buffer.getvalue()


def dct(data: bytes, tmp_path, name: str):
    path = tmp_path / name
    path.write_bytes(data)
    jpeg = jpeglib.read_dct(str(path))
    jpeg.load()
    return jpeg


def edit(photo, box=(100, 70, 140, 110), colour=(220, 30, 30)) -> Image.Image:
    """The loaded photo with one rectangle (x0, y0, x1, y1, upright) painted: what an edit does."""
    pixels = np.asarray(photo.rgb).copy()
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = colour
    return Image.fromarray(pixels)


def changed_blocks(before, after, component: str) -> np.ndarray:
    return (getattr(before, component) != getattr(after, component)).any(axis=(2, 3))


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4", "4:2:2"])
def test_only_the_edited_blocks_are_re_encoded_and_the_rest_is_the_original(tmp_path, subsampling):
    original = camera_jpeg(subsampling=subsampling)
    photo = read_image(original, name="photo.jpg")
    box = (100, 70, 140, 110)
    kept = keep_unchanged_blocks(edit(photo, box), original)
    before, after = dct(original, tmp_path, "before.jpg"), dct(kept.data, tmp_path, "after.jpg")

    # The original's quantisation tables and subsampling.
    assert np.array_equal(before.qt, after.qt) and list(before.quant_tbl_no) == list(after.quant_tbl_no)
    assert np.array_equal(np.asarray(after.samp_factor), np.asarray(before.samp_factor))
    assert tuple(np.asarray(after.samp_factor)[0]) == SUBSAMPLING[subsampling]
    assert kept.subsampling == subsampling

    # Every block outside the MCUs the box touches has the original's coefficients, bit for bit.
    v, h = SUBSAMPLING[subsampling]
    mcu_h, mcu_w = 8 * v, 8 * h
    x0, y0, x1, y1 = box
    mcu_rows, mcu_cols = range(y0 // mcu_h, (y1 - 1) // mcu_h + 1), range(x0 // mcu_w, (x1 - 1) // mcu_w + 1)
    assert kept.changed_mcus == len(mcu_rows) * len(mcu_cols)
    for component, (cv, ch) in (("Y", (v, h)), ("Cb", (1, 1)), ("Cr", (1, 1))):
        inside = np.zeros(getattr(before, component).shape[:2], dtype=bool)
        inside[mcu_rows[0] * cv:(mcu_rows[-1] + 1) * cv, mcu_cols[0] * ch:(mcu_cols[-1] + 1) * ch] = True
        changed = changed_blocks(before, after, component)
        assert not changed[~inside].any(), component
        assert changed[inside].any(), component  # the edit is really there

    # Decoded: identical beyond one MCU of the edit; the edit itself is there.
    decoded = np.asarray(read_image(kept.data).rgb)
    untouched = np.ones(decoded.shape[:2], dtype=bool)
    untouched[max(0, (y0 // mcu_h - 1) * mcu_h):((y1 - 1) // mcu_h + 2) * mcu_h,
              max(0, (x0 // mcu_w - 1) * mcu_w):((x1 - 1) // mcu_w + 2) * mcu_w] = False
    assert np.array_equal(decoded[untouched], np.asarray(photo.rgb)[untouched])
    assert np.abs(decoded[y0 + 4:y1 - 4, x0 + 4:x1 - 4].astype(int) - (220, 30, 30)).mean() < 12

    # The file keeps its EXIF, its colour profile and its size.
    reread = read_image(kept.data)
    assert reread.icc_profile == srgb_profile()
    assert Image.open(io.BytesIO(kept.data)).getexif()[ExifTags.Base.Make] == "TestCam"
    assert abs(len(kept.data) - len(original)) / len(original) < 0.03


def test_an_optimised_original_stays_optimised_and_keeps_its_size(tmp_path):
    original = camera_jpeg(size=(512, 384), optimize=True)
    photo = read_image(original)
    kept = keep_unchanged_blocks(edit(photo), original)
    assert abs(len(kept.data) - len(original)) / len(original) < 0.02


def test_an_unchanged_result_is_the_original_file():
    original = camera_jpeg()
    photo = read_image(original)
    kept = keep_unchanged_blocks(photo.rgb, original)
    assert kept.data == original and kept.changed_mcus == 0
    assert "unchanged" in kept.describe()


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_a_rotated_photo_is_turned_back_before_the_splice(tmp_path, orientation):
    original = camera_jpeg(orientation=orientation)
    photo = read_image(original)
    assert photo.size == ((SIZE[1], SIZE[0]) if orientation in (6, 8) else SIZE)  # upright on load
    kept = keep_unchanged_blocks(edit(photo, (40, 40, 60, 60)), original)
    # The file is still stored as it was, with its orientation tag: it reads back upright and edited.
    stored = Image.open(io.BytesIO(kept.data))
    assert stored.size == SIZE and stored.getexif()[ORIENTATION] == orientation
    assert kept.changed_mcus <= 4  # a 20-pixel square touches at most 2×2 MCUs
    before, after = dct(original, tmp_path, "before.jpg"), dct(kept.data, tmp_path, "after.jpg")
    assert changed_blocks(before, after, "Y").sum() <= 16
    reread = np.asarray(read_image(kept.data).rgb)
    assert reread.shape[:2] == (photo.size[1], photo.size[0])
    assert np.abs(reread[44:56, 44:56].astype(int) - (220, 30, 30)).mean() < 12
    assert np.array_equal(reread[100:, :], np.asarray(photo.rgb)[100:, :])  # far from the edit: identical


def jpeg_of(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: camera_jpeg(progressive=True), "progressive"),
        (lambda: jpeg_of(Image.fromarray(photo_pixels()).convert("L")), "greyscale"),
        (lambda: jpeg_of(Image.fromarray(photo_pixels()).convert("CMYK")), "CMYK"),
    ],
)
def test_jpegs_whose_blocks_cannot_be_kept_fall_back_to_a_plain_jpeg_with_a_note(make, words):
    original = make()
    photo = read_image(original, name="odd.jpg")
    with pytest.raises(CannotKeepBlocks, match=words):
        keep_unchanged_blocks(edit(photo), original)
    encoded = encode_result(edit(photo), photo, "jpeg-keep")
    assert encoded.format is FORMATS["jpeg"] and Image.open(io.BytesIO(encoded.data)).format == "JPEG"
    assert any("plain JPEG" in note and words in note for note in encoded.notes)


def test_a_result_of_another_size_falls_back_with_a_note():
    original = camera_jpeg()
    photo = read_image(original)
    bigger = Image.new("RGB", (SIZE[0] + 64, SIZE[1]), (10, 20, 30))  # an outpainted photo
    with pytest.raises(CannotKeepBlocks, match="outpainted or resized"):
        keep_unchanged_blocks(bigger, original)
    encoded = encode_result(bigger, photo, "auto")
    assert encoded.format.name == "jpeg" and Image.open(io.BytesIO(encoded.data)).size == bigger.size
    assert any("outpainted" in note for note in encoded.notes)


def test_the_frame_header_says_what_kind_of_jpeg_it_is():
    assert frame_kind(camera_jpeg()) == (0xC0, 8)
    assert frame_kind(camera_jpeg(progressive=True)) == (0xC2, 8)
    with pytest.raises(CannotKeepBlocks, match="not a JPEG"):
        keep_unchanged_blocks(Image.new("RGB", SIZE), b"\x89PNG\r\n\x1a\n")


# --- the formats ------------------------------------------------------------------------------------


def png_photo():
    buffer = io.BytesIO()
    Image.fromarray(photo_pixels()).save(buffer, "PNG")
    return read_image(buffer.getvalue(), name="photo.png")


def test_auto_keeps_a_jpeg_a_jpeg_and_makes_other_photos_png():
    jpeg = read_image(camera_jpeg(), name="photo.jpg")
    assert choose("auto", "JPEG") == (FORMATS["jpeg-keep"], None)
    assert choose("auto", "PNG") == (FORMATS["png"], None)
    fmt, note = choose("jpeg-keep", "PNG")
    assert fmt is FORMATS["png"] and "PNG" in note
    assert offered("JPEG") == ["png", "jpeg-keep", "jpeg", "webp"] and "jpeg-keep" not in offered("PNG")
    encoded = encode_result(edit(jpeg), jpeg)
    assert encoded.format.name == "jpeg-keep" and "re-encoded 9 of" in encoded.notes[0]
    assert encode_result(edit(png_photo()), png_photo()).format.name == "png"


@pytest.mark.parametrize("name, pillow_format, lossless", [("png", "PNG", True), ("webp", "WEBP", True),
                                                          ("jpeg", "JPEG", False)])
def test_every_format_writes_its_file(name, pillow_format, lossless):
    photo = png_photo()
    result = edit(photo)
    encoded = encode_result(result, photo, name, quality=90)
    assert Image.open(io.BytesIO(encoded.data)).format == pillow_format
    assert encoded.format.extension == {"PNG": ".png", "WEBP": ".webp", "JPEG": ".jpg"}[pillow_format]
    same = np.array_equal(np.asarray(read_image(encoded.data).rgb), np.asarray(result))
    assert same == lossless
    if name == "jpeg":
        assert any("every pixel changes slightly" in note for note in encoded.notes)


def test_bad_format_and_quality_values_name_the_option():
    assert check_format("JPG") == "jpeg" and check_format(" Keep-JPEG ") == "jpeg-keep"
    with pytest.raises(OutputFormatError, match=r"--format 'gif'.*auto, png, jpeg-keep, jpeg, webp"):
        check_format("gif")
    with pytest.raises(OutputFormatError, match=r"--quality 0: give a whole number from 1 to 100"):
        check_quality(0)
    with pytest.raises(OutputFormatError, match="quality"):
        encode_result(Image.new("RGB", SIZE), png_photo(), "jpeg", quality=101)


def test_blocks_between_two_edits_are_copied_too(tmp_path):
    """Only the changed MCUs are spliced, not the whole box around them."""
    original = camera_jpeg()
    photo = read_image(original)
    pixels = np.asarray(photo.rgb).copy()
    pixels[16:32, 16:32] = (220, 30, 30)  # MCU (1, 1)
    pixels[160:176, 208:224] = (30, 30, 220)  # MCU (10, 13)
    result = Image.fromarray(pixels)
    kept = keep_unchanged_blocks(result, original)
    assert kept.changed_mcus == 2
    before, after = dct(original, tmp_path, "before.jpg"), dct(kept.data, tmp_path, "after.jpg")
    changed = changed_blocks(before, after, "Cb")  # one chroma block per 4:2:0 MCU
    assert set(zip(*np.nonzero(changed))) <= {(1, 1), (10, 13)} and changed.any()


def test_a_failure_inside_libjpeg_is_a_fallback_with_its_reason(monkeypatch):
    original = camera_jpeg()
    photo = read_image(original)

    def broken(path):
        raise OSError("Unsupported marker type 0xd9")

    monkeypatch.setattr(jpeglib, "read_dct", broken)
    encoded = encode_result(edit(photo), photo, "jpeg-keep")
    assert encoded.format.name == "jpeg"
    assert any("could not be rewritten (OSError: Unsupported marker" in note for note in encoded.notes)
