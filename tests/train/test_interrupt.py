"""Ctrl-C during ``skyclass train``: one line naming the real run dir (and how to resume it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CLASSES, DATA_ROOT, REPO_ROOT, WEIGHTS, shared_images, write_manifest


def _config(tmp_path: Path) -> Path:
    manifest = write_manifest(tmp_path / "m.csv", [p for c in CLASSES for p in shared_images(c, 3)])
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'name = "tiny"\nout = "{tmp_path / "runs"}"\ndata_root = "{DATA_ROOT}"\n'
        f'train = "{manifest}"\nval = "{manifest}"\nweights = "{WEIGHTS}"\n'
        "image_size = 64\nbatch_size = 4\nmax_steps = 2\nnum_threads = 1\n"
        f'cache_dir = "{tmp_path / "cache"}"\n'
        '[[stages]]\nname = "head"\nepochs = 50\nlr = 1e-3\n'
    )
    return config


def _ctrl_c_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(config: Path, ready: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Start ``train``, wait for ``ready`` to exist, press Ctrl-C (SIGINT)."""
    train = ["train", "--config", str(config), "--no-progress", *args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyclass", *train],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: a suite started in the background (`nohup ... &`) passes SIGINT down
        # ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    deadline = time.monotonic() + 240
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_names_the_run_dir(tmp_path: Path) -> None:
    config = _config(tmp_path)
    run = tmp_path / "runs" / "tiny"
    early = _interrupt_when(config, run / "config.json")
    assert early.returncode == 130, early.stderr
    assert early.stderr.strip().splitlines()[-1] == (
        f"error: interrupted before the first checkpoint of {run}; nothing to resume"
    )
    late = _interrupt_when(config, run / "checkpoints" / "last.pt", "--force")
    assert late.returncode == 130, late.stderr
    assert late.stderr.strip().splitlines()[-1] == (
        f"error: interrupted; resume with: skyclass train --resume {run}"
    )
    assert "RUN_DIR" not in early.stderr + late.stderr and "Traceback" not in late.stderr
