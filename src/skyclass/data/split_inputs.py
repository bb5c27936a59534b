"""What ``skyclass split`` reads: the manifest, a groups table and a filled-in review sheet, each
checked, with a one-line :class:`SplitInputError` for anything unusable."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from skyclass.reporting.cells import from_spreadsheet_safe

#: A review sheet's decisions (the sheet comes from ``skyclass label-issues``).
DECISIONS = ("keep", "exclude", "relabel")


class SplitInputError(Exception):
    """The manifest or groups file cannot be used."""

    exit_code: int = 2


def read_table(path: Path, strict: bool = False) -> list[dict[str, str]]:
    """Rows of a CSV or TSV file (delimiter from the extension, else sniffed); ``strict``: each
    row has exactly the header's fields."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise SplitInputError(f"file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SplitInputError(f"cannot read {path}: {exc}") from exc
    if Path(path).suffix.lower() == ".tsv":
        delim = "\t"
    else:
        try:
            delim = csv.Sniffer().sniff(text[:4096], delimiters=",\t;").delimiter
        except csv.Error:
            delim = ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delim)
    try:
        rows = list(reader)
    except csv.Error as exc:  # a field over csv's 128 KB limit, ...
        raise SplitInputError(f"{path}: line {reader.line_num + 1}: {exc}") from None
    bad = next((n for n, r in enumerate(rows, 2) if None in r or None in r.values()), None)
    if strict and bad:
        raise SplitInputError(f"{path}: row {bad} does not have the header's columns")
    return rows


def read_manifest(path: Path) -> tuple[list[dict[str, str]], int]:
    """Manifest rows to use (``status`` column, when present, must be ``use``) and how many not."""
    rows = read_table(path, strict=True)
    if not rows:
        raise SplitInputError(f"manifest {path} has no rows")
    need = {"path", "label"} - set(rows[0])
    if need:
        raise SplitInputError(f"manifest {path} lacks column(s): {', '.join(sorted(need))}")
    keep = [_unescaped(r) for r in rows if r.get("status", "use") in ("use", "")]
    seen: set[str] = set()
    for r in keep:
        if r["path"] in seen:
            raise SplitInputError(f"manifest {path} lists {r['path']} twice")
        seen.add(r["path"])
    return keep, len(rows) - len(keep)


def _unescaped(row: dict[str, str]) -> dict[str, str]:
    """A manifest row with its path, label and group cells as skyclass escaped them."""
    cells = {k: from_spreadsheet_safe(row[k]) for k in ("path", "label", "group") if row.get(k)}
    return {**row, **cells}


def read_review(path: Path, rows: Sequence[dict[str, str]]) -> dict[str, tuple[str, str]]:
    """path -> (decision, new_label) from a filled-in review sheet, checked against the manifest.

    Applied after the assignment, a review never moves a file between splits: it only takes the
    excluded files out and changes the relabeled files' labels where they are. A blank decision
    means not reviewed (kept as labeled). The sheet's ``label`` must still be the manifest's label,
    so a sheet made for another manifest, or an old one, is refused rather than misapplied.
    """
    table = read_table(path)
    if table and not {"path", "label", "decision"} <= set(table[0]):
        raise SplitInputError(f"review {path} needs columns path, label, decision (and new_label)")
    label_of = {r["path"]: r["label"] for r in rows}
    labels = set(label_of.values())
    out: dict[str, tuple[str, str]] = {}
    for n, r in enumerate(table, start=2):
        where = f"review {path}:{n}"
        p, label = (from_spreadsheet_safe((r.get(k) or "").strip()) for k in ("path", "label"))
        decision = (r.get("decision") or "").strip().lower()
        new_label = (r.get("new_label") or "").strip()
        if p not in label_of:
            raise SplitInputError(f"{where}: {p} is not a row of the manifest")
        if label != label_of[p]:
            raise SplitInputError(
                f"{where}: {p} is labeled {label_of[p]!r} in the manifest, {label!r} here"
            )
        if not decision:
            continue
        if decision not in DECISIONS:
            raise SplitInputError(f"{where}: decision {decision!r} is not one of {DECISIONS}")
        if decision == "relabel" and new_label not in labels - {label_of[p]}:
            valid = ", ".join(sorted(labels - {label_of[p]}))
            raise SplitInputError(
                f"{where}: relabel needs new_label, another class of the manifest; "
                f"got {new_label!r}, valid: {valid}"
            )
        if p in out:
            raise SplitInputError(f"{where}: {p} is reviewed twice")
        out[p] = (decision, new_label)
    return out


def read_groups(path: Path, column: str) -> dict[str, str]:
    """path -> metadata group value. Keys: a ``path`` column, or ``class``/``label`` + ``file``."""
    rows = read_table(path, strict=True)
    if not rows:
        raise SplitInputError(f"groups file {path} has no rows")
    cols = set(rows[0])
    if column not in cols:
        raise SplitInputError(
            f"groups file {path} has no column {column!r} (columns: {', '.join(sorted(cols))})"
        )
    out: dict[str, str] = {}
    for r in rows:
        if "path" in cols:
            key = r["path"]
        elif "file" in cols and ("class" in cols or "label" in cols):
            key = f"{r.get('class') or r.get('label')}/{r['file']}"
        else:
            raise SplitInputError(
                f"groups file {path} needs a 'path' column or 'class'/'label' and 'file' columns"
            )
        out[key] = r[column]
    return out
