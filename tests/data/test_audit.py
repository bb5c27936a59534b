"""The audit on real photos with planted defects: each found, nothing clean flagged."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from skyclass.data.audit import (
    AuditConfig,
    FileScores,
    duplicate_groups,
    inspect_file,
    run_audit,
    sniff_format,
)
from skyclass.data.report import write_outputs


def _audit(root: Path):
    return run_audit(AuditConfig(root, workers=1))


def test_planted_defects_found_and_clean_files_not_flagged(fixture_set):
    report = _audit(fixture_set.root)
    by_path = report.by_path()
    for rel, check in fixture_set.planted.items():
        checks = {f.check for f in by_path.get(rel, [])}
        assert check in checks, f"{rel}: expected {check}, got {sorted(checks)}"
    for rel in fixture_set.clean:
        assert rel not in by_path, f"clean file flagged: {rel}: {by_path[rel]}"
    status = {r.path: r for r in report.clean}
    for rel in fixture_set.clean:
        assert status[rel].status == "use"
    # unusable files and both copies of the cross-class duplicate are left out, with a reason
    for check in ("zero_byte", "truncated", "not_an_image", "extreme_aspect", "label_conflict"):
        for rel in (p for p, c in fixture_set.planted.items() if c == check):
            assert status[rel].status == "excluded"
            assert check in status[rel].reason
    # warnings keep the file; near duplicates share a group id
    assert status["winged_drones/really_png.jpg"].status == "use"
    near = [p for p, c in fixture_set.planted.items() if c == "near_duplicate"]
    assert len({status[p].group for p in near}) == 1
    assert all(status[p].status == "use" for p in near)


def test_exact_duplicate_within_class_keeps_one_copy(fixture_set):
    root = fixture_set.root
    original = next(p for p in fixture_set.clean if p.startswith("winged_drones/"))
    shutil.copy2(root / original, root / "winged_drones/zz_copy.jpg")
    report = _audit(root)
    status = {r.path: r for r in report.clean}
    assert status["winged_drones/zz_copy.jpg"].status == "excluded"
    assert original in status["winged_drones/zz_copy.jpg"].reason
    assert status[original].status == "use"
    assert status[original].group == status["winged_drones/zz_copy.jpg"].group


def test_mirrored_copy_is_a_near_duplicate(tmp_path, fixture_set):
    from PIL import Image, ImageOps

    src = fixture_set.root / fixture_set.clean[0]
    with Image.open(src) as img:
        ImageOps.mirror(img.convert("RGB")).save(tmp_path / "m.jpg", quality=90)
    a = inspect_file(src.parent, src.name, "x")
    b = inspect_file(tmp_path, "m.jpg", "x")
    groups = duplicate_groups([a, b], AuditConfig(tmp_path))
    assert len(groups) == 1 and groups[0].links[0].mirrored
    assert not duplicate_groups([a, b], AuditConfig(tmp_path, mirror=False))


def test_flat_sky_lookalikes_are_not_duplicates():
    # two unrelated shared photos whose pHashes are 2 bits apart (mirrored): a bird on a plain
    # sky and a quadcopter on a plain sky; the colour check keeps them apart
    from tests.conftest import DATA_ROOT

    a = inspect_file(
        DATA_ROOT,
        "flying_birds/ddt_V_BIRD_016_f0260.jpg",
        "b",
    )
    b = inspect_file(DATA_ROOT, "large_quadcopters/ifo_large_quad_0007.jpg", "l")
    groups_loose = duplicate_groups([a, b], AuditConfig(DATA_ROOT, colour_threshold=255))
    groups = duplicate_groups([a, b], AuditConfig(DATA_ROOT))
    assert groups_loose and not groups


def test_sniff_format():
    assert sniff_format(b"\xff\xd8\xff\xe0\x00\x10JFIF") == "JPEG"
    assert sniff_format(b"\x89PNG\r\n\x1a\n\x00\x00") == "PNG"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"hello world, text") is None


def test_scores_do_not_depend_on_thresholds(fixture_set):
    a = _audit(fixture_set.root)
    b = run_audit(AuditConfig(fixture_set.root, workers=1, max_aspect=1000.0))
    assert [s for s in a.files] == [s for s in b.files]
    assert "flying_birds/strip.jpg" not in {f.path for f in b.findings}
    assert isinstance(a.files[0], FileScores)


def test_outputs_are_written_and_consistent(fixture_set, tmp_path):
    report = run_audit(AuditConfig(fixture_set.root, workers=2))  # the process pool path
    out = tmp_path / "audit"
    write_outputs(report, out)
    data = json.loads((out / "audit.json").read_text())
    assert data["schema_version"] == 1
    n = len(fixture_set.clean) + len(fixture_set.planted)
    assert data["summary"]["files"] == len(report.files) == n == 23
    assert data["summary"]["findings"]["truncated"] == 1
    rows = list(csv.DictReader((out / "clean.csv").open()))
    assert len(rows) == n and {r["status"] for r in rows} == {"use", "excluded"}
    for name in (
        "images_per_class",
        "file_size_per_class",
        "height_width_per_class",
        "kmeans_clusters",
    ):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert 'src="data:image/jpeg;base64,' in html and "truncated" in html
    assert "http" not in html.split("<body>", 1)[1]  # self-contained
    for km in data["kmeans"]:
        assert km["k"] >= 1 and len(km["centres"]) == km["k"]
