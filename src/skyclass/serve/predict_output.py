"""What ``skyclass predict`` prints: a table (at the end), JSON lines or CSV (row by row).

File names are shown escaped: control characters (terminal escape codes) and undecodable bytes
become ``\\x1b``-style escapes, so a hostile name cannot drive the terminal or break a line.
"""

from __future__ import annotations

import csv
import json
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

FORMATS = ("table", "json", "csv")


def printable(text: str) -> str:
    """``text`` with control characters and lone surrogates (undecodable bytes of a file name)
    escaped as ``\\xNN``/``\\uNNNN``; everything else, non-ASCII letters included, as is."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029":
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class Row:
    """One classified file. ``label`` None: out of scope (``top_guess`` is the best class);
    ``extra``: the scope verdict and explanation file, for JSON lines."""

    path: str
    label: str | None
    confidence: float
    probabilities: dict[str, float]
    top_guess: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shown_label(self) -> str:
        return self.label if self.label is not None else f"none of these (guess: {self.top_guess})"


@dataclass
class PredictOutput:
    """Prints rows in one format: ``add`` each result, then ``close``."""

    fmt: str
    labels: Sequence[str]
    title: str
    top_k: int
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    rows: list[Row] = field(default_factory=list)
    _csv: Any = None

    def add(self, row: Row) -> None:
        if self.fmt == "json":
            line = {
                "path": row.path,
                "label": row.label,
                "confidence": row.confidence,
                "probabilities": row.probabilities,
                **row.extra,
            }
            self.stream.write(json.dumps(line) + "\n")
        elif self.fmt == "csv":
            self._write_csv(row)
        else:
            self.rows.append(row)
        self.stream.flush()

    def _write_csv(self, row: Row) -> None:
        every = self.top_k >= len(self.labels)
        if self._csv is None:
            self._csv = csv.writer(self.stream, lineterminator="\n")
            if every:
                probs = [f"p_{label}" for label in self.labels]
            else:
                probs = [f"{kind}_{i}" for i in range(1, self.top_k + 1) for kind in ("class", "p")]
            self._csv.writerow(["path", "label", "confidence", *probs])
        if every:
            values: list[Any] = [row.probabilities.get(label, "") for label in self.labels]
        else:
            values = [v for item in row.probabilities.items() for v in item]
        self._csv.writerow([printable(row.path), row.label or "", row.confidence, *values])

    def close(self) -> None:
        """Print the table (table format, and only when there is a row to show)."""
        if self.fmt == "table" and self.rows:
            print_table(self.rows, self.title, self.stream)


def print_table(rows: list[Row], title: str, stream: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("label", no_wrap=True)
    table.add_column("confidence", justify="right", no_wrap=True)
    table.add_column("others", overflow="fold")
    for row in rows:
        best = row.label or row.top_guess
        others = ", ".join(f"{c} {p:.2f}" for c, p in row.probabilities.items() if c != best)
        table.add_row(
            Text(printable(row.path)), Text(row.shown_label), f"{row.confidence:.3f}", Text(others)
        )
    console = Console(file=stream)
    if not console.is_terminal:  # piped: one row per line, paths whole
        longest = max(
            (len(printable(r.path)) + sum(len(c) + 6 for c in r.probabilities) for r in rows),
            default=0,
        )
        console = Console(file=stream, width=max(120, longest + 40))
    console.print(table)
