"""Suspected label errors: out-of-fold predictions and the confident joint (cleanlab's idea).

Every file of a manifest is embedded once by the frozen ImageNet backbone (the 1,280-d pooled
``features`` output, averaged with its mirror image); a logistic regression is fitted K times, each
time without one fold, so every file gets class probabilities from a model that never saw it.
Folds keep the manifest's ``group`` (near duplicates) together, or a mislabeled photo's copy
would vouch for its wrong label.

Per class j, the threshold t_j is the mean out-of-fold probability of j over the files labeled j
(how sure the model usually is of that class). A file labeled i is *confidently* class j when
p_j >= t_j; among such classes it is counted under the likeliest. Files counted under a class other
than their label are the suspects, ranked by how little the model believes the given label
(self-confidence p_i, lowest first).

A suspect is a question for a person, not a verdict: the output is a review sheet. Nothing is
dropped or relabeled until someone writes a decision, and the split applies those decisions
(``skyclass split --review``). This needs the ``train`` extra (torch) for the embeddings.
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
class LabelIssueConfig:
    manifest: Path
    data_root: Path
    weights: str
    folds: int = 5
    seed: int = 0
    image_size: int = 224
    batch_size: int = 64
    threads: int = 2
    #: Inverse regularisation of the logistic regression (sklearn's C).
    c: float = 0.5
    cache_dir: str | None = ".cache/skyclass"

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if self.c <= 0:
            raise ValueError(f"c must be > 0, got {self.c}")


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


def out_of_fold_probs(
    x: np.ndarray, y: np.ndarray, groups: Sequence[str], folds: int, seed: int, c: float
) -> np.ndarray:
    """Class probabilities for every row from a logistic regression fitted without its fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(y.max()) + 1
    check_folds(y, folds)
    probs = np.zeros((len(y), k))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held_idx in splitter.split(x, y, groups=list(groups)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(x[fit_idx], y[fit_idx])
        held = clf.predict_proba(x[held_idx])
        probs[np.ix_(held_idx, clf[-1].classes_)] = held
    return probs


def embed(files: Sequence[Path], config: LabelIssueConfig, *, progress: bool = True) -> np.ndarray:
    """Frozen backbone embeddings (N, 1280): pooled ``features`` of the image and its mirror."""
    import torch
    from tqdm import tqdm

    from skyclass.core.preprocess import PreprocessConfig
    from skyclass.data.dataset import load_images
    from skyclass.data.transforms import build_test_transform, eval_cache_tag, eval_input
    from skyclass.model import build_model

    torch.set_num_threads(config.threads)
    pre = PreprocessConfig(size=(config.image_size, config.image_size))
    images = load_images(
        files,
        lambda b: eval_input(b, pre),
        tag=eval_cache_tag(pre),
        cache_dir=config.cache_dir,
        progress=progress,
        desc="decode",
    )
    tf = build_test_transform(pre)
    model = build_model(2, weights=config.weights).eval()
    out = []
    with torch.no_grad():
        steps = range(0, len(images), config.batch_size)
        for s in tqdm(steps, desc="embed", unit="batch", disable=not progress, leave=False):
            x = torch.stack([tf(image=im)["image"] for im in images[s : s + config.batch_size]])
            f = model.features(x).mean(dim=(2, 3)) + model.features(x.flip(3)).mean(dim=(2, 3))
            out.append((f / 2).numpy())
    return np.concatenate(out)


def run_label_issues(config: LabelIssueConfig, *, progress: bool = True) -> LabelIssueReport:
    """Embed, cross-validate, and list the suspects of ``config.manifest``."""
    from skyclass.data.dataset import class_names_from_root, read_manifest

    names = class_names_from_root(config.data_root)
    manifest = read_manifest(config.manifest, config.data_root, names)
    y = np.array(manifest.targets(names))
    groups = [g or p for g, p in zip(manifest.groups, manifest.paths, strict=True)]
    check_folds(y, config.folds)
    x = embed(manifest.files(), config, progress=progress)
    probs = out_of_fold_probs(x, y, groups, config.folds, config.seed, config.c)
    order, suggested, joint = find_issues(probs, y)
    t = class_thresholds(probs, y)
    issues = [
        LabelIssue(
            path=manifest.paths[i],
            label=names[y[i]],
            suggested=names[j],
            p_given=round(float(probs[i, y[i]]), 4),
            p_suggested=round(float(probs[i, j]), 4),
        )
        for i, j in zip(order, suggested, strict=True)
    ]
    cfg = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    return LabelIssueReport(
        config=cfg,
        class_names=names,
        n=len(y),
        oof_accuracy=round(float((probs.argmax(1) == y).mean()), 4),
        thresholds={n: round(float(v), 4) for n, v in zip(names, t, strict=True)},
        confident_joint=joint.tolist(),
        issues=issues,
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

    from skyclass.train.reports import thumbnail_b64

    cards = []
    for n, i in enumerate(report.issues, start=1):
        src = thumbnail_b64(root / i.path)
        cards.append(
            f'<figure><img src="data:image/jpeg;base64,{src}" alt="{html.escape(i.path)}">'
            f"<figcaption>#{n} {html.escape(i.path)}<br>given <b>{html.escape(i.label)}</b> "
            f"({i.p_given:.0%}), looks like <b>{html.escape(i.suggested)}</b> "
            f"({i.p_suggested:.0%})</figcaption></figure>"
        )
    style = (
        "body{font-family:sans-serif;margin:1em}figure{display:inline-block;width:200px;"
        "margin:6px;vertical-align:top;font-size:12px}img{max-width:200px;max-height:160px}"
    )
    return (
        f"<!doctype html><meta charset=utf-8><title>label review</title><style>{style}</style>"
        f"<h1>Suspected label errors: {len(report.issues)} of {report.n}</h1>"
        f"<p>Out-of-fold accuracy {report.oof_accuracy:.1%}. Fill in review.csv's decision "
        f"column (keep, exclude, relabel + new_label), then "
        f"<code>skyclass split ... --review review.csv</code>.</p>" + "".join(cards)
    )
