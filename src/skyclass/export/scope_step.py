"""The scope step of ``skyclass export``: extra ONNX outputs, then a calibrated ``scope.npz``.

Manifests: ``--scope-train`` / ``--scope-val`` / ``--scope-test`` or, by default, the run's train
manifest, the ``val.csv`` beside it and the run's test manifest; ``--out-of-scope`` a folder with
a ``SOURCES.tsv`` (then every method is measured and the best shipped). Without a train and a val
manifest the model is exported without a scope, and the card says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

from skyclass.core.bundle import load_bundle
from skyclass.export.config import ExportConfig, ExportError
from skyclass.export.images import read_manifest
from skyclass.export.onnx_outputs import add_outputs_file
from skyclass.export.scope_calibrate import (
    ScopeInputs,
    ScopeResult,
    calibrate,
    collect,
    head_weights,
)
from skyclass.export.scope_publish import add_scope
from skyclass.export.source import ExportSource

log = logging.getLogger(__name__)


def add_extra_outputs(files: list[Path]) -> None:
    """``logits``, ``features`` and ``cam`` outputs on every exported ONNX file (in place)."""
    for path in files:
        add_outputs_file(path, path)


def _manifests(config: ExportConfig, source: ExportSource) -> dict[str, Path | None]:
    train = Path(config.scope_train) if config.scope_train else source.train_manifest
    val = Path(config.scope_val) if config.scope_val else None
    if val is None and train is not None and (train.parent / "val.csv").is_file():
        val = train.parent / "val.csv"
    test = Path(config.scope_test) if config.scope_test else source.test_manifest
    return {"train": train, "val": val, "test": test or val}


def scope_step(config: ExportConfig, source: ExportSource, folder: Path) -> ScopeResult | None:
    """Calibrate and write the scope into the finished model folder ``folder``; None if no data."""
    if not config.scope:
        return None
    manifests = _manifests(config, source)
    if manifests["train"] is None or manifests["val"] is None:
        log.warning("no scope: give --scope-train and --scope-val (or a run with val.csv)")
        return None
    rows = {k: read_manifest(p, source.data_root) for k, p in manifests.items() if p is not None}
    bundle = load_bundle(folder)
    out_of_scope = Path(config.out_of_scope) if config.out_of_scope else None
    if out_of_scope is not None and not out_of_scope.is_dir():
        raise ExportError(f"--out-of-scope folder not found: {out_of_scope}")
    inputs = ScopeInputs(
        models={v: folder / f.path for v, f in bundle.files.items()},
        preprocess=bundle.preprocess,
        labels=bundle.labels,
        train=rows["train"],
        val=rows["val"],
        test=rows["test"],
        out_of_scope=out_of_scope,
        method=config.scope_method,
        threads=config.threads,
    )
    result = calibrate(inputs, collect(inputs), head_weights(folder / bundle.file("fp32").path))
    add_scope(folder, result)
    return result
