"""skyclass export on a tiny real checkpoint: shared weights, a few steps on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from skyclass.cli import build_app
from skyclass.core.bundle import load_bundle, sha256_file
from skyclass.core.predictor import Predictor
from skyclass.core.preprocess import PreprocessConfig
from skyclass.export.config import ExportConfig, ExportError, ParityBounds
from skyclass.export.pipeline import ParityError, run_export
from tests.conftest import CLASSES, shared_images
from tests.export.conftest import batch as _batch

PRE = PreprocessConfig()


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    config = ExportConfig(
        out=str(out),
        source=str(checkpoint),
        calibration_size=16,
        version="0.1",
        ood_images=(str(_sample_photo("grace_hopper.jpg")),),
        # A 3-step head is unsure on some photos; agreement is asserted below, not gated here.
        bounds=ParityBounds(min_int8_agreement=0.5),
    )
    return run_export(config)


def _sample_photo(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def test_model_folder_loads_and_hashes_match(exported) -> None:
    bundle = load_bundle(exported.out)
    assert bundle.labels == CLASSES
    assert bundle.name == "best" and bundle.version == "0.1"
    assert bundle.preprocess == PRE
    assert bundle.input_name == "input" and bundle.output_name == "log_probs"
    assert set(bundle.files) == {"fp32", "int8"}
    for f in bundle.files.values():
        path = exported.out / f.path
        assert sha256_file(path) == f.sha256 and path.stat().st_size == f.bytes
    names = sorted(p.name for p in exported.out.iterdir())
    assert names == [
        "MODEL_CARD.md",
        "model.int8.onnx",
        "model.json",
        "model.onnx",
        "parity.json",
        "scope.npz",  # issue 16: the scope score's parameters (sha256 in model.json)
        "scope_report.json",  # and its measured figures
    ]
    assert bundle.scope is not None
    assert sha256_file(exported.out / bundle.scope.path) == bundle.scope.sha256
    assert not [p for p in exported.out.parent.iterdir() if p.name.startswith(".")]


def test_onnx_checker_opset_and_names(exported) -> None:
    model = onnx.load(str(exported.out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["input"]
    # log_probs first (the answer), then the scope / explanation outputs (issue 16).
    assert [o.name for o in model.graph.output] == ["log_probs", "logits", "features", "cam"]
    int8 = onnx.load(str(exported.out / "model.int8.onnx"))
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "LogSoftmax"} <= ops
    # LogSoftmax runs in float and its output is the graph's: no QuantizeLinear after it.
    soft = next(n for n in int8.graph.node if n.op_type == "LogSoftmax")
    assert soft.output[0] == "log_probs"
    assert not [n for n in int8.graph.node if "log_probs" in n.input]


def test_predictor_matches_pytorch_on_real_photos(exported, checkpoint: Path) -> None:
    from skyclass.model import load_trained

    model, _ = load_trained(checkpoint)
    photos = [f for c in CLASSES for f in shared_images(c, 12)[10:12]]
    predictor = Predictor(exported.out)
    with torch.inference_mode():
        expected = model(_batch(photos)).exp().double().numpy()
    for photo, probs in zip(photos, expected, strict=True):
        # The classifier against PyTorch: rejection off (its scope may judge a photo out of scope).
        got = predictor.predict(photo.read_bytes(), reject=False)
        assert got.label == CLASSES[int(probs.argmax())]
        assert list(got.probabilities) == [CLASSES[i] for i in np.argsort(-probs)]
        diffs = [abs(got.probabilities[c] - probs[i]) for i, c in enumerate(CLASSES)]
        assert max(diffs) < 1e-4


@pytest.mark.parametrize("variant", ["model.onnx", "model.int8.onnx"])
def test_dynamic_batch(exported, variant: str) -> None:
    session = ort.InferenceSession(str(exported.out / variant), providers=["CPUExecutionProvider"])
    photos = shared_images(CLASSES[0], 3)
    x = _batch(photos).numpy()
    (three,) = session.run(["log_probs"], {"input": x})
    (one,) = session.run(["log_probs"], {"input": x[:1]})
    assert three.shape == (3, len(CLASSES)) and one.shape == (1, len(CLASSES))
    np.testing.assert_allclose(np.exp(one[0]), np.exp(three[0]), atol=1e-5)
    np.testing.assert_allclose(np.exp(three).sum(1), 1.0, atol=1e-4)


def test_int8_smaller_and_agrees_on_real_photos(exported) -> None:
    fp32 = Predictor(exported.out, variant="fp32")
    int8 = Predictor(exported.out, variant="int8")
    photos = [f for c in CLASSES for f in shared_images(c, 14)[12:14]]
    same = [
        fp32.predict(p.read_bytes()).label == int8.predict(p.read_bytes()).label for p in photos
    ]
    assert sum(same) >= 0.75 * len(photos), same
    b = exported.bundle
    assert b.files["fp32"].bytes >= 3 * b.files["int8"].bytes


def test_int8_keeps_the_first_convolutions_and_the_softmax_in_float(exported) -> None:
    import onnx

    from skyclass.export.quantize import FLOAT_CONVS

    graph = onnx.load(str(exported.out / "model.int8.onnx")).graph
    made_by = {o: n for n in graph.node for o in n.output}
    # The network's convolutions (the CAM output's 1x1 "skyclass_cam" reads the head's weights).
    convs = [n for n in graph.node if n.op_type == "Conv" and not n.name.startswith("skyclass_")]

    def weight_is_int8(conv) -> bool:  # QDQ: the weight comes through a DequantizeLinear
        src = made_by.get(conv.input[1])
        return src is not None and src.op_type == "DequantizeLinear"

    assert [weight_is_int8(c) for c in convs[:FLOAT_CONVS]] == [False] * FLOAT_CONVS
    assert all(weight_is_int8(c) for c in convs[FLOAT_CONVS:])
    # the output comes straight from a float LogSoftmax, not through a quantize/dequantize pair
    assert made_by[graph.output[0].name].op_type == "LogSoftmax"


def test_parity_json_and_card(exported) -> None:
    parity = json.loads((exported.out / "parity.json").read_text())
    assert parity["passed"] is True and parity["failures"] == []
    assert parity["n"] == 8 and parity["n_labelled"] == 8
    assert parity["fp32_max_abs_diff"] < 1e-4 and parity["fp32_top1_mismatches"] == 0
    assert 0.5 <= parity["int8_top1_agreement"] <= 1.0
    assert parity["size_ratio"] >= 3.0
    assert parity["images"]["calibration"] == 16
    assert parity["serving_check"]["max_abs_diff"] < 1e-4
    assert parity["fp32_bytes"] == exported.bundle.files["fp32"].bytes
    card = (exported.out / "MODEL_CARD.md").read_text()
    for text in ("## Metrics", "Confusion matrix", "## Parity", "## Known limits", "grace_hopper"):
        assert text in card
    assert exported.bundle.files["int8"].sha256 in card


def test_refuses_to_overwrite_without_force(exported, checkpoint: Path) -> None:
    before = sha256_file(exported.out / "model.json")
    result = CliRunner().invoke(
        build_app(), ["export", str(checkpoint), "--out", str(exported.out), "--no-int8"]
    )
    assert result.exit_code == 1
    assert "--force" in result.output and "Traceback" not in result.output
    assert sha256_file(exported.out / "model.json") == before


def test_force_replaces(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    run_export(
        ExportConfig(out=str(out), source=str(checkpoint), int8=False, parity_size=2, force=True)
    )
    assert not (out / "stale.txt").exists()
    assert set(load_bundle(out).files) == {"fp32"}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


@pytest.mark.parametrize("kind", ["missing", "garbage", "not-a-checkpoint"])
def test_bad_checkpoint_is_one_line_error(kind: str, tmp_path: Path) -> None:
    ckpt = tmp_path / "best.pt"
    if kind == "garbage":
        ckpt.write_bytes(b"this is not a checkpoint")
    elif kind == "not-a-checkpoint":
        torch.save({"weights": 1}, ckpt)
    out = tmp_path / "out"
    result = CliRunner().invoke(build_app(), ["export", str(ckpt), "--out", str(out)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert [p.name for p in tmp_path.iterdir()] == ([] if kind == "missing" else ["best.pt"])


def test_parity_failure_writes_nothing(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    config = ExportConfig(
        out=str(out),
        source=str(checkpoint),
        int8=False,
        parity_size=2,
        bounds=ParityBounds(max_prob_diff=0.0),
    )
    with pytest.raises(ParityError) as info:
        run_export(config)
    assert "max abs prob diff" in str(info.value)
    assert info.value.report.fp32_max_abs_diff < 1e-4
    assert list(tmp_path.iterdir()) == []


def test_config_refuses_both_sources() -> None:
    with pytest.raises(ExportError):
        ExportConfig(out="x", source="runs/a", pretrained="imagenet")
    with pytest.raises(ExportError):
        ExportConfig(out="x", pretrained="resnet")


def test_card_carries_notes_and_a_missing_notes_file_fails_first(
    checkpoint: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("Source-grouped protocol: 71.3% on held-out sources.\n", encoding="utf-8")
    out = tmp_path / "m"
    run_export(
        ExportConfig(
            out=str(out), source=str(checkpoint), int8=False, parity_size=2, card_notes=str(notes)
        )
    )
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Notes\n\nSource-grouped protocol: 71.3% on held-out sources." in card
    with pytest.raises(ExportError, match="card notes not readable"):
        run_export(
            ExportConfig(
                out=str(tmp_path / "n"),
                source=str(checkpoint),
                parity_size=2,
                card_notes=str(tmp_path / "absent.md"),
            )
        )
    assert not (tmp_path / "n").exists()


def test_export_writes_a_calibrated_scope_and_can_explain(exported) -> None:
    """No --out-of-scope: the default method, fitted on the run's train manifest, its threshold
    keeping 95% of val.csv beside it; described in model.json and in the card."""
    bundle = load_bundle(exported.out)
    assert bundle.scope is not None
    assert sha256_file(exported.out / bundle.scope.path) == bundle.scope.sha256
    predictor = Predictor(exported.out)
    assert predictor.scope is not None and predictor.scope_error is None
    assert predictor.can_explain
    report = json.loads((exported.out / "scope_report.json").read_text())
    assert report["method"] == predictor.scope.method == "mahalanobis"
    assert set(report["thresholds"]) == {"fp32", "int8"}
    assert "Out of scope" in (exported.out / "MODEL_CARD.md").read_text()
    photo = shared_images(CLASSES[0], 1)[0].read_bytes()
    answer = predictor.predict(photo, explain=True)
    assert answer.scope is not None and answer.explanation is not None
