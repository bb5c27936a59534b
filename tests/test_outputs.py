"""Atomic folders: what a killed run leaves behind is cleaned by the next run, and only that."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from skyclass.outputs import OutputExists, atomic_dir

# A child that starts building ``out`` and is killed before it can finish or clean up.
BUILD_FOREVER = """
import sys, time
from pathlib import Path
from skyclass.outputs import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "half.txt").write_text("half")
    print(tmp, flush=True)
    time.sleep(600)
"""


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_killed_runs_temp_folder_is_removed_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "audit"
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD_FOREVER, str(out)], stdout=subprocess.PIPE, text=True
    )
    left = Path(proc.stdout.readline().strip())
    assert left.parent == tmp_path and left.name.startswith(f".audit.tmp-{proc.pid}-")
    # While the builder runs, another run leaves its folder alone (it is not stale).
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
        assert left.is_dir() and (left / "half.txt").is_file()
    assert (out / "a.txt").read_text() == "a"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert hidden(tmp_path) == [left.name]  # what SIGKILL leaves
    # Someone else's folder that only looks similar, and the user's files, are not touched.
    (tmp_path / ".audit.tmp-notes").mkdir()
    (tmp_path / ".audit.old.x").mkdir()
    (tmp_path / "keep.txt").write_text("mine")
    with atomic_dir(out, force=True) as tmp:
        (tmp / "b.txt").write_text("b")
    assert not left.exists()
    assert hidden(tmp_path) == [".audit.old.x", ".audit.tmp-notes"]
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_refused_or_failed_run_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "split"
    out.mkdir()
    (out / "train.csv").write_text("x")
    with pytest.raises(OutputExists, match="--force"), atomic_dir(out):
        pass
    with pytest.raises(RuntimeError), atomic_dir(out, force=True) as tmp:
        (tmp / "train.csv").write_text("new")
        raise RuntimeError("failed half way")
    assert (out / "train.csv").read_text() == "x"
    assert hidden(tmp_path) == []
    assert os.listdir(out) == ["train.csv"]
