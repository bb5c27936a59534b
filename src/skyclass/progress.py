"""Progress that reads well wherever it goes: tqdm bars on a terminal, plain lines elsewhere.

Outside a terminal (CI, ``> log``, nohup) a tqdm bar writes a carriage-return frame per update:
megabytes of them in a training log. There, a loop writes one line when it ends (a bar kept
with ``leave=True``, e.g. one training epoch) or, for a passing step, only when it took long
(``SLOW_S``), plus a line every ``HEARTBEAT_S`` while a long one runs. Every command's loops
(train, lr-find, evaluate, label-issues, decode passes) go through :func:`progress_bar`.

``SKYCLASS_PROGRESS=bars|lines|off`` overrides the choice (e.g. bars inside a CI that renders them).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

#: A passing loop (``leave=False``) that took this long still gets its line outside a terminal.
SLOW_S = 10.0
#: Outside a terminal, a running loop says where it is this often.
HEARTBEAT_S = 60.0
MODES = ("bars", "lines", "off")


def progress_mode(stream: IO[str] | None = None) -> str:
    """``bars`` on a terminal, ``lines`` elsewhere, unless ``SKYCLASS_PROGRESS`` says otherwise."""
    forced = os.environ.get("SKYCLASS_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced
    stream = stream if stream is not None else sys.stderr
    try:
        return "bars" if stream.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


class LineProgress(Iterable[T]):
    """tqdm's interface as far as skyclass uses it (iterate, ``set_postfix``, ``update``,
    ``close``, ``total``), writing whole lines only (none when ``stream`` is None). It needs no
    tqdm, so a disabled bar works where only the serve dependencies are installed."""

    def __init__(
        self,
        iterable: Iterable[T] | None,
        *,
        total: int | None,
        desc: str,
        unit: str,
        leave: bool,
        stream: IO[str] | None,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _len(iterable)
        self.desc, self.unit, self.leave, self.stream = desc, unit, leave, stream
        self.n = 0
        self.postfix = ""
        self.start = self.last_beat = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        assert self.iterable is not None, "LineProgress without an iterable: use update()"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last_beat >= HEARTBEAT_S:
            self.last_beat = now
            self._write(f"{self._count()} so far, {now - self.start:.0f} s")

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        seconds = time.perf_counter() - self.start
        if self.leave or seconds >= SLOW_S:
            rate = self.n / seconds if seconds > 0 else 0.0
            tail = f", {self.postfix}" if self.postfix else ""
            self._write(f"{self._count()} in {seconds:.1f} s ({rate:.1f} {self.unit}/s){tail}")

    def __enter__(self) -> LineProgress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.n}{of} {self.unit}"

    def _write(self, text: str) -> None:
        if self.stream is None:  # disabled
            return
        self.stream.write(f"{self.desc}: {text}\n" if self.desc else f"{text}\n")
        self.stream.flush()


def _len(iterable: Iterable[Any] | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
    stream: IO[str] | None = None,
) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, a silent one when disabled
    (or ``SKYCLASS_PROGRESS=off``). Iterate it, or call ``update(n)`` and ``close()``; it is
    also a context manager."""
    out = stream if stream is not None else sys.stderr
    mode = progress_mode(out) if enabled else "off"
    if mode == "bars":
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=out)
    silent = mode == "off"
    return LineProgress(
        iterable, total=total, desc=desc, unit=unit, leave=leave, stream=None if silent else out
    )
