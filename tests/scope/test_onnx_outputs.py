"""The extra ONNX outputs: log_probs computed exactly as before, the CAM exact for the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from skyclass.core.bundle import load_bundle
from skyclass.core.preprocess import preprocess
from skyclass.export.config import ExportError
from skyclass.export.onnx_outputs import add_outputs, add_outputs_file
from tests.conftest import BUNDLED_MODEL, CLASSES, shared_images
from tests.scope.support import strip_outputs


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    bundle = load_bundle(BUNDLED_MODEL)
    photos = [p for c in CLASSES for p in shared_images(c, 2)]
    return np.concatenate([preprocess(p.read_bytes(), bundle.preprocess) for p in photos])


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_log_probs_bit_identical_to_the_graph_without_the_outputs(
    variant: str, batch: np.ndarray, tmp_path: Path
) -> None:
    published = BUNDLED_MODEL / load_bundle(BUNDLED_MODEL).file(variant).path
    strip_outputs(published, tmp_path / "old.onnx")
    assert [o.name for o in onnx.load(str(tmp_path / "old.onnx")).graph.output] == ["log_probs"]
    new, old = _session(published), _session(tmp_path / "old.onnx")
    for i in range(len(batch)):
        x = batch[i : i + 1]
        got = new.run(["log_probs"], {"input": x})[0]
        assert np.array_equal(got, old.run(None, {"input": x})[0])
    # Adding them again to the stripped graph gives back the published file's outputs.
    add_outputs_file(tmp_path / "old.onnx", tmp_path / "again.onnx")
    assert [o.name for o in onnx.load(str(tmp_path / "again.onnx")).graph.output] == [
        "log_probs",
        "logits",
        "features",
        "cam",
    ]


def test_cam_and_features_are_exact_for_the_head(batch: np.ndarray) -> None:
    path = BUNDLED_MODEL / "model.onnx"
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    w, b = inits["classifier.1.weight"], inits["classifier.1.bias"]
    log_probs, logits, features, cam = _session(path).run(
        ["log_probs", "logits", "features", "cam"], {"input": batch}
    )
    assert cam.shape[:2] == (len(batch), len(CLASSES)) and cam.shape[2] == cam.shape[3] == 9
    # mean over the map of CAM_c, plus the bias, is the logit: global pool + linear head.
    np.testing.assert_allclose(cam.mean(axis=(2, 3)) + b, logits, atol=1e-4)
    np.testing.assert_allclose(features @ w.T + b, logits, atol=1e-4)
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(log_probs, expected, atol=1e-5)


def test_outputs_are_not_added_twice_and_need_a_pooled_linear_head() -> None:
    model = onnx.load(str(BUNDLED_MODEL / "model.onnx"))
    with pytest.raises(ExportError, match="already has outputs"):
        add_outputs(model)
    for node in model.graph.node:
        if node.op_type == "GlobalAveragePool":
            node.op_type = "GlobalMaxPool"
    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    keep = [o for o in graph.graph.output if o.name == "log_probs"]
    del graph.graph.output[:]
    graph.graph.output.extend(keep)
    with pytest.raises(ExportError, match="GlobalMaxPool"):
        add_outputs(graph)
