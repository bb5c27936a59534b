"""How consistently does each source label two classes? (the large vs small quadcopter question)

For each source that holds photos of both classes, a logistic regression on frozen ImageNet
MobileNetV2 features (skyclass.train.label_issues.embed) is cross-validated on that source's photos
alone: a source whose labels follow a visual rule scores high, one whose labels contradict each
other scores low, whatever the other sources do. It also trains on every other source and tests
on each source, which shows whether the sources share one convention.

    python scripts/label_consistency.py docs/data/splits-reviewed/{train,val,test}.csv \\
        --sources ../shared/data/flying-objects/SOURCES.tsv

Needs the train extra (torch). Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifests", nargs="+", type=Path, help="Manifests (path,label,...) to pool.")
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data/flying-objects"))
    ap.add_argument(
        "--sources", type=Path, required=True, help="CSV/TSV naming each file's source."
    )
    ap.add_argument("--source-column", default="source_repo")
    ap.add_argument("--classes", nargs=2, default=["large_quadcopters", "small_quadcopters"])
    ap.add_argument("--weights", default="../shared/weights/mobilenet_v2_imagenet.pth")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skyclass.data.split import read_groups
    from skyclass.train.label_issues import LabelIssueConfig, embed

    source_of = read_groups(args.sources, args.source_column)
    rows = [
        r
        for m in args.manifests
        for r in csv.DictReader(m.open(encoding="utf-8"))
        if r["label"] in args.classes
    ]
    config = LabelIssueConfig(
        manifest=args.manifests[0], data_root=args.data_root, weights=args.weights
    )
    x = embed([args.data_root / r["path"] for r in rows], config)
    y = np.array([args.classes.index(r["label"]) for r in rows])
    src = np.array([source_of.get(r["path"], "?") for r in rows])

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=3000))

    print(
        f"{'source':50s} {'n':>5s} {args.classes[0][:8]:>8s} {args.classes[1][:8]:>8s}"
        f" {'own CV':>7s} {'others->':>8s}"
    )
    for s, n in Counter(src).most_common():
        m = src == s
        counts = np.bincount(y[m], minlength=2)
        own = "-"
        if counts.min() >= args.folds:
            cv = StratifiedKFold(args.folds, shuffle=True, random_state=0)
            own = f"{np.mean(cross_val_predict(model(), x[m], y[m], cv=cv) == y[m]):.3f}"
        rest = ~m
        other = "-"
        if len(set(y[rest])) == 2:
            other = f"{np.mean(model().fit(x[rest], y[rest]).predict(x[m]) == y[m]):.3f}"
        print(f"{s:50s} {n:5d} {counts[0]:8d} {counts[1]:8d} {own:>7s} {other:>8s}")
    cv = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    print(
        f"{'all sources pooled':50s} {len(y):5d} {'':8s} {'':8s}"
        f" {np.mean(cross_val_predict(model(), x, y, cv=cv) == y):7.3f}"
    )


if __name__ == "__main__":
    main()
