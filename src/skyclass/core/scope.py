"""The scope score: is a photo one of the model's classes at all? Torch-free (NumPy only).

A model folder may carry a scope file (``scope.npz``, described in ``model.json`` under ``scope``
with its sha256 like every other file). It holds one method's parameters and the thresholds
calibrated at export (default: keep 95% of the in-scope validation photos), per ONNX variant:

    method           msp | energy | mahalanobis | knn | knn_pca | oe_msp | oe_energy
                     | oe_logreg | oe_energy_knn | oe_energy_knn_pca
    threshold_fp32   score below it: out of scope (also threshold_int8 when calibrated)
    feature_width    the width of the ONNX ``features`` output the parameters were fitted on
    ...              the method's arrays (see :mod:`skyclass.core.scope_methods`)

Higher scores mean "more like the training photos". A scope file that is missing, corrupt, does
not match its sha256 or does not fit the ONNX outputs raises :class:`ScopeUnavailable`; the
predictor then serves the model without a scope and says why.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyclass.core.bundle import ModelBundle, sha256_file
from skyclass.core.scope_methods import METHODS, NEEDS, score_batch

SCOPE_FILE = "scope.npz"


class ScopeUnavailable(Exception):
    """The model's scope file cannot be used; the message says why (one line)."""


@dataclass(frozen=True)
class ScopeVerdict:
    """One photo's scope answer."""

    score: float
    threshold: float
    method: str

    @property
    def in_scope(self) -> bool:
        return self.score >= self.threshold

    def to_dict(self) -> dict[str, object]:
        return {"score": self.score, "threshold": self.threshold, "method": self.method}


@dataclass(frozen=True)
class Scope:
    """A loaded scope file for one variant."""

    method: str
    threshold: float
    feature_width: int
    params: dict[str, np.ndarray]

    @property
    def needs(self) -> tuple[str, ...]:
        """The ONNX outputs the score is computed from (besides ``log_probs``)."""
        return NEEDS[self.method]

    def scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Scores for a batch; ``outputs`` maps ONNX output names (log_probs, logits, features)."""
        return score_batch(self.method, self.params, outputs)

    def verdict(self, outputs: dict[str, np.ndarray]) -> ScopeVerdict:
        return ScopeVerdict(float(self.scores(outputs)[0]), self.threshold, self.method)


def read_scope_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a scope file (no pickles); ScopeUnavailable when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ScopeUnavailable(f"scope file {path.name} is unreadable ({exc})") from exc


def load_scope(
    bundle: ModelBundle,
    variant: str,
    outputs: dict[str, tuple[object, ...]],
    *,
    verify: bool = True,
) -> Scope:
    """The bundle's scope for ``variant``, checked against the ONNX ``outputs`` (name -> shape)."""
    entry = bundle.scope
    if entry is None:
        raise ScopeUnavailable(bundle.scope_error or "the model folder has no scope file")
    path = bundle.root / entry.path
    if not path.is_file():
        raise ScopeUnavailable(f"scope file {entry.path} is missing")
    if verify and sha256_file(path) != entry.sha256:
        raise ScopeUnavailable(f"scope file {entry.path} does not match its sha256")
    arrays = read_scope_arrays(path)
    try:
        method = str(arrays.pop("method"))
        width = int(arrays.pop("feature_width"))
        thresholds = {k: float(arrays.pop(k)) for k in list(arrays) if k.startswith("threshold_")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ScopeUnavailable(f"scope file {entry.path} lacks {exc}") from exc
    if method not in METHODS:
        raise ScopeUnavailable(f"scope file {entry.path}: unknown method {method!r}")
    if f"threshold_{variant}" not in thresholds:
        raise ScopeUnavailable(f"scope file {entry.path} has no threshold for {variant}")
    missing = [name for name in NEEDS[method] if name not in outputs]
    if missing:
        raise ScopeUnavailable(f"the {variant} ONNX model has no {', '.join(missing)} output")
    shape = outputs.get("features")
    if shape is not None and (len(shape) != 2 or shape[1] != width):
        raise ScopeUnavailable(
            f"scope file fitted on {width} features; the ONNX features output is {shape}"
        )
    # float16 arrays (the kNN bank) widened once here, not on every request
    arrays = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in arrays.items()}
    scope = Scope(method, thresholds[f"threshold_{variant}"], width, arrays)
    try:  # one dry run on zeros catches arrays of the wrong shape now, not at request time
        scope.scores(_zeros(outputs, bundle.num_classes, width))
    except (KeyError, ValueError, IndexError) as exc:
        raise ScopeUnavailable(f"scope file {entry.path} does not fit the model ({exc})") from exc
    return scope


def _zeros(
    outputs: dict[str, tuple[object, ...]], classes: int, width: int
) -> dict[str, np.ndarray]:
    base = {"log_probs": np.full((1, classes), -np.log(classes), np.float32)}
    if "logits" in outputs:
        base["logits"] = np.zeros((1, classes), np.float32)
    if "features" in outputs:
        base["features"] = np.zeros((1, width), np.float32)
    return base
