"""EXIF orientation: the transposes between a photo's stored pixels and its upright view.

The loader (``core.images``) turns stored pixels upright; ``core.jpeg_keep`` turns an edited,
upright image back into the file's stored layout. Both use the tables here, so they cannot drift
apart.
"""
from __future__ import annotations

from PIL import ExifTags, Image

ORIENTATION_TAG = ExifTags.Base.Orientation

UPRIGHT_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation → the transpose that makes the stored pixels upright (orientation 1 = upright)."""

# Flips, the 180° turn and (anti)transposition undo themselves; a quarter turn is undone by the
# opposite quarter turn, so orientations 6 and 8 swap rotations.
_UNDO = {Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
         Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90}

STORED_TRANSPOSE = {orientation: _UNDO.get(transpose, transpose)
                    for orientation, transpose in UPRIGHT_TRANSPOSE.items()}
"""EXIF orientation → the transpose that turns upright pixels back into the file's stored layout."""
