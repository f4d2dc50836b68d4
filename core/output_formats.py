"""The file formats results are written in, and the one function that writes them.

The formats (:data:`FORMATS`): ``png`` (lossless, carries the edit's parameters), ``jpeg-keep``
(for a JPEG photo: a JPEG in which only the blocks the edit changed are re-encoded; see
``core.jpeg_keep``), ``jpeg`` (every block re-encoded at a quality: every pixel changes slightly)
and ``webp`` (WebP lossless). ``auto`` picks ``jpeg-keep`` for a JPEG photo and ``png`` for any
other. The command line (``--format``), the batch runner, the Batch page and the download on the
result views all take these names and write through :func:`encode_result`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from core.config import AUTO_FORMAT, DEFAULT_JPEG_QUALITY, DEFAULT_PNG_COMPRESSION, OUTPUT_FORMAT_NAMES
from core.errors import UserError
from core.images import LoadedImage, encode_image
from core.jpeg_keep import CannotKeepBlocks, keep_unchanged_blocks


@dataclass(frozen=True)
class OutputFormat:
    """One way of writing a result: its name (``--format``), how people see it, its file."""

    name: str
    label: str  # for a picker
    short: str  # for a button: "Download JPEG"
    extension: str
    mime: str
    help: str
    needs_jpeg: bool = False  # only for a JPEG photo


FORMATS: dict[str, OutputFormat] = {
    "png": OutputFormat("png", "PNG (lossless)", "PNG", ".png", "image/png",
                        "lossless; keeps transparency and the edit's parameters (the largest files)"),
    "jpeg-keep": OutputFormat(
        "jpeg-keep", "JPEG, unchanged blocks", "JPEG", ".jpg", "image/jpeg",
        "for a JPEG photo: only the blocks the edit changed are re-encoded, with the photo's own quality and "
        "subsampling; the rest of the file is copied, so it keeps its size, quality, EXIF and colour profile",
        needs_jpeg=True),
    "jpeg": OutputFormat("jpeg", "JPEG (re-encoded)", "JPEG", ".jpg", "image/jpeg",
                         "every block re-encoded at the chosen quality: every pixel changes slightly"),
    "webp": OutputFormat("webp", "WebP lossless", "WebP", ".webp", "image/webp",
                         "lossless and smaller than PNG, but slow to write for large photos"),
}
assert set(FORMATS) == set(OUTPUT_FORMAT_NAMES) - {AUTO_FORMAT}, "core.config names the same formats"
CHOICES = (AUTO_FORMAT, *FORMATS)
_ALIASES = {"jpg": "jpeg", "jpg-keep": "jpeg-keep", "keep-jpeg": "jpeg-keep", "keep-jpg": "jpeg-keep"}


class OutputFormatError(UserError):
    """An output format or quality that cannot be used; the message names the option."""


def check_format(value: str, option: str = "--format") -> str:
    """The format's name (``auto`` included) for ``value``; OutputFormatError naming ``option``."""
    name = str(value).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in CHOICES:
        raise OutputFormatError(f"{option} {value!r} is not an output format: choose one of {', '.join(CHOICES)} "
                                f"({AUTO_FORMAT} = jpeg-keep for JPEG photos, png for others).")
    return name


def check_quality(value: int, option: str = "--quality") -> int:
    """A JPEG quality from 1 to 100; OutputFormatError naming ``option`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise OutputFormatError(f"{option} {value!r}: give a whole number from 1 to 100 (default "
                                f"{DEFAULT_JPEG_QUALITY}; it applies to --format jpeg).")
    return value


def for_extension(suffix: str) -> str | None:
    """The format a file name's extension asks for (``.jpg`` → ``jpeg``), or None."""
    return {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}.get(suffix.lower())


def offered(source_format: str | None) -> list[str]:
    """The formats that make sense for a photo read from ``source_format`` ("JPEG", "PNG", ...)."""
    return [name for name, fmt in FORMATS.items() if not fmt.needs_jpeg or source_format == "JPEG"]


def choose(requested: str, source_format: str | None) -> tuple[OutputFormat, str | None]:
    """The format to write for a photo of ``source_format``, and a note when it is not the one asked.

    ``auto`` is ``jpeg-keep`` for a JPEG and ``png`` otherwise; ``jpeg-keep`` for a photo that is
    not a JPEG is written as PNG (a batch may mix JPEGs and PNGs), with a note saying so.
    """
    name = check_format(requested)
    if name == AUTO_FORMAT:
        return FORMATS["jpeg-keep" if source_format == "JPEG" else "png"], None
    fmt = FORMATS[name]
    if fmt.needs_jpeg and source_format != "JPEG":
        return FORMATS["png"], (f"written as PNG: jpeg-keep keeps a JPEG's unchanged blocks, and this photo is "
                                f"{source_format or 'not a JPEG'}")
    return fmt, None


@dataclass(frozen=True)
class EncodedResult:
    """A result's file: its bytes, the format they are in, and what people should know about it."""

    data: bytes
    format: OutputFormat
    notes: tuple[str, ...] = ()


PHOTO_ALPHA: Any = object()  # encode_result's default: the photo's own transparency


def encode_result(
    image: Image.Image,
    photo: LoadedImage,
    requested: str = AUTO_FORMAT,
    *,
    params: dict[str, Any] | None = None,
    quality: int = DEFAULT_JPEG_QUALITY,
    png_compression: int = DEFAULT_PNG_COMPRESSION,
    alpha: Image.Image | None = PHOTO_ALPHA,
) -> EncodedResult:
    """Encode ``image`` (a result made from ``photo``) in the ``requested`` format (a name of
    :data:`CHOICES`), with the photo's transparency, colour profile and EXIF.

    ``jpeg-keep`` that cannot keep the photo's blocks (a CMYK, greyscale or progressive JPEG, a
    result of another size, ...) writes a plain JPEG at ``quality`` and says why in a note; so does
    every fallback: nothing changes format silently. ``alpha``: the transparency to write, by
    default the photo's (a result on a larger canvas passes the photo's moved onto it).
    """
    if alpha is PHOTO_ALPHA:
        alpha = photo.alpha
    fmt, note = choose(requested, photo.format)
    notes = [note] if note else []
    quality = check_quality(quality, "quality")
    common = dict(alpha=alpha, icc_profile=photo.icc_profile, exif=photo.exif)
    if fmt.name == "jpeg-keep":
        if photo.original_jpeg is None:
            reason = "the original file's bytes are not at hand"
        else:
            try:
                kept = keep_unchanged_blocks(image, photo.original_jpeg)
            except CannotKeepBlocks as error:
                reason = str(error)
            else:
                return EncodedResult(kept.data, fmt, (*notes, kept.describe()))
        notes.append(f"written as a plain JPEG (quality {quality}, every block re-encoded, so every pixel changes "
                     f"slightly) because {reason}")
        return EncodedResult(encode_image(image, format="JPEG", quality=quality, **common), FORMATS["jpeg"],
                             tuple(notes))
    if fmt.name == "jpeg":
        notes.append(f"re-encoded as JPEG at quality {quality}: every pixel changes slightly (jpeg-keep, png or "
                     "webp keep them)")
        if alpha is not None:
            notes.append("JPEG has no transparency: the photo's transparent areas are written opaque")
        data = encode_image(image, format="JPEG", quality=quality, **common)
    elif fmt.name == "webp":
        data = encode_image(image, format="WEBP", lossless=True, **common)
    else:
        data = encode_image(image, format="PNG", params=params, png_compression=png_compression, **common)
    return EncodedResult(data, fmt, tuple(notes))
