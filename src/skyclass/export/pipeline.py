"""``run_export``: source -> fp32 ONNX -> int8 -> parity -> card -> model folder, atomically.

Everything is written into a temp folder beside the target; the target appears (or is replaced,
with ``force``) only once every file is written and every bound is met. On any failure the temp
folder is removed and the target is left as it was.
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

from skyclass.core.bundle import ModelBundle, ModelFile, load_bundle, sha256_file, write_bundle
from skyclass.export.card import CardInputs, Example, render_card
from skyclass.export.config import ExportConfig, ExportError
from skyclass.export.images import ImageRow, load_images, read_manifest, sample_rows, scan_folder
from skyclass.export.onnx_export import INPUT_NAME, OUTPUT_NAME, OnnxInfo, export_onnx
from skyclass.export.parity import (
    ParityReport,
    classification_metrics,
    compare,
    onnx_probabilities,
    torch_probabilities,
)
from skyclass.export.quantize import quantize_int8
from skyclass.export.scope_step import add_extra_outputs, scope_step
from skyclass.export.source import ExportSource, resolve_source
from skyclass.outputs import make_temp_dir, publish_dir

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
        super().__init__("parity failed: " + "; ".join(report.failures))
        self.report = report


@dataclass(frozen=True)
class ExportResult:
    out: Path
    bundle: ModelBundle
    parity: ParityReport
    onnx: OnnxInfo
    serving_max_abs_diff: float
    seconds: dict[str, float]


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


def run_export(config: ExportConfig) -> ExportResult:
    """Export as ``config`` says; raise :class:`ExportError` (one-line message) on any problem."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    out = Path(config.out)
    if out.exists() and not config.force:
        raise ExportError(f"{out} exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    notes = _card_notes(config.card_notes)  # read first: a bad path fails before any work
    source = resolve_source(config)
    calibration_rows, parity_rows_, splits = _images(config, source)

    t = time.perf_counter()
    parity_set = load_images(parity_rows_, source.preprocess)
    calib_set = load_images(calibration_rows, source.preprocess) if calibration_rows else None
    seconds["load_images"] = time.perf_counter() - t
    label_index = {label: i for i, label in enumerate(source.labels)}
    truth = np.array([label_index.get(r.label, -1) for r in parity_set.rows])

    tmp = make_temp_dir(out)
    try:
        t = time.perf_counter()
        info = export_onnx(
            source.module, tmp / FP32_FILE, source.preprocess.size, opset=config.opset
        )
        seconds["export_fp32"] = time.perf_counter() - t
        if calib_set is not None:
            t = time.perf_counter()
            quantize_int8(
                tmp / FP32_FILE, tmp / INT8_FILE, calib_set.tensors, batch_size=config.batch_size
            )
            seconds["quantize_int8"] = time.perf_counter() - t
        # logits / features / cam outputs for the scope score and explanations (log_probs as is)
        add_extra_outputs([tmp / f for f in (FP32_FILE, INT8_FILE) if (tmp / f).is_file()])

        t = time.perf_counter()
        x = parity_set.tensors
        p_torch = torch_probabilities(source.module, x, config.batch_size)
        p_fp32 = onnx_probabilities(
            tmp / FP32_FILE, x, batch_size=config.batch_size, threads=config.threads
        )
        p_int8 = (
            onnx_probabilities(
                tmp / INT8_FILE, x, batch_size=config.batch_size, threads=config.threads
            )
            if calib_set is not None
            else None
        )
        report = compare(
            p_torch,
            p_fp32,
            p_int8,
            truth,
            fp32_bytes=(tmp / FP32_FILE).stat().st_size,
            int8_bytes=(tmp / INT8_FILE).stat().st_size if calib_set is not None else None,
            bounds=config.bounds,
        )
        seconds["parity"] = time.perf_counter() - t
        if not report.passed:
            raise ParityError(report)

        files = {"fp32": FP32_FILE} | ({"int8": INT8_FILE} if calib_set is not None else {})
        top_k = config.top_k or min(5, len(source.labels))
        if config.top_k is None and len(source.labels) <= 10:
            top_k = len(source.labels)
        bundle = ModelBundle(
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
        write_bundle(bundle)
        n_check = min(8, len(parity_set.rows))
        serving_diff = _serving_check(tmp, list(parity_set.rows[:n_check]), p_torch[:n_check])
        if serving_diff >= config.bounds.max_prob_diff:
            raise ExportError(f"serving code vs PyTorch max abs prob diff {serving_diff:.2e}")

        metrics, origin = _metrics(source, truth, p_fp32, parity_set.rows)
        parity_json: dict[str, Any] = report.to_dict() | {
            "serving_check": {"images": n_check, "max_abs_diff": serving_diff},
            "images": {
                "parity": len(parity_set.rows),
                "parity_skipped": list(parity_set.skipped),
                "calibration": len(calib_set.rows) if calib_set else 0,
            },
            "onnx": {"opset": info.opset, "nodes": info.nodes, "op_types": info.op_types},
        }
        (tmp / PARITY_FILE).write_text(json.dumps(parity_json, indent=2) + "\n", encoding="utf-8")
        seconds["total"] = time.perf_counter() - started
        card = render_card(
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
                splits=splits,
                calibration_n=len(calib_set.rows) if calib_set else 0,
                data_root=source.data_root,
                examples=_examples(config.examples, tmp / FP32_FILE, source, 5),
                ood=_examples(config.ood_images, tmp / FP32_FILE, source, 3),
                export_seconds=seconds["total"],
                notes=notes,
            )
        )
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
    final = dataclasses.replace(bundle, root=out)
    log.info("exported %s to %s in %.1f s", source.name, out, seconds["total"])
    return ExportResult(out, final, report, info, serving_diff, seconds)


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
