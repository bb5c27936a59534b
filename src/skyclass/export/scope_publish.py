"""Give a published model folder its scope: extra ONNX outputs, ``scope.npz``, a new version.

``rescope_folder`` works from the folder alone (no PyTorch checkpoint): it adds the ``logits``,
``features`` and ``cam`` outputs to every ONNX variant by graph surgery (``log_probs`` computed by
the very same nodes), measures and calibrates the scope score on the given manifests, writes
``scope.npz`` + ``scope_report.json``, updates ``model.json`` (new version, new sha256s, the
``scope`` entry) and the card's scope section, and replaces the folder atomically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from skyclass.core.bundle import MANIFEST, ModelFile, load_bundle, sha256_file
from skyclass.core.scope import SCOPE_FILE
from skyclass.export.config import ExportError
from skyclass.export.images import ImageRow
from skyclass.export.onnx_outputs import EXTRA_OUTPUTS, add_outputs_file, output_names
from skyclass.export.scope_calibrate import (
    REPORT_FILE,
    ScopeInputs,
    ScopeResult,
    calibrate,
    collect,
    head_weights,
    write_scope,
)
from skyclass.export.scope_card import card_section, refresh_header, replace_section
from skyclass.outputs import make_temp_dir, publish_dir, write_text_atomic

log = logging.getLogger(__name__)
CARD_FILE = "MODEL_CARD.md"


@dataclasses.dataclass(frozen=True)
class RescopeRequest:
    folder: Path
    train: list[ImageRow]
    val: list[ImageRow]
    test: list[ImageRow]
    out_of_scope: Path | None
    version: str
    method: str = "auto"
    threads: int = 2


def ensure_outputs(folder: Path) -> list[str]:
    """Add the extra outputs to each ONNX file of ``folder`` lacking them; the variants changed."""
    bundle = load_bundle(folder)
    changed = []
    for variant, file in bundle.files.items():
        path = folder / file.path
        if set(EXTRA_OUTPUTS) <= set(output_names(path)):
            continue
        add_outputs_file(path, path)
        changed.append(variant)
    return changed


def add_scope(tmp: Path, result: ScopeResult, version: str | None = None) -> None:
    """Write the scope files into model folder ``tmp`` and rewrite its model.json to match."""
    bundle = load_bundle(tmp)
    entry = write_scope(tmp, result)
    files = {
        v: ModelFile(f.path, sha256_file(tmp / f.path), (tmp / f.path).stat().st_size)
        for v, f in bundle.files.items()
    }
    new = dataclasses.replace(
        bundle, version=version or bundle.version, files=files, scope=entry, scope_error=None
    )
    # keys the bundle does not model (export's "int8" outcome) are kept as they were
    old = json.loads((tmp / MANIFEST).read_text("utf-8"))
    extra = {k: v for k, v in old.items() if k not in new.to_dict()}
    write_text_atomic(tmp / MANIFEST, json.dumps(new.to_dict() | extra, indent=2) + "\n")
    card = tmp / CARD_FILE
    if card.is_file():
        text = replace_section(card.read_text("utf-8"), card_section(result))
        if version is not None:  # a re-published folder: its header says so
            text = refresh_header(text, new)
        card.write_text(text, "utf-8")


def rescope_folder(request: RescopeRequest) -> ScopeResult:
    """Re-publish ``request.folder`` with a scope; replaced only once everything is written."""
    folder = request.folder
    bundle = load_bundle(folder)
    if request.version == bundle.version:
        raise ExportError(f"--version must differ from the current {bundle.version}")
    tmp = make_temp_dir(folder)
    try:
        for item in folder.iterdir():
            if item.name not in (SCOPE_FILE, REPORT_FILE):
                shutil.copy2(item, tmp / item.name)
        ensure_outputs(tmp)
        staged = load_bundle(tmp)
        inputs = ScopeInputs(
            models={v: tmp / f.path for v, f in staged.files.items()},
            preprocess=staged.preprocess,
            labels=staged.labels,
            train=request.train,
            val=request.val,
            test=request.test,
            out_of_scope=request.out_of_scope,
            method=request.method,
            threads=request.threads,
        )
        head = head_weights(tmp / staged.file("fp32").path)
        result = calibrate(inputs, collect(inputs), head)
        add_scope(tmp, result, request.version)
        if not (tmp / MANIFEST).is_file():
            raise ExportError("model.json was not written")
        publish_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s re-published as %s with scope %s", folder, request.version, result.method)
    return result
