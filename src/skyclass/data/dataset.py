"""Manifests (CSV: path,label,group) and a torch Dataset over decoded, cached images.

Images are decoded once with the serving code (``load_resized``: EXIF-transposed RGB, antialiased
resize) and kept as uint8 arrays in memory, optionally also on disk as ``.npy`` files keyed by the
file's sha256 and the decode settings, so a second run starts in seconds.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.core.preprocess import IMAGE_SUFFIXES
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


def _cache_key(data: bytes, tag: str) -> str:
    h = hashlib.sha256(data)
    h.update(tag.encode())
    return h.hexdigest()[:32]


def load_images(
    files: Sequence[Path],
    decode: Callable[[bytes], np.ndarray],
    *,
    tag: str,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "decode",
) -> list[np.ndarray]:
    """Decode every file with ``decode`` (bytes -> uint8 HWC), using an on-disk npy cache.

    ``tag`` names the decode settings (size, interpolation, draft): it is part of the cache key.
    A file that cannot be decoded raises DataError naming it, before any training starts.
    """
    from tqdm import tqdm

    from skyclass.core.errors import ImageError

    cache = Path(cache_dir) if cache_dir else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    out: list[np.ndarray] = []
    hits = 0
    for f in tqdm(files, desc=desc, unit="img", disable=not progress, leave=False):
        try:
            data = Path(f).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {f}: {exc.strerror or exc}") from exc
        target = cache / f"{_cache_key(data, tag)}.npy" if cache is not None else None
        if target is not None and target.is_file():
            try:
                out.append(np.load(target))
                hits += 1
                continue
            except (OSError, ValueError):
                log.warning("cache entry %s unreadable; decoding again", target)
        try:
            arr = decode(data)
        except ImageError as exc:
            raise DataError(f"cannot decode {f}: {exc}") from exc
        if target is not None:
            tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, target)
        out.append(arr)
    log.info("%s: %d images, %d from cache", desc, len(out), hits)
    return out


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
