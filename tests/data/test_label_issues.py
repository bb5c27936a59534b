"""Suspected label errors: the confident-joint rule, and a real run that finds planted mislabels.

The planted mislabels are rows of a manifest written in tmp_path: the shared photos themselves are
never touched, only the label a manifest gives them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from skyclass.cli import build_app
from skyclass.data.label_issues import (
    REVIEW_COLUMNS,
    class_thresholds,
    confident_classes,
    find_issues,
)
from skyclass.data.split import SplitConfig, make_split
from tests.conftest import DATA_ROOT, WEIGHTS, shared_images

runner = CliRunner()


def test_thresholds_are_each_class_mean_self_confidence():
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    y = np.array([0, 0, 1, 1])
    assert class_thresholds(probs, y) == pytest.approx([0.8, 0.7])


def test_confident_joint_flags_only_confident_disagreements_ranked_by_self_confidence():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.90, 0.05, 0.05],
            [0.80, 0.10, 0.10],
            [0.05, 0.90, 0.05],  # labeled 0, confidently 1: a suspect
            [0.10, 0.85, 0.05],
            [0.05, 0.90, 0.05],
            [0.50, 0.45, 0.05],  # labeled 1, unsure: nobody reaches a threshold -> not flagged
            [0.02, 0.08, 0.90],
            [0.30, 0.10, 0.60],  # labeled 2, below t_2 and p(0) below t_0: counted nowhere
        ]
    )
    t = class_thresholds(probs, y)
    assert confident_classes(probs, t)[[5, 7]].tolist() == [-1, -1]
    order, suggested, joint = find_issues(probs, y)
    assert order.tolist() == [2] and suggested.tolist() == [1]
    assert joint.tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]


def _write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group", "status", "reason"])
        for p, label in rows:
            w.writerow([p, label, p, "use", ""])
        w.writerow(["flying_birds/not-used.jpg", "flying_birds", "x", "exact_duplicate", "dup"])
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """8 real photos per class; one bird filed as a large quadcopter and one drone as a bird."""
    if not DATA_ROOT.is_dir() or not WEIGHTS.is_file():
        pytest.fail("shared data or weights not found (set SKYCLASS_SHARED)")
    picks = {
        "flying_birds": shared_images("flying_birds", 9, "fod_"),
        "large_quadcopters": shared_images("large_quadcopters", 9, "cropspray_"),
        "small_quadcopters": shared_images("small_quadcopters", 8, "updP_"),
        "winged_drones": shared_images("winged_drones", 8, "px4ug_"),
    }
    rows = [(f"{c}/{p.name}", c) for c, files in picks.items() for p in files]
    wrong = {
        f"flying_birds/{picks['flying_birds'][-1].name}": "large_quadcopters",
        f"large_quadcopters/{picks['large_quadcopters'][-1].name}": "flying_birds",
    }
    rows = [(p, wrong.get(p, label)) for p, label in rows]
    manifest = _write_manifest(tmp_path_factory.mktemp("li") / "manifest.csv", rows)
    return manifest, wrong


def test_a_real_run_finds_the_planted_mislabels_and_writes_a_review_sheet(planted, tmp_path):
    manifest, wrong = planted
    out = tmp_path / "issues"
    args = ["label-issues", manifest, "--data-root", DATA_ROOT, "--out", out]
    args += ["--weights", WEIGHTS, "--folds", "3", "--cache-dir", ""]
    res = runner.invoke(build_app(), [str(a) for a in args])
    assert res.exit_code == 0, res.output
    with (out / "review.csv").open(encoding="utf-8") as fh:
        sheet = list(csv.DictReader(fh))
    assert tuple(sheet[0]) == REVIEW_COLUMNS
    flagged = {r["path"]: r for r in sheet}
    for path, given in wrong.items():
        assert path in flagged, f"{path} (filed as {given}) not flagged: {sorted(flagged)}"
        assert flagged[path]["suggested"] == path.split("/")[0]
        assert flagged[path]["decision"] == ""  # a person decides
    assert len(sheet) <= 6  # the 30 rightly labeled photos are not all suspects
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 34 and summary["issues"] == len(sheet)  # the status != use row is out
    assert "data:image/jpeg;base64," in (out / "gallery.html").read_text()

    # The filled-in sheet drives the split: the excluded photos are gone, nothing else is.
    with (out / "review.csv").open(encoding="utf-8") as fh:
        filled = list(csv.DictReader(fh))
    for r in filled:
        r["decision"] = "exclude" if r["path"] in wrong else "keep"
    with (tmp_path / "filled.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=REVIEW_COLUMNS)
        w.writeheader()
        w.writerows(filled)
    result = make_split(SplitConfig(manifest, val=0.2, test=0.2, review=tmp_path / "filled.csv"))
    kept = {r.path for rows in result.splits.values() for r in rows}
    assert len(kept) == 32 and not kept & set(wrong)

    again = runner.invoke(build_app(), [str(a) for a in args])
    assert again.exit_code == 2 and "--force" in again.output


def test_bad_input_is_one_clear_line(planted, tmp_path):
    manifest, _ = planted
    base = ["label-issues", manifest, "--data-root", DATA_ROOT, "--out", tmp_path / "o"]
    res = runner.invoke(build_app(), [str(a) for a in [*base, "--weights", tmp_path / "no.pth"]])
    assert res.exit_code == 2 and "weights file not found" in res.output
    res = runner.invoke(
        build_app(), [str(a) for a in [*base, "--weights", WEIGHTS, "--folds", "9"]]
    )
    assert res.exit_code == 2 and "at least 9 files" in res.output
    missing = _write_manifest(tmp_path / "m.csv", [("flying_birds/nope.jpg", "flying_birds")])
    res = runner.invoke(
        build_app(),
        [
            str(a)
            for a in [
                "label-issues",
                missing,
                "--data-root",
                DATA_ROOT,
                "--out",
                tmp_path / "o2",
                "--weights",
                WEIGHTS,
            ]
        ],
    )
    assert res.exit_code == 2 and "file not found" in res.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


def test_onnxruntime_and_torch_embeddings_agree_on_real_photos(tmp_path):
    """The fast CPU engine computes the same embedding as the PyTorch backbone."""
    from dataclasses import replace

    from skyclass.train.label_issues import LabelIssueConfig, embed

    files = [p for c in ("flying_birds", "winged_drones") for p in shared_images(c, 3)]
    cfg = LabelIssueConfig(tmp_path / "m.csv", DATA_ROOT, str(WEIGHTS), cache_dir=str(tmp_path))
    fast = embed(files, replace(cfg, engine="onnxruntime"), progress=False)
    slow = embed(files, replace(cfg, engine="torch"), progress=False)
    assert fast.shape == (6, 1280)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)
    assert list(tmp_path.glob("embed-*.onnx")), "the exported backbone is cached"
    with pytest.raises(ValueError, match="engine"):
        replace(cfg, engine="tpu")
