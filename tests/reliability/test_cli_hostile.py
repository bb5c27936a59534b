"""The CLI door of the hostile corpus (issue 14, low): each case a one-line error or a clear
per-file message, a non-zero exit, never a traceback, never a hang, never a whole 3 GB read.

Real subprocesses where the case allows; an unreadable folder as root (root enters any folder)
is made by failing the real ``os.scandir`` for it, in process, as ``tests/data`` does for files.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skyclass.cli import build_app
from tests.conftest import (
    CLASSES,
    DATA_ROOT,
    REPO_ROOT,
    WEIGHTS,
    run_cli,
    shared_images,
    write_manifest,
)

PHOTO = shared_images("flying_birds", 1)[0]


def one_line(result: subprocess.CompletedProcess[str], *words: str, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], result.stderr
    return lines[0]


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_port_out_of_range(port: str) -> None:
    one_line(run_cli("serve", "--port", port), "--port")


# ---- --out that cannot be written: refused before the run -----------------------------------


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    files = [p for c in CLASSES for p in shared_images(c, 3)]
    return write_manifest(tmp_path / "m.csv", files)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for p in shared_images(c, 2):
            shutil.copy2(p, root / c / p.name)
    return root


def test_out_on_a_read_only_folder_is_refused_first(
    readonly_dir: Path, manifest: Path, photos: Path, tmp_path: Path
) -> None:
    out = readonly_dir / "out"
    config = tmp_path / "c.toml"
    config.write_text(
        f'name = "x"\nout = "{out}"\ndata_root = "{DATA_ROOT}"\ntrain = "{manifest}"\n'
        f'val = "{manifest}"\nweights = "{WEIGHTS}"\nimage_size = 64\n'
        '[[stages]]\nname = "head"\nepochs = 1\n'
    )
    cases = {
        "audit": ["audit", str(photos), "--out", str(out), "--workers", "1"],
        "split": ["split", str(manifest), "--out", str(out)],
        "label-issues": [
            *("label-issues", str(manifest), "--data-root", str(DATA_ROOT)),
            *("--out", str(out), "--weights", str(WEIGHTS)),
        ],
        "train": ["train", "--config", str(config), "--no-progress"],
        "lr-find": ["lr-find", "--config", str(config), "--out", str(out), "--no-progress"],
        "evaluate": ["evaluate", str(tmp_path / "run"), str(manifest), "--out", str(out)],
        "export": ["export", str(tmp_path / "run"), "--out", str(out)],
    }
    for command, args in cases.items():
        result = run_cli(*args)
        code = 1 if command == "export" else 2
        one_line(result, "cannot write", code=code)
    assert not out.exists()


# ---- split: ragged rows, a 128 KB field ------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("path,label\na.jpg,x,extra\nb.jpg,y\n", ["row 2", "columns"]),
        ("path,label\na.jpg,x\nb.jpg\n", ["row 3", "columns"]),
        ("path,label\n" + "a" * 131_073 + ".jpg,x\n", ["field larger than field limit"]),
    ],
)
def test_split_malformed_manifest(text: str, words: list[str], tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    one_line(run_cli("split", str(path), "--out", str(tmp_path / "s")), *words)
    assert not (tmp_path / "s").exists()


def test_split_ragged_groups_file(manifest: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader(manifest.open()))
    groups = tmp_path / "g.csv"
    groups.write_text("path,source_repo\n" + f"{rows[0]['path']},a,b\n")
    result = run_cli("split", str(manifest), "--out", str(tmp_path / "s"), "--groups", str(groups))
    one_line(result, "g.csv", "row 2")


# ---- evaluate --------------------------------------------------------------------------------


def test_evaluate_bad_options_and_a_corrupt_checkpoint(manifest: Path, tmp_path: Path) -> None:
    one_line(run_cli("evaluate", "run", str(manifest), "--batch-size", "0"), "--batch-size")
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    result = run_cli("evaluate", "run", str(manifest), "--out", str(taken))
    one_line(result, str(taken), "not a folder")
    assert taken.read_text() == "mine"
    corrupt = tmp_path / "best.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 100)
    one_line(run_cli("evaluate", str(corrupt), str(manifest)), "best.pt")


# ---- predict ---------------------------------------------------------------------------------


def test_predict_escapes_terminal_codes_in_names(tmp_path: Path) -> None:
    evil = "a\x1b[2J\x1b]0;owned\x07\x9b31m.jpg"
    shutil.copy2(PHOTO, tmp_path / evil)
    (tmp_path / ("bad\x1b[31m.jpg")).write_text("not a photo")
    for fmt in ("table", "csv", "json"):
        result = run_cli("predict", "--format", fmt, str(tmp_path))
        assert result.returncode == 1, result.stderr
        assert "\x1b" not in result.stdout + result.stderr, (fmt, result.stdout)
        assert "\x07" not in result.stdout + result.stderr and "\x9b" not in result.stdout
        assert "bad\\x1b[31m.jpg: the data is not an image" in result.stderr
    table = run_cli("predict", str(tmp_path / evil)).stdout
    assert "a\\x1b[2J\\x1b]0;owned\\x07\\x9b31m.jpg" in table


def test_predict_stats_before_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as fh:
        fh.truncate(3 * 1024**3)  # sparse: 3 GB that cost no disk
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyclass", "predict", str(huge), str(fifo), str(PHOTO)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=120)  # a FIFO opened for reading would hang
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert f"{huge}: the file is 3,221,225,472 bytes; the limit is" in err
    assert f"{fifo}: not a regular file" in err
    assert PHOTO.name in out and "2 of 3 files could not be classified" in err
    assert "Traceback" not in err


def test_predict_reads_a_3gb_file_not_at_all(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as fh:
        fh.truncate(3 * 1024**3)
    # the child's own VmHWM: ru_maxrss (wait4) keeps the forking pytest process's size across exec
    hwm = tmp_path / "hwm"
    code = (
        "import sys\n"
        "from skyclass.cli import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    lines = [x for x in open('/proc/self/status') if x.startswith('VmHWM')]\n"
        f"    open({str(hwm)!r}, 'w').write(lines[0].split()[1])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "predict", str(huge)],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 1
    kib = int(hwm.read_text())
    assert kib < 1024 * 1024, kib  # under 1 GB, not 3 GB read


def _unreadable(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``folder`` cannot be entered: chmod 0 as a user; as root, its scandir fails as it would."""
    if os.geteuid() != 0:
        folder.chmod(0)
        return
    real = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)) == folder:  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)


def test_predict_says_which_folders_it_could_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "photos"
    (top / "ok").mkdir(parents=True)
    (top / "locked").mkdir()
    shutil.copy2(PHOTO, top / "ok" / PHOTO.name)
    shutil.copy2(PHOTO, top / "locked" / "hidden.jpg")
    _unreadable(monkeypatch, top / "locked")
    runner = CliRunner()
    res = runner.invoke(build_app(), ["predict", "--format", "csv", str(top)])
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert f"{top / 'locked'}: folder skipped, cannot be read (Permission denied)" in res.output
    assert PHOTO.name in res.output and "hidden.jpg" not in res.output
    # The folder given itself cannot be entered: said the same way, no table, exit 1.
    _unreadable(monkeypatch, top)
    res = runner.invoke(build_app(), ["predict", str(top)])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert lines[0] == f"{top}: folder skipped, cannot be read (Permission denied)", res.output
    assert "path" not in res.output and "┏" not in res.output  # no empty table
    for folder in (top, top / "locked"):
        folder.chmod(0o755)


def test_predict_prints_no_empty_table_when_every_file_fails(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_text("not a photo")
    result = run_cli("predict", str(tmp_path / "a.jpg"))
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert "a.jpg: the data is not an image" in result.stderr
