"""Image files on disk: find them under folders, and read one within the byte limit.

A file is checked by ``stat`` before it is opened (only regular files; the size limit before any
byte is read), then read with a bound, so a FIFO, a device or a 3 GB file costs nothing. Folders
that cannot be entered are reported, never skipped silently.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from skyclass.core.errors import EmptyImage, ImageTooLarge, NotAnImage
from skyclass.core.preprocess import IMAGE_SUFFIXES, ImageLimits


@dataclass(frozen=True)
class FoundImages:
    """Image files found, in order, and the folders that could not be read (with the reason)."""

    files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _walk(folder: Path, found: FoundImages) -> None:
    def onerror(exc: OSError) -> None:
        found.unreadable.append((Path(exc.filename or folder), _reason(exc)))

    files: list[Path] = []
    for top, dirs, names in os.walk(folder, onerror=onerror):
        dirs.sort()
        for name in names:
            path = Path(top) / name
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                files.append(path)
    found.files.extend(sorted(files))


def find_images(paths: list[Path]) -> FoundImages:
    """Files as given (any extension), and image files under folders (recursive, sorted; symlinked
    folders are not followed). Raises FileNotFoundError for a path that does not exist."""
    found = FoundImages()
    for path in paths:
        if path.is_dir():
            _walk(path, found)
        elif path.exists() or path.is_symlink():
            found.files.append(path)
        else:
            raise FileNotFoundError(2, "no such file or folder", str(path))
    return found


def read_image_file(path: str | Path, limits: ImageLimits | None = None) -> bytes:
    """The bytes of an image file, refusing before reading: anything but a regular file, and a
    file over ``limits.max_bytes``. Raises an ImageError for those, OSError when unreadable."""
    limits = limits or ImageLimits()
    info = os.stat(path)  # follows a symlink: its target is what would be read
    if not stat.S_ISREG(info.st_mode):
        raise NotAnImage("not a regular file")
    if info.st_size > limits.max_bytes:
        raise ImageTooLarge(
            f"the file is {info.st_size:,} bytes; the limit is {limits.max_bytes:,} bytes"
        )
    with open(path, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped since the stat
            raise NotAnImage("not a regular file")
        data = fh.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:  # grew since the stat
        raise ImageTooLarge(f"the file is over the limit of {limits.max_bytes:,} bytes")
    if not data:
        raise EmptyImage("the file is empty (0 bytes)")
    return data
