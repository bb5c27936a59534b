"""A model folder, as ``skyclass export`` writes it and serving reads it.

    models/NAME/
      model.json         this schema: name, version, labels, preprocessing, files with sha256
      model.onnx         fp32, input "input" (N,3,H,W) float32, output "log_probs" (N,C)
      model.int8.onnx    int8 QDQ (optional)
      scope.npz          scope-score parameters (optional; skyclass.core.scope)
      MODEL_CARD.md, parity.json, ... (documentation; not needed to serve)

Nothing here imports torch; everything serving needs to know about a model comes from this folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyclass.core.errors import ModelUnavailable
from skyclass.core.preprocess import PreprocessConfig

SCHEMA_VERSION = 1
MANIFEST = "model.json"
VARIANTS = ("fp32", "int8")


@dataclass(frozen=True)
class ModelFile:
    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelBundle:
    """The parsed ``model.json`` of a model folder."""

    root: Path
    name: str
    version: str
    labels: tuple[str, ...]
    preprocess: PreprocessConfig
    files: dict[str, ModelFile]
    input_name: str = "input"
    output_name: str = "log_probs"
    default_variant: str = "fp32"
    top_k: int = 5
    #: The scope file (``scope.npz``; see :mod:`skyclass.core.scope`), or None. A malformed entry
    #: does not refuse the model: it is served without a scope and ``scope_error`` says why.
    scope: ModelFile | None = None
    scope_error: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def file(self, variant: str | None = None) -> ModelFile:
        variant = variant or self.default_variant
        if variant not in self.files:
            raise ModelUnavailable(
                f"model {self.name!r} has no {variant} file (has: {', '.join(self.files)})"
            )
        return self.files[variant]

    def sha256(self, variant: str | None = None) -> str:
        return self.file(variant).sha256

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "preprocess": self.preprocess.to_dict(),
            "input": {"name": self.input_name},
            "output": {"name": self.output_name, "kind": "log_softmax"},
            "files": {
                k: {"path": f.path, "sha256": f.sha256, "bytes": f.bytes}
                for k, f in self.files.items()
            },
            "default_variant": self.default_variant,
            "top_k": self.top_k,
        } | (
            {"scope": {"path": s.path, "sha256": s.sha256, "bytes": s.bytes}}
            if (s := self.scope)
            else {}
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(root: str | Path) -> ModelBundle:
    """Read and validate ``model.json``; raise :class:`ModelUnavailable` with a clear reason."""
    root = Path(root)
    manifest = root / MANIFEST
    if not root.is_dir():
        raise ModelUnavailable(f"model folder not found: {root}")
    if not manifest.is_file():
        raise ModelUnavailable(f"not a model folder (no {MANIFEST}): {root}")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {data.get('schema_version')!r}")
        files = {
            variant: ModelFile(str(f["path"]), str(f["sha256"]), int(f["bytes"]))
            for variant, f in data["files"].items()
        }
        labels = tuple(str(x) for x in data["labels"])
        if len(labels) < 2:
            raise ValueError("a classifier needs at least two labels")
        bundle = ModelBundle(
            root=root,
            name=str(data["name"]),
            version=str(data["version"]),
            labels=labels,
            preprocess=PreprocessConfig.from_dict(data["preprocess"]),
            files=files,
            input_name=str(data.get("input", {}).get("name", "input")),
            output_name=str(data.get("output", {}).get("name", "log_probs")),
            default_variant=str(data.get("default_variant", "fp32")),
            top_k=int(data.get("top_k", min(5, len(labels)))),
            **_scope_entry(data.get("scope")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelUnavailable(f"{manifest} is invalid: {exc}") from exc
    if bundle.default_variant not in bundle.files:
        raise ModelUnavailable(f"{manifest}: default_variant {bundle.default_variant} has no file")
    return bundle


def _scope_entry(entry: Any) -> dict[str, Any]:
    """``scope`` / ``scope_error`` from model.json's optional ``scope`` entry (never raises)."""
    if entry is None:
        return {}
    try:
        path = str(entry["path"])
        if "/" in path or "\\" in path or path.startswith("."):
            raise ValueError(f"scope path {path!r} is not a file name in the model folder")
        return {"scope": ModelFile(path, str(entry["sha256"]), int(entry["bytes"]))}
    except (KeyError, TypeError, ValueError) as exc:
        return {"scope_error": f"model.json scope entry is invalid: {exc}"}


def write_bundle(bundle: ModelBundle) -> Path:
    """Write ``model.json`` atomically (temp file + rename)."""
    from skyclass.outputs import write_text_atomic

    return write_text_atomic(bundle.root / MANIFEST, json.dumps(bundle.to_dict(), indent=2) + "\n")
