"""The audit on hostile folders: devices, FIFOs, huge files, huge images, bad names, formulas.

Each is a finding (or an escaped cell) and the run completes: never a hang, an unbounded read or a
discarded audit.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from skyclass.data.audit import AuditConfig, run_audit
from skyclass.data.dataset import read_manifest as dataset_manifest
from skyclass.data.split import read_manifest as split_manifest
from skyclass.reporting.cells import FORMULA_STARTS
from tests.conftest import REPO_ROOT, shared_images


def _real_set(root: Path, classes: dict[str, tuple[str, int]]) -> list[str]:
    """Real shared photos copied into one folder per class; their relative paths."""
    out = []
    for cls, (source_class, n) in classes.items():
        (root / cls).mkdir(parents=True)
        for f in shared_images(source_class, n):
            shutil.copy2(f, root / cls / f.name)
            out.append(f"{cls}/{f.name}")
    return out


def _audit_cli(root: Path, out: Path) -> tuple[subprocess.CompletedProcess, int]:
    """`skyclass audit` in a child process; its result and its peak RSS in MB."""
    code = (
        "import resource, sys\n"
        "from skyclass.cli import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        # VmHWM, not ru_maxrss: ru_maxrss keeps the forking pytest process's size across exec
        "    hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')]\n"
        "    kb = int(hwm[0].split()[1])\n"
        "    print(f'PEAK_RSS_MB={kb // 1024}', file=sys.stderr)\n"
    )
    args = ["audit", str(root), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )
    peak = int(proc.stderr.rsplit("PEAK_RSS_MB=", 1)[1].split()[0])
    return proc, peak


@pytest.mark.timeout(150)
def test_devices_fifos_huge_files_and_huge_images_are_findings(tmp_path):
    root = tmp_path / "photos"
    clean = _real_set(root, {"birds": ("flying_birds", 3), "wings": ("winged_drones", 3)})
    (root / "birds" / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(root / "birds" / "pipe.jpg")
    with open(root / "wings" / "huge.jpg", "wb") as fh:  # sparse: 2 GB that use no disk
        fh.truncate(2 * 1024**3)
    Image.new("1", (9000, 9000)).save(root / "wings" / "big.png", compress_level=1)  # 81 MP
    expected = {
        "birds/zero.jpg": "not_a_file",
        "birds/pipe.jpg": "not_a_file",
        "wings/huge.jpg": "too_large",
        "wings/big.png": "too_many_pixels",
    }
    # the same audit on the clean photos alone: the process's own floor (imports, thumbnails)
    clean_root = tmp_path / "clean"
    _real_set(clean_root, {"birds": ("flying_birds", 3), "wings": ("winged_drones", 3)})
    _, floor_mb = _audit_cli(clean_root, tmp_path / "audit-clean")
    proc, peak_mb = _audit_cli(root, tmp_path / "audit")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    checks = {(f["path"], f["check"]) for f in report["findings"]}
    for rel, check in expected.items():
        assert (rel, check) in checks, f"{rel}: {sorted(c for p, c in checks if p == rel)}"
    rows = {r["path"]: r for r in csv.DictReader((tmp_path / "audit" / "clean.csv").open())}
    assert all(rows[p]["status"] == "excluded" for p in expected)
    assert all(rows[p]["status"] == "use" for p in clean)
    # neither the 2 GB file nor the 81 MP image (81 MB even at one byte a pixel) was read or
    # decoded into memory: the hostile files add less than 60 MB to the clean audit's peak
    assert peak_mb - floor_mb < 60, f"peak RSS {peak_mb} MB vs {floor_mb} MB without them"


def test_caps_come_from_the_config(tmp_path):
    root = tmp_path / "photos"
    clean = _real_set(root, {"birds": ("flying_birds", 2), "quads": ("large_quadcopters", 2)})
    sizes = {p: (root / p).stat().st_size for p in clean}
    smallest = min(sizes, key=sizes.__getitem__)
    report = run_audit(AuditConfig(root, workers=1, max_bytes=sizes[smallest]))
    flagged = {f.path for f in report.findings if f.check == "too_large"}
    assert flagged == {p for p in clean if p != smallest}
    report = run_audit(AuditConfig(root, workers=1, max_pixels=1000))
    assert {f.path for f in report.findings if f.check == "too_many_pixels"} == set(clean)


def test_a_non_utf8_name_is_reported_escaped_and_the_audit_completes(tmp_path):
    root = tmp_path / "photos"
    clean = _real_set(root, {"birds": ("flying_birds", 6), "quads": ("large_quadcopters", 6)})
    real = root / clean[0]
    bad = os.fsdecode(os.fsencode(root / "birds") + b"/caf\xe9-\xff.jpg")
    shutil.copy2(real, bad)
    proc, _ = _audit_cli(root, tmp_path / "audit")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "audit"
    report = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    shown = "birds/caf\\xe9-\\xff.jpg"
    assert any(f["path"] == shown and f["check"] == "undecodable_name" for f in report["findings"])
    assert len(report["files"]) == len(clean) + 1
    rows = {r["path"]: r for r in csv.DictReader((out / "clean.csv").open(encoding="utf-8"))}
    assert rows[shown]["status"] == "excluded"
    assert all(rows[p]["status"] == "use" for p in clean)
    assert shown in (out / "report.html").read_text(encoding="utf-8")


def test_formula_names_are_escaped_in_clean_csv_and_still_name_their_files(tmp_path):
    root = tmp_path / "photos"
    clean = _real_set(root, {"=HYPERLINK(1)": ("flying_birds", 3), "@quads": ("winged_drones", 3)})
    first = root / clean[0]
    first.rename(first.with_name("-1+1.jpg"))
    report = run_audit(AuditConfig(root, workers=1))
    from skyclass.data.report import write_outputs

    write_outputs(report, tmp_path / "audit")
    manifest = tmp_path / "audit" / "clean.csv"
    with manifest.open(newline="", encoding="utf-8") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]
    assert "'=HYPERLINK(1)/-1+1.jpg" in cells and "'@quads" in cells
    # the readers of the pipeline undo the escape: the same files, the same class names
    m = dataset_manifest(manifest, root, ["=HYPERLINK(1)", "@quads"])
    assert set(m.paths) == {r.path for r in report.clean} and set(m.labels) == {
        "=HYPERLINK(1)",
        "@quads",
    }
    assert all((root / p).is_file() for p in m.paths)
    rows, _ = split_manifest(manifest)
    assert {r["path"] for r in rows} == set(m.paths)
