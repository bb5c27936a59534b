"""The group-aware, stratified split on the shared set's audited manifest."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from skyclass.data.split import SplitConfig, SplitInputError, make_split, write_split
from tests.conftest import DATA_ROOT, REPO_ROOT

CLEAN = REPO_ROOT / "docs" / "data" / "audit" / "clean.csv"
SOURCES = DATA_ROOT / "SOURCES.tsv"


def _side(result) -> dict[str, str]:
    return {r.path: s for s, rows in result.splits.items() for r in rows}


def _manifest_rows() -> list[dict[str, str]]:
    with CLEAN.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_duplicate_groups_stay_on_one_side_and_classes_are_stratified():
    result = make_split(SplitConfig(CLEAN, seed=0))
    side = _side(result)
    rows = [r for r in _manifest_rows() if r["status"] == "use"]
    assert set(side) == {r["path"] for r in rows}  # every usable row once, no excluded row
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(side[r["path"]])
    multi = [g for g in by_group if sum(r["group"] == g for r in rows) > 1]
    assert len(multi) > 40  # the shared set has many duplicate groups
    assert all(len(by_group[g]) == 1 for g in multi)
    # duplicate groups are not all dumped into train
    assert {next(iter(by_group[g])) for g in multi} == {"train", "val", "test"}
    totals = Counter(r["label"] for r in rows)
    for split, frac in (("train", 0.75), ("val", 0.10), ("test", 0.15)):
        got = Counter(r.label for r in result.splits[split])
        for label, n in totals.items():
            assert abs(got[label] - frac * n) <= 3, (split, label, got[label], frac * n)


def test_same_seed_same_split_other_seed_other_split():
    a = _side(make_split(SplitConfig(CLEAN, seed=0)))
    b = _side(make_split(SplitConfig(CLEAN, seed=0)))
    c = _side(make_split(SplitConfig(CLEAN, seed=1)))
    assert a == b
    assert sum(a[p] != c[p] for p in a) > 100


def test_source_groups_hold_out_whole_sources_per_class():
    # whole sources per class leave small_quadcopters without val photos: allowed here, on purpose
    config = SplitConfig(
        CLEAN, seed=0, groups=SOURCES, group_column="source_repo", allow_empty=True
    )
    result = make_split(config)
    summary = result.summary()
    assert summary["rows_without_metadata_group"] == 0
    impure = 0
    for _key, counts in summary["per_source"].items():
        sides = [s for s, n in counts.items() if n]
        if len(sides) > 1:
            # only files pulled to the side of a near copy from another source
            impure += sum(sorted(counts.values())[:-1])
    assert 0 < impure <= result.moved_for_duplicates <= 10
    # a source spanning classes (the EVA4 course repo) is keyed per class, not held out whole
    tsai = {k: v for k, v in summary["per_source"].items() if "TSAI" in k}
    assert len(tsai) == 4
    # every class has test photos
    assert all(n > 0 for n in summary["splits"]["test"]["per_class"].values())
    # near-duplicate groups still never straddle splits
    side = _side(result)
    groups: dict[str, set[str]] = {}
    for r in _manifest_rows():
        if r["path"] in side:
            groups.setdefault(r["group"], set()).add(side[r["path"]])
    assert all(len(s) == 1 for s in groups.values())


REVIEW = REPO_ROOT / "docs" / "data" / "label-review" / "review.csv"


def test_committed_splits_match_a_fresh_run(tmp_path):
    for name, groups, review in (
        ("splits", None, None),
        ("splits-by-source", SOURCES, None),
        ("splits-reviewed", None, REVIEW),
        ("splits-by-source-reviewed", SOURCES, REVIEW),
    ):
        out = tmp_path / name
        config = SplitConfig(CLEAN, seed=0, groups=groups, review=review, allow_empty=True)
        result = make_split(config)
        write_split(result, out, prefixes=("ifo_",))
        for f in ("train.csv", "val.csv", "test.csv", "test-ifo.csv"):
            committed = REPO_ROOT / "docs" / "data" / name / f
            assert (out / f).read_text() == committed.read_text(), f"{name}/{f} is stale"


def test_bad_manifests(tmp_path: Path):
    with pytest.raises(SplitInputError, match="not found"):
        make_split(SplitConfig(tmp_path / "nope.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.jpg,x\n")
    with pytest.raises(SplitInputError, match="lacks column"):
        make_split(SplitConfig(bad))
    ok = tmp_path / "ok.csv"
    ok.write_text("path,label\nx/a.jpg,x\n")
    with pytest.raises(SplitInputError, match="no column 'nope'"):
        make_split(SplitConfig(ok, groups=SOURCES, group_column="nope"))
    with pytest.raises(ValueError):
        SplitConfig(ok, val=0.5, test=0.6)


def _review(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "suggested", "p_given", "decision", "new_label", "note"])
        for p, label, decision, new_label in rows:
            w.writerow([p, label, "", "0.01", decision, new_label, ""])
    return path


def test_a_review_excludes_and_relabels_without_moving_any_other_file(tmp_path: Path):
    rows = _manifest_rows()
    winged = [r for r in rows if r["label"] == "winged_drones" and r["status"] == "use"]
    large = [r for r in rows if r["label"] == "large_quadcopters" and r["status"] == "use"]
    review = _review(
        tmp_path / "review.csv",
        [
            (winged[0]["path"], "winged_drones", "exclude", ""),
            (winged[1]["path"], "winged_drones", "relabel", "large_quadcopters"),
            (winged[2]["path"], "winged_drones", "keep", ""),
            (large[0]["path"], "large_quadcopters", "", ""),  # not reviewed: kept as labeled
        ],
    )
    plain = make_split(SplitConfig(CLEAN, seed=0))
    reviewed = make_split(SplitConfig(CLEAN, seed=0, review=review))
    before, after = _side(plain), _side(reviewed)
    assert winged[0]["path"] not in after
    assert set(before) - set(after) == {winged[0]["path"]}
    assert all(after[p] == before[p] for p in after)  # nothing moved between splits
    label = {r.path: r.label for rows_ in reviewed.splits.values() for r in rows_}
    assert label[winged[1]["path"]] == "large_quadcopters"
    assert label[winged[2]["path"]] == "winged_drones"
    assert label[large[0]["path"]] == "large_quadcopters"
    assert reviewed.reviewed["exclude"] == (winged[0]["path"],)
    assert reviewed.reviewed["relabel"] == (winged[1]["path"],)
    summary = reviewed.summary()
    assert summary["review_file"] == str(review)
    assert summary["reviewed"]["keep"] == [winged[2]["path"]]


def test_a_stale_or_malformed_review_is_refused(tmp_path: Path):
    first = next(r for r in _manifest_rows() if r["status"] == "use")
    cases = {
        "labeled": (first["path"], "winged_drones", "exclude", ""),  # the manifest says otherwise
        "not a row": ("flying_birds/nope.jpg", "flying_birds", "exclude", ""),
        "is not one of": (first["path"], first["label"], "delete", ""),
        "relabel needs": (first["path"], first["label"], "relabel", "ufo"),
        "got 'ufo', valid: ": (first["path"], first["label"], "relabel", "ufo"),
    }
    for message, row in cases.items():
        review = _review(tmp_path / "review.csv", [row])
        with pytest.raises(SplitInputError, match=message) as err:
            make_split(SplitConfig(CLEAN, seed=0, review=review))
        if row[2] == "relabel":  # the valid classes are named, the row's own label is not
            others = [
                c
                for c in ("flying_birds", "large_quadcopters", "small_quadcopters", "winged_drones")
                if c != first["label"]
            ]
            assert str(err.value).endswith("valid: " + ", ".join(others))
    twice = _review(tmp_path / "twice.csv", [(*cases["is not one of"][:2], "keep", "")] * 2)
    with pytest.raises(SplitInputError, match="reviewed twice"):
        make_split(SplitConfig(CLEAN, seed=0, review=twice))
    short = tmp_path / "short.csv"  # a row cut short: no label, no decision
    short.write_text(f"path,label,decision\n{first['path']}\n")
    with pytest.raises(SplitInputError, match="labeled"):
        make_split(SplitConfig(CLEAN, seed=0, review=short))
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx,y\n")
    with pytest.raises(SplitInputError, match="needs columns"):
        make_split(SplitConfig(CLEAN, seed=0, review=bad))


def test_the_committed_review_decided_every_suspect():
    with REVIEW.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["decision"] in ("keep", "exclude", "relabel") for r in rows)
    assert all(r["note"].strip() for r in rows)


def test_a_class_left_empty_in_a_part_is_an_error_with_the_counts():
    """Whole sources per class leave small_quadcopters with no val photo on the shared set."""
    with pytest.raises(SplitInputError) as info:
        make_split(SplitConfig(CLEAN, seed=0, groups=SOURCES))
    message = str(info.value)
    assert "small_quadcopters has 0 val images (train 329, val 0, test 100)" in message
    assert "--allow-empty" in message
    allowed = make_split(SplitConfig(CLEAN, seed=0, groups=SOURCES, allow_empty=True))
    assert allowed.empty_parts() == {"small_quadcopters": ["val"]}
    assert allowed.summary()["empty_parts"] == {"small_quadcopters": ["val"]}
    # a part asked to be empty (--val 0) is not a class left empty
    assert make_split(SplitConfig(CLEAN, val=0.0, seed=0)).empty_parts() == {}


def test_split_cli_refuses_then_marks_an_empty_class(tmp_path: Path):
    from typer.testing import CliRunner

    from skyclass.cli import build_app

    args = ["split", str(CLEAN), "--groups", str(SOURCES), "--group-column", "source_repo"]
    refused = CliRunner().invoke(build_app(), [*args, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: empty class"), refused.output
    assert not (tmp_path / "a").exists()
    allowed = CliRunner().invoke(
        build_app(), [*args, "--out", str(tmp_path / "b"), "--allow-empty"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert "0 (empty)" in allowed.output
    assert "warning: empty class in a split: small_quadcopters has 0 val images" in allowed.output
    with (tmp_path / "b" / "val.csv").open(encoding="utf-8") as fh:
        assert "small_quadcopters" not in {r["label"] for r in csv.DictReader(fh)}
