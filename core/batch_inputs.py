"""The photos of a batch: a folder or a zip, listed without reading the pictures, read one at a time.

A zip is checked before anything is read from it: an entry with an absolute path or ``..`` refuses
the whole archive (zip-slip), as do more than ``max_entries`` entries or more than
``max_total_bytes`` uncompressed (zip bombs; each entry is also read with its declared size as a
hard limit). Hidden files and folders (``.DS_Store``, ``__MACOSX/``) are ignored; other files whose
extension is not an image's are listed as skipped, with the reason. Two photos with the same name
stem (``a.jpg`` and ``a.png``, or ``x/a.jpg`` and ``y/a.jpg``) get distinct output stems
(``a``, ``a-2``), in sorted order, so outputs never collide.
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import UserError
from core.operations.fields import MAX_VARIANTS

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .png .webp .tif .tiff .bmp .gif .heic .heif .avif".split()
)
MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 4 * 1024**3  # uncompressed


class BatchInputError(UserError):
    """The input as a whole cannot be used (missing, not a folder or zip, unsafe, too large)."""


@dataclass(frozen=True)
class InputItem:
    """One file of the input. ``name``: its path inside the folder or zip (POSIX); ``stem``: the
    unique stem its outputs are named after; ``source_stem``: the file's own stem, to find its
    mask by; ``skip``: why it is not processed, empty for a photo."""

    name: str
    stem: str
    source_stem: str
    path: Path  # the file, or the zip it is in
    member: str | None = None  # the zip entry
    size: int = 0
    skip: str = ""

    def read(self) -> bytes:
        """The file's bytes (a zip entry is read with its declared size as a hard limit)."""
        if self.member is None:
            return self.path.read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as entry:
                data = entry.read(self.size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
            # zipfile stops at the declared size, so an entry with more data than its header says
            # fails its CRC check here (BadZipFile), as does a damaged one; encrypted or unsupported
            # entries raise RuntimeError / NotImplementedError.
            raise BatchInputError(
                f"{self.name}: the zip entry cannot be read ({error}); it is damaged, encrypted, or larger "
                "than its zip header says."
            ) from error
        if len(data) > self.size:
            raise BatchInputError(f"{self.name}: larger than its zip header says; the archive is refused.")
        return data

    def to_dict(self) -> dict:
        return {"name": self.name, "stem": self.stem, "source_stem": self.source_stem, "path": str(self.path),
                "member": self.member, "size": self.size, "skip": self.skip}

    @classmethod
    def from_dict(cls, data: dict) -> InputItem:
        return cls(**{**data, "path": Path(data["path"])})


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _output_names(stem: str) -> set[str]:
    """Every output name ``stem`` may get (``stem``, ``stem-v2`` … for variants, see
    ``core.batch.output_names``), case-folded: on macOS and Windows ``A.png`` is ``a.png``."""
    return {name.casefold() for name in (stem, *(f"{stem}-v{i}" for i in range(2, MAX_VARIANTS + 1)))}


def _unique_stems(names: list[str]) -> list[str]:
    """Output stems for ``names`` (sorted paths): the file stem, with -2, -3, … for repeats, and
    for a stem whose outputs would collide with another's (``a-v2.jpg`` is ``a.jpg``'s second variant)."""
    seen: dict[str, int] = {}
    stems = []
    taken: set[str] = set()
    for name in names:
        stem = PurePosixPath(name).stem
        count = seen.get(stem, 0)
        candidate = stem if count == 0 else f"{stem}-{count + 1}"
        while _output_names(candidate) & taken:
            count += 1
            candidate = f"{stem}-{count + 1}"
        seen[stem] = count + 1
        taken |= _output_names(candidate)
        stems.append(candidate)
    return stems


def _items(path: Path, entries: list[tuple[str, str | None, int]]) -> list[InputItem]:
    entries = sorted(entries)
    photos = [name for name, _, _ in entries if PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS]
    stems = dict(zip(photos, _unique_stems(photos)))
    items = []
    for name, member, size in entries:
        source_stem = PurePosixPath(name).stem
        if name in stems:
            items.append(InputItem(name, stems[name], source_stem, path if member else path / name, member, size))
        else:
            suffix = PurePosixPath(name).suffix or "no extension"
            items.append(InputItem(name, source_stem, source_stem, path if member else path / name, member, size,
                                   skip=f"not a photo ({suffix}); skipped"))
    return items


def list_inputs(source: str | Path, *, max_entries: int = MAX_ENTRIES,
                max_total_bytes: int = MAX_TOTAL_BYTES) -> list[InputItem]:
    """The files of a folder (recursively) or a zip, sorted by path; nothing is decoded.

    Raises BatchInputError saying what is wrong with the input as a whole.
    """
    path = Path(source)
    if not path.exists():
        raise BatchInputError(f"{path}: no such folder or zip file.")
    if path.is_dir():
        entries = []
        for file in path.rglob("*"):
            relative = file.relative_to(path)
            if file.is_file() and not _hidden(relative.parts):
                entries.append((relative.as_posix(), None, file.stat().st_size))
        if len(entries) > max_entries:
            raise BatchInputError(f"{path}: {len(entries)} files, more than the limit of {max_entries}.")
        return _items(path, entries)
    if not zipfile.is_zipfile(path):
        raise BatchInputError(f"{path}: not a folder or a zip file. Give a folder of photos or a .zip of them.")
    return _items(path, _zip_entries(path, max_entries, max_total_bytes))


def _zip_entries(path: Path, max_entries: int, max_total_bytes: int) -> list[tuple[str, str, int]]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise BatchInputError(f"{path}: the zip file cannot be read ({error}).") from error
    if len(infos) > max_entries:
        raise BatchInputError(f"{path}: {len(infos)} entries, more than the limit of {max_entries}; refused.")
    total = sum(info.file_size for info in infos)
    if total > max_total_bytes:
        raise BatchInputError(
            f"{path}: {total / 1024**2:.0f} MB uncompressed, more than the limit of "
            f"{max_total_bytes / 1024**2:.0f} MB; refused."
        )
    entries = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise BatchInputError(f"{path}: the entry {info.filename!r} points outside the archive; refused.")
        if info.is_dir() or _hidden(parts):
            continue
        entries.append((name, info.filename, info.file_size))
    return entries


def mask_files(source: str | Path | None) -> dict[str, InputItem]:
    """Mask files by their file stem (``photo.png`` is the mask of ``photo.jpg``), from a folder
    or a zip; {} for None. Raises BatchInputError for an unusable source or two masks for one stem."""
    if source is None:
        return {}
    found: dict[str, InputItem] = {}
    for item in list_inputs(source):
        if item.skip:
            continue
        if item.source_stem in found:
            raise BatchInputError(
                f"{source}: two masks for {item.source_stem!r} ({found[item.source_stem].name} and {item.name}); "
                "keep one."
            )
        found[item.source_stem] = item
    return found
