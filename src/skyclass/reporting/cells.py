"""CSV cells that a spreadsheet will not run as a formula, and back.

A cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
Excel, LibreOffice and Google Sheets (spreadsheet formula injection): a class folder named
``=HYPERLINK(...)`` would run when ``clean.csv`` is opened. Such a cell is written with a leading
apostrophe, the spreadsheets' own "this is text" mark, and so is a cell that already begins with
one (so the escape can be undone exactly). Every skyclass reader of a manifest
(:func:`skyclass.data.dataset.read_manifest`, :func:`skyclass.data.split.read_manifest`) removes
that one apostrophe, so an escaped path still names the same file for the rest of the pipeline.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_MARK = "'"


def spreadsheet_safe(value: str) -> str:
    """``value`` as a cell no spreadsheet runs: a leading apostrophe where it needs one."""
    return _MARK + value if value.startswith((*FORMULA_STARTS, _MARK)) else value


def from_spreadsheet_safe(value: str) -> str:
    """The value :func:`spreadsheet_safe` escaped (unchanged when it was not escaped)."""
    return value[1:] if value.startswith(_MARK) else value
