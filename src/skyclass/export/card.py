"""MODEL_CARD.md: what the model is, what it was trained and checked on, and where it fails.

The card is one markdown template (``TEMPLATE``); each ``_section`` function renders one part of
it from :class:`CardInputs` and nothing else.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from skyclass.core.bundle import ModelBundle
from skyclass.export.config import ParityBounds
from skyclass.export.images import ImageRow
from skyclass.export.parity import ParityReport, parity_rows

DEFAULT_AGREEMENT = ParityBounds().min_int8_agreement

TEMPLATE = Template(
    """# Model card: $name $version

MobileNetV2 image classifier over $num_classes classes, exported by `skyclass export` in \
$seconds s. Input `$input_name` (N, 3, $height, $width) float32; output `$output_name` \
(N, $num_classes) log-softmax (exp gives probabilities).

## Files

$files

$origin

Preprocessing (model.json `preprocess`, applied by `skyclass.core.preprocess`): EXIF-upright RGB, \
resize to ${width}x$height ($interpolation, JPEG draft decoding $draft), mean $mean, std $std.

## Classes

$classes

## Data and split

$data
## Metrics

$metrics
## Parity (parity.json)

On $parity_n real images, each preprocessed once by the serving code and fed to PyTorch, the fp32 \
ONNX file and the int8 file.

$parity_table

$parity_result
$examples
## Intended use

Classifying a photo into one of these $num_classes classes behind the skyclass API, for research \
and testing. Not for safety, security or airspace decisions.

## Known limits

$limits
$notes"""
)


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
    #: What became of int8 (``skyclass.export.pipeline._int8_outcome``): status and figures.
    int8: dict[str, Any]
    data_root: Path | None
    examples: tuple[Example, ...]
    ood: tuple[Example, ...]
    export_seconds: float
    notes: str = ""
    other_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def shown_path(path: str | Path) -> str:
    """A path as the card records it: relative to the project (the working directory) when inside
    it or beside it (``../shared/...``), else absolute; never a climb like ``../../../work/...``."""
    resolved = Path(path).resolve()
    relative = Path(os.path.relpath(resolved, Path.cwd()))
    if relative.parts.count("..") <= 1:
        return relative.as_posix()
    return resolved.as_posix()


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


def _answers(examples: tuple[Example, ...], indent: str = "") -> list[str]:
    out = []
    for ex in examples:
        answer = ", ".join(f"{label} {p:.3f}" for label, p in ex.top)
        out.append(f"{indent}- `{ex.path}`{f' ({ex.note})' if ex.note else ''}: {answer}")
    return out


def _files_section(c: CardInputs) -> str:
    rows = [[v, f.path, f"{f.bytes:,}", f"`{f.sha256}`"] for v, f in c.bundle.files.items()]
    return _table(["variant", "file", "bytes", "sha256"], rows)


def _origin_section(c: CardInputs) -> str:
    info = ", ".join(f"{k}: {v}" for k, v in c.info.items() if v is not None and k != "val_metrics")
    return (
        f"Made from {c.kind} `{shown_path(c.weights_file)}` (sha256 `{c.weights_sha256}`). {info}"
    )


def _int8_line(int8: dict[str, Any]) -> str:
    status = int8.get("status")
    if status == "not_exported":
        return "- **int8**: not exported (`--no-int8`)."
    lead = (
        f"- **int8 calibration**: {int8['calibration_images']} images from the calibration set "
        "above, preprocessed by the serving code."
    )
    if status == "kept":
        return lead
    return (
        f"{lead} The int8 file was measured and **left out** of this folder: "
        f"{'; '.join(int8['why'])}."
    )


def _data_section(c: CardInputs) -> str:
    sources = _sources(c.data_root)
    lines = []
    if c.data_root is not None:
        tail = " (per-file sources in its SOURCES.tsv)." if sources else "."
        lines += [f"Data root: `{shown_path(c.data_root)}`{tail}", ""]
    for split, rows in c.splits.items():
        if not rows:
            continue
        per_label = Counter(r.label or "-" for r in rows)
        text = f"- **{split}**: {len(rows)} images; " + ", ".join(
            f"{k} {v}" for k, v in sorted(per_label.items())
        )
        if sources:
            per_source = Counter(sources.get(r.path.name, "?") for r in rows)
            text += "; sources: " + ", ".join(f"{k} {v}" for k, v in per_source.most_common())
        lines.append(text)
    return "\n".join([*lines, _int8_line(c.int8), ""])


def _metrics_section(c: CardInputs) -> str:
    if not c.metrics:
        return f"No labelled test images for these classes: {c.metrics_origin}\n"
    m, labels = c.metrics, c.bundle.labels
    per_class = [
        [k, *(f"{v[x]:.3f}" for x in ("precision", "recall", "f1")), str(v["support"])]
        for k, v in m["per_class"].items()
    ]
    confusion = [
        [lab, *map(str, row)] for lab, row in zip(m["labels"], m["confusion"], strict=True)
    ]
    parts = [
        f"{c.metrics_origin}: accuracy **{m['accuracy']:.2%}** on {m['n']} images.",
        _table(["class", "precision", "recall", "f1", "support"], per_class),
        "Confusion matrix (rows: true class, columns: predicted):",
        _table(["true \\ predicted", *m["labels"]], confusion),
    ]
    if c.other_metrics:
        rows = [
            [f"`{stem}`", str(o["n"]), f"{o['accuracy']:.2%}"]
            + [f"{o['per_class'].get(x, {}).get('recall', 0):.3f}" for x in labels]
            for stem, o in c.other_metrics.items()
        ]
        header = ["manifest", "images", "accuracy", *(f"recall {x}" for x in labels)]
        parts += [
            "Other evaluations in the run's reports (`skyclass evaluate RUN MANIFEST`):",
            _table(header, rows),
        ]
    return "\n\n".join(parts) + "\n"


def _parity_result(c: CardInputs) -> str:
    p = c.parity
    status = c.int8.get("status")
    if status == "left_out":
        return (
            "Result: fp32 bounds met; int8 missed its bounds and is not in this folder "
            f"({'; '.join(p.int8_failures)}). The int8 rows above are its measurement.\n"
        )
    lines = ["Result: all bounds met." if p.passed else "FAILED: " + "; ".join(p.failures), ""]
    if status == "kept" and p.bounds.min_int8_agreement < DEFAULT_AGREEMENT:
        lines += [
            f"The int8 agreement bound was lowered to {p.bounds.min_int8_agreement:.0%} for this "
            f"export (default {DEFAULT_AGREEMENT:.0%}, `--min-int8-agreement`): on photos unlike "
            "its training data the top answer of a many-class model is often a near-tie, which "
            "int8 rounding can swap. Where fp32 "
            f"is confident (p >= 0.5) int8 agrees on {_pct(p.int8_top1_agreement_confident)} of "
            f"{p.int8_n_confident} images, and the fp32 answer is in int8's top-5 for "
            f"{_pct(p.int8_fp32_top1_in_top5)}.",
            "",
        ]
    return "\n".join(lines)


def _limits_section(c: CardInputs) -> str:
    lines = [
        "- It always answers one of its classes: a photo of none of them still gets a label, "
        "often with high confidence. There is no 'none of these' output; a caller that needs one "
        "must threshold the confidence and accept the misses that brings."
    ]
    if c.ood:
        lines.append("- Measured on photos of none of its classes (fp32, top answers):")
        lines += _answers(c.ood, indent="  ")
    if c.int8.get("status") == "kept":
        lines.append(
            "- int8 rounds probabilities: it agrees with fp32 on the top answer where fp32 is "
            "confident, and may swap near-ties (see the parity table)."
        )
    lines.append(
        "- Accuracy is measured on the split above; photos from sources it has never seen "
        "(other cameras, other backgrounds) score lower."
    )
    return "\n".join(lines) + "\n"


def render_card(c: CardInputs) -> str:
    """The markdown of MODEL_CARD.md."""
    b, pre = c.bundle, c.bundle.preprocess
    if b.num_classes <= 20:
        classes = ", ".join(f"`{x}`" for x in b.labels)
    else:
        classes = f"{b.num_classes} labels in model.json (first: {', '.join(b.labels[:5])}, ...)."
    examples = ["### Example answers (fp32, top-5)", "", *_answers(c.examples), ""]
    return TEMPLATE.substitute(
        name=b.name,
        version=b.version,
        num_classes=b.num_classes,
        seconds=f"{c.export_seconds:.0f}",
        input_name=b.input_name,
        output_name=b.output_name,
        height=pre.size[0],
        width=pre.size[1],
        files=_files_section(c),
        origin=_origin_section(c),
        interpolation=pre.interpolation,
        draft="on" if pre.draft else "off",
        mean=list(pre.mean),
        std=list(pre.std),
        classes=classes,
        data=_data_section(c),
        metrics=_metrics_section(c),
        parity_n=c.parity.n,
        parity_table=_table(["check", "value", "bound"], [list(r) for r in parity_rows(c.parity)]),
        parity_result=_parity_result(c),
        examples="\n".join(examples) if c.examples else "",
        limits=_limits_section(c),
        notes=f"\n## Notes\n\n{c.notes.strip()}\n" if c.notes.strip() else "",
    )
