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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

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


#: model.json is a few KB; anything far bigger is not one (and is not read whole).
MAX_MANIFEST_BYTES = 1024 * 1024


def _read_manifest(manifest: Path) -> dict[str, Any]:
    if manifest.stat().st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"it is over {MAX_MANIFEST_BYTES:,} bytes")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"it must be a JSON object, not {type(data).__name__}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"unsupported schema_version {data.get('schema_version')!r}")
    return data


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object")
    return value


def model_name(value: object) -> str:
    """``value`` as a model name (it appears in URLs); ValueError when it cannot be one."""
    name = str(value)
    if not name or len(name) > 100 or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name {name[:100]!r} is not a model name (no slashes, not empty)")
    return name


def _labels(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("labels must be a list")
    labels = tuple(str(x) for x in value)
    if len(labels) < 2:
        raise ValueError("a classifier needs at least two labels")
    twice = sorted(label for label, n in Counter(labels).items() if n > 1)
    if twice:
        raise ValueError(f"labels appear twice: {', '.join(twice[:5])}")
    return labels


def _model_file(variant: str, entry: object) -> ModelFile:
    if not isinstance(entry, dict):
        raise ValueError(f"files.{variant} must be an object")
    path = str(entry["path"])
    parts = PurePosixPath(path.replace("\\", "/"))
    if not path or parts.is_absolute() or PureWindowsPath(path).drive or ".." in parts.parts:
        raise ValueError(f"files.{variant}.path {path[:200]!r} is not inside the model folder")
    return ModelFile(path, str(entry["sha256"]), int(entry["bytes"]))


def load_bundle(root: str | Path) -> ModelBundle:
    """Read and validate ``model.json``; raise :class:`ModelUnavailable` with a clear reason.

    Refused: not a JSON object, nested too deeply, over 1 MB, file paths outside the folder
    (absolute or with ``..``), a name with a slash, duplicate labels, bad preprocessing values.
    """
    root = Path(root)
    manifest = root / MANIFEST
    if not root.is_dir():
        raise ModelUnavailable(f"model folder not found: {root}")
    if not manifest.is_file():
        raise ModelUnavailable(f"not a model folder (no {MANIFEST}): {root}")
    try:
        data = _read_manifest(manifest)
        files = data["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("files must be an object naming at least one ONNX file")
        labels = _labels(data["labels"])
        preprocess = data["preprocess"]
        if not isinstance(preprocess, dict):
            raise ValueError("preprocess must be an object")
        bundle = ModelBundle(
            root=root,
            name=model_name(data["name"]),
            version=str(data["version"]),
            labels=labels,
            preprocess=PreprocessConfig.from_dict(preprocess),
            files={str(v): _model_file(str(v), f) for v, f in files.items()},
            input_name=str(_section(data, "input").get("name", "input")),
            output_name=str(_section(data, "output").get("name", "log_probs")),
            default_variant=str(data.get("default_variant", "fp32")),
            top_k=int(data.get("top_k", min(5, len(labels)))),
            **_scope_entry(data.get("scope")),
        )
    except (KeyError, TypeError, ValueError, OSError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelUnavailable(f"{manifest} is invalid: {what}") from None
    if bundle.default_variant not in bundle.files:
        raise ModelUnavailable(f"{manifest}: default_variant {bundle.default_variant} has no file")
    return bundle


def check_session(bundle: ModelBundle, session: Any) -> None:
    """Refuse an ONNX Runtime session that does not fit its ``model.json``: input and output
    names, the input's (N, 3, H, W) float shape against the preprocessing size, and the output's
    width against the labels (static width, or from one run on zeros when it is symbolic)."""
    inputs = {x.name: x for x in session.get_inputs()}
    outputs = {x.name: x for x in session.get_outputs()}
    if bundle.input_name not in inputs:
        raise ModelUnavailable(
            f"model.json names input {bundle.input_name!r}; the ONNX file has {', '.join(inputs)}"
        )
    if bundle.output_name not in outputs:
        raise ModelUnavailable(
            f"model.json names output {bundle.output_name!r}; "
            f"the ONNX file has {', '.join(outputs)}"
        )
    arg = inputs[bundle.input_name]
    height, width = bundle.preprocess.size
    shape = list(arg.shape)
    if arg.type != "tensor(float)" or len(shape) != 4:
        raise ModelUnavailable(f"the ONNX input is {arg.type} {shape}; expected float (N, 3, H, W)")
    for got, want, what in zip(
        shape[1:], (3, height, width), ("channels", "height", "width"), strict=True
    ):
        if isinstance(got, int) and got != want:
            raise ModelUnavailable(f"the ONNX input takes {what} {got}; model.json says {want}")
    out_shape = list(outputs[bundle.output_name].shape)
    classes = out_shape[-1] if out_shape else None
    if not isinstance(classes, int):
        zeros = np.zeros((1, 3, height, width), dtype=np.float32)
        (result,) = session.run([bundle.output_name], {bundle.input_name: zeros})
        classes = int(result.shape[-1])
    if classes != bundle.num_classes:
        raise ModelUnavailable(
            f"the ONNX output has {classes} classes; model.json lists {bundle.num_classes} labels"
        )


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
