"""The csv tracker: ``metrics.csv`` in the run dir, one row per epoch, always on.

It is the run's record: unlike the other trackers, a failure to write it stops the run.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skyclass.outputs import write_text_atomic
from skyclass.train.trackers.base import RunInfo
from skyclass.train.trackers.report import EvalReport

METRICS_COLUMNS = (
    "epoch",
    "stage",
    "stage_epoch",
    "max_lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "train_images_per_s",
    "val_images_per_s",
    "seconds",
)


def write_metrics_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """All ``rows`` as metrics.csv (floats to 6 significant digits), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return write_text_atomic(path, buf.getvalue())


class CsvTracker:
    """Rewrites metrics.csv (atomically) after every epoch; a resumed run starts from the
    checkpoint's history, so the file is complete whatever the crash point was."""

    name = "csv"
    required = True

    def __init__(self, info: RunInfo, previous: Mapping[str, Any]) -> None:
        self.path = info.run_dir / "metrics.csv"
        self.rows: list[Mapping[str, Any]] = list(info.history)

    def state(self) -> dict[str, Any]:
        return {"path": self.path.name}

    def log_epoch(self, step: int, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        write_metrics_csv(self.path, self.rows)

    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        return None  # config.json is written by the run itself

    def log_step(self, step: int, loss: float, lr: float) -> None:
        return None

    def log_stage(self, step: int, stage: str, info: Mapping[str, Any]) -> None:
        return None

    def log_curve(
        self, step: int, tag: str, xs: Sequence[float], ys: Sequence[float], x: str, y: str
    ) -> None:
        return None

    def log_eval(self, step: int, split: str, report: EvalReport) -> None:
        return None

    def log_image(self, step: int, tag: str, path: Path) -> None:
        return None

    def log_artifact(self, step: int, path: Path, name: str, sha256: str) -> None:
        return None

    def finish(self) -> None:
        return None
