"""A checkpoint never runs code: a pickle carrying an ``os.system`` payload is refused by every
command that loads one (export, evaluate, lr-find, train --resume, load_trained), and the payload
never executes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skyclass.model import CheckpointError, build_model, load_checkpoint, load_trained
from tests.conftest import CLASSES, run_cli


class Payload:
    """Unpickling this calls ``os.system(command)``: the classic malicious pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@pytest.fixture
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A real skyclass-shaped checkpoint (model state, labels, preprocessing) plus the payload."""
    marker = tmp_path / "PWNED"
    model = build_model(len(CLASSES), weights=None)
    ckpt = {
        "model": model.state_dict(),
        "class_names": list(CLASSES),
        "preprocess": {"size": 64},
        "arch": "mobilenet_v2",
        "extra": Payload(f"touch {marker}"),
    }
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path = run / "checkpoints" / "best.pt"
    torch.save(ckpt, path)
    # The file really is malicious: the unsafe loader runs it (in a child, to keep this one clean).
    probe = subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
        capture_output=True,
        timeout=120,
    )
    assert probe.returncode == 0 and marker.exists(), probe.stderr
    marker.unlink()
    return path, marker


def test_loaders_refuse_and_never_run_the_payload(evil_checkpoint: tuple[Path, Path]) -> None:
    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_trained(path)
    assert not marker.exists()


def test_export_and_evaluate_refuse_with_one_line(
    evil_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    path, marker = evil_checkpoint
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,group\nx.jpg,flying_birds,x\n")
    for args in (
        ("export", str(path.parent.parent), "--out", str(tmp_path / "model")),
        ("export", str(path), "--out", str(tmp_path / "model2")),
        ("evaluate", str(path), str(manifest), "--out", str(tmp_path / "rep")),
    ):
        out = run_cli(*args)
        assert out.returncode != 0, (args, out.stdout)
        assert "Traceback" not in out.stderr, out.stderr
        assert "refused" in out.stderr, out.stderr
        assert not marker.exists(), args
    assert not (tmp_path / "model").exists() and not (tmp_path / "rep").exists()
