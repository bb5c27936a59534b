"""Export never dead-ends on int8 (issues 18 and 20): a missed int8 bound leaves int8 out of a
folder that is still written; --require-int8 fails; bad options are one line; a killed int8
quantisation leaves nothing behind in the system temp dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skyclass.cli import build_app
from skyclass.core.bundle import load_bundle
from skyclass.core.predictor import Predictor
from skyclass.export.parity import wilson_interval
from tests.conftest import CLASSES, REPO_ROOT, shared_images


def _export(args: list[str]):
    return CliRunner().invoke(build_app(), ["export", *args])


def test_wilson_lower_bound_accounts_for_how_few_images() -> None:
    assert wilson_interval(20, 20)[0] == pytest.approx(0.8389, abs=1e-4)
    assert wilson_interval(19, 20)[0] == pytest.approx(0.7639, abs=1e-4)
    assert wilson_interval(233, 235)[0] == pytest.approx(0.9695, abs=1e-4)
    assert wilson_interval(235, 235)[0] == pytest.approx(0.9839, abs=1e-4)
    # the same share on more images gives a tighter, higher lower bound
    assert wilson_interval(95, 100)[0] < wilson_interval(950, 1000)[0] < 0.95
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_int8_that_misses_its_bound_is_left_out_and_said_so(
    checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m"
    # 8 parity images cannot show 99% agreement (even 8 of 8 gives a lower bound of 67.6%)
    bound = ["--min-int8-agreement", "0.99"]
    result = _export([str(checkpoint), "--out", str(out), "--calibration-size", "8", *bound])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    note = [line for line in result.output.splitlines() if "int8 measured and left out" in line]
    assert len(note) == 1, result.output
    for hint in ("--calibration-manifest", "--min-int8-agreement", "--no-int8", "--require-int8"):
        assert hint in note[0]
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md",
        "model.json",
        "model.onnx",
        "parity.json",
        "scope.npz",  # the scope score (calibrated on the run's own manifests)
        "scope_report.json",
    ]
    manifest = json.loads((out / "model.json").read_text())
    int8 = manifest["int8"]
    assert int8["status"] == "left_out" and int8["parity_images"] == 8
    assert int8["calibration_images"] == 8
    assert 0 <= int8["agreement_lower_bound"] < 0.99 and int8["top1_agreement"] >= 0.5
    assert "lower 95% bound" in int8["why"][0] and "on 8 images" in int8["why"][0]
    assert set(load_bundle(out).files) == {"fp32"}
    photo = shared_images(CLASSES[0], 1)[0]
    assert Predictor(out).predict(photo.read_bytes()).label in CLASSES
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] is True and parity["int8_passed"] is False
    assert parity["int8_failures"] == int8["why"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "**left out**" in card and int8["why"][0] in card
    assert "int8 calibration**: 8 images" in card
    assert "../.." not in card


def test_require_int8_fails_and_writes_nothing(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = _export(
        [
            str(checkpoint),
            "--out",
            str(out),
            "--calibration-size",
            "8",
            "--min-int8-agreement",
            "0.99",
            "--require-int8",
        ]
    )
    assert result.exit_code == 1
    assert "error: parity failed: int8 vs fp32 top-1 agreement" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_no_int8_card_does_not_claim_a_calibration(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = _export([str(checkpoint), "--out", str(out), "--no-int8", "--parity-size", "2"])
    assert result.exit_code == 0, result.output
    card = (out / "MODEL_CARD.md").read_text()
    assert "calibration**: 0" not in card and "int8**: not exported (`--no-int8`)" in card
    assert json.loads((out / "model.json").read_text())["int8"] == {
        "status": "not_exported",
        "why": "--no-int8",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x"], "nothing to export: give a run dir or checkpoint"),
        (["runs/a", "--out", "x", "--pretrained", "imagenet"], "not both"),
        (["runs/a", "--out", "x", "--calibration-size", "0"], "--calibration-size must be >= 1"),
        (["runs/a", "--out", "x", "--top-k", "0"], "--top-k must be >= 1"),
        (["runs/a", "--out", "x", "--no-int8", "--require-int8"], "contradict"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    os.chdir(tmp_path)
    try:
        result = _export(args)
    finally:
        os.chdir(REPO_ROOT)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigkill_during_int8_quantisation_leaves_no_temp_model(
    checkpoint: Path, tmp_path: Path
) -> None:
    """The quantizer's augmented model goes into the export's own temp folder: a SIGKILL leaves
    nothing in the system temp dir, and the next export removes the killed run's folder."""
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    models = tmp_path / "models"
    env = os.environ | {"TMPDIR": str(system_tmp), "PYTHONPATH": str(REPO_ROOT / "src")}
    cmd = [sys.executable, "-m", "skyclass", "export", str(checkpoint), "--out"]
    proc = subprocess.Popen(
        [*cmd, str(models / "m"), "--calibration-size", "16"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # the quantizer's own files: pre-processing done, calibration under way
            if list(models.glob(".m.tmp-*/quant-*/ort.quant.*/augmented_model.onnx")):
                break
            time.sleep(0.05)
        else:
            pytest.fail("export ended or never reached int8 calibration")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert _quantizer_files(system_tmp) == []
    assert [p.name for p in models.iterdir() if p.name.startswith(".m.tmp-")]
    again = subprocess.run(
        [*cmd, str(models / "m"), "--no-int8", "--parity-size", "2"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert [p.name for p in models.iterdir()] == ["m"]
    assert _quantizer_files(system_tmp) == []


def _quantizer_files(folder: Path) -> list[Path]:
    """ONNX Runtime's quantizer temp folders and models under ``folder``."""
    return [p for p in folder.rglob("*") if "quant" in p.name or p.suffix == ".onnx"]
