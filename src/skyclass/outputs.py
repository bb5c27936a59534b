"""Outputs written atomically, for every command: files via a temp file + rename, folders built in a
temporary sibling and renamed into place. Nothing half-written ever carries a final name."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputExists(Exception):
    """The output folder exists and overwriting was not asked for."""

    exit_code: int = 2


class OutputNotWritable(OutputExists):
    """The output cannot be created where it was asked for (read-only, not a folder)."""


def check_writable(out: Path) -> None:
    """Refuse, before any long work, an output that could not be written: its nearest existing
    ancestor must be a folder this process can create files in (tested by creating one)."""
    out = Path(out)
    parent = out.parent.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputNotWritable(f"cannot write {out}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.probe-", dir=parent)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputNotWritable(f"cannot write {out}: {parent}: {reason}") from None
    os.close(fd)
    os.unlink(probe)


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing output unless ``force``, and one that could not be written; call
    before any long work."""
    if out.exists() and not force:
        raise OutputExists(f"output folder {out} exists; use --force to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExists(f"output {out} exists and is not a folder")
    check_writable(out)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temp file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temp_dirs(out: Path) -> list[Path]:
    """Remove the temp folders ``.{out.name}.tmp-{pid}-*`` beside ``out`` whose process is gone (a
    run killed before it could clean up); a live process's folder is left alone. Returns them."""
    removed: list[Path] = []
    prefix = f".{out.name}.tmp-"
    if not out.parent.is_dir():
        return removed
    for p in out.parent.iterdir():
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if p.name.startswith(prefix) and pid.isdigit() and p.is_dir() and not _running(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def make_temp_dir(out: Path) -> Path:
    """A new hidden folder beside ``out`` for building it (``.{name}.tmp-{pid}-XXXX``), after
    removing those that killed runs left behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(out)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))


def publish_dir(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``, replacing ``out`` if it exists (the caller
    has checked --force); on a failed swap the old ``out`` is put back."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp made it 0700
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename.

    On an exception the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    check_output(out, force)
    tmp = make_temp_dir(out)
    try:
        yield tmp
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
