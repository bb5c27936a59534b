"""List the files of a class-per-folder image set, without reading any of them."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

from skyclass.data.audit.schema import AuditInputError

_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def printable_name(name: str) -> str:
    """``name`` as valid UTF-8: bytes that are not (surrogate-escaped by ``os``) as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def list_images(root: Path) -> list[tuple[str, str]]:
    """(relative POSIX path, label) of every file under each class folder of ``root``, sorted.

    Class = top-level folder; files in nested folders belong to it. Hidden files and OS litter are
    skipped. Raises :class:`AuditInputError` for a missing folder, no class folders, an empty class
    or a symlink loop.
    """
    root = Path(root)
    if not root.exists():
        raise AuditInputError(f"data folder not found: {root}")
    if not root.is_dir():
        raise AuditInputError(f"not a folder: {root}")
    try:
        classes = sorted(
            e.name for e in os.scandir(root) if not e.name.startswith(".") and _is_dir(e.path)
        )
    except PermissionError as exc:
        raise AuditInputError(f"cannot list {root}: permission denied") from exc
    if not classes:
        raise AuditInputError(f"no class subfolders in {root} (expected one folder per class)")
    out: list[tuple[str, str]] = []
    for cls in classes:
        files = list(_walk(root / cls, root, {os.path.realpath(root)}))
        if not files:
            raise AuditInputError(f"class folder {cls!r} has no files")
        out.extend((rel, cls) for rel in sorted(files))
    return out


def _is_dir(path: str) -> bool:
    try:
        return os.path.isdir(path) and (os.stat(path) is not None)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AuditInputError(f"symlink loop at {path}") from exc
        raise


def _walk(folder: Path, root: Path, seen: set[str]) -> Iterator[str]:
    real = os.path.realpath(folder)
    if real in seen:
        raise AuditInputError(f"symlink loop at {folder} (points back to {real})")
    seen = seen | {real}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except PermissionError as exc:
        raise AuditInputError(f"cannot list {folder}: permission denied") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AuditInputError(f"symlink loop at {folder}") from exc
        raise
    for entry in entries:
        if entry.name.startswith(".") or entry.name in _IGNORED_NAMES:
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
            if not is_dir and entry.is_symlink():
                os.stat(entry.path)  # a dangling or looping link raises here
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise AuditInputError(f"symlink loop at {path}") from exc
            is_dir = False  # dangling link: reported as unreadable
        if is_dir:
            yield from _walk(path, root, seen)
        else:
            yield path.relative_to(root).as_posix()
