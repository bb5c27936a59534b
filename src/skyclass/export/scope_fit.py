"""Fitting scope-score parameters on in-scope training features (NumPy only).

Each ``fit_*`` returns the parameter arrays :mod:`skyclass.core.scope_methods` scores with.
Outlier exposure (Hendrycks et al., 2019) is a head-only fine-tune on cached penultimate features:
cross-entropy on in-scope photos plus ``lam`` times the cross-entropy to the uniform distribution
on out-of-scope photos, started from the model's own head. Without the PyTorch checkpoint the
backbone stays fixed, so OE changes the logits (MSP, energy) but not the features (Mahalanobis,
kNN). The feature-space use of outlier exposure is ``fit_oe_logreg``: a linear in-scope vs
out-of-scope discriminator on the normalised features (the same features kNN compares).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyclass.core.scope_methods import l2_normalise

Arrays = dict[str, np.ndarray]


def fit_none(features: np.ndarray, labels: np.ndarray, num_classes: int) -> Arrays:
    return {}


def fit_mahalanobis(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, shrink: float = 0.1
) -> Arrays:
    """Class means + a shared covariance, shrunk toward a scaled identity (N < K here)."""
    f = features.astype(np.float64)
    means = np.stack([f[labels == c].mean(axis=0) for c in range(num_classes)])
    centered = f - means[labels]
    cov = centered.T @ centered / len(f)
    k = cov.shape[0]
    cov = (1 - shrink) * cov + shrink * (np.trace(cov) / k) * np.eye(k)
    values, vectors = np.linalg.eigh(cov)
    whiten = vectors / np.sqrt(values)[None, :]
    return {
        "whiten": whiten.astype(np.float32),
        "means": (means @ whiten).astype(np.float32),
    }


def fit_knn(features: np.ndarray, labels: np.ndarray, num_classes: int, *, k: int = 1) -> Arrays:
    bank = l2_normalise(features)
    # float16 halves the file; scoring (at calibration and at serve time alike) casts to float32.
    return {"bank": bank.astype(np.float16), "k": np.array(min(k, len(bank)), dtype=np.int64)}


def fit_knn_pca(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, dims: int = 128, k: int = 1
) -> Arrays:
    """The compact kNN bank ``knn_pca`` scores with: the train mean, the top ``dims`` principal
    directions of the centred L2-normalised features, each train photo's coordinates in them and
    its squared residual. Basis and coordinates in float16 (rounded here, so that calibration
    scores with the very values the file holds)."""
    u = l2_normalise(features).astype(np.float64)
    mean = u.mean(axis=0)
    centred = u - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    basis = vectors[:, ::-1][:, : min(dims, u.shape[1])].astype(np.float16)
    bank = (centred @ basis.astype(np.float64)).astype(np.float16)
    resid = (centred**2).sum(axis=1) - (bank.astype(np.float64) ** 2).sum(axis=1)
    return {
        "pca_mean": mean.astype(np.float32),
        "pca_basis": basis,
        "pca_bank": bank,
        "pca_resid": np.maximum(resid, 0.0).astype(np.float32),
        "k": np.array(min(k, len(u)), dtype=np.int64),
    }


def unit_scale(val_scores: np.ndarray) -> tuple[float, float]:
    """(centre, scale) putting in-scope val scores' 5th percentile at 0 and median at 1."""
    p5, median = np.quantile(val_scores, 0.05), np.median(val_scores)
    return float(p5), float(max(median - p5, 1e-9))


@dataclass(frozen=True)
class OEConfig:
    lam: float = 0.5
    steps: int = 200
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fit_oe_head(
    features: np.ndarray,
    labels: np.ndarray,
    outliers: np.ndarray,
    head_w: np.ndarray,
    head_b: np.ndarray,
    config: OEConfig | None = None,
) -> Arrays:
    """A new (C, K) head from the model's own, trained with the OE loss by full-batch Adam."""
    cfg = config or OEConfig()
    x_in = features.astype(np.float64)
    x_out = outliers.astype(np.float64)
    w, b = head_w.astype(np.float64).copy(), head_b.astype(np.float64).copy()
    n_classes = w.shape[0]
    onehot = np.eye(n_classes)[labels]
    state = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for step in range(1, cfg.steps + 1):
        p_in = np.exp(_log_softmax(x_in @ w.T + b))
        p_out = np.exp(_log_softmax(x_out @ w.T + b))
        # d/dz of CE(onehot) is p - y; of CE(uniform) is p - 1/C.
        g_in = (p_in - onehot) / len(x_in)
        g_out = cfg.lam * (p_out - 1.0 / n_classes) / max(len(x_out), 1)
        grad_w = g_in.T @ x_in + g_out.T @ x_out + cfg.weight_decay * w
        grad_b = g_in.sum(axis=0) + g_out.sum(axis=0)
        w, b = (
            _adam(w, grad_w, state[0], state[1], step, cfg.lr),
            _adam(b, grad_b, state[2], state[3], step, cfg.lr),
        )
    return {"head_w": w.astype(np.float32), "head_b": b.astype(np.float32)}


def fit_oe_logreg(
    features: np.ndarray, outliers: np.ndarray, *, steps: int = 300, weight_decay: float = 1e-2
) -> Arrays:
    """Logistic regression, in-scope (1) vs out-of-scope (0), classes weighted equally."""
    x = np.concatenate([l2_normalise(features), l2_normalise(outliers)]).astype(np.float64)
    y = np.r_[np.ones(len(features)), np.zeros(len(outliers))]
    weight = np.where(y == 1, 0.5 / len(features), 0.5 / max(len(outliers), 1))
    w, b = np.zeros(x.shape[1]), np.zeros(1)
    state = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for step in range(1, steps + 1):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b[0])))
        g = (p - y) * weight
        w = _adam(w, x.T @ g + weight_decay * w, state[0], state[1], step, 0.05)
        b = _adam(b, np.array([g.sum()]), state[2], state[3], step, 0.05)
    return {"disc_w": w.astype(np.float32), "disc_b": b.astype(np.float32)}


def _adam(
    param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, lr: float
) -> np.ndarray:
    m *= 0.9
    m += 0.1 * grad
    v *= 0.999
    v += 0.001 * grad * grad
    m_hat = m / (1 - 0.9**step)
    v_hat = v / (1 - 0.999**step)
    return param - lr * m_hat / (np.sqrt(v_hat) + 1e-8)


def keep_threshold(scores: np.ndarray, keep: float = 0.95) -> float:
    """The largest threshold keeping at least ``keep`` of ``scores`` (score >= threshold kept)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    drop = int(np.floor((1.0 - keep) * len(ordered) + 1e-9))
    return float(ordered[min(drop, len(ordered) - 1)])


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(in-scope score > out-of-scope score), ties counted half (Mann-Whitney U)."""
    a = np.asarray(in_scores, dtype=np.float64)
    o = np.asarray(out_scores, dtype=np.float64)
    both = np.concatenate([a, o])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    i = 0
    while i < len(both):  # average ranks over ties
        j = i
        while j + 1 < len(both) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2.0
    return float(u / (len(a) * len(o)))
