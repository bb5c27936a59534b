"""MODEL_CARD.md: what the model is, what it was trained and checked on, and where it fails."""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyclass.core.bundle import ModelBundle
from skyclass.export.config import ParityBounds
from skyclass.export.images import ImageRow
from skyclass.export.parity import ParityReport, parity_rows

DEFAULT_AGREEMENT = ParityBounds().min_int8_agreement


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


@dataclass(frozen=True)
class Example:
    """What the fp32 model answers for one photo (top-k, best first)."""

    path: str
    note: str
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class CardInputs:
    bundle: ModelBundle
    kind: str
    weights_file: str
    weights_sha256: str
    info: dict[str, Any]
    parity: ParityReport
    metrics: dict[str, Any] | None
    metrics_origin: str
    splits: dict[str, list[ImageRow]]
    calibration_n: int
    data_root: Path | None
    examples: tuple[Example, ...]
    ood: tuple[Example, ...]
    export_seconds: float
    notes: str = ""
    other_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


def _shown(path: str | Path) -> str:
    """A path as the card shows it: relative to the working directory, never the machine's."""
    return Path(os.path.relpath(Path(path).resolve(), Path.cwd())).as_posix()


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _sources(data_root: Path | None) -> dict[str, str]:
    """file name -> source_repo from the data set's SOURCES.tsv, when it has one."""
    tsv = data_root / "SOURCES.tsv" if data_root else None
    if tsv is None or not tsv.is_file():
        return {}
    with open(tsv, newline="", encoding="utf-8") as fh:
        return {r["file"]: r["source_repo"] for r in csv.DictReader(fh, delimiter="\t")}


def _examples(title: str, examples: tuple[Example, ...]) -> list[str]:
    out = [f"### {title}", ""]
    for ex in examples:
        answer = ", ".join(f"{label} {p:.3f}" for label, p in ex.top)
        out.append(f"- `{ex.path}`{f' ({ex.note})' if ex.note else ''}: {answer}")
    return [*out, ""]


def render_card(c: CardInputs) -> str:
    b = c.bundle
    lines = [
        f"# Model card: {b.name} {b.version}",
        "",
        f"MobileNetV2 image classifier over {b.num_classes} classes, exported by `skyclass export` "
        f"in {c.export_seconds:.0f} s. Input `{b.input_name}` (N, 3, {b.preprocess.size[0]}, "
        f"{b.preprocess.size[1]}) float32; output `{b.output_name}` (N, {b.num_classes}) "
        "log-softmax (exp gives probabilities).",
        "",
        "## Files",
        "",
        _table(
            ["variant", "file", "bytes", "sha256"],
            [[v, f.path, f"{f.bytes:,}", f"`{f.sha256}`"] for v, f in b.files.items()],
        ),
        "",
        f"Made from {c.kind} `{_shown(c.weights_file)}` (sha256 `{c.weights_sha256}`). "
        + ", ".join(f"{k}: {v}" for k, v in c.info.items() if v is not None and k != "val_metrics"),
        "",
        "Preprocessing (model.json `preprocess`, applied by `skyclass.core.preprocess`): "
        f"EXIF-upright RGB, resize to {b.preprocess.size[1]}x{b.preprocess.size[0]} "
        f"({b.preprocess.interpolation}, JPEG draft decoding "
        f"{'on' if b.preprocess.draft else 'off'}), "
        f"mean {list(b.preprocess.mean)}, std {list(b.preprocess.std)}.",
        "",
        "## Classes",
        "",
    ]
    if b.num_classes <= 20:
        lines += [", ".join(f"`{x}`" for x in b.labels), ""]
    else:
        lines += [
            f"{b.num_classes} labels in model.json (first: {', '.join(b.labels[:5])}, ...).",
            "",
        ]

    lines += ["## Data and split", ""]
    sources = _sources(c.data_root)
    if c.data_root is not None:
        lines += [
            f"Data root: `{_shown(c.data_root)}`"
            + (" (per-file sources in its SOURCES.tsv)." if sources else "."),
            "",
        ]
    for split, rows in c.splits.items():
        if not rows:
            continue
        per_label = Counter(r.label or "-" for r in rows)
        per_source = Counter(sources.get(r.path.name, "?") for r in rows) if sources else None
        text = f"- **{split}**: {len(rows)} images; " + ", ".join(
            f"{k} {v}" for k, v in sorted(per_label.items())
        )
        if per_source:
            text += "; sources: " + ", ".join(f"{k} {v}" for k, v in per_source.most_common())
        lines.append(text)
    lines += [
        f"- **int8 calibration**: {c.calibration_n} images from the calibration set above, "
        "preprocessed by the serving code.",
        "",
    ]

    lines += ["## Metrics", ""]
    if c.metrics:
        m = c.metrics
        lines += [
            f"{c.metrics_origin}: accuracy **{m['accuracy']:.2%}** on {m['n']} images.",
            "",
            _table(
                ["class", "precision", "recall", "f1", "support"],
                [
                    [
                        k,
                        f"{v['precision']:.3f}",
                        f"{v['recall']:.3f}",
                        f"{v['f1']:.3f}",
                        str(v["support"]),
                    ]
                    for k, v in m["per_class"].items()
                ],
            ),
            "",
            "Confusion matrix (rows: true class, columns: predicted):",
            "",
            _table(
                ["true \\ predicted", *m["labels"]],
                [
                    [lab, *(str(x) for x in row)]
                    for lab, row in zip(m["labels"], m["confusion"], strict=True)
                ],
            ),
            "",
        ]
    else:
        lines += [f"No labelled test images for these classes: {c.metrics_origin}", ""]
    if c.other_metrics:
        lines += [
            "Other evaluations in the run's reports (`skyclass evaluate RUN MANIFEST`):",
            "",
            _table(
                ["manifest", "images", "accuracy", *(f"recall {x}" for x in b.labels)],
                [
                    [
                        f"`{stem}`",
                        str(m["n"]),
                        f"{m['accuracy']:.2%}",
                        *(f"{m['per_class'].get(x, {}).get('recall', 0):.3f}" for x in b.labels),
                    ]
                    for stem, m in c.other_metrics.items()
                ],
            ),
            "",
        ]

    p = c.parity
    lines += [
        "## Parity (parity.json)",
        "",
        f"On {p.n} real images, each preprocessed once by the serving code and fed to PyTorch, "
        "the fp32 ONNX file and the int8 file.",
        "",
        _table(["check", "value", "bound"], [list(r) for r in parity_rows(p)]),
        "",
        "Result: " + ("all bounds met." if p.passed else "FAILED: " + "; ".join(p.failures)),
        "",
    ]
    if p.int8_top1_agreement is not None and p.bounds.min_int8_agreement < DEFAULT_AGREEMENT:
        lines += [
            f"The int8 top-1 agreement bound was set to {p.bounds.min_int8_agreement:.0%} for this "
            f"export (default {DEFAULT_AGREEMENT:.0%}, `--min-int8-agreement`): on photos unlike "
            "its training data the top answer of a many-class model is often a near-tie, which "
            "int8 rounding can swap. Where fp32 is confident (p >= 0.5) int8 agrees on "
            f"{_pct(p.int8_top1_agreement_confident)} of {p.int8_n_confident} images, and the fp32 "
            f"answer is in int8's top-5 for {_pct(p.int8_fp32_top1_in_top5)}.",
            "",
        ]
    if c.examples:
        lines += _examples("Example answers (fp32, top-5)", c.examples)

    lines += [
        "## Intended use",
        "",
        f"Classifying a photo into one of these {b.num_classes} classes behind the skyclass API, "
        "for research and testing. Not for safety, security or airspace decisions.",
        "",
        "## Known limits",
        "",
        "- It always answers one of its classes: a photo of none of them still gets a label, "
        "often with high confidence. There is no 'none of these' output; a caller that needs one "
        "must threshold the confidence and accept the misses that brings.",
    ]
    if c.ood:
        lines.append("- Measured on photos of none of its classes (fp32, top answers):")
        for ex in c.ood:
            answer = ", ".join(f"{label} {p:.3f}" for label, p in ex.top)
            lines.append(f"  - `{ex.path}`{f' ({ex.note})' if ex.note else ''}: {answer}")
    lines += [
        "- int8 rounds probabilities: it agrees with fp32 on the top answer where fp32 is "
        "confident, and may swap near-ties (see the parity table).",
        "- Accuracy is measured on the split above; photos from sources it has never seen "
        "(other cameras, other backgrounds) score lower.",
        "",
    ]
    if c.notes.strip():
        lines += ["## Notes", "", c.notes.strip(), ""]
    return "\n".join(lines)
