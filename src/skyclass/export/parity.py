"""Numeric parity of the exported files against PyTorch, and the test metrics they give.

Everything here runs on the same preprocessed tensors (the serving preprocess), so a difference
is the export's, not the input pipeline's.
"""

from __future__ import annotations

import logging
import math
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
#: The ParityReport fields about the int8 file (None when there is none).
INT8_FIELDS = (
    "int8_top1_agreement",
    "int8_agreement_lower",
    "int8_top1_agreement_confident",
    "int8_n_confident",
    "int8_fp32_top1_in_top5",
    "int8_max_abs_diff",
    "accuracy_int8",
    "size_ratio",
)


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


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (two-sided ``confidence``)."""
    if n <= 0:
        return 0.0, 1.0
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ParityReport:
    """What parity.json holds. ``failures``: fp32 bounds missed (nothing may be written);
    ``int8_failures``: int8 bounds missed (the int8 file is left out), in words with numbers."""

    n: int
    n_labelled: int
    fp32_max_abs_diff: float
    fp32_top1_mismatches: int
    int8_top1_agreement: float | None
    #: Lower end of the Wilson interval of that agreement (the figure the bound applies to).
    int8_agreement_lower: float | None
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
    int8_failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """The fp32 file meets its bounds (int8's are judged apart: ``int8_passed``)."""
        return not self.failures

    @property
    def int8_passed(self) -> bool:
        return self.int8_bytes is not None and not self.int8_failures

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bounds"] = self.bounds.to_dict()
        data["failures"] = list(self.failures)
        data["int8_failures"] = list(self.int8_failures)
        data["passed"] = self.passed
        data["int8_passed"] = self.int8_passed
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
    labelled = truth >= 0 if truth is not None else np.zeros(len(top_torch), dtype=bool)
    n_labelled = int(labelled.sum())

    def accuracy(top: np.ndarray) -> float | None:
        if truth is None or not n_labelled:
            return None
        return float((top[labelled] == truth[labelled]).mean())

    int8 = _int8_checks(int8_probs, fp32_probs, int8_bytes, fp32_bytes, bounds, accuracy)
    return ParityReport(
        n=len(top_torch),
        n_labelled=n_labelled,
        fp32_max_abs_diff=diff,
        fp32_top1_mismatches=mismatches,
        accuracy_torch=accuracy(top_torch),
        accuracy_fp32=accuracy(top_fp32),
        fp32_bytes=fp32_bytes,
        int8_bytes=int8_bytes if int8_probs is not None else None,
        bounds=bounds,
        failures=tuple(failures),
        **int8,
    )


def _int8_checks(
    int8_probs: np.ndarray | None,
    fp32_probs: np.ndarray,
    int8_bytes: int | None,
    fp32_bytes: int,
    bounds: ParityBounds,
    accuracy: Any,
) -> dict[str, Any]:
    """The int8 fields of a :class:`ParityReport`, ``int8_failures`` among them."""
    fields: dict[str, Any] = dict.fromkeys(INT8_FIELDS)
    if int8_probs is None or not int8_bytes:
        return fields
    top_fp32, top_int8 = fp32_probs.argmax(1), int8_probs.argmax(1)
    same = top_int8 == top_fp32
    n = len(same)
    confident = fp32_probs.max(1) >= CONFIDENT
    k = min(5, int8_probs.shape[1])
    int8_top5 = np.argsort(-int8_probs, axis=1)[:, :k]
    fields.update(
        int8_top1_agreement=float(same.mean()),
        int8_agreement_lower=wilson_interval(int(same.sum()), n, bounds.confidence)[0],
        int8_n_confident=int(confident.sum()),
        int8_top1_agreement_confident=float(same[confident].mean()) if confident.any() else None,
        int8_fp32_top1_in_top5=float(np.mean([top_fp32[i] in int8_top5[i] for i in range(n)])),
        int8_max_abs_diff=float(np.abs(int8_probs - fp32_probs).max()),
        accuracy_int8=accuracy(top_int8),
        size_ratio=fp32_bytes / int8_bytes,
    )
    failures = []
    if fields["int8_agreement_lower"] < bounds.min_int8_agreement:
        failures.append(
            f"int8 vs fp32 top-1 agreement {fields['int8_top1_agreement']:.2%} on {n} images "
            f"(lower {bounds.confidence:.0%} bound {fields['int8_agreement_lower']:.2%}) "
            f"< {bounds.min_int8_agreement:.2%}"
        )
    acc8, acc32 = fields["accuracy_int8"], accuracy(top_fp32)
    if acc8 is not None and acc32 is not None and acc32 - acc8 > bounds.max_int8_accuracy_drop:
        failures.append(
            f"int8 accuracy {acc8:.2%} is more than {bounds.max_int8_accuracy_drop:.0%} "
            f"below fp32 {acc32:.2%}"
        )
    if fields["size_ratio"] < bounds.min_size_ratio:
        failures.append(
            f"int8 file only {fields['size_ratio']:.2f}x smaller (< {bounds.min_size_ratio}x)"
        )
    fields["int8_failures"] = tuple(failures)
    return fields


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
                f"{_pct(report.int8_top1_agreement)} (lower {b.confidence:.0%} bound "
                f"{_pct(report.int8_agreement_lower)})",
                f"lower bound >= {b.min_int8_agreement:.0%}",
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
