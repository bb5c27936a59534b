"""`skyclass audit` and `skyclass split` end to end: outputs, untouched inputs, bad input."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from skyclass.cli import build_app
from skyclass.data.commands import EXIT_BAD_INPUT, EXIT_UNREADABLE
from tests.conftest import DATA_ROOT
from tests.data.conftest import build_fixture, snapshot

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(build_app(), [str(a) for a in args])


def test_audit_and_split_leave_inputs_unchanged(fixture_set, tmp_path):
    sources = tmp_path / "groups.csv"
    sources.write_text(
        "path,source_repo\n"
        + "".join(
            f"{p},src_{p.split('/')[0][:3]}{i % 2}\n" for i, p in enumerate(fixture_set.clean)
        )
    )
    before = snapshot(fixture_set.root)
    groups_before = sources.read_bytes()
    res = _run("audit", fixture_set.root, "--out", tmp_path / "audit", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "truncated" in res.output and "left out" in res.output
    manifest = tmp_path / "audit" / "clean.csv"
    manifest_before = manifest.read_bytes()
    # a dozen photos cannot fill every class in every part: empty parts are allowed here (the
    # refusal itself is tested in test_split.py); what this test checks is that inputs stay as is
    res = _run(
        "split",
        manifest,
        "--out",
        tmp_path / "split",
        "--val",
        "0.2",
        "--test",
        "0.2",
        "--allow-empty",
    )
    assert res.exit_code == 0, res.output
    res = _run(
        "split", manifest, "--out", tmp_path / "split2", "--groups", sources, "--allow-empty"
    )
    assert res.exit_code == 0, res.output
    assert snapshot(fixture_set.root) == before
    assert manifest.read_bytes() == manifest_before
    assert sources.read_bytes() == groups_before
    header = (tmp_path / "split2" / "train.csv").read_text().splitlines()[0]
    assert header == "path,label,group,source"
    assert {p.name for p in (tmp_path / "split").iterdir()} == {
        "train.csv",
        "val.csv",
        "test.csv",
        "summary.json",
    }


def test_existing_output_needs_force(fixture_set, tmp_path):
    out = tmp_path / "audit"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = _run("audit", fixture_set.root, "--out", out, "--workers", "1")
    assert res.exit_code == EXIT_BAD_INPUT
    assert "exists" in res.output and "--force" in res.output
    assert (out / "keep.txt").read_text() == "mine"
    res = _run("audit", fixture_set.root, "--out", out, "--workers", "1", "--force")
    assert res.exit_code == 0, res.output
    assert (out / "audit.json").is_file() and not (out / "keep.txt").exists()


def _one_line_error(res, *words: str) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for w in words:
        assert w in lines[0], res.output


def test_missing_folder(tmp_path):
    res = _run("audit", tmp_path / "nope", "--out", tmp_path / "o")
    assert res.exit_code == EXIT_BAD_INPUT
    _one_line_error(res, "not found")
    assert not (tmp_path / "o").exists()


def test_no_class_subfolders(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "a.jpg").write_bytes(next(DATA_ROOT.glob("flying_birds/bisky_*")).read_bytes())
    res = _run("audit", root, "--out", tmp_path / "o")
    assert res.exit_code == EXIT_BAD_INPUT
    _one_line_error(res, "no class subfolders")


def test_empty_class(fixture_set, tmp_path):
    (fixture_set.root / "small_quadcopters").mkdir()
    res = _run("audit", fixture_set.root, "--out", tmp_path / "o", "--workers", "1")
    assert res.exit_code == EXIT_BAD_INPUT
    _one_line_error(res, "small_quadcopters", "no files")


def test_symlink_loop(fixture_set, tmp_path):
    os.symlink(fixture_set.root / "winged_drones", fixture_set.root / "winged_drones" / "again")
    res = _run("audit", fixture_set.root, "--out", tmp_path / "o", "--workers", "1")
    assert res.exit_code == EXIT_BAD_INPUT
    _one_line_error(res, "symlink loop")
    os.symlink("self", fixture_set.root / "flying_birds" / "self")
    (fixture_set.root / "winged_drones" / "again").unlink()
    res = _run("audit", fixture_set.root, "--out", tmp_path / "o", "--workers", "1")
    assert res.exit_code == EXIT_BAD_INPUT
    _one_line_error(res, "symlink loop")


def test_unreadable_file_is_reported_and_fails(fixture_set, tmp_path, monkeypatch):
    target = fixture_set.root / fixture_set.clean[0]
    if os.geteuid() != 0:
        target.chmod(0)
    else:  # root reads anything: make the read itself fail as a permission error would
        real = os.open

        def open_(path, flags, *args, **kwargs):
            if Path(path) == target:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_)
    res = _run("audit", fixture_set.root, "--out", tmp_path / "o", "--workers", "1")
    assert res.exit_code == EXIT_UNREADABLE
    assert "could not be read" in res.output
    clean = (tmp_path / "o" / "clean.csv").read_text()
    assert f"{fixture_set.clean[0]},{fixture_set.clean[0].split('/')[0]}" in clean
    assert "unreadable: " in clean and "permission denied" in clean


def test_split_bad_input(tmp_path):
    res = _run("split", tmp_path / "none.csv", "--out", tmp_path / "s")
    assert res.exit_code == EXIT_BAD_INPUT
    _one_line_error(res, "not found")
    m = tmp_path / "m.csv"
    m.write_text("path,label\na/1.jpg,a\n")
    res = _run("split", m, "--out", tmp_path / "s", "--val", "0.7", "--test", "0.5")
    assert res.exit_code == EXIT_BAD_INPUT
    _one_line_error(res, "sum < 1")


def test_fixture_builder_uses_real_photos(tmp_path):
    fx = build_fixture(tmp_path / "p")
    assert len(fx.clean) >= 10 and all((fx.root / p).stat().st_size > 1000 for p in fx.clean)
