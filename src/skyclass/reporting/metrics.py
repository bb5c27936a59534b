"""Classification metrics from class indices: one implementation for every report.

The rule for a ratio with nothing to divide by is scikit-learn's ``zero_division=0``: a class
nobody predicted has precision 0.0, a class with no sample has recall 0.0, their F1 is 0.0, and
the accuracy of an empty set is 0.0 (``n`` = 0 says it is empty). Never NaN: metrics.json stays
strict JSON and a model card can print every figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """The metrics.json shape: accuracy, per-class P/R/F1, confusion (rows = true), n."""

    accuracy: float
    labels: tuple[str, ...]
    per_class: dict[str, ClassMetrics]
    confusion: tuple[tuple[int, ...], ...]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "labels": list(self.labels),
            "per_class": {k: asdict(v) for k, v in self.per_class.items()},
            "confusion": [list(r) for r in self.confusion],
            "n": self.n,
        }


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def classification_metrics(
    truth: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> Metrics:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix from class indices."""
    t = np.asarray(truth, dtype=np.int64).reshape(-1)
    p = np.asarray(predicted, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions")
    k = len(labels)
    if len(t) and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(f"class indices must lie in 0..{k - 1}")
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp, support = int(confusion[i, i]), int(confusion[i].sum())
        precision, recall = _ratio(tp, int(confusion[:, i].sum())), _ratio(tp, support)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = ClassMetrics(precision, recall, f1, support)
    return Metrics(
        accuracy=_ratio(int(np.trace(confusion)), len(t)),
        labels=tuple(labels),
        per_class=per_class,
        confusion=tuple(tuple(int(x) for x in row) for row in confusion),
        n=len(t),
    )
