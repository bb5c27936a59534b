"""Helpers for the scope / explanation tests: a pre-scope copy of the flagship, real photos."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import onnx

from skyclass.core.bundle import ModelFile, load_bundle, sha256_file, write_bundle
from skyclass.export.onnx_outputs import EXTRA_OUTPUTS
from tests.conftest import BUNDLED_MODEL, OUT_OF_SCOPE


def strip_outputs(src: Path, dst: Path) -> None:
    """``src`` without the nodes, initializer and outputs that scope/explain added."""
    model = onnx.load(str(src))
    graph = model.graph
    keep = [n for n in graph.node if not n.name.startswith("skyclass_")]
    del graph.node[:]
    graph.node.extend(keep)
    outs = [o for o in graph.output if o.name not in EXTRA_OUTPUTS]
    del graph.output[:]
    graph.output.extend(outs)
    inits = [t for t in graph.initializer if not t.name.startswith("skyclass_")]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    onnx.save(model, str(dst))


def pre_scope_copy(dst: Path) -> Path:
    """The flagship as a model folder exported before scopes: no extra outputs, no scope file."""
    shutil.copytree(BUNDLED_MODEL, dst)
    (dst / "scope.npz").unlink()
    bundle = load_bundle(dst)
    for file in bundle.files.values():
        strip_outputs(dst / file.path, dst / file.path)
    files = {
        v: ModelFile(f.path, sha256_file(dst / f.path), (dst / f.path).stat().st_size)
        for v, f in bundle.files.items()
    }
    write_bundle(dataclasses.replace(bundle, files=files, scope=None))
    assert "scope" not in json.loads((dst / "model.json").read_text())
    return dst


def scope_report() -> dict:
    return json.loads((BUNDLED_MODEL / "scope_report.json").read_text())


def out_of_scope_photos(group: str, step: int = 1) -> list[Path]:
    """Every ``step``-th out-of-scope photo of a SOURCES.tsv group (sorted by name)."""
    rows = [
        line.split("\t")
        for line in (OUT_OF_SCOPE / "SOURCES.tsv").read_text(encoding="utf-8").splitlines()[1:]
    ]
    files = sorted(r[1] for r in rows if f"group={group}" in r[6])
    return [OUT_OF_SCOPE / f for f in files[::step]]
