"""Build the peer's model from the same weights as the skyclass model folder.

Candidates for the weights, in order: the checkpoints given (``--checkpoint``, else the newest
``runs/*/checkpoints/best.pt`` first), then the shared ImageNet backbone plus the classifier head
read out of ``model.onnx`` (exact for a head-only model such as the bundled placeholder). The first
whose output matches ONNX Runtime's on a real photo is used, and the difference is reported, so a
table never compares different networks without saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skyclass.core.bundle import ModelBundle
from skyclass.model import build_model, load_trained


@dataclass(frozen=True)
class PeerModel:
    eager: nn.Module
    model_dir: Path  # holds model.pt (TorchScript) and labels.json for the peer handler
    weights_source: str
    max_abs_diff: float  # of probabilities against ONNX Runtime fp32 on a real photo


def _onnx_head(onnx_path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    return {
        init.name: numpy_helper.to_array(init).copy()
        for init in graph.initializer
        if init.name.startswith("classifier.")
    }


def _from_checkpoint(bundle: ModelBundle, checkpoint: Path) -> nn.Module:
    model, ckpt = load_trained(checkpoint)
    if list(ckpt["class_names"]) != list(bundle.labels):
        raise ValueError(f"{checkpoint} has classes {ckpt['class_names']}, not the bundle's")
    return model


def _from_backbone(bundle: ModelBundle, weights: Path) -> tuple[nn.Module, str]:
    if bundle.num_classes == 1000:  # the ImageNet model itself, exported as is
        from torchvision.models import mobilenet_v2

        imagenet = mobilenet_v2()
        imagenet.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return nn.Sequential(imagenet, nn.LogSoftmax(dim=1)).eval(), "shared ImageNet weights"
    model = build_model(bundle.num_classes, weights=weights).eval()
    head = _onnx_head(bundle.root / bundle.file("fp32").path)
    linear = model.classifier[1]
    if {"classifier.1.weight", "classifier.1.bias"} <= head.keys():
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(head["classifier.1.weight"]))
            linear.bias.copy_(torch.from_numpy(head["classifier.1.bias"]))
        return model, "shared ImageNet backbone + head from model.onnx"
    return model, "shared ImageNet backbone, random head (no named head in model.onnx)"


def _diff(model: nn.Module, onnx_probs: np.ndarray, probe: np.ndarray) -> float:
    with torch.no_grad():
        probs = model(torch.from_numpy(probe.copy())).exp().numpy()
    return float(np.abs(probs - onnx_probs).max())


def eager_model(
    bundle: ModelBundle,
    weights: Path,
    probe: np.ndarray,
    checkpoints: list[Path],
    tolerance: float = 1e-4,
) -> tuple[nn.Module, str, float]:
    """MobileNetV2 (eval mode) with the weights of the bundle's fp32 ONNX file.

    Tries each checkpoint in turn (newest training runs first), then the shared backbone with the
    head read from model.onnx, and takes the first whose probabilities on ``probe`` match ONNX
    Runtime's within ``tolerance``; if none does, the closest, with the difference reported.
    Returns (model, where its weights came from, max abs difference of probabilities).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(bundle.root / bundle.file("fp32").path), providers=["CPUExecutionProvider"]
    )
    (log_probs,) = session.run([bundle.output_name], {bundle.input_name: probe})
    onnx_probs = np.exp(log_probs)
    tried: list[tuple[float, nn.Module, str]] = []
    for checkpoint in checkpoints:
        try:
            model = _from_checkpoint(bundle, checkpoint)
        except (ValueError, KeyError, RuntimeError, OSError):
            continue
        diff = _diff(model, onnx_probs, probe)
        source = f"checkpoint {checkpoint.parent.parent.name}/{checkpoint.name}"
        if diff < tolerance:
            return model, source, diff
        tried.append((diff, model, source))
    model, source = _from_backbone(bundle, weights)
    diff = _diff(model, onnx_probs, probe)
    tried.append((diff, model, source))
    diff, model, source = min(tried, key=lambda t: t[0])
    return model, source, diff


def build_peer(
    bundle: ModelBundle,
    weights: Path,
    out_dir: Path,
    probe: np.ndarray,
    checkpoints: list[Path],
) -> PeerModel:
    """Write ``out_dir/model.pt`` (TorchScript, traced) and ``labels.json``; return the models."""
    model, source, diff = eager_model(bundle, weights, probe, checkpoints)
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = bundle.preprocess.size
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, 3, height, width))
    traced.save(str(out_dir / "model.pt"))
    (out_dir / "labels.json").write_text(json.dumps(list(bundle.labels)), encoding="utf-8")
    return PeerModel(eager=model, model_dir=out_dir, weights_source=source, max_abs_diff=diff)
