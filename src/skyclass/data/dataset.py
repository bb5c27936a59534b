"""Manifests (CSV: path,label,group) and a torch Dataset over decoded, cached images.

Images are decoded once with the serving code (``load_resized``: EXIF-transposed RGB, antialiased
resize) by :func:`load_images` into a disk cache of ``.npy`` entries (content + settings keyed,
shared by processes) and read back beyond a memory budget, so memory does not grow with the
number of photos.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from skyclass.core.preprocess import IMAGE_SUFFIXES
from skyclass.progress import progress_bar
from skyclass.reporting.cells import from_spreadsheet_safe

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "group")


class DataError(ValueError):
    """A manifest or image that training cannot use; the message names the file."""


@dataclass(frozen=True)
class Manifest:
    """Rows of a split manifest, resolved against a data root."""

    source: Path
    root: Path
    paths: tuple[str, ...]
    labels: tuple[str, ...]
    groups: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def files(self) -> list[Path]:
        return [self.root / p for p in self.paths]

    def targets(self, class_names: Sequence[str]) -> list[int]:
        index = {c: i for i, c in enumerate(class_names)}
        return [index[label] for label in self.labels]


def class_names_from_root(root: str | Path) -> list[str]:
    """Class names = the data root's sub-folders that hold at least one image, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root not found: {root}")
    names = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir())
    )
    if len(names) < 2:
        raise DataError(f"{root}: need at least 2 class folders with images, found {names}")
    return names


def read_manifest(
    path: str | Path, root: str | Path, class_names: Sequence[str] | None = None
) -> Manifest:
    """Read and check a manifest: columns, non-empty, known labels, every file present."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}; has {columns}")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV: {exc}") from exc
    # An audit's clean.csv can be used as a manifest: rows it leaves out (status other than
    # "use") are skipped, as the split does.
    numbered = [
        (n, r) for n, r in enumerate(rows, start=2) if (r.get("status") or "use").strip() == "use"
    ]
    rows = [r for _, r in numbered]
    if not rows:
        raise DataError(f"{path}: the split is empty (no rows to use)")
    known = set(class_names) if class_names is not None else None
    for n, row in numbered:
        rel, label = _cell(row, "path"), _cell(row, "label")
        if not rel or not label:
            raise DataError(f"{path}:{n}: empty path or label")
        if known is not None and label not in known:
            raise DataError(
                f"{path}:{n}: unknown class {label!r} (classes: {', '.join(sorted(known))})"
            )
        full = root / rel
        if not full.is_file():
            raise DataError(f"{path}:{n}: file not found: {full}")
        if not os.access(full, os.R_OK):
            raise DataError(f"{path}:{n}: file not readable: {full}")
    return Manifest(
        source=path,
        root=root,
        paths=tuple(_cell(r, "path") for r in rows),
        labels=tuple(_cell(r, "label") for r in rows),
        groups=tuple(_cell(r, "group") for r in rows),
    )


def _cell(row: dict[str, str], column: str) -> str:
    """A manifest cell, stripped, its spreadsheet escape (``skyclass.reporting.cells``) undone."""
    return from_spreadsheet_safe((row.get(column) or "").strip())


#: Part of every cache key besides the caller's tag: bump it when the decoded pixels of the same
#: bytes and settings change (decode, EXIF, alpha handling, resize), so an old cache is not reused.
CACHE_FORMAT = 2
#: Decoded images held in RAM by default; the rest is read back from the disk cache on access.
DEFAULT_MEMORY_BUDGET_MB = 1024.0


def cache_key(data: bytes, tag: str) -> str:
    """Content + settings key of a decoded image: sha256 of the bytes, the caller's tag (size,
    interpolation, draft, background), the cache format and Pillow's version (its decoders and
    resize filters define the pixels)."""
    import PIL

    h = hashlib.sha256(data)
    h.update(f"{tag}|v{CACHE_FORMAT}|pillow-{PIL.__version__}".encode())
    return h.hexdigest()[:32]


def _entry_ok(path: Path) -> bool:
    """A complete ``.npy`` file: its header parses and the file holds all the array's bytes."""
    try:
        with path.open("rb") as fh:
            fmt = np.lib.format
            major, _ = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            need = fh.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
        return path.stat().st_size == need
    except (OSError, ValueError):
        return False


#: A temporary entry older than this was left by a killed process: removed by the next build.
STALE_TMP_S = 3600.0


def _remove_stale_temps(cache: Path) -> None:
    now = time.time()
    for tmp in cache.glob(".*.tmp.npy"):
        with suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()


def _write_entry(target: Path, arr: np.ndarray) -> None:
    """Atomic: a reader (another rank, a later run) sees the whole file or none."""
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, target)


@contextmanager
def _build_lock(cache: Path, name: str) -> Iterator[None]:
    """Exclusive lock per (cache dir, files + tag): ranks sharing a cache wait while the first
    one decodes, then find every entry written. Without fcntl (Windows) each entry is still
    written atomically by whoever gets there first."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    with (cache / f".build-{name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class DecodedImages(Sequence[np.ndarray]):
    """Decoded uint8 images by index: those within the memory budget held in RAM, the rest
    read back from their ``.npy`` cache entry on each access (the page cache keeps hot ones
    fast without counting against the process's memory)."""

    def __init__(self, held: list[np.ndarray | None], entries: list[Path | None]) -> None:
        self._held = held
        self._entries = entries

    def __len__(self) -> int:
        return len(self._held)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        arr = self._held[i]
        if arr is not None:
            return arr
        entry = self._entries[i]
        assert entry is not None
        return np.load(entry)

    @property
    def in_memory(self) -> int:
        """How many images are held in RAM."""
        return sum(a is not None for a in self._held)


def load_images(
    files: Sequence[Path],
    decode: Callable[[bytes], np.ndarray],
    *,
    tag: str,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "decode",
    memory_budget_mb: float | None = DEFAULT_MEMORY_BUDGET_MB,
) -> DecodedImages:
    """Decode every file with ``decode`` (bytes -> uint8 HWC) into a disk cache of ``.npy``
    entries keyed by :func:`cache_key`, written once and read back afterwards.

    Images are held in RAM in file order until ``memory_budget_mb`` is used up (None: all of
    them); the others are read from the cache on access, so memory stays flat as the set grows.
    Without ``cache_dir`` everything is held in RAM. ``tag`` names the decode settings. A file
    that cannot be decoded raises DataError naming it, before any training starts. Several
    processes may share one cache dir (see :func:`_build_lock`).
    """
    if cache_dir is None:
        return _decode_all(files, decode, progress=progress, desc=desc)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    budget = math.inf if memory_budget_mb is None else memory_budget_mb * 2**20
    lock_name = hashlib.sha256("\n".join([tag, *map(str, files)]).encode()).hexdigest()[:16]
    held: list[np.ndarray | None] = []
    entries: list[Path | None] = []
    used, hits, full = 0, 0, False
    with _build_lock(cache, lock_name):
        _remove_stale_temps(cache)
        for f in progress_bar(files, desc=desc, unit="img", enabled=progress):
            data = _read(f)
            target = cache / f"{cache_key(data, tag)}.npy"
            arr = None
            if _entry_ok(target):
                hits += 1
            else:
                arr = _decode(f, data, decode)
                _write_entry(target, arr)
            entries.append(target)
            if arr is None and not full:
                arr = np.load(target)
            if arr is not None and not full and used + arr.nbytes <= budget:
                used += arr.nbytes
                held.append(arr)
            else:
                # Same-size images: once one does not fit, none will.
                full = full or arr is not None
                held.append(None)
    images = DecodedImages(held, entries)
    log.info(
        "%s: %d images, %d from cache, %d held in RAM (%.0f MB)",
        desc, len(files), hits, images.in_memory, used / 2**20,
    )  # fmt: skip
    return images


def _read(f: Path) -> bytes:
    try:
        return Path(f).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {f}: {exc.strerror or exc}") from exc


def _decode(f: Path, data: bytes, decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
    from skyclass.core.errors import ImageError

    try:
        return decode(data)
    except ImageError as exc:
        raise DataError(f"cannot decode {f}: {exc}") from exc


def _decode_all(
    files: Sequence[Path], decode: Callable[[bytes], np.ndarray], *, progress: bool, desc: str
) -> DecodedImages:
    arrays: list[np.ndarray | None] = [
        _decode(f, _read(f), decode)
        for f in progress_bar(files, desc=desc, unit="img", enabled=progress)
    ]
    return DecodedImages(arrays, [None] * len(arrays))


class ImageDataset:
    """torch-style Dataset: (transform(image)["image"], target) over pre-decoded arrays."""

    def __init__(
        self, images: Sequence[np.ndarray], targets: Sequence[int], transform: Any
    ) -> None:
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        self.images = images
        self.targets = list(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transform(image=self.images[i])["image"], self.targets[i]

    def reseed(self, seed: int) -> None:
        """Reseed the transform's RNG (Albumentations Compose) for a reproducible stream."""
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)
