"""Real images for calibration and parity: manifest rows or a folder, through the serving path."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyclass.core.errors import ImageError
from skyclass.core.preprocess import IMAGE_SUFFIXES, PreprocessConfig, preprocess
from skyclass.data import dataset
from skyclass.export.config import ExportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRow:
    """One image: its file, its label (folder name; may be empty) and its leakage group."""

    path: Path
    label: str
    group: str = ""


def read_manifest(manifest: Path, data_root: Path | None) -> list[ImageRow]:
    """Rows of a ``path,label,group`` manifest, read and checked by the one manifest reader."""
    if data_root is None:
        raise ExportError(f"{manifest.name}: no data root given (--data-root)")
    try:
        rows = dataset.read_manifest(manifest, data_root)
    except dataset.DataError as exc:
        raise ExportError(str(exc)) from exc
    return [
        ImageRow(path, label, group)
        for path, label, group in zip(rows.files(), rows.labels, rows.groups, strict=True)
    ]


def scan_folder(root: Path) -> list[ImageRow]:
    """Every image under ``root`` (sorted); the label is the first folder below the root."""
    if not root.is_dir():
        raise ExportError(f"data root not found: {root}")
    rows = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            rel = path.relative_to(root)
            rows.append(ImageRow(path, rel.parts[0] if len(rel.parts) > 1 else ""))
    if not rows:
        raise ExportError(f"no images under {root}")
    return rows


def sample_rows(rows: list[ImageRow], n: int | None, seed: int) -> list[ImageRow]:
    """A deterministic sample of ``n`` rows, spread over labels in proportion; all if n is None."""
    if n is None or n >= len(rows):
        return list(rows)
    rng = random.Random(seed)
    by_label: dict[str, list[ImageRow]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row)
    for group in by_label.values():
        rng.shuffle(group)
    # Round-robin over labels in proportion to their size: take rows by their quantile rank.
    ranked = sorted(
        (i / len(group), label, i) for label, group in by_label.items() for i in range(len(group))
    )
    return [by_label[label][i] for _, label, i in ranked[:n]]


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed images: ``tensors`` (N,3,H,W) float32 and the rows they came from."""

    rows: tuple[ImageRow, ...]
    tensors: np.ndarray
    skipped: tuple[str, ...] = ()


def load_images(rows: list[ImageRow], config: PreprocessConfig) -> ImageSet:
    """Decode and preprocess with :func:`skyclass.core.preprocess.preprocess`, the serving path.

    Unreadable files are skipped (and counted); raw data sets hold a few.
    """
    kept, arrays, skipped = [], [], []
    for row in rows:
        try:
            arrays.append(preprocess(row.path.read_bytes(), config)[0])
            kept.append(row)
        except (OSError, ImageError) as exc:
            log.warning("skipping %s: %s", row.path, exc)
            skipped.append(str(row.path))
    if not arrays:
        raise ExportError("none of the images could be read")
    return ImageSet(tuple(kept), np.stack(arrays).astype(np.float32), tuple(skipped))
