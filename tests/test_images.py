"""Tests of core.images: every input is generated here, in memory or under tmp_path."""

from __future__ import annotations

import functools
import io
import itertools
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile
from PIL.PngImagePlugin import PngInfo

from core.images import (
    DEFAULT_MAX_PIXELS,
    PARAMS_KEY,
    ImageError,
    LoadedImage,
    content_hash,
    encode_image,
    file_extension,
    load_image,
    mime_type,
    read_image,
    read_params,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)
ORIENTATION = ExifTags.Base.Orientation


# --- input builders ------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def red_left_blue_right(size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    return image


def assert_close(actual, expected, tolerance: int) -> None:
    differences = [abs(a - e) for a, e in zip(actual, expected, strict=True)]
    assert max(differences) <= tolerance, (actual, expected)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written byte by byte, for what Pillow cannot write (16-bit RGB, lying headers)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def bmp_header_only(width: int, height: int) -> bytes:
    """A 54-byte BMP whose header claims ``width``×``height`` 24-bit pixels and has none."""
    return (
        b"BM"
        + struct.pack("<IHHI", 54, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    )


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def icc_profile(colour_space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """A minimal ICC v2 profile with the given tags (LittleCMS needs no more)."""
    tags = {b"desc": _description(b"test profile"), b"wtpt": _d50_white(), **tags}
    data_start = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, payload in tags.items():
        payload += b"\0" * (-len(payload) % 4)
        table += struct.pack(">4sII", signature, data_start + len(data), len(payload))
        data += payload
    # Size, CMM, version 2.1, device class, colour space, PCS, date, signature; then zeros up
    # to the D50 illuminant at byte 68.
    header = struct.pack(
        ">I4sI4s4s4s12s4s",
        data_start + len(data),
        b"lcms",
        0x02100000,
        b"prtr",
        colour_space,
        pcs,
        b"\0" * 12,
        b"acsp",
    )
    header = (header + b"\0" * 28 + _s15(0.9642) + _s15(1.0) + _s15(0.8249)).ljust(128, b"\0")
    return header + struct.pack(">I", len(tags)) + table + data


def _description(text: bytes) -> bytes:
    # ICC v2 textDescriptionType: ASCII text, then empty Unicode (8 bytes) and ScriptCode (70).
    return b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0" + b"\0" * 78


def _d50_white() -> bytes:
    return b"XYZ \0\0\0\0" + _s15(0.9642) + _s15(1.0) + _s15(0.8249)


def cmyk_profile(ink_to_rgb) -> bytes:
    """A CMYK profile whose 16 corners (each ink 0 or 1) map to ``ink_to_rgb(corner)`` in sRGB."""
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    corners = Image.new("RGB", (16, 1))
    corners.putdata([ink_to_rgb(inks) for inks in itertools.product((0, 1), repeat=4)])
    lab = ImageCms.applyTransform(corners, to_lab)
    # getpixel gives a* and b* offset by 128, the 8-bit Lab encoding that lut8 stores.
    grid = bytes(value for x in range(16) for value in lab.getpixel((x, 0)))
    identity = bytes(range(256))
    lut8 = b"mft1\0\0\0\0" + bytes((4, 3, 2, 0)) + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return icc_profile(b"CMYK", b"Lab ", {b"A2B0": lut8 + identity * 4 + grid + identity * 3})


def grey_profile(gamma: float) -> bytes:
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))
    return icc_profile(b"GRAY", b"XYZ ", {b"kTRC": curve})


@functools.cache  # once: lcms stamps each new profile with the time, so two calls can differ
def srgb_profile_bytes() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def profile_colour_space(icc: bytes) -> str:
    return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()


def exif_bytes(**tags: object) -> bytes:
    exif = Image.Exif()
    for name, value in tags.items():
        exif[ExifTags.Base[name]] = value
    return exif.tobytes()


def exif_tags(loaded_exif: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(loaded_exif)
    return exif


def heif_bytes(image: Image.Image, **options) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return encoded(image, "HEIF", quality=90, **options)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in (RED, GREEN, BLUE)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def mpo_bytes() -> bytes:
    return encoded(
        red_left_blue_right(),
        "MPO",
        save_all=True,
        append_images=[Image.new("RGB", (64, 48), GREEN)],
    )


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_file, expected_format, tolerance",
    [
        (lambda: encoded(red_left_blue_right(), "JPEG", quality=95), "JPEG", 12),
        (lambda: encoded(red_left_blue_right(), "PNG"), "PNG", 0),
        (lambda: encoded(red_left_blue_right(), "WEBP", quality=95), "WEBP", 12),
        (lambda: encoded(red_left_blue_right(), "TIFF"), "TIFF", 0),
        (lambda: encoded(red_left_blue_right(), "BMP"), "BMP", 0),
        (lambda: heif_bytes(red_left_blue_right()), "HEIF", 16),
        (lambda: encoded(red_left_blue_right(), "AVIF", quality=90), "AVIF", 16),
        (mpo_bytes, "JPEG", 12),
    ],
    ids=["jpeg", "png", "webp", "tiff", "bmp", "heic", "avif", "mpo-camera-jpeg"],
)
def test_every_format_loads_as_rgb_with_its_size_and_colours(make_file, expected_format, tolerance):
    loaded = read_image(make_file())

    assert loaded.rgb.mode == "RGB"
    assert loaded.size == (64, 48)
    assert loaded.format == expected_format
    assert loaded.alpha is None
    assert_close(loaded.rgb.getpixel((8, 24)), RED, tolerance)
    assert_close(loaded.rgb.getpixel((56, 24)), BLUE, tolerance)


def test_animated_gif_loads_its_first_frame():
    loaded = read_image(animated_gif())

    assert (loaded.format, loaded.size, loaded.rgb.mode) == ("GIF", (40, 30), "RGB")
    assert_close(loaded.rgb.getpixel((20, 15)), RED, 8)


def test_grayscale_and_one_bit_images_become_grey_rgb():
    grey = read_image(encoded(Image.new("L", (10, 8), 77), "PNG"))
    one_bit = Image.new("1", (10, 8), 0)
    one_bit.paste(1, (0, 0, 5, 8))
    bilevel = read_image(encoded(one_bit, "PNG"))

    assert grey.source_mode == "L"
    assert grey.rgb.mode == "RGB" and grey.rgb.getpixel((3, 3)) == (77, 77, 77)
    assert bilevel.source_mode == "1"
    assert bilevel.rgb.getpixel((1, 1)) == (255, 255, 255)
    assert bilevel.rgb.getpixel((8, 1)) == (0, 0, 0)


# --- bit depth and colour ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(fmt):
    values = np.array([[0, 1000, 32768, 49151, 65535]], dtype=np.uint16)
    loaded = read_image(encoded(Image.fromarray(values), fmt))
    grey = np.asarray(loaded.rgb)[0, :, 0]

    assert loaded.source_mode == "I;16"
    assert grey.tolist() == [0, 4, 128, 191, 255]


def test_full_16_bit_grey_ramp_maps_to_the_full_8_bit_range():
    ramp = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    grey = np.asarray(read_image(encoded(Image.fromarray(ramp), "PNG")).rgb)[..., 0]

    assert np.abs(grey.astype(int) - np.round(ramp / 257)).max() <= 1
    assert len(np.unique(grey)) == 256


def test_16_bit_rgb_png_keeps_its_colours():
    pixel = struct.pack(">HHH", 65535, 32768, 300)
    png = raw_png(4, 2, 16, 2, (b"\0" + pixel * 4) * 2)
    loaded = read_image(png)

    assert loaded.size == (4, 2)
    assert_close(loaded.rgb.getpixel((1, 1)), (255, 128, 1), 1)


def test_cmyk_jpeg_without_profile_has_sensible_colours():
    cmyk = Image.new("CMYK", (32, 16), (0, 0, 0, 0))
    cmyk.paste((255, 0, 0, 0), (0, 0, 16, 16))  # pure cyan ink on the left, paper on the right
    loaded = read_image(encoded(cmyk, "JPEG", quality=95))
    red, green, blue = loaded.rgb.getpixel((4, 8))

    assert loaded.source_mode == "CMYK"
    assert red < 40 and green > 215 and blue > 215
    assert min(loaded.rgb.getpixel((28, 8))) > 240
    assert loaded.icc_profile is None


def test_cmyk_jpeg_is_converted_through_its_embedded_profile():
    # A deliberately odd press: every ink combination prints as the negative of the naive mix,
    # so cyan ink prints red. Only a colour-managed conversion can produce red here.
    def negative_of_naive_mix(inks):
        return tuple(round(255 * (1 - (1 - inks[i]) * (1 - inks[3]))) for i in range(3))

    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    loaded = read_image(encoded(cmyk, "JPEG", quality=95, icc_profile=cmyk_profile(negative_of_naive_mix)))
    red, green, blue = loaded.rgb.getpixel((8, 8))

    assert red > 200 and green < 50 and blue < 50
    assert profile_colour_space(loaded.icc_profile) == "RGB"
    assert loaded.rgb.info["icc_profile"] == loaded.icc_profile


def test_grey_image_is_converted_through_its_grey_profile():
    linear_grey = Image.new("L", (8, 8), 128)
    loaded = read_image(encoded(linear_grey, "PNG", icc_profile=grey_profile(gamma=1.0)))

    # Linear 50 % grey is sRGB level 188; a plain copy of the value would stay at 128.
    assert_close(loaded.rgb.getpixel((4, 4)), (188, 188, 188), 2)
    assert profile_colour_space(loaded.icc_profile) == "RGB"


def test_profile_that_does_not_match_the_pixels_is_not_passed_on():
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    loaded = read_image(encoded(cmyk, "JPEG", icc_profile=srgb_profile_bytes()))

    assert loaded.icc_profile is None
    assert "icc_profile" not in loaded.rgb.info
    assert loaded.rgb.getpixel((4, 4))[0] < 40


def test_floating_point_tiff_is_refused_as_unsupported():
    with pytest.raises(ImageError, match="floating-point") as error:
        read_image(encoded(Image.new("F", (8, 8), 0.5), "TIFF"), name="scan.tif")
    assert "scan.tif" in str(error.value)


# --- orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, red_corner",
    [(6, "top-right"), (8, "bottom-left"), (3, "bottom-right"), (2, "top-right")],
)
def test_exif_orientation_is_applied(orientation, red_corner):
    stored = Image.new("RGB", (60, 40), BLUE)
    stored.paste(RED, (0, 0, 10, 10))  # the stored top-left corner is red
    jpeg = encoded(stored, "JPEG", quality=95, exif=exif_bytes(Orientation=orientation, Make="TestCam"))
    loaded = read_image(jpeg)
    width, height = loaded.size
    corners = {
        "top-left": (2, 2),
        "top-right": (width - 3, 2),
        "bottom-left": (2, height - 3),
        "bottom-right": (width - 3, height - 3),
    }

    assert loaded.size == ((40, 60) if orientation in (6, 8) else (60, 40))
    assert loaded.format == "JPEG" and loaded.describe().endswith("JPEG, 0.0 MP")
    for corner, xy in corners.items():
        assert_close(loaded.rgb.getpixel(xy), RED if corner == red_corner else BLUE, 20)
    tags = exif_tags(loaded.exif)
    assert tags[ORIENTATION] == 1
    assert tags[ExifTags.Base.Make] == "TestCam"


def test_rotated_heic_from_a_phone_is_turned_upright_once():
    # libheif applies the rotation itself and pillow_heif resets the EXIF tag to 1.
    stored = Image.new("RGB", (60, 40), BLUE)
    stored.paste(RED, (0, 0, 10, 10))
    loaded = read_image(heif_bytes(stored, exif=exif_bytes(Orientation=6)))

    assert loaded.size == (40, 60)
    assert_close(loaded.rgb.getpixel((37, 2)), RED, 20)
    assert_close(loaded.rgb.getpixel((2, 2)), BLUE, 20)
    assert exif_tags(loaded.exif)[ORIENTATION] == 1


def test_reencoded_rotated_photo_is_not_rotated_twice():
    jpeg = encoded(Image.new("RGB", (60, 40), BLUE), "JPEG", exif=exif_bytes(Orientation=6))
    loaded = read_image(jpeg)
    again = read_image(encode_image(loaded.rgb, format="JPEG", exif=loaded.exif))

    assert loaded.size == again.size == (40, 60)


# --- alpha ---------------------------------------------------------------------------------


def test_palette_png_transparency_becomes_alpha():
    palette_image = Image.new("P", (20, 10), 1)
    palette_image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette_image.paste(0, (0, 0, 10, 10))  # colour 0, declared transparent, on the left
    loaded = read_image(encoded(palette_image, "PNG", transparency=0))

    assert loaded.source_mode == "P"
    assert loaded.alpha is not None and loaded.alpha.mode == "L" and loaded.alpha.size == (20, 10)
    assert loaded.alpha.getpixel((2, 5)) == 0
    assert loaded.alpha.getpixel((15, 5)) == 255
    assert loaded.rgb.getpixel((15, 5)) == (200, 30, 30)


def test_rgba_png_alpha_is_kept_exactly():
    rgba = Image.new("RGBA", (16, 4), (10, 120, 200, 255))
    alpha = Image.frombytes("L", (16, 4), bytes(range(0, 256, 4)))
    rgba.putalpha(alpha)
    loaded = read_image(encoded(rgba, "PNG"))

    assert loaded.source_mode == "RGBA"
    assert loaded.rgb.mode == "RGB"
    assert loaded.rgb.getpixel((15, 3)) == (10, 120, 200)
    assert loaded.alpha.tobytes() == alpha.tobytes()


def test_grey_with_alpha_keeps_alpha():
    la = Image.merge("LA", (Image.new("L", (8, 8), 90), Image.new("L", (8, 8), 40)))
    loaded = read_image(encoded(la, "PNG"))

    assert loaded.source_mode == "LA"
    assert loaded.rgb.getpixel((0, 0)) == (90, 90, 90)
    assert loaded.alpha.getextrema() == (40, 40)


def test_premultiplied_grey_tiff_is_unpremultiplied():
    stored = Image.merge("LA", (Image.new("L", (4, 4), 50), Image.new("L", (4, 4), 128)))
    unassociated_alpha = b"\x52\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # ExtraSamples = 2
    tiff = encoded(stored, "TIFF")
    assert tiff.count(unassociated_alpha) == 1
    # Pillow cannot write premultiplied grey; mark the alpha as associated (ExtraSamples = 1).
    tiff = tiff.replace(unassociated_alpha, unassociated_alpha[:-2] + b"\x01\x00")
    loaded = read_image(tiff)

    assert loaded.source_mode == "La"
    assert_close(loaded.rgb.getpixel((1, 1)), (100, 100, 100), 1)  # 50 / (128 / 255)
    assert loaded.alpha.getpixel((1, 1)) == 128


def test_fully_opaque_alpha_is_dropped():
    loaded = read_image(encoded(Image.new("RGBA", (8, 8), (1, 2, 3, 255)), "PNG"))

    assert loaded.source_mode == "RGBA"
    assert loaded.alpha is None


# --- bad input -----------------------------------------------------------------------------


def test_truncated_jpeg_is_refused():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    jpeg = encoded(noise, "JPEG", quality=95)

    with pytest.raises(ImageError, match="damaged or incomplete") as error:
        read_image(jpeg[: len(jpeg) // 2], name="beach.jpg")
    assert "beach.jpg" in str(error.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_refused():
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    png = encoded(noise, "PNG")

    with pytest.raises(ImageError, match="damaged"):
        read_image(png[: len(png) // 2])


def test_text_file_named_png_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "holiday.png"
    path.write_text("Dear diary, today we went to the beach.\n")

    with pytest.raises(ImageError) as error:
        read_image(path)
    message = str(error.value)
    assert "holiday.png" in message and "not an image" in message and "text" in message
    assert "JPEG" in message  # says what to use instead


def test_text_file_is_refused_clearly_after_ultralytics_patched_pillow(tmp_path):
    """Importing ultralytics (as the segmentation engine does) wraps Image.open process-wide."""
    path = tmp_path / "holiday.png"
    path.write_text("Dear diary, today we went to the beach.\n")
    script = (
        "import ultralytics, PIL.Image\n"
        "assert PIL.Image.open.__module__ != 'PIL.Image', 'ultralytics no longer patches Image.open'\n"
        "from core.images import ImageError, read_image\n"
        "try:\n"
        f"    read_image({str(path)!r})\n"
        "except ImageError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "YOLO_AUTOINSTALL": "0", "YOLO_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "holiday.png is not an image" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "data, expected",
    [
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (encoded(Image.new("RGB", (8, 8)), "PPM"), "PPM"),
        (encoded(Image.new("RGB", (16, 16)), "ICO"), "ICO"),
        (bytes(range(256)) * 4, "unknown"),
    ],
    ids=["svg", "pdf", "ppm", "ico", "binary"],
)
def test_unsupported_files_are_refused_saying_what_they_are(data, expected):
    with pytest.raises(ImageError, match=expected):
        read_image(data, name="upload.bin")


def test_empty_file_is_refused():
    with pytest.raises(ImageError, match="empty"):
        read_image(b"", name="nothing.jpg")


def test_missing_path_and_folder_are_refused(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    "header",
    [
        raw_png(60000, 60000, 8, 2, b""),
        bmp_header_only(60000, 60000),
        raw_png(10000, 6000, 8, 2, b""),
    ],
    ids=["png-3.6-gigapixels", "bmp-3.6-gigapixels", "png-60-megapixels"],
)
def test_header_claiming_a_huge_image_is_refused_without_decoding(header, monkeypatch):
    def decoding_is_forbidden(image):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoding_is_forbidden)
    with pytest.raises(ImageError, match="too large"):
        read_image(header, name="huge.png")


def test_too_large_message_gives_the_size_and_the_limit():
    with pytest.raises(ImageError) as error:
        read_image(raw_png(10000, 6000, 8, 2, b""), name="pano.png")

    message = str(error.value)
    assert "pano.png" in message and "10000×6000" in message and "60.0 MP" in message
    assert f"{DEFAULT_MAX_PIXELS / 1e6:g} MP" in message


def test_decompression_bomb_warning_turned_into_an_error_is_refused_as_too_large():
    # 100 MP: above Pillow's warning threshold (89 MP), below our raised limit.
    header = raw_png(10000, 10000, 8, 2, b"")

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="too large"):
            read_image(header, max_pixels=200_000_000)


def test_max_pixels_is_configurable():
    png = encoded(Image.new("RGB", (100, 100)), "PNG")

    with pytest.raises(ImageError, match="too large"):
        read_image(png, max_pixels=9_999)
    assert read_image(png, max_pixels=10_000).size == (100, 100)


# --- sources -------------------------------------------------------------------------------


def test_path_bytes_and_file_object_sources_give_the_same_image(tmp_path):
    jpeg = encoded(red_left_blue_right(), "JPEG", quality=90)
    path = tmp_path / "beach.jpg"
    path.write_bytes(jpeg)

    with path.open("rb") as opened_file:
        from_open_file = read_image(opened_file)
    results = [
        read_image(path),
        read_image(str(path)),
        read_image(jpeg),
        read_image(bytearray(jpeg)),
        from_open_file,
    ]

    assert {content_hash(result.rgb) for result in results} == {content_hash(results[0].rgb)}
    assert [result.name for result in results] == [
        "beach.jpg",
        "beach.jpg",
        None,
        None,
        "beach.jpg",
    ]


def test_uploaded_file_object_is_read_from_the_start_and_named():
    class UploadedFile(io.BytesIO):  # what Streamlit's file_uploader returns, minus the widget
        name = "garden.png"

    upload = UploadedFile(encoded(red_left_blue_right(), "PNG"))
    upload.read()  # a page that already peeked at it

    notes = UploadedFile(b"just some notes")
    notes.name = "notes.png"

    assert read_image(upload).name == "garden.png"
    assert read_image(upload, name="renamed.png").name == "renamed.png"
    with pytest.raises(ImageError, match="notes.png"):
        read_image(notes)


def test_load_image_returns_rgb_with_profile_and_exif_in_info():
    jpeg = encoded(
        red_left_blue_right(),
        "JPEG",
        icc_profile=srgb_profile_bytes(),
        exif=exif_bytes(Make="TestCam"),
    )
    image = load_image(jpeg)

    assert image.mode == "RGB" and image.size == (64, 48)
    assert image.info["icc_profile"] == srgb_profile_bytes()
    assert exif_tags(image.info["exif"])[ExifTags.Base.Make] == "TestCam"


def test_describe_gives_size_format_and_megapixels():
    loaded = read_image(encoded(Image.new("RGB", (4032, 3024)), "JPEG", quality=50))

    assert isinstance(loaded, LoadedImage)
    assert loaded.describe() == "4032×3024 JPEG, 12.2 MP"


# --- encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_icc_profile_survives_load_and_encode(fmt):
    profile = srgb_profile_bytes()
    loaded = read_image(encoded(red_left_blue_right(), "PNG", icc_profile=profile))
    reread = read_image(encode_image(loaded.rgb, format=fmt, icc_profile=loaded.icc_profile))

    assert loaded.icc_profile == profile
    assert reread.icc_profile == profile


@pytest.mark.parametrize("source_format", ["JPEG", "WEBP", "PNG"])
@pytest.mark.parametrize("target_format", ["JPEG", "WEBP", "PNG"])
def test_exif_survives_load_and_encode(source_format, target_format):
    # PNG and WebP store EXIF without JPEG's "Exif\0\0" header; every combination must work.
    source = encoded(red_left_blue_right(), source_format, exif=exif_bytes(Make="TestCam", Model="X100"))
    loaded = read_image(source)
    reread = read_image(encode_image(loaded.rgb, format=target_format, exif=loaded.exif))
    tags = exif_tags(reread.exif)

    assert loaded.exif.startswith(b"Exif\x00\x00")
    assert (tags[ExifTags.Base.Make], tags[ExifTags.Base.Model]) == ("TestCam", "X100")


def test_encode_writes_only_the_metadata_it_is_given():
    image = load_image(
        encoded(
            red_left_blue_right(),
            "JPEG",
            icc_profile=srgb_profile_bytes(),
            exif=exif_bytes(Make="A"),
        )
    )
    reread = read_image(encode_image(image, format="PNG"))

    assert reread.icc_profile is None and reread.exif is None


def test_png_params_round_trip():
    params = {
        "prompt": "a red kite — über blue sky",
        "seed": 1234,
        "strength": 0.85,
        "steps": [1, 2],
    }
    png = encode_image(red_left_blue_right(), params=params)

    assert read_params(png) == params
    assert read_params(encode_image(red_left_blue_right())) is None
    assert read_params(encode_image(red_left_blue_right(), format="JPEG")) is None
    assert read_image(png).size == (64, 48)


def test_read_params_refuses_a_chunk_that_is_not_a_json_object():
    text = PngInfo()
    text.add_text(PARAMS_KEY, "{not json")
    with pytest.raises(ImageError, match="not valid JSON"):
        read_params(encoded(Image.new("RGB", (4, 4)), "PNG", pnginfo=text))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_encode_with_alpha_keeps_alpha(fmt):
    alpha = Image.new("L", (64, 48), 255)
    alpha.paste(0, (0, 0, 16, 48))
    reread = read_image(encode_image(red_left_blue_right(), format=fmt, alpha=alpha, quality=100))

    assert reread.alpha is not None
    assert reread.alpha.getpixel((4, 24)) < 5
    assert reread.alpha.getpixel((40, 24)) > 250


def test_jpeg_encoding_drops_alpha():
    alpha = Image.new("L", (64, 48), 0)
    reread = read_image(encode_image(red_left_blue_right(), format="jpg", alpha=alpha))

    assert reread.format == "JPEG" and reread.alpha is None
    assert_close(reread.rgb.getpixel((8, 24)), RED, 12)


def test_png_compression_level_changes_the_size_not_the_pixels():
    rng = np.random.default_rng(7)
    # Noise over smooth gradients: compressible, so the levels differ, but not trivially.
    ramp = np.linspace(0, 200, 256, dtype=np.float32)[None, :, None]
    pixels = (ramp + rng.integers(0, 48, (192, 256, 3))).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    alpha = Image.fromarray(rng.integers(0, 256, (192, 256), dtype=np.uint8))
    encoded = {level: encode_image(image, alpha=alpha, params={"seed": 1}, png_compression=level)
               for level in (0, 1, 9)}
    assert len(encoded[0]) > len(encoded[1]) > len(encoded[9])
    for data in encoded.values():
        reread = read_image(data)
        assert np.array_equal(np.asarray(reread.rgb), pixels)
        assert np.array_equal(np.asarray(reread.alpha), np.asarray(alpha))
        assert read_params(data) == {"seed": 1}
    default = encode_image(image, alpha=alpha, params={"seed": 1})
    assert default == encoded[1]  # the default is the fast level (INPAINT_STUDIO_PNG_COMPRESSION's default)
    # JPEG and WebP ignore it
    assert encode_image(image, format="JPEG", png_compression=9) == encode_image(image, format="JPEG")


@pytest.mark.parametrize("level", [-1, 10, "9"])
def test_png_compression_outside_0_to_9_is_refused(level):
    with pytest.raises(ValueError, match="png_compression"):
        encode_image(red_left_blue_right(), png_compression=level)


def test_encode_refuses_what_breaks_the_contract():
    rgb = red_left_blue_right()
    with pytest.raises(ValueError, match="RGB"):
        encode_image(rgb.convert("RGBA"))
    with pytest.raises(ValueError, match="alpha"):
        encode_image(rgb, alpha=Image.new("L", (10, 10)))
    with pytest.raises(ValueError, match="PNG, JPEG or WebP"):
        encode_image(rgb, format="GIF")


def test_mime_types_and_extensions():
    assert [mime_type(f) for f in ("PNG", "jpg", "JPEG", "webp")] == [
        "image/png",
        "image/jpeg",
        "image/jpeg",
        "image/webp",
    ]
    assert [file_extension(f) for f in ("png", "JPEG", "WEBP")] == [".png", ".jpg", ".webp"]


def test_content_hash_follows_the_pixels():
    image = red_left_blue_right()
    same_pixels_new_metadata = image.copy()
    same_pixels_new_metadata.info["exif"] = exif_bytes(Make="Other")
    one_pixel_changed = image.copy()
    one_pixel_changed.putpixel((0, 0), (231, 20, 20))
    same_bytes_other_shape = Image.frombytes("RGB", (48, 64), image.tobytes())

    assert content_hash(image) == content_hash(same_pixels_new_metadata)
    keys = {content_hash(other) for other in (image, one_pixel_changed, same_bytes_other_shape)}
    assert len(keys) == 3
    assert len(content_hash(image)) == 16


# --- example photos and import cost --------------------------------------------------------


def test_every_example_photo_loads_and_is_attributed():
    photos = sorted(EXAMPLES.glob("*.jpg"))
    attribution = (EXAMPLES / "ATTRIBUTION.md").read_text()

    assert len(photos) >= 3
    assert "licence" in attribution.lower()
    for photo in photos:
        loaded = read_image(photo)
        assert loaded.format == "JPEG" and loaded.rgb.mode == "RGB"
        assert min(loaded.size) >= 256
        assert photo.stat().st_size < 300_000
        assert f"`{photo.name}`" in attribution


def test_importing_core_images_loads_no_heavy_or_ui_library():
    heavy = "{'pillow_heif', 'streamlit', 'torch'}"
    code = f"import sys, core.images; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
