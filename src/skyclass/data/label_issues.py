"""Suspected label errors from out-of-fold probabilities: the confident joint (cleanlab's idea).

This module is the maths and the outputs only; it takes class probabilities that a model which never
saw a file gave it (``skyclass.train.label_issues`` computes them from frozen-backbone embeddings).

Per class j, the threshold t_j is the mean out-of-fold probability of j over the files labeled j
(how sure the model usually is of that class). A file labeled i is *confidently* class j when
p_j >= t_j; among such classes it is counted under the likeliest. Files counted under a class other
than their label are the suspects, ranked by how little the model believes the given label
(self-confidence p_i, lowest first).

A suspect is a question for a person, not a verdict: the output is a review sheet. Nothing is
dropped or relabeled until someone writes a decision, and the split applies those decisions
(``skyclass split --review``).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Columns of the review sheet, in order. ``decision``: one of skyclass.data.split.DECISIONS.
REVIEW_COLUMNS = ("path", "label", "suggested", "p_given", "decision", "new_label", "note")


@dataclass(frozen=True)
class LabelIssue:
    path: str
    label: str
    suggested: str
    p_given: float  # out-of-fold probability of the given label (self-confidence)
    p_suggested: float


@dataclass
class LabelIssueReport:
    config: dict[str, Any]
    class_names: list[str]
    n: int
    oof_accuracy: float
    thresholds: dict[str, float]
    #: confident_joint[i][j]: files labeled class i that are confidently class j.
    confident_joint: list[list[int]]
    issues: list[LabelIssue] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["issues"] = len(self.issues)
        data["issues_per_label"] = {
            c: sum(i.label == c for i in self.issues) for c in self.class_names
        }
        return data


def class_thresholds(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """t_j = mean of p_j over the files labeled j (1.0 for a class without files)."""
    k = probs.shape[1]
    return np.array([probs[y == j, j].mean() if np.any(y == j) else 1.0 for j in range(k)])


def confident_classes(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per file, the likeliest class whose probability reaches its threshold; -1 if none does."""
    above = probs >= thresholds[None, :]
    masked = np.where(above, probs, -np.inf)
    best = masked.argmax(axis=1)
    return np.where(above.any(axis=1), best, -1)


def find_issues(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(suspect indices ranked by self-confidence, their confident class, the confident joint)."""
    k = probs.shape[1]
    t = class_thresholds(probs, y)
    conf = confident_classes(probs, t)
    joint = np.zeros((k, k), dtype=int)
    for yi, ci in zip(y, conf, strict=True):
        if ci >= 0:
            joint[yi, ci] += 1
    suspects = np.flatnonzero((conf >= 0) & (conf != y))
    order = suspects[np.argsort(probs[suspects, y[suspects]], kind="stable")]
    return order, conf[order], joint


def check_folds(y: np.ndarray, folds: int) -> None:
    """Every class needs a file in each fold: refuse before any work otherwise."""
    smallest = int(np.bincount(y).min())
    if smallest < folds:
        raise ValueError(
            f"every class needs at least {folds} files (--folds); the smallest has {smallest}"
        )


def review_sheet(issues: Sequence[LabelIssue]) -> str:
    """The review sheet (CSV): one row per suspect, ``decision`` left for a person to fill in."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REVIEW_COLUMNS)
    for i in issues:
        w.writerow([i.path, i.label, i.suggested, f"{i.p_given:.4f}", "", "", ""])
    return buf.getvalue()


def write_outputs(
    report: LabelIssueReport, out: Path, *, force: bool = False, gallery: bool = True
) -> list[Path]:
    """summary.json, review.csv (to fill in) and gallery.html (thumbnails, given vs suggested)."""
    import json

    from skyclass.outputs import atomic_dir

    with atomic_dir(out, force) as tmp:
        (tmp / "summary.json").write_text(
            json.dumps(report.summary(), indent=2) + "\n", encoding="utf-8"
        )
        (tmp / "review.csv").write_text(review_sheet(report.issues), encoding="utf-8")
        if gallery:
            (tmp / "gallery.html").write_text(
                gallery_html(report, Path(report.config["data_root"])), encoding="utf-8"
            )
    return sorted(Path(out).iterdir())


def gallery_html(report: LabelIssueReport, root: Path) -> str:
    """One card per suspect, in review order: thumbnail, path, given and suggested label."""
    import html

    from skyclass.reporting.html import image_or_placeholder, page, thumbnail_uri

    cards = []
    for n, i in enumerate(report.issues, start=1):
        img = image_or_placeholder(thumbnail_uri(root / i.path), i.path)
        cards.append(
            f"<figure>{img}"
            f"<figcaption>#{n} {html.escape(i.path)}<br>given <b>{html.escape(i.label)}</b> "
            f"({i.p_given:.0%}), looks like <b>{html.escape(i.suggested)}</b> "
            f"({i.p_suggested:.0%})</figcaption></figure>"
        )
    return page(
        "label review",
        f"<h1>Suspected label errors: {len(report.issues)} of {report.n}</h1>"
        f"<p>Out-of-fold accuracy {report.oof_accuracy:.1%}. Fill in review.csv's decision "
        f"column (keep, exclude, relabel + new_label), then "
        f"<code>skyclass split ... --review review.csv</code>.</p>"
        f"<div class='grid'>{''.join(cards)}</div>",
    )
