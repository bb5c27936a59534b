"""Smoke test of the benchmark command: `python -m benchmarks.run --quick` prints every row."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SECTIONS = (
    "Inference in process",
    "Cold start",
    "HTTP",
    "Lambda artifact",
    "Training",
    "Audit",
    "label-issues",
)
#: rows that must hold numbers wherever the test suite runs (wrk and the handler are there)
MEASURED = (
    "model only, batch 1, p50 / p95 ms: ONNX Runtime fp32 vs PyTorch eager",
    "model only, images/s at batch 8",
    "model only, images/s at batch 32",
    "predict(bytes) end to end, p50 / p95 ms, fp32: 1-2 MP baseline JPEG",
    "predict(bytes) end to end, p50 / p95 ms, fp32: 400x400 JPEG",
    "fresh process to first answer",
    "peak RSS of that process",
    "1 connection: req/s",
    "32 connections: req/s",
    "server peak RSS",
    "(peer at the same input size)",
    "vs the seed's 224 px pipeline",
    "ONNX Runtime vs eager PyTorch (the engine before)",
)


@pytest.mark.timeout(600)
def test_quick_run_prints_every_row(repo_root: Path, tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    table = (out / "latest-partial.md").read_text(encoding="utf-8")
    assert table == done.stdout
    assert not (out / "latest.md").exists()  # a quick run never replaces the last full table
    for section in SECTIONS:
        assert f"| **{section}" in table, f"no {section} section in:\n{table}"
    lines = table.splitlines()
    for what in MEASURED:
        found = [line for line in lines if what in line]
        assert found, f"no row {what!r} in:\n{table}"
        for line in found:
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert not cells[1].startswith("n/a"), f"{what!r} was not measured: {line}"
            assert re.fullmatch(r"\d+\.\d-\d+\.\d", cells[-1]), f"no load average: {line}"
    result = json.loads((out / "latest-partial.json").read_text(encoding="utf-8"))
    assert result["quick"] is True
    # a clone with no training run gets a row that says so, not a failure with a traceback
    assert "training" not in result["errors"], result["errors"]
    assert result["rows"] and all(r["skyclass"] for r in result["rows"])
    assert sorted(p.name for p in out.glob("2*.json")), "no timestamped result file"
