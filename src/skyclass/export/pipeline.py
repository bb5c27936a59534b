"""``run_export``: source -> fp32 ONNX -> int8 -> parity -> card -> model folder, atomically.

Everything is written into a temp folder beside the target; the target appears (or is replaced,
with ``force``) only once every file is written and every fp32 bound is met. int8 is optional: when
it misses its bounds the folder is written without it and says why (``--require-int8`` makes that
a failure instead). On any failure the temp folder is removed and the target is left as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.core.bundle import MANIFEST, ModelBundle, ModelFile, load_bundle, sha256_file
from skyclass.export.card import CardInputs, Example, render_card
from skyclass.export.config import ExportConfig, ExportError
from skyclass.export.images import (
    ImageRow,
    ImageSet,
    load_images,
    read_manifest,
    sample_rows,
    scan_folder,
)
from skyclass.export.onnx_export import INPUT_NAME, OUTPUT_NAME, OnnxInfo, export_onnx
from skyclass.export.parity import (
    ParityReport,
    compare,
    onnx_probabilities,
    torch_probabilities,
)
from skyclass.export.quantize import quantize_int8
from skyclass.export.scope_step import add_extra_outputs, scope_step
from skyclass.export.source import ExportSource, resolve_source
from skyclass.outputs import make_temp_dir, publish_dir, write_text_atomic
from skyclass.reporting.metrics import classification_metrics

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
PARITY_FILE = "parity.json"
CARD_FILE = "MODEL_CARD.md"
#: Parity images sampled from the data root when there is no test manifest.
DEFAULT_PARITY_SAMPLE = 200


class ParityError(ExportError):
    """The exported files miss a parity bound; nothing was written. Carries the report."""

    def __init__(self, report: ParityReport) -> None:
        hint = "" if report.failures else "; without --require-int8 it is written with fp32 only"
        super().__init__(
            "parity failed: " + "; ".join(report.failures + report.int8_failures) + hint
        )
        self.report = report


@dataclass(frozen=True)
class ExportResult:
    out: Path
    bundle: ModelBundle
    parity: ParityReport
    onnx: OnnxInfo
    serving_max_abs_diff: float
    seconds: dict[str, float]
    #: What became of int8: status kept / left_out (with why) / not_exported, and its figures.
    int8: dict[str, Any] = dataclasses.field(default_factory=dict)


def _images(
    config: ExportConfig, source: ExportSource
) -> tuple[list[ImageRow], list[ImageRow], dict[str, list[ImageRow]]]:
    """(calibration rows, parity rows, splits for the card)."""
    calib_manifest = Path(config.calibration_manifest) if config.calibration_manifest else None
    calib_manifest = calib_manifest or source.train_manifest
    splits: dict[str, list[ImageRow]] = {}
    if calib_manifest is not None:
        calib_pool = read_manifest(calib_manifest, source.data_root)
        splits[f"calibration pool ({calib_manifest.name})"] = calib_pool
    elif source.data_root is not None:
        calib_pool = scan_folder(source.data_root)
    else:
        raise ExportError("no calibration images: give --calibration-manifest or --data-root")
    calibration = sample_rows(calib_pool, config.calibration_size, config.seed)
    if source.test_manifest is not None:
        test = read_manifest(source.test_manifest, source.data_root)
        splits[f"test ({source.test_manifest.name})"] = test
        parity = sample_rows(test, config.parity_size, config.seed)
    elif source.data_root is not None:
        used = {r.path for r in calibration}
        pool = [r for r in scan_folder(source.data_root) if r.path not in used]
        parity = sample_rows(pool, config.parity_size or DEFAULT_PARITY_SAMPLE, config.seed + 1)
        splits["parity sample (disjoint from calibration)"] = parity
    else:
        raise ExportError("no parity images: give --test-manifest or --data-root")
    if not config.int8:
        calibration = []
    if calib_manifest is not None and source.kind == "checkpoint":
        splits = {"train (calibration pool)": splits.pop(next(iter(splits))), **splits}
    return calibration, parity, splits


def _examples(
    paths: tuple[str, ...], model_path: Path, source: ExportSource, k: int
) -> tuple[Example, ...]:
    if not paths:
        return ()
    rows = [ImageRow(Path(p), "") for p in paths]
    images = load_images(rows, source.preprocess)
    probs = onnx_probabilities(model_path, images.tensors)
    out = []
    for row, p in zip(images.rows, probs, strict=True):
        order = np.argsort(-p)[: min(k, len(p))]
        top = tuple((source.labels[int(i)], float(p[int(i)])) for i in order)
        out.append(Example(row.path.name, "", top))
    return tuple(out)


def _serving_check(folder: Path, rows: list[ImageRow], torch_probs: np.ndarray) -> float:
    """Load the folder with the serving Predictor; its answers on image bytes vs PyTorch."""
    from skyclass.core.predictor import Predictor

    predictor = Predictor(folder, threads=2)
    worst = 0.0
    for row, expected in zip(rows, torch_probs, strict=True):
        tensor = load_images([row], predictor.bundle.preprocess).tensors
        got = predictor.probabilities(tensor)[0]
        if int(got.argmax()) != int(expected.argmax()):
            raise ExportError(f"serving code disagrees with PyTorch on {row.path.name}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


@dataclass(frozen=True)
class _Inputs:
    """The images an export runs on, preprocessed once by the serving code."""

    calibration: ImageSet | None
    parity: ImageSet
    truth: np.ndarray
    splits: dict[str, list[ImageRow]]


def _load_inputs(config: ExportConfig, source: ExportSource, seconds: dict[str, float]) -> _Inputs:
    t = time.perf_counter()
    calibration_rows, parity_rows_, splits = _images(config, source)
    parity_set = load_images(parity_rows_, source.preprocess)
    calib_set = load_images(calibration_rows, source.preprocess) if calibration_rows else None
    seconds["load_images"] = time.perf_counter() - t
    label_index = {label: i for i, label in enumerate(source.labels)}
    truth = np.array([label_index.get(r.label, -1) for r in parity_set.rows])
    return _Inputs(calib_set, parity_set, truth, splits)


def _export_and_compare(
    config: ExportConfig, source: ExportSource, data: _Inputs, tmp: Path, seconds: dict[str, float]
) -> tuple[OnnxInfo, ParityReport, np.ndarray, np.ndarray]:
    """fp32 (and int8) ONNX files into ``tmp``; their parity report, PyTorch and fp32 probs."""
    t = time.perf_counter()
    info = export_onnx(source.module, tmp / FP32_FILE, source.preprocess.size, opset=config.opset)
    seconds["export_fp32"] = time.perf_counter() - t
    if data.calibration is not None:
        t = time.perf_counter()
        quantize_int8(
            tmp / FP32_FILE, tmp / INT8_FILE, data.calibration.tensors, batch_size=config.batch_size
        )
        seconds["quantize_int8"] = time.perf_counter() - t
    # logits / features / cam outputs for the scope score and explanations (log_probs as is)
    add_extra_outputs([tmp / f for f in (FP32_FILE, INT8_FILE) if (tmp / f).is_file()])
    t = time.perf_counter()
    x, run = data.parity.tensors, {"batch_size": config.batch_size, "threads": config.threads}
    p_torch = torch_probabilities(source.module, x, config.batch_size)
    p_fp32 = onnx_probabilities(tmp / FP32_FILE, x, **run)
    has_int8 = data.calibration is not None
    report = compare(
        p_torch,
        p_fp32,
        onnx_probabilities(tmp / INT8_FILE, x, **run) if has_int8 else None,
        data.truth,
        fp32_bytes=(tmp / FP32_FILE).stat().st_size,
        int8_bytes=(tmp / INT8_FILE).stat().st_size if has_int8 else None,
        bounds=config.bounds,
    )
    seconds["parity"] = time.perf_counter() - t
    return info, report, p_torch, p_fp32


def _int8_outcome(config: ExportConfig, report: ParityReport, data: _Inputs) -> dict[str, Any]:
    """What became of int8, for model.json, parity.json, the card and the command's last line."""
    if not config.int8:
        return {"status": "not_exported", "why": "--no-int8"}
    calibration = len(data.calibration.rows) if data.calibration else 0
    figures = {
        "calibration_images": calibration,
        "parity_images": report.n,
        "top1_agreement": report.int8_top1_agreement,
        "agreement_lower_bound": report.int8_agreement_lower,
        "accuracy_fp32": report.accuracy_fp32,
        "accuracy_int8": report.accuracy_int8,
        "size_ratio": report.size_ratio,
    }
    if report.int8_passed:
        return {"status": "kept", **figures}
    return {"status": "left_out", "why": list(report.int8_failures), **figures}


def int8_left_out_message(outcome: dict[str, Any]) -> str:
    """The one line that says int8 was measured and left out, and what to do about it."""
    return (
        f"int8 measured and left out ({'; '.join(outcome['why'])}); the folder serves fp32. "
        "To keep int8: more parity images (--test-manifest, --parity-size), a larger "
        "--calibration-manifest or --calibration-size, or a lower --min-int8-agreement; "
        "--no-int8 skips it, --require-int8 makes this an error."
    )


def _bundle(config: ExportConfig, source: ExportSource, tmp: Path, int8: bool) -> ModelBundle:
    files = {"fp32": FP32_FILE} | ({"int8": INT8_FILE} if int8 else {})
    top_k = config.top_k or min(5, len(source.labels))
    if config.top_k is None and len(source.labels) <= 10:
        top_k = len(source.labels)
    return ModelBundle(
        root=tmp,
        name=source.name,
        version=source.version,
        labels=source.labels,
        preprocess=source.preprocess,
        files={
            v: ModelFile(f, sha256_file(tmp / f), (tmp / f).stat().st_size)
            for v, f in files.items()
        },
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        default_variant="fp32",
        top_k=top_k,
    )


def run_export(config: ExportConfig) -> ExportResult:
    """Export as ``config`` says; raise :class:`ExportError` (one-line message) on any problem.

    A missed fp32 bound (or, with ``require_int8``, a missed int8 bound) raises
    :class:`ParityError` and writes nothing; a missed int8 bound otherwise leaves the int8 file out
    and says so in model.json, parity.json, the card and ``ExportResult.int8["status"]``."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    out = Path(config.out)
    if out.exists() and not config.force:
        raise ExportError(f"{out} exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    notes = _card_notes(config.card_notes)  # read first: a bad path fails before any work
    source = resolve_source(config)
    data = _load_inputs(config, source, seconds)
    tmp = make_temp_dir(out)
    try:
        info, report, p_torch, p_fp32 = _export_and_compare(config, source, data, tmp, seconds)
        if not report.passed or (config.require_int8 and not report.int8_passed):
            raise ParityError(report)
        int8 = _int8_outcome(config, report, data)
        if int8["status"] == "left_out":
            (tmp / INT8_FILE).unlink()
        bundle = _bundle(config, source, tmp, int8["status"] == "kept")
        write_text_atomic(
            tmp / MANIFEST, json.dumps(bundle.to_dict() | {"int8": int8}, indent=2) + "\n"
        )
        n_check = min(8, len(data.parity.rows))
        serving_diff = _serving_check(tmp, list(data.parity.rows[:n_check]), p_torch[:n_check])
        if serving_diff >= config.bounds.max_prob_diff:
            raise ExportError(f"serving code vs PyTorch max abs prob diff {serving_diff:.2e}")
        parity_json = report.to_dict() | {
            "int8": int8,
            "serving_check": {"images": n_check, "max_abs_diff": serving_diff},
            "images": {
                "parity": len(data.parity.rows),
                "parity_skipped": list(data.parity.skipped),
                "calibration": int8.get("calibration_images", 0),
            },
            "onnx": {"opset": info.opset, "nodes": info.nodes, "op_types": info.op_types},
        }
        (tmp / PARITY_FILE).write_text(json.dumps(parity_json, indent=2) + "\n", encoding="utf-8")
        seconds["total"] = time.perf_counter() - started
        card = _card(source, data, bundle, report, int8, p_fp32, notes, tmp, config, seconds)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        t = time.perf_counter()
        if scope_step(config, source, tmp) is not None:
            seconds["scope"] = time.perf_counter() - t
            bundle = load_bundle(tmp)
        if out.exists() and not config.force:
            raise ExportError(f"{out} exists; pass --force to replace it")
        publish_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to %s in %.1f s", source.name, out, seconds["total"])
    final = dataclasses.replace(bundle, root=out)
    return ExportResult(out, final, report, info, serving_diff, seconds, int8)


def _card(
    source: ExportSource,
    data: _Inputs,
    bundle: ModelBundle,
    report: ParityReport,
    int8: dict[str, Any],
    p_fp32: np.ndarray,
    notes: str,
    tmp: Path,
    config: ExportConfig,
    seconds: dict[str, float],
) -> str:
    metrics, origin = _metrics(source, data.truth, p_fp32, data.parity.rows)
    return render_card(
        CardInputs(
            bundle=bundle,
            kind=source.kind,
            weights_file=str(source.weights_file),
            weights_sha256=source.weights_sha256,
            info=source.info,
            parity=report,
            metrics=metrics,
            metrics_origin=origin,
            other_metrics=source.other_metrics,
            splits=data.splits,
            int8=int8,
            data_root=source.data_root,
            examples=_examples(config.examples, tmp / FP32_FILE, source, 5),
            ood=_examples(config.ood_images, tmp / FP32_FILE, source, 3),
            export_seconds=seconds["total"],
            notes=notes,
        )
    )


def _card_notes(path: str | None) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"card notes not readable: {path} ({exc})") from exc


def _metrics(
    source: ExportSource, truth: np.ndarray, p_fp32: np.ndarray, rows: tuple[ImageRow, ...]
) -> tuple[dict[str, Any] | None, str]:
    if source.run_metrics is not None and source.test_manifest is not None:
        return source.run_metrics, (
            f"From the run's reports/{source.test_manifest.stem}/metrics.json (PyTorch)"
        )
    labelled = truth >= 0
    if not labelled.any():
        return None, "the parity images carry no labels among the model's classes."
    m = classification_metrics(truth[labelled], p_fp32.argmax(1)[labelled], source.labels)
    where = source.test_manifest.name if source.test_manifest else "the parity sample"
    return m.to_dict(), f"Computed at export with the fp32 ONNX model on {where}"
