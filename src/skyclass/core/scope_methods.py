"""Scope scores from ONNX outputs, one small function per method; higher = more in scope.

Each takes the method's parameter arrays (from the scope file) and a batch of ONNX outputs:
``log_probs`` (N, C), ``logits`` (N, C), ``features`` (N, K). Fitting lives in
:mod:`skyclass.export.scope_fit`; the two agree because fitting measures with these functions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Arrays = dict[str, np.ndarray]


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=1, keepdims=True)))[:, 0]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32; all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def msp(params: Arrays, out: Arrays) -> np.ndarray:
    """Maximum softmax probability (the baseline)."""
    return np.exp(out["log_probs"].astype(np.float64).max(axis=1))


def energy(params: Arrays, out: Arrays) -> np.ndarray:
    """Negative free energy: logsumexp of the logits (temperature 1)."""
    return _logsumexp(out["logits"].astype(np.float64))


def mahalanobis(params: Arrays, out: Arrays) -> np.ndarray:
    """Minus the smallest class-conditional Mahalanobis distance (shared covariance).

    ``whiten`` (K, D) maps features so that the shared covariance becomes the identity (on its top
    D directions); ``means`` (C, D) are the class means in that space.
    """
    z = out["features"].astype(np.float32) @ params["whiten"]
    d = ((z[:, None, :] - params["means"][None]) ** 2).sum(axis=2)
    return -d.min(axis=1).astype(np.float64)


def knn(params: Arrays, out: Arrays) -> np.ndarray:
    """Minus the distance to the k-th nearest training feature, features L2-normalised."""
    f = l2_normalise(out["features"])
    bank = params["bank"]
    sims = f @ (bank if bank.dtype == np.float32 else bank.astype(np.float32)).T
    k = int(params["k"])
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
    return -np.sqrt(np.maximum(2.0 - 2.0 * kth.astype(np.float64), 0.0))


def knn_pca(params: Arrays, out: Arrays) -> np.ndarray:
    """``knn`` from a compact bank: the L2-normalised features, centred on the train mean, in the
    top D principal directions of the train features (``pca_basis`` (K, D), ``pca_bank`` (M, D)),
    the rest of each vector by its norm alone (``pca_resid``: the bank's squared residuals).

    The squared distance is exact in the D directions plus both squared residuals, i.e. it
    treats the two residuals as orthogonal (exact when either is zero). A photo unlike the train
    features has most of its length outside their principal directions, so its residual keeps
    it far from the bank (a projection alone would not)."""
    u = l2_normalise(out["features"]) - params["pca_mean"]
    basis = np.asarray(params["pca_basis"], dtype=np.float32)
    bank = np.asarray(params["pca_bank"], dtype=np.float32)
    z = u @ basis
    resid = np.maximum((u * u).sum(axis=1) - (z * z).sum(axis=1), 0.0)
    d2 = (bank * bank).sum(axis=1)[None] - 2.0 * (z @ bank.T) + params["pca_resid"][None]
    k = int(params["k"])
    kth = np.partition(d2, k - 1, axis=1)[:, k - 1] + (z * z).sum(axis=1) + resid
    return -np.sqrt(np.maximum(kth.astype(np.float64), 0.0))


def _head(params: Arrays, out: Arrays) -> np.ndarray:
    return (out["features"].astype(np.float32) @ params["head_w"].T + params["head_b"]).astype(
        np.float64
    )


def oe_msp(params: Arrays, out: Arrays) -> np.ndarray:
    """MSP of a second head fine-tuned with outlier exposure (the class answer keeps the first)."""
    logits = _head(params, out)
    return np.exp(logits.max(axis=1) - _logsumexp(logits))


def oe_energy(params: Arrays, out: Arrays) -> np.ndarray:
    """Energy of the outlier-exposure head."""
    return _logsumexp(_head(params, out))


def oe_logreg(params: Arrays, out: Arrays) -> np.ndarray:
    """A linear in-scope vs out-of-scope discriminator on L2-normalised features (trained with
    outlier exposure): its logit."""
    f = l2_normalise(out["features"])
    return (f @ params["disc_w"] + params["disc_b"]).astype(np.float64)


def oe_energy_knn(params: Arrays, out: Arrays) -> np.ndarray:
    """Both must say "in scope": the smaller of the OE head's energy and the kNN score, each put
    on a common scale by its own in-scope validation scores (0 at their 5th percentile, 1 at their
    median). OE knows the near misses it was shown (aircraft); kNN flags anything far from every
    training photo (scenes, everyday objects)."""
    return _both(params, oe_energy(params, out), knn(params, out))


def oe_energy_knn_pca(params: Arrays, out: Arrays) -> np.ndarray:
    """``oe_energy_knn`` with the compact kNN bank of ``knn_pca`` (a file of ~0.6 MB, not 3)."""
    return _both(params, oe_energy(params, out), knn_pca(params, out))


def _both(params: Arrays, oe: np.ndarray, near: np.ndarray) -> np.ndarray:
    z_oe = (oe - params["oe_center"]) / params["oe_scale"]
    z_knn = (near - params["knn_center"]) / params["knn_scale"]
    return np.minimum(z_oe, z_knn)


METHODS: dict[str, Callable[[Arrays, Arrays], np.ndarray]] = {
    "msp": msp,
    "energy": energy,
    "mahalanobis": mahalanobis,
    "knn": knn,
    "knn_pca": knn_pca,
    "oe_msp": oe_msp,
    "oe_energy": oe_energy,
    "oe_logreg": oe_logreg,
    "oe_energy_knn": oe_energy_knn,
    "oe_energy_knn_pca": oe_energy_knn_pca,
}

#: ONNX outputs each method reads besides log_probs.
NEEDS: dict[str, tuple[str, ...]] = {
    "msp": (),
    "energy": ("logits",),
    "mahalanobis": ("features",),
    "knn": ("features",),
    "knn_pca": ("features",),
    "oe_msp": ("features",),
    "oe_energy": ("features",),
    "oe_logreg": ("features",),
    "oe_energy_knn": ("features",),
    "oe_energy_knn_pca": ("features",),
}


def score_batch(method: str, params: Arrays, out: Arrays) -> np.ndarray:
    return METHODS[method](params, out)
