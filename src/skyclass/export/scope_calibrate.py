"""Compute a model folder's scope file from its ONNX model(s) and manifests, and its figures.

    calibrate_scope(ScopeInputs(...)) -> ScopeResult      (measures every method, picks one)
    write_scope(folder, result) -> ModelFile              (scope.npz + scope_report.json)

Used by ``skyclass export`` (``--scope-train`` / ``--scope-val`` / ``--scope-test`` /
``--out-of-scope``, by default the run's manifests) and by ``scripts/scope_bundled.py`` for a
published model folder. The ONNX files must have the ``logits`` and ``features`` outputs
(:mod:`skyclass.export.onnx_outputs`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.core.bundle import ModelFile, sha256_file
from skyclass.core.preprocess import PreprocessConfig
from skyclass.core.scope import SCOPE_FILE
from skyclass.core.scope_methods import METHODS
from skyclass.export.config import ExportError
from skyclass.export.images import ImageRow
from skyclass.export.onnx_outputs import find_head
from skyclass.export.scope_data import label_indices, read_out_of_scope, run_outputs
from skyclass.export.scope_eval import Figures, Split, evaluate, with_log_probs
from skyclass.outputs import write_text_atomic

log = logging.getLogger(__name__)

REPORT_FILE = "scope_report.json"
#: Measured first, in this order; "auto" ships the best that meets the targets (else best AUROC).
#: ``oe_energy_knn`` (a 3 MB kNN bank) is no longer measured: ``oe_energy_knn_pca`` is the same
#: score from a ~0.6 MB bank and measured the same (docs/scope/NOTES.md). Files that have it
#: still serve, and ``--method oe_energy_knn`` still makes one.
ALL_METHODS = (
    "msp",
    "energy",
    "mahalanobis",
    "knn",
    "knn_pca",
    "oe_msp",
    "oe_energy",
    "oe_logreg",
    "oe_energy_knn_pca",
)
#: Without out-of-scope photos nothing can be compared: this one is shipped (see docs/scope/).
DEFAULT_METHOD = "mahalanobis"


@dataclass(frozen=True)
class ScopeInputs:
    models: dict[str, Path]  # variant -> ONNX file with the extra outputs
    preprocess: PreprocessConfig
    labels: tuple[str, ...]
    train: list[ImageRow]
    val: list[ImageRow]
    test: list[ImageRow]
    out_of_scope: Path | None = None
    method: str = "auto"
    threads: int = 2


@dataclass(frozen=True)
class ScopeResult:
    method: str
    params: dict[str, np.ndarray]
    thresholds: dict[str, float]
    feature_width: int
    figures: dict[str, list[Figures]]  # variant -> every method measured
    chosen: dict[str, Figures]  # variant -> the shipped method's figures

    def report(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "thresholds": self.thresholds,
            "keep": 0.95,
            "figures": {v: [f.to_dict() for f in fs] for v, fs in self.figures.items()},
        }


def head_weights(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fp32 head's (W, b) from the ONNX file's initializers."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model))
    head = find_head(graph)
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    gemm = next(n for n in graph.graph.node if n.op_type == "Gemm")
    if head.weight not in inits or gemm.input[2] not in inits:
        raise ExportError(f"{model.name}: the head's weights are not plain initializers")
    return inits[head.weight].astype(np.float32), inits[gemm.input[2]].astype(np.float32)


def _split(model: Path, rows: list[ImageRow], inputs: ScopeInputs) -> Split:
    out = run_outputs(model, [r.path for r in rows], inputs.preprocess, threads=inputs.threads)
    labels = label_indices(rows, inputs.labels)[out.kept]
    return Split(with_log_probs(out.logits, out.features), labels)


def _out_split(model: Path, folder: Path, inputs: ScopeInputs) -> Split:
    rows = read_out_of_scope(folder)
    out = run_outputs(model, [r.path for r in rows], inputs.preprocess, threads=inputs.threads)
    kept = [rows[i] for i in out.kept]
    return Split(
        with_log_probs(out.logits, out.features),
        np.full(len(kept), -1),
        np.array([r.source for r in kept]),
        np.array([r.category for r in kept]),
    )


def collect(inputs: ScopeInputs) -> dict[str, dict[str, Split]]:
    """variant -> {train, val, test[, out]} ONNX outputs (the slow part: every photo, once)."""
    data = {}
    for variant, model in inputs.models.items():
        parts = ("train", "val", "test") if variant == "fp32" else ("val", "test")  # fit on fp32
        sets = {k: _split(model, getattr(inputs, k), inputs) for k in parts}
        if inputs.out_of_scope is not None:
            sets["out"] = _out_split(model, inputs.out_of_scope, inputs)
        data[variant] = sets
        log.info("scope: %s outputs computed", variant)
    return data


def _choose(figures: list[Figures], method: str) -> Figures:
    """The given method; or "auto": the one meeting most of the issue's targets (AUROC and FPR
    per category), then the best AUROC."""
    if method != "auto":
        return next(f for f in figures if f.method == method)
    return max(figures, key=lambda f: (f.targets_met, round(f.auroc, 3)))


def calibrate(
    inputs: ScopeInputs, data: dict[str, dict[str, Split]], head: tuple[np.ndarray, np.ndarray]
) -> ScopeResult:
    """Measure the methods on fp32 outputs, pick one, measure and calibrate it on every variant.

    Parameters are always fitted on fp32 features; each variant gets its own threshold.
    """
    if inputs.method != "auto" and inputs.method not in METHODS:
        raise ExportError(f"unknown scope method {inputs.method!r}")
    has_out = "out" in data["fp32"]
    method = inputs.method
    if not has_out and method == "auto":
        method = DEFAULT_METHOD
    if not has_out and method.startswith("oe_"):
        raise ExportError(f"scope method {method} needs out-of-scope photos (--out-of-scope)")
    candidates = [m for m in ALL_METHODS if has_out] if method == "auto" else [method]
    fit = {"train": data["fp32"]["train"], "val": data["fp32"]["val"], "out": _out(data["fp32"])}
    figures: dict[str, list[Figures]] = {"fp32": []}
    params: dict[str, dict[str, np.ndarray]] = {}
    cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for name in candidates:
        fig, params[name] = evaluate(name, fit, _measure(data["fp32"]), head, inputs.labels, cache)
        figures["fp32"].append(fig)
        log.info("scope %s: AUROC %.3f, FPR %s", name, fig.auroc, fig.fpr)
    chosen = {"fp32": _choose(figures["fp32"], method)}
    for variant, sets in data.items():
        if variant != "fp32":
            method = chosen["fp32"].method
            fig, _ = evaluate(method, fit, _measure(sets), head, inputs.labels, cache)
            figures[variant] = [fig]
            chosen[variant] = fig
    name = chosen["fp32"].method
    width = int(fit["train"].outputs["features"].shape[1])
    thresholds = {v: f.threshold for v, f in chosen.items()}
    return ScopeResult(name, params[name], thresholds, width, figures, chosen)


def _out(sets: dict[str, Split]) -> Split:
    if "out" in sets:
        return sets["out"]
    test = sets["test"]
    none = np.zeros(len(test.labels), dtype=bool)
    return Split({k: v[none] for k, v in test.outputs.items()}, test.labels[none], np.array([]))


def _measure(sets: dict[str, Split]) -> dict[str, Split]:
    return {"val": sets["val"], "test": sets["test"], "out": _out(sets)}


def write_scope(folder: Path, result: ScopeResult) -> ModelFile:
    """Write ``scope.npz`` and ``scope_report.json`` into ``folder``; the npz's ModelFile entry."""
    path = folder / SCOPE_FILE
    arrays: dict[str, Any] = {
        "method": np.array(result.method),
        "feature_width": np.array(result.feature_width, dtype=np.int64),
        **{f"threshold_{v}": np.array(t, dtype=np.float64) for v, t in result.thresholds.items()},
        **result.params,
    }
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    write_text_atomic(folder / REPORT_FILE, json.dumps(result.report(), indent=2) + "\n")
    return ModelFile(SCOPE_FILE, sha256_file(path), path.stat().st_size)
