"""Numeric parity of the exported files against PyTorch, and the test metrics they give.

Everything here runs on the same preprocessed tensors (the serving preprocess), so a difference
is the export's, not the input pipeline's.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skyclass.export.config import ParityBounds

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

#: An fp32 answer at least this probable counts as "confident" in the int8 agreement breakdown.
CONFIDENT = 0.5


def torch_probabilities(module: nn.Module, tensors: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """(N,C) float64 probabilities of the PyTorch model (eval mode, log-probs out)."""
    import torch

    module.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(tensors), batch_size):
            out.append(module(torch.from_numpy(tensors[i : i + batch_size])).double().exp().numpy())
    return np.concatenate(out)


def onnx_probabilities(
    path: Path, tensors: np.ndarray, *, batch_size: int = 16, threads: int = 2
) -> np.ndarray:
    """(N,C) float64 probabilities from an ONNX Runtime CPU session on ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    first = [session.get_outputs()[0].name]  # log_probs (not the scope / explanation outputs)
    out = [
        session.run(first, {name: tensors[i : i + batch_size]})[0]
        for i in range(0, len(tensors), batch_size)
    ]
    return np.exp(np.concatenate(out).astype(np.float64))


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """The run's metrics.json shape: accuracy, per-class P/R/F1, confusion (rows = true)."""

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


def classification_metrics(
    truth: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...]
) -> Metrics:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix from class indices."""
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp = int(confusion[i, i])
        predicted_i, support = int(confusion[:, i].sum()), int(confusion[i].sum())
        p = tp / predicted_i if predicted_i else 0.0
        r = tp / support if support else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per_class[label] = ClassMetrics(p, r, f1, support)
    return Metrics(
        accuracy=float((truth == predicted).mean()) if len(truth) else 0.0,
        labels=labels,
        per_class=per_class,
        confusion=tuple(tuple(int(x) for x in row) for row in confusion),
        n=len(truth),
    )


@dataclass(frozen=True)
class ParityReport:
    """What parity.json holds; ``failures`` lists each bound missed, in words with numbers."""

    n: int
    n_labelled: int
    fp32_max_abs_diff: float
    fp32_top1_mismatches: int
    int8_top1_agreement: float | None
    int8_top1_agreement_confident: float | None
    int8_n_confident: int | None
    int8_fp32_top1_in_top5: float | None
    int8_max_abs_diff: float | None
    accuracy_torch: float | None
    accuracy_fp32: float | None
    accuracy_int8: float | None
    fp32_bytes: int
    int8_bytes: int | None
    size_ratio: float | None
    bounds: ParityBounds
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bounds"] = self.bounds.to_dict()
        data["failures"] = list(self.failures)
        data["passed"] = self.passed
        return data


def compare(
    torch_probs: np.ndarray,
    fp32_probs: np.ndarray,
    int8_probs: np.ndarray | None,
    truth: np.ndarray | None,
    *,
    fp32_bytes: int,
    int8_bytes: int | None,
    bounds: ParityBounds,
) -> ParityReport:
    """Check the bounds. ``truth``: class index per image, -1 where the label is not a class."""
    failures = []
    diff = float(np.abs(torch_probs - fp32_probs).max())
    top_torch, top_fp32 = torch_probs.argmax(1), fp32_probs.argmax(1)
    mismatches = int((top_torch != top_fp32).sum())
    if diff >= bounds.max_prob_diff:
        failures.append(f"fp32 vs PyTorch max abs prob diff {diff:.2e} >= {bounds.max_prob_diff}")
    if mismatches:
        failures.append(f"fp32 vs PyTorch top-1 differs on {mismatches}/{len(top_torch)} images")
    labelled = truth is not None and truth >= 0
    n_labelled = int(labelled.sum()) if truth is not None else 0

    def accuracy(top: np.ndarray) -> float | None:
        if not n_labelled:
            return None
        return float((top[labelled] == truth[labelled]).mean())

    agree = agree_conf = top5 = diff8 = acc8 = ratio = None
    n_conf = None
    if int8_probs is not None and int8_bytes:
        top_int8 = int8_probs.argmax(1)
        same = top_int8 == top_fp32
        agree = float(same.mean())
        confident = fp32_probs.max(1) >= CONFIDENT
        n_conf = int(confident.sum())
        agree_conf = float(same[confident].mean()) if n_conf else None
        k = min(5, int8_probs.shape[1])
        int8_top5 = np.argsort(-int8_probs, axis=1)[:, :k]
        top5 = float(np.mean([top_fp32[i] in int8_top5[i] for i in range(len(top_fp32))]))
        diff8 = float(np.abs(int8_probs - fp32_probs).max())
        acc8 = accuracy(top_int8)
        ratio = fp32_bytes / int8_bytes
        if agree < bounds.min_int8_agreement:
            failures.append(
                f"int8 vs fp32 top-1 agreement {agree:.2%} < {bounds.min_int8_agreement:.2%}"
            )
        acc32 = accuracy(top_fp32)
        if acc8 is not None and acc32 is not None and acc32 - acc8 > bounds.max_int8_accuracy_drop:
            failures.append(
                f"int8 accuracy {acc8:.2%} is more than {bounds.max_int8_accuracy_drop:.0%} "
                f"below fp32 {acc32:.2%}"
            )
        if ratio < bounds.min_size_ratio:
            failures.append(f"int8 file only {ratio:.2f}x smaller (< {bounds.min_size_ratio}x)")
    return ParityReport(
        n=len(top_torch),
        n_labelled=n_labelled,
        fp32_max_abs_diff=diff,
        fp32_top1_mismatches=mismatches,
        int8_top1_agreement=agree,
        int8_top1_agreement_confident=agree_conf,
        int8_n_confident=n_conf,
        int8_fp32_top1_in_top5=top5,
        int8_max_abs_diff=diff8,
        accuracy_torch=accuracy(top_torch),
        accuracy_fp32=accuracy(top_fp32),
        accuracy_int8=acc8,
        fp32_bytes=fp32_bytes,
        int8_bytes=int8_bytes,
        size_ratio=ratio,
        bounds=bounds,
        failures=tuple(failures),
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def parity_rows(report: ParityReport) -> list[tuple[str, str, str]]:
    """(check, value, bound) rows for the printed table and the model card."""
    b = report.bounds
    rows = [
        ("images compared", str(report.n), ""),
        (
            "fp32 vs PyTorch: max abs prob diff",
            f"{report.fp32_max_abs_diff:.2e}",
            f"< {b.max_prob_diff:g}",
        ),
        ("fp32 vs PyTorch: top-1 mismatches", str(report.fp32_top1_mismatches), "0"),
        (
            "accuracy PyTorch / fp32",
            f"{_pct(report.accuracy_torch)} / {_pct(report.accuracy_fp32)}",
            "",
        ),
        ("fp32 size", f"{report.fp32_bytes:,} B", ""),
    ]
    if report.int8_bytes is not None:
        rows += [
            (
                "int8 vs fp32: top-1 agreement",
                _pct(report.int8_top1_agreement),
                f">= {b.min_int8_agreement:.0%}",
            ),
            (
                f"  same, where fp32 p >= {CONFIDENT} (n={report.int8_n_confident})",
                _pct(report.int8_top1_agreement_confident),
                "",
            ),
            ("  fp32 top-1 within int8 top-5", _pct(report.int8_fp32_top1_in_top5), ""),
            ("int8 vs fp32: max abs prob diff", f"{report.int8_max_abs_diff:.3f}", ""),
            (
                "accuracy int8",
                _pct(report.accuracy_int8),
                f"within {b.max_int8_accuracy_drop:.0%} of fp32",
            ),
            (
                "int8 size",
                f"{report.int8_bytes:,} B ({report.size_ratio:.2f}x smaller)",
                f">= {b.min_size_ratio:g}x",
            ),
        ]
    return rows
