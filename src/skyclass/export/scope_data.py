"""Photos for fitting and measuring a scope score, and the ONNX outputs the scores need.

In-scope photos come from ``path,label,group`` manifests (train / val / test splits); out-of-scope
photos from a folder with a ``SOURCES.tsv`` (``file``, ``source_repo``, ``note`` with
``group=aircraft|insect|scene|everyday``), as ``../shared/data/out-of-scope`` has. Every photo goes
through the serving preprocess, then through ONNX Runtime in small batches (memory stays flat).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyclass.core.errors import ImageError
from skyclass.core.preprocess import PreprocessConfig, preprocess
from skyclass.export.config import ExportError
from skyclass.export.images import ImageRow
from skyclass.export.onnx_outputs import FEATURES, LOGITS

log = logging.getLogger(__name__)

#: How the out-of-scope groups are reported (the issue's three categories).
CATEGORY = {"aircraft": "aircraft", "scene": "scenes", "everyday": "everyday", "insect": "everyday"}


@dataclass(frozen=True)
class OutOfScopeRow:
    path: Path
    source: str
    group: str

    @property
    def category(self) -> str:
        return CATEGORY.get(self.group, self.group)


def read_out_of_scope(folder: Path) -> list[OutOfScopeRow]:
    """Rows of ``folder/SOURCES.tsv`` (sorted by file name)."""
    table = folder / "SOURCES.tsv"
    if not table.is_file():
        raise ExportError(f"no SOURCES.tsv in {folder}")
    rows = []
    with open(table, encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh, delimiter="\t"):
            try:
                note, file, source = rec["note"] or "", rec["file"], rec["source_repo"]
            except KeyError as exc:
                raise ExportError(f"{table}: missing column {exc}") from exc
            group = next(
                (p.split("=", 1)[1] for p in note.replace(";", " ").split() if "group=" in p),
                "other",
            )
            rows.append(OutOfScopeRow(folder / file, source, group))
    if not rows:
        raise ExportError(f"{table} lists no photos")
    return sorted(rows, key=lambda r: r.path.name)


@dataclass(frozen=True)
class Outputs:
    """ONNX outputs for a list of photos; ``kept`` indexes the input rows that could be read."""

    logits: np.ndarray
    features: np.ndarray
    kept: np.ndarray


def run_outputs(
    model: Path,
    paths: list[Path],
    config: PreprocessConfig,
    *,
    batch_size: int = 16,
    threads: int = 2,
) -> Outputs:
    """``logits`` and ``features`` of ``model`` (which must have them) for each readable photo."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = {o.name for o in session.get_outputs()}
    if not {LOGITS, FEATURES} <= names:
        raise ExportError(f"{model.name} has no {LOGITS!r}/{FEATURES!r} outputs")
    input_name = session.get_inputs()[0].name
    logits, features, kept = [], [], []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            lo, fe = session.run([LOGITS, FEATURES], {input_name: np.concatenate(batch)})
            logits.append(lo.astype(np.float32))
            features.append(fe.astype(np.float32))
            batch.clear()

    for i, path in enumerate(paths):
        try:
            batch.append(preprocess(path.read_bytes(), config))
            kept.append(i)
        except (OSError, ImageError) as exc:
            log.warning("skipping %s: %s", path, exc)
        if len(batch) == batch_size:
            flush()
    flush()
    if not kept:
        raise ExportError("none of the photos could be read")
    return Outputs(np.concatenate(logits), np.concatenate(features), np.array(kept))


def label_indices(rows: list[ImageRow], labels: tuple[str, ...]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    missing = sorted({r.label for r in rows} - set(index))
    if missing:
        raise ExportError(f"manifest labels not among the model's: {', '.join(missing)}")
    return np.array([index[r.label] for r in rows], dtype=np.int64)
