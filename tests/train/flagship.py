"""The bundled flagship as a PyTorch model: its ONNX weights loaded into skyclass's MobileNetV2.

No PyTorch checkpoint of the flagship is published; its ONNX file has BatchNorm folded into each
convolution (weight and bias). Each Conv2d gets the folded weight and its BatchNorm becomes the
folded bias (scale 1, mean 0, variance 1 - eps), so the module computes what the ONNX file does:
a real trained model for tests of the PyTorch side's class activation maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from skyclass.core.bundle import load_bundle
from skyclass.core.preprocess import PreprocessConfig
from skyclass.model import build_model, feature_blocks, linear_head
from tests.conftest import BUNDLED_MODEL


@dataclass(frozen=True)
class Flagship:
    model: nn.Module
    labels: tuple[str, ...]
    preprocess: PreprocessConfig


def _folded_convs(graph: onnx.GraphProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of the backbone's convolutions in graph order (not the added cam conv)."""
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return [
        (inits[n.input[1]], inits[n.input[2]])
        for n in graph.node
        if n.op_type == "Conv" and not n.name.startswith("skyclass_")
    ]


def flagship_in_torch() -> Flagship:
    bundle = load_bundle(BUNDLED_MODEL)
    graph = onnx.load(str(BUNDLED_MODEL / bundle.files["fp32"].path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    model = build_model(bundle.num_classes, weights=None)
    layers = [
        m for m in feature_blocks(model).modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)
    ]
    pairs = list(zip(layers[0::2], layers[1::2], strict=True))
    convs = _folded_convs(graph)
    assert len(pairs) == len(convs) == 52
    with torch.no_grad():
        for (conv, bn), (weight, bias) in zip(pairs, convs, strict=True):
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            assert tuple(conv.weight.shape) == weight.shape
            conv.weight.copy_(torch.tensor(weight))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.tensor(bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        (gemm,) = [n for n in graph.node if n.op_type == "Gemm"]
        head = linear_head(model)
        head.weight.copy_(torch.tensor(inits[gemm.input[1]]))
        head.bias.copy_(torch.tensor(inits[gemm.input[2]]))
    model.eval()
    return Flagship(model, bundle.labels, bundle.preprocess)
