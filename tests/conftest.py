"""Shared fixtures: where the real data and weights are (../shared beside the clone)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKYCLASS_SHARED", REPO_ROOT.parent / "shared")).resolve()
DATA_ROOT = SHARED / "data" / "flying-objects"
#: Real photos of other things (aircraft, scenes, everyday objects); see its SOURCES.tsv.
OUT_OF_SCOPE = SHARED / "data" / "out-of-scope"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"
BUNDLED_MODEL = REPO_ROOT / "models" / "flying-objects"
CLASSES = ("flying_birds", "large_quadcopters", "small_quadcopters", "winged_drones")


def pytest_configure(config: pytest.Config) -> None:
    """One clear line, not a traceback per test module, when the shared data is not there."""
    if not DATA_ROOT.is_dir():
        raise pytest.UsageError(
            f"the shared photos are not at {DATA_ROOT}: the tests read ../shared beside the clone "
            "(or set SKYCLASS_SHARED to its folder)"
        )


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m skyclass ARGS`` in a fresh process (the installed entry point's code path)."""
    return subprocess.run(
        [sys.executable, "-m", "skyclass", *args],
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def shared_images(cls: str, n: int, prefix: str = "") -> list[Path]:
    """The first ``n`` real photos of a class (sorted by name, optionally by file prefix)."""
    files = sorted(p for p in (DATA_ROOT / cls).iterdir() if p.name.startswith(prefix))
    return files[:n]


def write_manifest(path: Path, files: list[Path]) -> Path:
    """A split manifest (path,label,group) of shared photos: label = class folder, group = stem."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        for f in files:
            w.writerow([f.relative_to(DATA_ROOT).as_posix(), f.parent.name, f.stem])
    return path


#: The two stages of the tiny runs: the head for an epoch, then blocks 16-18 for two.
TINY_STAGES = (
    {"name": "head", "epochs": 1},
    {"name": "top", "epochs": 2, "unfreeze": [16, 17, 18], "lr": 1e-3},
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string (paths included)


def tiny_toml(stages: tuple[dict[str, object], ...] = TINY_STAGES, **fields: object) -> str:
    """A tiny training config as TOML: 64 px, batches of 4, 2 steps an epoch, ``fields`` on top
    (paths and any other key); None drops a key."""
    top = {
        "name": "tiny",
        "image_size": 64,
        "batch_size": 4,
        "eval_batch_size": 8,
        "max_steps": 2,
        "num_threads": 1,
        **fields,
    }
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items() if v is not None]
    lines += ["", "[augment]", "cache_size = 96", "", "[lr_find]", "num_iter = 4"]
    for stage in stages:
        lines += ["", "[[stages]]", *(f"{k} = {_toml_value(v)}" for k, v in stage.items())]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA_ROOT.is_dir():
        pytest.fail(f"shared data not found at {DATA_ROOT} (set SKYCLASS_SHARED)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def weights_path() -> Path:
    if not WEIGHTS.is_file():
        pytest.fail(f"shared weights not found at {WEIGHTS} (set SKYCLASS_SHARED)")
    return WEIGHTS


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    return BUNDLED_MODEL
