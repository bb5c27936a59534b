"""Output folders written atomically: built in a temporary sibling, then renamed into place."""

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


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing output unless ``force``; call before any long work."""
    if out.exists() and not force:
        raise OutputExists(f"output folder {out} exists; use --force to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExists(f"output {out} exists and is not a folder")


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename.

    On an exception the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
