"""skyclass.progress: bars on a terminal, whole lines elsewhere (the command-level check, a real
training run logged to a file, is in tests/train/test_reproducible.py)."""

from __future__ import annotations

import io

import pytest

from skyclass import progress
from skyclass.progress import LineProgress, progress_bar, progress_mode


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKYCLASS_PROGRESS", raising=False)


def test_terminal_gets_a_bar_a_file_gets_one_line_per_kept_loop() -> None:
    tty, log = Terminal(), io.StringIO()
    assert progress_mode(tty) == "bars" and progress_mode(log) == "lines"
    for stream in (tty, log):
        for epoch in range(3):
            bar = progress_bar(range(50), desc=f"head {epoch + 1}/3", unit="batch", leave=True,
                               stream=stream)  # fmt: skip
            for _ in bar:
                bar.set_postfix(loss="0.500")
        for _ in progress_bar(range(50), desc="val", stream=stream):  # passing: no line
            pass
    assert "\r" in tty.getvalue()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 3
    assert lines[0].startswith("head 1/3: 50/50 batch in ") and lines[0].endswith("loss=0.500")


def test_slow_passing_loop_and_heartbeat_write_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(t) for t in (0, 30, 61, 95, 100))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    log = io.StringIO()
    bar = LineProgress(None, total=4, desc="decode", unit="img", leave=False, stream=log)
    bar.update(1)  # t=30
    bar.update(1)  # t=61: a heartbeat
    bar.update(2)  # t=95
    bar.close()  # t=100 >= SLOW_S: a final line
    bar.close()
    assert log.getvalue().splitlines() == [
        "decode: 2/4 img so far, 61 s",
        "decode: 4/4 img in 100.0 s (0.0 img/s)",
    ]


def test_environment_overrides_and_disabled_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setenv("SKYCLASS_PROGRESS", "off")
    assert list(progress_bar(range(3), leave=True, stream=log)) == [0, 1, 2]
    monkeypatch.setenv("SKYCLASS_PROGRESS", "lines")
    assert progress_mode(Terminal()) == "lines"
    monkeypatch.delenv("SKYCLASS_PROGRESS")
    assert list(progress_bar(range(3), leave=True, enabled=False, stream=log)) == [0, 1, 2]
    assert log.getvalue() == ""


def test_loop_left_early_still_writes_its_line() -> None:
    log = io.StringIO()
    for i in progress_bar(range(10), desc="head 1/1", unit="batch", leave=True, stream=log):
        if i == 2:
            break
    assert log.getvalue().startswith("head 1/1: 2/10 batch in ")
