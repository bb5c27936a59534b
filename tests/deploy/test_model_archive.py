"""deploy/model_archive.py (`npm run upload-model`): the archive and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from skyclass.core.bundle import sha256_file
from tests.conftest import BUNDLED_MODEL, REPO_ROOT

SCRIPT = REPO_ROOT / "deploy" / "model_archive.py"


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=REPO_ROOT / "deploy",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_archive_of_the_bundled_model_prints_its_sha256(tmp_path: Path):
    out = tmp_path / "fo.tar.gz"
    proc = _run(BUNDLED_MODEL, out)
    assert proc.returncode == 0, proc.stderr
    assert f"sha256 {sha256_file(out)}" in proc.stdout
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert f"{BUNDLED_MODEL.name}/model.json" in names
    again = tmp_path / "again.tar.gz"
    assert _run(BUNDLED_MODEL, again).returncode == 0
    assert sha256_file(again) == sha256_file(out)  # reproducible


def test_not_a_model_folder_is_one_line_and_exit_1(tmp_path: Path):
    proc = _run(tmp_path, tmp_path / "x.tar.gz")
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines() == [
        f"error: not a model folder (no model.json): {tmp_path}"
    ]
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.tar.gz").exists()
