"""An evaluation report folder (metrics.json, confusion.png, predictions.csv), read for trackers."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EvalReport:
    """What an evaluation report folder holds, read once for every tracker."""

    folder: Path
    metrics: Mapping[str, Any]
    confusion_png: Path | None
    #: Misclassified photos, highest loss first: (file, caption).
    misclassified: tuple[tuple[Path, str], ...]

    def scalars(self, split: str) -> dict[str, float]:
        """``split/accuracy`` and ``split/CLASS/precision|recall|f1`` as floats."""
        out = {f"{split}/accuracy": float(self.metrics["accuracy"])}
        for label, m in self.metrics.get("per_class", {}).items():
            for key in ("precision", "recall", "f1"):
                out[f"{split}/{label}/{key}"] = float(m[key])
        return out


def read_eval_report(folder: Path, limit: int = 16) -> EvalReport:
    """Read what ``write_eval_reports`` wrote into ``folder``; the gallery is the ``limit``
    misclassified photos of predictions.csv with the highest loss (the HTML gallery's order)."""
    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    wrong: list[tuple[float, int, Path, str]] = []
    predictions = folder / "predictions.csv"
    if predictions.is_file():
        with predictions.open(newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                if row["label"] != row["predicted"]:
                    caption = (
                        f"{row['label']} predicted as {row['predicted']} "
                        f"({float(row['confidence']):.0%}): {Path(row['file']).name}"
                    )
                    wrong.append((-float(row["loss"]), i, Path(row["file"]), caption))
    wrong.sort()
    png = folder / "confusion.png"
    return EvalReport(
        folder=folder,
        metrics=metrics,
        confusion_png=png if png.is_file() else None,
        misclassified=tuple((f, c) for _, _, f, c in wrong[:limit]),
    )
