"""Read a file that should hold an image: a regular file of bounded size, or a reason it is not.

Never blocks on a FIFO, never reads a device (a ``*.jpg`` link to ``/dev/zero``), never reads more
than the cap: the file is checked with ``stat`` before it is opened, opened non-blocking and
checked again on the open descriptor, and at most ``max_bytes + 1`` bytes are read.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

#: A default cap for photos: far above any camera's JPEG, far below a memory problem.
MAX_FILE_BYTES = 100_000_000


@dataclass(frozen=True)
class NotReadable:
    """Why a file was not read: ``check`` is ``not_a_file``, ``too_large`` or ``unreadable``."""

    check: str
    detail: str
    size: int = 0


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def read_regular_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes | NotReadable:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; never raises."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            return NotReadable("not_a_file", _kind(mode))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                return NotReadable("not_a_file", _kind(st.st_mode))
            if st.st_size > max_bytes:
                detail = f"{st.st_size:,} bytes; the cap is {max_bytes:,}"
                return NotReadable("too_large", detail, st.st_size)
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
        return NotReadable("unreadable", str(reason))
    if len(data) > max_bytes:
        return NotReadable("too_large", f"over {max_bytes:,} bytes (it grew while read)", len(data))
    return data
