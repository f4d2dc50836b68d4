"""Write an edited JPEG as a JPEG again, re-encoding only the blocks the edit changed.

Re-saving a JPEG decodes and re-quantises every 8×8 block, so every pixel of the photo changes a
little and the file grows or loses quality, although the edit touched a small region. This module
avoids that: :func:`keep_unchanged_blocks` takes the original file and the edited image and writes
a JPEG with the original's quantisation tables and chroma subsampling in which

* every MCU (the 8×8, 16×8 or 16×16 pixel unit of blocks, depending on the subsampling) whose
  pixels the edit did not change keeps its DCT coefficients, copied from the original;
* the MCUs the edit changed are encoded from the edited pixels with the same tables;
* the original's APP segments (EXIF, the ICC profile, XMP, ...) and comments are copied.

The file keeps its size and quality, and pixels more than one MCU away from the edit decode
exactly as before (the decoder's chroma upsampling blends neighbouring blocks, so pixels next to a
re-encoded MCU may move by a level or two).

Which MCUs changed is decided by comparing the edited pixels with the original's decoded pixels:
the app keeps everything beyond an edit's soft edge bit-identical, so untouched areas compare equal.
The edited image is upright (the loader applies the EXIF orientation); it is turned back to the
file's stored orientation first.

When this cannot be done honestly (not a baseline YCbCr JPEG: CMYK, greyscale, progressive,
arithmetic-coded, 12-bit; an unusual subsampling or table layout; a result of another size) the
function raises :class:`CannotKeepBlocks` with a reason for people, and the caller writes a plain
file and says so (see ``core.output_formats``).
"""
from __future__ import annotations

import functools
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.orientation import ORIENTATION_TAG, STORED_TRANSPOSE

# Start-of-frame markers: baseline and extended sequential Huffman JPEGs can be spliced.
_SPLICEABLE_FRAMES = {0xC0: "baseline", 0xC1: "extended sequential"}
_OTHER_FRAMES = {
    0xC2: "progressive", 0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical progressive",
    0xC7: "hierarchical lossless", 0xC9: "arithmetic-coded", 0xCA: "progressive arithmetic-coded",
    0xCB: "lossless arithmetic-coded", 0xCD: "hierarchical arithmetic-coded",
    0xCE: "hierarchical progressive arithmetic-coded", 0xCF: "hierarchical lossless arithmetic-coded",
}
# Luma sampling factors (vertical, horizontal) with chroma 1×1 → Pillow's ``subsampling`` option.
_PILLOW_SUBSAMPLING = {(1, 1): 0, (1, 2): 1, (2, 2): 2}
_SUBSAMPLING_NAMES = {(1, 1): "4:4:4", (1, 2): "4:2:2", (2, 2): "4:2:0"}
# The code-length counts of the JPEG standard's example luminance Huffman tables (Annex K), which
# cameras and most encoders use as they are. A file with other tables had them optimised for its
# content: the spliced file is then optimised too, so that it keeps its size.
_STANDARD_LUMA_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_STANDARD_LUMA_AC_BITS = (0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D)
_LIBJPEG = "turbo210"  # of the libjpeg builds jpeglib ships, the fastest here at reading and writing


class CannotKeepBlocks(Exception):
    """The original's blocks cannot be kept for this file; ``str()`` says why, for people."""


@dataclass(frozen=True)
class KeptBlocks:
    """A spliced JPEG: ``data``, and how many of its ``total_mcus`` MCUs were re-encoded."""

    data: bytes
    changed_mcus: int
    total_mcus: int
    subsampling: str

    def describe(self) -> str:
        """E.g. ``"re-encoded 12 of 46,875 blocks (0.03%), the rest copied unchanged"``."""
        if self.changed_mcus == 0:
            return "no block changed: the original file is written unchanged"
        share = 100 * self.changed_mcus / self.total_mcus
        return (f"re-encoded {self.changed_mcus:,} of {self.total_mcus:,} JPEG blocks ({share:.2g}%) with the "
                f"original's quality and {self.subsampling} subsampling; the rest are copied unchanged")


def frame_kind(data: bytes) -> tuple[int | None, int | None]:
    """The JPEG's start-of-frame marker (0xC0..0xCF) and sample precision, from its header."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None, None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            precision = data[position + 4] if position + 4 < len(data) else None
            return marker, precision
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG we understand
            return None, None
        position += 2 + length
    return None, None


def stored_orientation(original: Image.Image) -> int:
    """The EXIF orientation of the original (1 = stored upright), as the loader reads it."""
    try:
        orientation = original.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 (the loader drops unreadable EXIF and keeps the pixels as stored)
        return 1
    return orientation if orientation in STORED_TRANSPOSE else 1


def keep_unchanged_blocks(result: Image.Image, original: bytes) -> KeptBlocks:
    """The edited ``result`` (RGB, upright, as the app edits it) as a JPEG made from ``original``
    (the JPEG file's bytes) in which only the MCUs whose pixels changed are re-encoded.

    Raises :class:`CannotKeepBlocks` saying why when the original's blocks cannot be kept.
    """
    if result.mode != "RGB":
        raise CannotKeepBlocks(f"the result is in mode {result.mode}, not RGB")
    if original[:2] != b"\xff\xd8":
        raise CannotKeepBlocks("the original is not a JPEG file")
    marker, precision = frame_kind(original)
    if marker in _OTHER_FRAMES:
        raise CannotKeepBlocks(f"the original is a {_OTHER_FRAMES[marker]} JPEG; only baseline JPEGs can keep "
                               "their blocks")
    if marker not in _SPLICEABLE_FRAMES:
        raise CannotKeepBlocks("the original JPEG's frame header could not be read")
    if precision != 8:
        raise CannotKeepBlocks(f"the original is a {precision}-bit JPEG; only 8-bit JPEGs can keep their blocks")

    try:
        with Image.open(io.BytesIO(original)) as opened:
            if opened.mode != "RGB":
                kind = {"L": "greyscale", "CMYK": "CMYK"}.get(opened.mode, opened.mode)
                raise CannotKeepBlocks(f"the original is a {kind} JPEG (the app edits it converted to RGB)")
            orientation = stored_orientation(opened)
            opened.load()
            decoded = np.asarray(opened)  # mode RGB already: no converted copy
    except OSError as error:
        raise CannotKeepBlocks(f"the original could not be decoded again ({error})") from error
    stored = result.transpose(STORED_TRANSPOSE[orientation]) if orientation != 1 else result
    height, width = decoded.shape[:2]
    if stored.size != (width, height):
        upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        raise CannotKeepBlocks(f"the result is {result.width}×{result.height} pixels and the photo "
                               f"{upright[0]}×{upright[1]}: an outpainted or resized photo has other blocks")
    edited = np.asarray(stored)
    with tempfile.TemporaryDirectory(prefix="inpaint-studio-jpeg-") as folder:
        try:
            return _splice(edited, decoded, original, Path(folder))
        except CannotKeepBlocks:
            raise
        except Exception as error:  # noqa: BLE001 (libjpeg and Pillow raise many types: fall back, saying why)
            raise CannotKeepBlocks(f"its blocks could not be rewritten ({type(error).__name__}: {error})") from error


@functools.cache
def _jpeglib():
    import jpeglib  # imported on first use: it loads libjpeg

    jpeglib.version.set(_LIBJPEG)
    return jpeglib


def _standard_huffman_tables(jpeg) -> bool:
    try:
        tables = jpeg.huffmans[0]
        return (tuple(int(b) for b in tables["DC"].bits[1:17]) == _STANDARD_LUMA_DC_BITS
                and tuple(int(b) for b in tables["AC"].bits[1:17]) == _STANDARD_LUMA_AC_BITS)
    except (IndexError, KeyError, TypeError, AttributeError):
        return False


def _splice(edited: np.ndarray, decoded: np.ndarray, original: bytes, folder: Path) -> KeptBlocks:
    jpeglib = _jpeglib()
    height, width = decoded.shape[:2]
    source = folder / "original.jpg"
    source.write_bytes(original)
    jpeg = jpeglib.read_dct(str(source))
    jpeg.load()
    if jpeg.num_components != 3 or jpeg.jpeg_color_space.name != "JCS_YCbCr":
        raise CannotKeepBlocks(f"the original JPEG stores {jpeg.jpeg_color_space} colour, not YCbCr")
    factors = np.asarray(jpeg.samp_factor).reshape(-1, 2)
    luma = tuple(int(f) for f in factors[0])
    if luma not in _PILLOW_SUBSAMPLING or not (factors[1:] == 1).all():
        raise CannotKeepBlocks(f"the original uses an unusual chroma subsampling ({factors.tolist()})")
    mcu_h, mcu_w = 8 * luma[0], 8 * luma[1]
    rows, cols = -(-height // mcu_h), -(-width // mcu_w)

    changed = _changed_mcus(edited, decoded, mcu_h, mcu_w, rows, cols)
    total = rows * cols
    subsampling = _SUBSAMPLING_NAMES[luma]
    count = int(changed.sum())
    if count == 0:
        return KeptBlocks(original, 0, total, subsampling)

    # Encode only the MCU-aligned bounding box of the changed MCUs, with the original's tables.
    changed_rows, changed_cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    r0, r1 = int(changed_rows[0]), int(changed_rows[-1]) + 1
    c0, c1 = int(changed_cols[0]), int(changed_cols[-1]) + 1
    crop = edited[r0 * mcu_h:min(r1 * mcu_h, height), c0 * mcu_w:min(c1 * mcu_w, width)]
    tables = [np.asarray(table).reshape(64).astype(int).tolist() for table in jpeg.qt]
    crop_path = folder / "changed.jpg"
    Image.fromarray(np.ascontiguousarray(crop)).save(crop_path, "JPEG", qtables=tables,
                                                     subsampling=_PILLOW_SUBSAMPLING[luma])
    patch = jpeglib.read_dct(str(crop_path))
    patch.load()
    if (not np.array_equal(np.asarray(patch.qt), np.asarray(jpeg.qt))
            or list(patch.quant_tbl_no) != list(jpeg.quant_tbl_no)
            or not np.array_equal(np.asarray(patch.samp_factor).reshape(-1, 2), factors)):
        raise CannotKeepBlocks("the original's quantisation table layout could not be reproduced")

    window = changed[r0:r1, c0:c1]
    for name, (v, h) in zip(("Y", "Cb", "Cr"), ((luma[0], luma[1]), (1, 1), (1, 1))):
        full, part = getattr(jpeg, name), getattr(patch, name)
        top, left = r0 * v, c0 * h
        region = full[top:top + part.shape[0], left:left + part.shape[1]]
        if region.shape != part.shape:
            raise CannotKeepBlocks("the re-encoded blocks do not line up with the original's")
        blocks = np.repeat(np.repeat(window, v, axis=0), h, axis=1)[:part.shape[0], :part.shape[1]]
        region[blocks] = part[blocks]  # a view into ``full``: changed blocks replaced in place

    # The MPF index of a multi-picture file (phones' depth maps, previews) points at pictures after
    # the first one, which are not written: drop it rather than leave it pointing at nothing.
    jpeg.markers = [m for m in jpeg.markers if not bytes(m.content).startswith(b"MPF\x00")]
    out = folder / "kept.jpg"
    jpeg.write_dct(str(out), flags=[] if _standard_huffman_tables(jpeg) else ["OPTIMIZE_CODING"])
    return KeptBlocks(out.read_bytes(), count, total, subsampling)


def _changed_mcus(edited: np.ndarray, decoded: np.ndarray, mcu_h: int, mcu_w: int, rows: int, cols: int
                  ) -> np.ndarray:
    """rows × cols bool: which MCUs hold at least one pixel that differs."""
    height, width = decoded.shape[:2]
    changed = np.zeros((rows, cols * mcu_w * 3), dtype=bool)
    # One band of MCU rows at a time, each pixel row as bytes: OR-ing whole rows is fast.
    for row in range(rows):
        top, bottom = row * mcu_h, min((row + 1) * mcu_h, height)
        band = edited[top:bottom].reshape(bottom - top, width * 3) != decoded[top:bottom].reshape(bottom - top, width * 3)
        changed[row, :width * 3] = band.any(axis=0)
    return changed.reshape(rows, cols, mcu_w * 3).any(axis=2)
