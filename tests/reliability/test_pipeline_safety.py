"""No lost data: commands never touch their inputs, never overwrite without --force, and a SIGKILL
leaves either no output or a complete one (and a training run that resumes).

All on a small real fixture set in tmp: 4 shared photos per class, run through the real CLI
(``audit -> split -> train -> export -> predict``) as subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CLASSES, REPO_ROOT, WEIGHTS, shared_images, tiny_toml

AUDIT_FILES = ("audit.json", "report.html", "clean.csv")
SPLIT_FILES = ("train.csv", "val.csv", "test.csv")
EXPORT_FILES = ("model.json", "model.onnx", "MODEL_CARD.md", "parity.json")


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and folder under ``root``: sha256 (files), size, mtime in ns."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[path.relative_to(root).as_posix()] = (digest, st.st_size, st.st_mtime_ns)
    return out


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skyclass.cli", *args],
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def tiny_config(path: Path, data: Path, splits: Path, runs: Path, cache: Path) -> Path:
    """The tests/train tiny run as TOML: 64 px, 2 steps per epoch, 1 + 2 epochs."""
    path.write_text(
        tiny_toml(
            out=runs,
            data_root=data,
            train=splits / "train.csv",
            val=splits / "val.csv",
            test=splits / "test.csv",
            weights=WEIGHTS,
            cache_dir=cache,
        ),
        encoding="utf-8",
    )
    return path


def export_args(run: Path, out: Path) -> list[str]:
    return [
        *("export", str(run), "--out", str(out), "--calibration-size", "8"),
        *("--parity-size", "8", "--no-int8"),
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs") / "data"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for src in shared_images(cls, 4):
            shutil.copy2(src, root / cls / src.name)
    return root


def run_until_killed(args: list[str], after: float) -> int:
    """Start the CLI, SIGKILL it ``after`` seconds in; its return code (-9, or 0 if it finished)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyclass.cli", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return proc.returncode


def assert_absent_or_complete(out: Path, files: tuple[str, ...]) -> str:
    if not out.exists():
        return "absent"
    for name in files:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    return "complete"


def finals_only(parent: Path, out: Path) -> list[str]:
    """Leftovers beside ``out`` that are not hidden temp names (a temp named as final is a bug)."""
    return [p.name for p in parent.iterdir() if p != out and not p.name.startswith(".")]


def test_audit_killed_at_any_moment_leaves_nothing_or_everything(
    data: Path, tmp_path: Path
) -> None:
    before = snapshot(data)
    ref = tmp_path / "ref" / "audit"
    started = time.monotonic()
    assert cli("audit", str(data), "--out", str(ref), "--workers", "1").returncode == 0
    full = time.monotonic() - started
    outcomes = []
    for i, fraction in enumerate((0.25, 0.5, 0.75)):
        parent = tmp_path / f"kill{i}"
        parent.mkdir()
        out = parent / "audit"
        code = run_until_killed(
            ["audit", str(data), "--out", str(out), "--workers", "1"], fraction * full
        )
        outcomes.append((fraction, code, assert_absent_or_complete(out, AUDIT_FILES)))
        assert finals_only(parent, out) == []
        if out.exists():
            assert json.loads((out / "audit.json").read_text())
    print("audit kills (fraction of a full run, exit, output):", outcomes)
    assert any(code == -signal.SIGKILL for _, code, _ in outcomes)  # some really were killed
    assert snapshot(data) == before


@pytest.fixture(scope="module")
def pipeline(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """audit -> split -> train (tiny) -> export -> predict, once; inputs snapshotted before."""
    work = tmp_path_factory.mktemp("pipeline")
    before = snapshot(data)
    paths = {
        "data": data,
        "audit": work / "audit",
        "splits": work / "splits",
        "runs": work / "runs",
        "model": work / "models" / "tiny",
        "config": work / "tiny.toml",
    }
    tiny_config(paths["config"], data, paths["splits"], paths["runs"], work / "cache")
    steps = {
        "audit": ["audit", str(data), "--out", str(paths["audit"]), "--workers", "1"],
        "split": [
            "split",
            str(paths["audit"] / "clean.csv"),
            "--out",
            str(paths["splits"]),
            "--val",
            "0.25",
            "--test",
            "0.25",
        ],
        "train": ["train", "--config", str(paths["config"]), "--no-progress"],
        "export": export_args(paths["runs"] / "tiny", paths["model"]),
    }
    for step, args in steps.items():
        result = cli(*args)
        assert result.returncode == 0, (step, result.stderr[-2000:])
        assert snapshot(data) == before, f"{step} modified its inputs"
    result = cli("predict", "--model", str(paths["model"]), "--json", str(data))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 16
    assert snapshot(data) == before, "predict modified its inputs"
    paths["steps"] = steps  # type: ignore[assignment]
    paths["before"] = before  # type: ignore[assignment]
    return paths


@pytest.mark.slow
def test_commands_never_modify_their_inputs(pipeline: dict) -> None:
    """audit, split, train, export and predict ran (each checked in turn); inputs unchanged."""
    assert snapshot(pipeline["data"]) == pipeline["before"]
    assert len(pipeline["before"]) == 4 + 16  # the class folders and their photos
    for out, files in (("audit", AUDIT_FILES), ("splits", SPLIT_FILES), ("model", EXPORT_FILES)):
        assert assert_absent_or_complete(pipeline[out], files) == "complete"


@pytest.mark.slow
def test_no_command_overwrites_without_force(pipeline: dict) -> None:
    for step, out in (
        ("audit", "audit"),
        ("split", "splits"),
        ("train", "runs"),
        ("export", "model"),
    ):
        before = snapshot(pipeline[out])
        result = cli(*pipeline["steps"][step])
        assert result.returncode != 0, step
        assert "--force" in result.stderr + result.stdout, (step, result.stderr)
        assert "Traceback" not in result.stderr
        assert snapshot(pipeline[out]) == before, f"{step} touched its existing output"


@pytest.mark.slow
def test_export_killed_leaves_nothing_or_everything(pipeline: dict, tmp_path: Path) -> None:
    outcomes = []
    for i, after in enumerate((3.0, 6.0, 9.0)):
        parent = tmp_path / f"kill{i}"
        parent.mkdir()
        out = parent / "tiny"
        code = run_until_killed(export_args(pipeline["runs"] / "tiny", out), after)
        outcomes.append((after, code, assert_absent_or_complete(out, EXPORT_FILES)))
        assert finals_only(parent, out) == []
    print("export kills (seconds in, exit, output):", outcomes)
    assert any(code == -signal.SIGKILL for _, code, _ in outcomes)


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes(pipeline: dict, tmp_path: Path) -> None:
    import torch

    config = tmp_path / "tiny.toml"
    runs = tmp_path / "runs"
    tiny_config(config, pipeline["data"], pipeline["splits"], runs, tmp_path / "cache")
    last = runs / "tiny" / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyclass.cli", "train", "--config", str(config), "--no-progress"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first_mtime = last.stat().st_mtime_ns
    time.sleep(0.5)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    ckpt = torch.load(last, map_location="cpu", weights_only=False)  # whole, loadable
    assert ckpt["epoch"] >= 0
    checkpoints = [p.name for p in last.parent.iterdir() if not p.name.startswith(".")]
    assert all(n.endswith(".pt") for n in checkpoints), checkpoints
    for p in last.parent.iterdir():
        if p.name.endswith(".pt") and not p.name.startswith("."):
            torch.load(p, map_location="cpu", weights_only=False)
    result = cli("train", "--resume", str(runs / "tiny"), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (runs / "tiny" / "summary.json").is_file()
    assert last.stat().st_mtime_ns > first_mtime
    print("train: killed after the first checkpoint, resumed to the end")
