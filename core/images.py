"""Load, validate, normalise and encode photos.

Contract: every photo enters Inpaint Studio through :func:`read_image` (or its short form
:func:`load_image`) and comes out as a ``PIL.Image.Image`` in mode ``RGB`` (8 bits per channel,
so ``numpy.asarray`` gives uint8 H×W×3 in R, G, B order), upright (EXIF orientation applied).
Transparency is split off into a separate mode ``L`` image, 255 = opaque, 0 = fully transparent,
kept only when the file really had some. Colour profiles and EXIF travel alongside, always
describing the RGB pixels as returned.

Bad input raises :class:`ImageError` whose message names the file and says what to do; no other
exception type escapes for a file that is not a usable photo.

Encoding for download (:func:`encode_image`) writes PNG, JPEG or WebP with the profile, EXIF and,
in PNG, the edit's parameters as a text chunk that :func:`read_params` reads back.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from core.config import DEFAULT_PNG_COMPRESSION, PNG_COMPRESSION_LEVELS
from core.errors import UserError
from core.orientation import ORIENTATION_TAG, UPRIGHT_TRANSPOSE

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest photo accepted by default (width × height); a 50 MP photo is about 8200×6100."""

PARAMS_KEY = "inpaint-studio"
"""The PNG text chunk under which :func:`encode_image` stores the edit's parameters as JSON."""

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]
"""What read_image accepts: a path, the file's bytes, or a binary file object."""

# Pillow's format ids that we decode. Everything else is refused with a message, even formats
# Pillow could open: EPS would run Ghostscript on untrusted input, and icons, scientific and
# game formats are not photos.
_DECODED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF", "AVIF")
_FORMAT_NAMES = "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC or AVIF"
_CHOOSE_ANOTHER = f"Choose a {_FORMAT_NAMES} photo."

_EXIF_HEADER = b"Exif\x00\x00"
# The ICC colour space that an embedded profile must have to describe pixels of a given mode.
_PROFILE_SPACE_FOR_MODE = {"RGB": "RGB", "L": "GRAY", "CMYK": "CMYK"}

# Encoded formats: Pillow format id → (MIME type, file extension).
_ENCODINGS = {
    "PNG": ("image/png", ".png"),
    "JPEG": ("image/jpeg", ".jpg"),
    "WEBP": ("image/webp", ".webp"),
}


class ImageError(UserError):
    """A file that cannot be used as a photo; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo, normalised to the core contract.

    ``rgb``: mode RGB, upright; its ``info`` holds exactly ``icc_profile`` and ``exif`` below
    (when present). ``alpha``: mode L, same size, 255 = opaque; None when the file had no
    transparency or was fully opaque. ``format``: the container, as Pillow names it ("JPEG",
    "PNG", "HEIF", ...). ``source_mode``: the pixel mode of the file before conversion ("CMYK",
    "I;16", "P", "LA", ...). ``icc_profile``: a profile describing ``rgb``'s colours (an RGB
    profile; a CMYK or grey profile is converted through, never passed on). ``exif``: the EXIF
    block starting with ``b"Exif\\0\\0"``, its orientation tag reset to 1 when the pixels were
    rotated, so a re-encoded file is not rotated twice. ``name``: the file name, when known.
    ``original_jpeg``: the file's bytes when it is a JPEG, so that a result can be written as a JPEG
    that re-encodes only the blocks an edit changed (``core.jpeg_keep``); None for other formats.
    """

    rgb: Image.Image
    alpha: Image.Image | None
    format: str
    source_mode: str
    icc_profile: bytes | None
    exif: bytes | None
    name: str | None
    original_jpeg: bytes | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, upright."""
        return self.rgb.size

    def describe(self) -> str:
        """A short summary for people, like ``"4032×3024 JPEG, 12.2 MP"``."""
        width, height = self.size
        return f"{width}×{height} {self.format}, {width * height / 1e6:.1f} MP"


def read_image(
    source: ImageSource, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Decode a photo and normalise it to RGB + optional alpha, upright, with its metadata.

    ``source`` is a path, the file's bytes, or a binary file object (read from its start, as
    Pillow does; a Streamlit ``UploadedFile`` works, and its ``.name`` names the file when
    ``name`` is not given). Photos over ``max_pixels`` (width × height) are refused from the
    header, before any pixel is decoded. Pillow's own decompression-bomb limit
    (``Image.MAX_IMAGE_PIXELS``, refused above twice that) still applies on top.

    Raises :class:`ImageError` for a missing, empty, unrecognised, unsupported, truncated,
    corrupt or oversized file, and TypeError for a source of another type.
    """
    # 1. Read the bytes.
    data, name = _read_source(source, name)
    if not data:
        raise ImageError(f"{_subject(name)} is empty (0 bytes). {_CHOOSE_ANOTHER}")

    # 2. Identify the format from the header.
    image = _open(data, name, max_pixels)

    # 3. Refuse an oversized photo before allocating its pixels.
    _check_pixel_count(image.size, max_pixels, name)

    # 4. Decode every pixel now, so a truncated or corrupt file fails here and not in an edit.
    try:
        image.load()
    except Exception as exc:  # decoders raise OSError, SyntaxError, EOFError, zlib errors, ...
        raise ImageError(
            f"{_subject(name)} is damaged or incomplete and could not be decoded ({exc}). "
            "Export or download the photo again."
        ) from exc

    # 5. Turn it upright (a transposed copy no longer knows its file format: note it first).
    source_mode = image.mode
    file_format = "JPEG" if image.format == "MPO" else image.format
    image, exif = _upright(image)

    # 6. Split off the alpha and convert the colours to 8-bit RGB with a matching profile.
    if image.mode == "La":  # premultiplied grey (TIFF): Pillow converts it only to LA
        image = image.convert("LA")
    alpha = _alpha_channel(image, name)
    rgb, icc_profile = _to_rgb(_colour_channels(image, name), image.info.get("icc_profile"), name)
    rgb.info = {key: value for key, value in (("icc_profile", icc_profile), ("exif", exif)) if value}

    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        # Cameras store preview or stereo frames in their JPEGs; Pillow calls those files MPO.
        format=file_format,
        source_mode=source_mode,
        icc_profile=icc_profile,
        exif=exif,
        name=name,
        original_jpeg=data if file_format == "JPEG" else None,
    )


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The upright RGB image of :func:`read_image`; transparency is dropped.

    ``info["icc_profile"]`` and ``info["exif"]`` are set when the file had them (see
    :class:`LoadedImage`). Raises :class:`ImageError` like :func:`read_image`.
    """
    return read_image(source, max_pixels=max_pixels).rgb


def encode_image(
    image: Image.Image,
    *,
    format: str = "PNG",
    alpha: Image.Image | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    params: dict[str, Any] | None = None,
    quality: int = 95,
    png_compression: int = DEFAULT_PNG_COMPRESSION,
    lossless: bool = False,
) -> bytes:
    """Encode an RGB image for download as PNG, JPEG or WebP ("JPG" is accepted).

    Only what the arguments say is written; ``image.info`` is ignored, so a stale profile or
    EXIF block cannot slip into the file. ``alpha`` (mode L, same size, 255 = opaque) is
    merged as RGBA in PNG and WebP. JPEG has no alpha: there ``alpha`` is ignored, and a
    caller who wants a background colour flattens the image before encoding. ``params``, a
    JSON-serialisable description of the edit, is stored in PNG only (text chunk
    :data:`PARAMS_KEY`, read back by :func:`read_params`); JPEG and WebP are for sharing and
    skip it. ``quality`` (1-100) applies to JPEG and WebP. ``png_compression`` is PNG's zlib level,
    0 (none) to 9 (smallest, slowest); the pixels read back are the same at every level. Callers pass
    ``Settings.png_compression`` (``INPAINT_STUDIO_PNG_COMPRESSION``). ``lossless`` makes WebP
    lossless (every pixel kept, at the fastest compression effort; ``quality`` is ignored).
    """
    encoding = _encoding_format(format)
    if image.mode != "RGB":
        raise ValueError(f"encode_image expects an RGB image, got mode {image.mode}.")
    if alpha is not None and (alpha.mode != "L" or alpha.size != image.size):
        raise ValueError(
            f"alpha must be a mode L image of the photo's size {image.size}, "
            f"got mode {alpha.mode} of size {alpha.size}."
        )
    if png_compression not in PNG_COMPRESSION_LEVELS:
        raise ValueError(f"png_compression must be a whole number from 0 to 9, got {png_compression!r}.")

    if alpha is not None and encoding != "JPEG":
        pixels = Image.merge("RGBA", (*image.split(), alpha))
    else:
        pixels = image.copy()
        pixels.info.clear()
    options: dict[str, Any] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif:
        options["exif"] = _with_exif_header(exif)
    if encoding == "PNG" and params is not None:
        text = PngInfo()
        text.add_text(PARAMS_KEY, json.dumps(params))
        options["pnginfo"] = text
    if encoding == "PNG":
        options["compress_level"] = png_compression
    if encoding in ("JPEG", "WEBP"):
        options["quality"] = quality
    if encoding == "WEBP" and lossless:
        options.update(lossless=True, quality=0, method=0)

    buffer = io.BytesIO()
    pixels.save(buffer, encoding, **options)
    return buffer.getvalue()


def read_params(source: ImageSource) -> dict[str, Any] | None:
    """The edit parameters that :func:`encode_image` stored in a PNG, or None when there are none.

    ``source`` is anything :func:`read_image` takes. A file that is not a PNG carries no
    parameters (None). Only the header is read: :func:`encode_image` writes the chunk before
    the pixel data. Raises :class:`ImageError` when the chunk is there but is not a JSON object.
    """
    data, name = _read_source(source, None)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as png:
            text = png.info.get(PARAMS_KEY)
    except Exception:  # noqa: BLE001 (not a PNG, or a damaged one: either way there is no recipe)
        return None
    if text is None:
        return None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImageError(
            f"{_subject(name)} has Inpaint Studio parameters that are not valid JSON ({exc})."
        ) from exc
    if not isinstance(params, dict):
        raise ImageError(f"{_subject(name)} has Inpaint Studio parameters that are not a JSON object.")
    return params


def mime_type(format: str) -> str:
    """The MIME type of an encoded format, e.g. ``"image/jpeg"`` for "JPEG" or "jpg"."""
    return _ENCODINGS[_encoding_format(format)][0]


def file_extension(format: str) -> str:
    """The file extension of an encoded format, with its dot, e.g. ``".jpg"`` for "JPEG"."""
    return _ENCODINGS[_encoding_format(format)][1]


def content_hash(image: Image.Image) -> str:
    """A short, stable key for an image's content: 16 hex digits of SHA-256.

    It covers the mode, the size and the pixels, not the metadata: two images with equal
    pixels get the same key, any changed pixel gives another.
    """
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:16]


# --- reading -------------------------------------------------------------------------------


def _subject(name: str | None) -> str:
    return name or "This file"


def _read_source(source: ImageSource, name: str | None) -> tuple[bytes, str | None]:
    """The file's bytes and its name (the given one, else the path's or file object's)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), name or path.name
        except FileNotFoundError:
            raise ImageError(f"{path} does not exist. Check the path and try again.") from None
        except IsADirectoryError:
            raise ImageError(f"{path} is a folder, not a photo. {_CHOOSE_ANOTHER}") from None
        except OSError as exc:
            raise ImageError(f"{path} could not be read ({exc.strerror}).") from exc
    if hasattr(source, "read"):
        file_name = getattr(source, "name", None)
        if name is None and isinstance(file_name, str):
            name = Path(file_name).name
        if source.seekable():
            source.seek(0)
        data = source.read()
        if not isinstance(data, bytes):
            raise TypeError("The file object must be opened in binary mode ('rb').")
        return data, name
    raise TypeError(f"Expected a path, bytes or a binary file object, got {type(source).__name__}.")


@functools.cache
def _register_heif_opener() -> None:
    # Imported on first use, not with this module: it loads libheif.
    import pillow_heif

    pillow_heif.register_heif_opener()


def _open(data: bytes, name: str | None, max_pixels: int) -> Image.Image:
    """Open (header only) with the formats we decode, turning every failure into ImageError."""
    _register_heif_opener()
    try:
        return Image.open(io.BytesIO(data), formats=_DECODED_FORMATS)
    # The warning is an exception only where warnings are turned into errors (pytest -W error).
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{_subject(name)} is too large: its header claims more pixels than can be opened "
            f"safely. Resize it to at most {max_pixels / 1e6:g} MP and try again."
        ) from exc
    # ultralytics replaces Image.open process-wide with a wrapper that, on an unidentified file,
    # imports (or pip-installs) pi_heif: its ImportError means "unidentified" too.
    except (UnidentifiedImageError, ImportError):
        raise ImageError(_unrecognised_file_message(data, name)) from None
    except Exception as exc:  # header parsers raise many types on malformed input
        raise ImageError(
            f"{_subject(name)} is damaged and could not be opened ({exc}). {_CHOOSE_ANOTHER}"
        ) from exc


def _unrecognised_file_message(data: bytes, name: str | None) -> str:
    """Say what a file that none of our decoders recognised seems to be instead."""
    subject = _subject(name)
    head = data[:1024]
    other_format = _format_pillow_recognises(data)
    if other_format is not None:
        return (
            f"{subject} is a {other_format} image, which Inpaint Studio does not read. "
            f"Convert it to JPEG or PNG first. {_CHOOSE_ANOTHER}"
        )
    if head.startswith(b"%PDF"):
        return f"{subject} is a PDF document, not a photo. {_CHOOSE_ANOTHER}"
    if b"<svg" in head.lower():
        return (
            f"{subject} is an SVG drawing (vector graphics), not a photo. "
            f"Export it as PNG first. {_CHOOSE_ANOTHER}"
        )
    if _looks_like_text(head):
        return f"{subject} is not an image (it looks like text). {_CHOOSE_ANOTHER}"
    return f"{subject} is not an image Inpaint Studio can read (unknown or damaged file). {_CHOOSE_ANOTHER}"


def _format_pillow_recognises(data: bytes) -> str | None:
    """The format id under which any Pillow plugin opens ``data`` (header only), or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # noqa: BLE001 (any failure means "not an image format Pillow knows")
        return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off by the 1 KiB window is still text.
        return exc.start >= len(head) - 3
    return True


def _check_pixel_count(size: tuple[int, int], max_pixels: int, name: str | None) -> None:
    width, height = size
    if width * height <= max_pixels:
        return
    shrink = (max_pixels / (width * height)) ** 0.5
    raise ImageError(
        f"{_subject(name)} is too large: {width}×{height} pixels "
        f"({width * height / 1e6:.1f} MP), over the limit of {max_pixels / 1e6:g} MP. "
        f"Resize it to at most {int(width * shrink)}×{int(height * shrink)} and try again."
    )


def _upright(image: Image.Image) -> tuple[Image.Image, bytes | None]:
    """Apply the EXIF orientation; return the upright image and its EXIF block (or None)."""
    raw_exif = image.info.get("exif")
    try:
        exif = image.getexif()
        orientation = exif.get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 (unreadable EXIF must not cost the user the photo: drop it)
        return image, None
    if orientation not in UPRIGHT_TRANSPOSE:
        return image, _with_exif_header(raw_exif) if raw_exif else None
    upright = image.transpose(UPRIGHT_TRANSPOSE[orientation])
    if not raw_exif:  # TIFF keeps its orientation among its own tags; there is no EXIF to pass on
        return upright, None
    exif[ORIENTATION_TAG] = 1
    return upright, exif.tobytes()


def _with_exif_header(exif: bytes) -> bytes:
    """EXIF as JPEG's APP1 segment wants it; PNG and WebP store it without the header."""
    return exif if exif.startswith(_EXIF_HEADER) else _EXIF_HEADER + exif


# --- normalising ---------------------------------------------------------------------------


def _convert(image: Image.Image, mode: str, name: str | None) -> Image.Image:
    try:
        return image.convert(mode)
    except ValueError as exc:
        raise ImageError(
            f"{_subject(name)} uses the pixel format {image.mode!r}, which Inpaint Studio cannot "
            f"convert to RGB. Save it as an 8-bit RGB JPEG or PNG and try again."
        ) from exc


def _alpha_channel(image: Image.Image, name: str | None) -> Image.Image | None:
    """The transparency as a mode L image (255 = opaque), or None when everything is opaque.

    Covers alpha channels (RGBA, LA, PA) as well as palette and colour-key transparency.
    """
    if not image.has_transparency_data:
        return None
    with_alpha = image if image.mode in ("RGBA", "LA") else _convert(image, "RGBA", name)
    alpha = with_alpha.getchannel("A")
    return None if alpha.getextrema() == (255, 255) else alpha


def _colour_channels(image: Image.Image, name: str | None) -> Image.Image:
    """The colour without alpha, as 8-bit L, RGB or CMYK (the modes a profile can convert)."""
    if image.mode == "F":
        raise ImageError(
            f"{_subject(name)} stores 32-bit floating-point pixels (scientific or HDR data), "
            "which Inpaint Studio cannot convert to a photo. Export it as an 8- or 16-bit "
            "TIFF or PNG."
        )
    if image.mode == "I" or image.mode.startswith("I;16"):
        return _sixteen_bit_to_eight(image, name)
    if image.mode in ("L", "RGB", "CMYK"):
        return image
    if image.mode in ("1", "LA"):
        return _convert(image, "L", name)
    return _convert(image, "RGB", name)


def _sixteen_bit_to_eight(image: Image.Image, name: str | None) -> Image.Image:
    """Scale 16-bit grey (0..65535) to 8 bits (0..255), rounding to the nearest level.

    Takes the I;16 modes and mode I (32-bit) holding 16-bit values. Pillow's own conversion
    clips instead: every value above 255 would become white.
    """
    values = np.asarray(image)
    if values.min() < 0 or values.max() > 65535:
        raise ImageError(
            f"{_subject(name)} stores 32-bit integer pixels outside the 16-bit range, which "
            "Inpaint Studio cannot convert to a photo. Export it as an 8- or 16-bit TIFF or PNG."
        )
    eight_bit = (values.astype(np.uint32) * 255 + 32767) // 65535
    return Image.fromarray(eight_bit.astype(np.uint8))


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _parse_profile(icc_profile: bytes | None) -> ImageCms.ImageCmsProfile | None:
    """The parsed profile, or None when there is none or it is broken (ignored, as browsers do)."""
    if not icc_profile:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    except (OSError, ImageCms.PyCMSError):
        return None


def _to_rgb(
    colour: Image.Image, icc_profile: bytes | None, name: str | None
) -> tuple[Image.Image, bytes | None]:
    """Convert L, RGB or CMYK pixels to RGB; return them with a profile that describes them.

    A grey or CMYK profile drives a colour-managed conversion to sRGB (and the sRGB profile
    is returned); without one, or when it cannot drive the conversion, Pillow's plain
    conversion is used and no profile is returned.
    """
    profile = _parse_profile(icc_profile)
    matches = (
        profile is not None and profile.profile.xcolor_space.strip() == _PROFILE_SPACE_FOR_MODE[colour.mode]
    )
    if colour.mode == "RGB":
        return colour, icc_profile if matches else None
    if matches:
        try:
            rgb = ImageCms.profileToProfile(colour, profile, _srgb_profile(), outputMode="RGB")
            return rgb, _srgb_profile().tobytes()
        except ImageCms.PyCMSError:
            pass  # a profile LittleCMS cannot use: fall back to the plain conversion below
    return _convert(colour, "RGB", name), None


# --- encoding ------------------------------------------------------------------------------


def _encoding_format(format: str) -> str:
    encoding = format.upper().removeprefix(".")
    encoding = "JPEG" if encoding == "JPG" else encoding
    if encoding not in _ENCODINGS:
        raise ValueError(f"Cannot encode {format!r}: choose PNG, JPEG or WebP.")
    return encoding
