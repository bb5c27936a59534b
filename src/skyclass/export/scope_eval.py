"""Measuring scope scores: every method fitted on in-scope train features, its threshold
calibrated on in-scope val photos (keep 95%), measured on in-scope test photos and on
out-of-scope photos.

Methods that use out-of-scope photos (outlier exposure) are measured leave-one-source-out: for each
``source_repo``, a head is trained on the other sources and measured on that one, so every
out-of-scope figure is on a source the detector never saw. AUROC is then the photo-weighted mean of
the per-source AUROCs (each against the in-scope test photos, scored by that fold's head).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from skyclass.core.scope_methods import METHODS, knn, knn_pca, oe_energy
from skyclass.export.scope_fit import (
    OEConfig,
    auroc,
    fit_knn,
    fit_knn_pca,
    fit_mahalanobis,
    fit_none,
    fit_oe_head,
    fit_oe_logreg,
    keep_threshold,
    unit_scale,
)

Arrays = dict[str, np.ndarray]
#: Methods fitted on in-scope train features alone.
IN_SCOPE_FITS = {
    "msp": fit_none,
    "energy": fit_none,
    "mahalanobis": fit_mahalanobis,
    "knn": fit_knn,
    "knn_pca": fit_knn_pca,
}
#: The "both must say in scope" methods: the OE head's energy and this kNN method, one scale.
OE_AND_KNN = {"oe_energy_knn": ("knn", knn), "oe_energy_knn_pca": ("knn_pca", knn_pca)}
CATEGORIES = ("aircraft", "scenes", "everyday")
#: The issue's targets: FPR at 95% kept per category, AUROC overall.
FPR_TARGET = {"aircraft": 0.25, "scenes": 0.10, "everyday": 0.10}
AUROC_TARGET = 0.95


@dataclass(frozen=True)
class Split:
    """ONNX outputs of one set of photos (labels: class index, or -1 out of scope)."""

    outputs: Arrays
    labels: np.ndarray
    sources: np.ndarray = field(default_factory=lambda: np.array([]))
    categories: np.ndarray = field(default_factory=lambda: np.array([]))

    def subset(self, mask: np.ndarray) -> Split:
        return Split(
            {k: v[mask] for k, v in self.outputs.items()},
            self.labels[mask],
            self.sources[mask] if len(self.sources) else self.sources,
            self.categories[mask] if len(self.categories) else self.categories,
        )


@dataclass(frozen=True)
class Figures:
    method: str
    outlier_exposure: bool
    threshold: float
    auroc: float
    fpr: dict[str, float]
    out_counts: dict[str, int]
    val_kept: float
    test_kept: float
    rejected_per_class: dict[str, list[int]]
    accuracy_all: float
    accuracy_accepted: float

    @property
    def targets_met(self) -> int:
        """How many of the four targets (AUROC, FPR per category) are met."""
        fpr = [self.fpr.get(c, 1.0) <= t for c, t in FPR_TARGET.items()]
        return int(self.auroc >= AUROC_TARGET) + sum(fpr)

    @property
    def meets_targets(self) -> bool:
        return self.auroc >= AUROC_TARGET and all(
            self.fpr.get(c, 0.0) <= t for c, t in FPR_TARGET.items()
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"meets_targets": self.meets_targets}


def with_log_probs(logits: np.ndarray, features: np.ndarray) -> Arrays:
    z = logits.astype(np.float64)
    top = z.max(axis=1, keepdims=True)
    log_probs = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
    return {"logits": logits, "features": features, "log_probs": log_probs.astype(np.float32)}


def fit_method(
    method: str,
    train: Split,
    head: tuple[np.ndarray, np.ndarray],
    outliers: Split | None,
    cache: dict[tuple[str, str], Arrays] | None = None,
    key: str = "all",
    val: Split | None = None,
) -> Arrays:
    """Parameters of ``method``; ``cache`` shares the OE head of oe_msp and oe_energy (one fit
    per out-of-scope subset ``key``), which are the same head scored two ways."""
    if cache is not None and method in ("oe_msp", "oe_energy"):
        if ("oe_head", key) not in cache:
            cache[("oe_head", key)] = fit_method("oe_msp", train, head, outliers)
        return cache[("oe_head", key)]
    if method in OE_AND_KNN:
        if val is None:
            raise ValueError(f"{method} puts its two scores on one scale with val photos")
        oe_head = fit_method("oe_energy", train, head, outliers, cache, key)
        return _oe_and_knn(method, oe_head, train, head, val)
    n = len(head[1])
    f, y = train.outputs["features"], train.labels
    if method in IN_SCOPE_FITS:
        return IN_SCOPE_FITS[method](f, y, n)
    if method in ("oe_msp", "oe_energy"):
        if outliers is None:
            raise ValueError("outlier exposure needs out-of-scope photos")
        return fit_oe_head(f, y, outliers.outputs["features"], head[0], head[1], OEConfig())
    if method == "oe_logreg":
        if outliers is None:
            raise ValueError("outlier exposure needs out-of-scope photos")
        return fit_oe_logreg(f, outliers.outputs["features"])
    raise ValueError(f"unknown method {method!r}")


def _oe_and_knn(
    method: str, oe_head: Arrays, train: Split, head: tuple[np.ndarray, np.ndarray], val: Split
) -> Arrays:
    """The OE head and the kNN parameters of ``method``, each score's val scale beside them."""
    near, near_score = OE_AND_KNN[method]
    both = oe_head | fit_method(near, train, head, None)
    oe_c, oe_s = unit_scale(oe_energy(both, val.outputs))
    knn_c, knn_s = unit_scale(near_score(both, val.outputs))
    scales = {"oe_center": oe_c, "oe_scale": oe_s, "knn_center": knn_c, "knn_scale": knn_s}
    return both | {k: np.array(v, dtype=np.float64) for k, v in scales.items()}


def _in_scope_figures(
    scores: np.ndarray, threshold: float, test: Split, labels: tuple[str, ...]
) -> dict[str, Any]:
    kept = scores >= threshold
    pred = test.outputs["logits"].argmax(axis=1)
    right = pred == test.labels
    rejected = {
        label: [int((~kept & (test.labels == c)).sum()), int((test.labels == c).sum())]
        for c, label in enumerate(labels)
    }
    return {
        "test_kept": float(kept.mean()),
        "rejected_per_class": rejected,
        "accuracy_all": float(right.mean()),
        "accuracy_accepted": float(right[kept].mean()) if kept.any() else float("nan"),
    }


def _nan_mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def evaluate(
    method: str,
    fit: dict[str, Split],
    measure: dict[str, Split],
    head: tuple[np.ndarray, np.ndarray],
    labels: tuple[str, ...],
    cache: dict[tuple[str, str], Arrays] | None = None,
) -> tuple[Figures, Arrays]:
    """Figures for ``method`` and its parameters fitted on all of ``fit``.

    ``fit`` holds the fp32 ``train``, ``val`` and ``out`` splits the parameters are fitted on;
    ``measure`` the ``val``, ``test`` and ``out`` splits of the variant measured (the same
    photos, through that variant's ONNX file). The threshold keeps 95% of ``measure["val"]``.
    """
    score = METHODS[method]
    oe = method.startswith("oe_")
    val, test, out = measure["val"], measure["test"], measure["out"]
    norm = fit.get("val")  # oe_energy_knn's scales: fp32 val, as the shipped file has them
    params = fit_method(method, fit["train"], head, fit["out"] if oe else None, cache, val=norm)
    s_val, s_test = score(params, val.outputs), score(params, test.outputs)
    threshold = keep_threshold(s_val)
    accepted = np.zeros(len(out.labels), dtype=bool)
    if oe and len(out.labels):  # leave one source out
        aurocs, weights = [], []
        for source in np.unique(out.sources):
            held = out.sources == source
            others = fit["out"].subset(fit["out"].sources != source)
            fold = fit_method(method, fit["train"], head, others, cache, str(source), norm)
            t_fold = keep_threshold(score(fold, val.outputs))
            s_held = score(fold, out.subset(held).outputs)
            accepted[held] = s_held >= t_fold
            aurocs.append(auroc(score(fold, test.outputs), s_held))
            weights.append(held.sum())
        area = float(np.average(aurocs, weights=weights))
    elif len(out.labels):
        s_out = score(params, out.outputs)
        accepted = s_out >= threshold
        area = auroc(s_test, s_out)
    else:
        area = float("nan")
    fpr = {c: _nan_mean(accepted[out.categories == c]) for c in CATEGORIES}
    fpr["all"] = _nan_mean(accepted)
    figures = Figures(
        method=method,
        outlier_exposure=oe,
        threshold=threshold,
        auroc=area,
        fpr=fpr,
        out_counts={c: int((out.categories == c).sum()) for c in CATEGORIES},
        val_kept=float((s_val >= threshold).mean()),
        **_in_scope_figures(s_test, threshold, test, labels),
    )
    return figures, params
