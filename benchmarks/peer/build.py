"""Build the peer's model from the same weights as the skyclass model folder.

Source of the weights, in order: an explicit skyclass checkpoint (``--checkpoint``, the run the
ONNX file was exported from); else the shared ImageNet backbone plus the classifier head read out
of ``model.onnx`` (exact for a head-only model such as the bundled placeholder). The result is
checked against ONNX Runtime on a real image and the difference is reported, so a table never
compares different networks without saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skyclass.model import build_model, load_trained
from skyclass.serve.bundle import ModelBundle


@dataclass(frozen=True)
class PeerModel:
    eager: nn.Module
    model_dir: Path  # holds model.pt (TorchScript) and labels.json for the peer handler
    weights_source: str


def _onnx_head(onnx_path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    return {
        init.name: numpy_helper.to_array(init).copy()
        for init in graph.initializer
        if init.name.startswith("classifier.")
    }


def eager_model(
    bundle: ModelBundle, weights: Path, checkpoint: Path | None = None
) -> tuple[nn.Module, str]:
    """MobileNetV2 in eval mode with the bundle's weights, and where they came from."""
    if checkpoint is not None:
        model, ckpt = load_trained(checkpoint)
        if list(ckpt["class_names"]) != list(bundle.labels):
            raise ValueError(f"{checkpoint} has classes {ckpt['class_names']}, not the bundle's")
        return model, f"checkpoint {checkpoint.name}"
    model = build_model(bundle.num_classes, weights=weights).eval()
    head = _onnx_head(bundle.root / bundle.file("fp32").path)
    linear = model.classifier[1]
    if {"classifier.1.weight", "classifier.1.bias"} <= head.keys():
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(head["classifier.1.weight"]))
            linear.bias.copy_(torch.from_numpy(head["classifier.1.bias"]))
        return model, "shared ImageNet backbone + head from model.onnx"
    return model, "shared ImageNet backbone, random head (no named head in model.onnx)"


def build_peer(
    bundle: ModelBundle, weights: Path, out_dir: Path, checkpoint: Path | None = None
) -> PeerModel:
    """Write ``out_dir/model.pt`` (TorchScript, traced) and ``labels.json``; return the models."""
    model, source = eager_model(bundle, weights, checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = bundle.preprocess.size
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, 3, height, width))
    traced.save(str(out_dir / "model.pt"))
    (out_dir / "labels.json").write_text(json.dumps(list(bundle.labels)), encoding="utf-8")
    return PeerModel(eager=model, model_dir=out_dir, weights_source=source)
