"""Extra named ONNX outputs for the scope score and class activation maps, by graph surgery.

A MobileNetV2 graph ends ``... -> Clip (last feature map A, N x K x h x w) -> GlobalAveragePool ->
Flatten (pooled features f, N x K) -> Gemm (W: C x K, b) -> LogSoftmax``. This adds, without
touching any existing node (so ``log_probs`` is computed exactly as before):

- ``logits``   the Gemm output (N x C), for energy scores;
- ``features`` the pooled penultimate features (N x K), for Mahalanobis / kNN scores;
- ``cam``      the class activation maps (N x C x h x w): ``CAM_c = sum_k W_ck A_k``, a 1x1
  convolution with the head's own weights. Exact for global average pooling + a linear layer:
  ``mean_ij CAM_c[i, j] + b_c == logits_c``.

The same code handles the int8 QDQ graph (the tensors are then the dequantized ones). Used by
``skyclass export`` for new exports and by ``scripts/scope_bundled.py`` for a published model.
Only ORT-requested outputs are fetched at serve time; see ``benchmarks/scope_explain.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyclass.export.config import ExportError

if TYPE_CHECKING:
    import onnx

LOGITS = "logits"
FEATURES = "features"
CAM = "cam"
EXTRA_OUTPUTS = (LOGITS, FEATURES, CAM)


@dataclass(frozen=True)
class HeadTensors:
    """Names of the graph tensors the extra outputs come from."""

    feature_map: str
    features: str
    weight: str
    logits: str
    num_classes: int
    width: int


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def find_head(model: onnx.ModelProto) -> HeadTensors:
    """Find GlobalAveragePool -> (Q/DQ, Flatten)* -> Gemm(transB=1); ExportError if absent."""
    graph = model.graph
    producers = _producers(graph)
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    if len(gemms) != 1:
        raise ExportError(f"expected one Gemm head, found {len(gemms)}")
    gemm = gemms[0]
    attrs = {a.name: a for a in gemm.attribute}
    transa = attrs["transA"].i if "transA" in attrs else 0
    if "transB" not in attrs or attrs["transB"].i != 1 or transa:
        raise ExportError("the Gemm head is not x @ W.T + b (transB=1)")
    features = gemm.input[0]
    name = features
    for _ in range(8):  # walk back through Flatten / QuantizeLinear / DequantizeLinear
        node = producers.get(name)
        if node is None:
            raise ExportError("the Gemm head is not fed by GlobalAveragePool")
        if node.op_type == "GlobalAveragePool":
            feature_map = node.input[0]
            break
        if node.op_type not in ("Flatten", "QuantizeLinear", "DequantizeLinear", "Reshape"):
            raise ExportError(f"unexpected {node.op_type} between the pooling and the head")
        name = node.input[0]
    else:
        raise ExportError("the Gemm head is not fed by GlobalAveragePool")
    shape = _weight_shape(model, gemm.input[1], producers)
    return HeadTensors(feature_map, features, gemm.input[1], gemm.output[0], shape[0], shape[1])


def _weight_shape(
    model: onnx.ModelProto, name: str, producers: dict[str, onnx.NodeProto]
) -> tuple[int, int]:
    inits = {t.name: t for t in model.graph.initializer}
    node = producers.get(name)
    if name not in inits and node is not None and node.op_type == "DequantizeLinear":
        name = node.input[0]  # int8 QDQ: the quantized initializer has the same shape
    if name not in inits or len(inits[name].dims) != 2:
        raise ExportError("the Gemm head's weight is not a 2-D initializer")
    c, k = inits[name].dims
    return int(c), int(k)


def add_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with ``logits``, ``features`` and ``cam`` outputs added."""
    import onnx
    from onnx import TensorProto, helper

    present = {o.name for o in model.graph.output}
    if present & set(EXTRA_OUTPUTS):
        raise ExportError(f"the model already has outputs {sorted(present & set(EXTRA_OUTPUTS))}")
    head = find_head(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    shape_name = "skyclass_cam_weight_shape"
    graph.initializer.append(
        onnx.numpy_helper.from_array(_int64([head.num_classes, head.width, 1, 1]), name=shape_name)
    )
    graph.node.extend(
        [
            helper.make_node("Identity", [head.logits], [LOGITS], name="skyclass_logits"),
            helper.make_node("Identity", [head.features], [FEATURES], name="skyclass_features"),
            helper.make_node(
                "Reshape", [head.weight, shape_name], ["skyclass_cam_weight"], name="skyclass_w4"
            ),
            helper.make_node(
                "Conv", [head.feature_map, "skyclass_cam_weight"], [CAM], name="skyclass_cam"
            ),
        ]
    )
    f32 = TensorProto.FLOAT
    graph.output.extend(
        [
            helper.make_tensor_value_info(LOGITS, f32, ["batch", head.num_classes]),
            helper.make_tensor_value_info(FEATURES, f32, ["batch", head.width]),
            helper.make_tensor_value_info(CAM, f32, ["batch", head.num_classes, "h", "w"]),
        ]
    )
    onnx.checker.check_model(out, full_check=True)
    return out


def _int64(values: list[int]) -> Any:
    import numpy as np

    return np.array(values, dtype=np.int64)


def add_outputs_file(src: Path, dst: Path) -> HeadTensors:
    """Read ``src``, add the outputs, write ``dst`` (may be ``src``). Returns the head's tensors."""
    import onnx

    model = onnx.load(str(src))
    head = find_head(model)
    onnx.save(add_outputs(model), str(dst))
    return head


def output_names(path: Path) -> tuple[str, ...]:
    import onnx

    return tuple(o.name for o in onnx.load(str(path), load_external_data=False).graph.output)
