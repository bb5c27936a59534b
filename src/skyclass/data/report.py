"""Render an :class:`~skyclass.data.audit.AuditReport`: audit.json, clean.csv, report.html, plots.

Writers only read the report; nothing here measures or decides.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from skyclass.data.audit import CHECKS, AuditReport

log = logging.getLogger(__name__)


def report_dict(report: AuditReport) -> dict[str, Any]:
    """The audit as JSON-ready data (schema ``schema_version``)."""
    files = []
    for s in report.files:
        d = asdict(s)
        d.pop("thumb", None)
        files.append(d)
    return {
        "schema_version": report.schema_version,
        "tool": "skyclass audit",
        "config": report.config.to_dict(),
        "classes": list(report.classes),
        "seconds": report.seconds,
        "summary": {
            "files": len(report.files),
            "use": sum(r.status == "use" for r in report.clean),
            "excluded": sum(r.status != "use" for r in report.clean),
            "per_class": {
                c: {
                    "files": sum(s.label == c for s in report.files),
                    "use": sum(r.label == c and r.status == "use" for r in report.clean),
                }
                for c in report.classes
            },
            "findings": report.counts(),
            "duplicate_groups": {
                "exact": sum(g.kind == "exact" for g in report.duplicate_groups),
                "near": sum(g.kind == "near" for g in report.duplicate_groups),
                "cross_class": sum(g.cross_class for g in report.duplicate_groups),
            },
        },
        "checks": {k: {"severity": v[0], "meaning": v[1]} for k, v in CHECKS.items()},
        "findings": [asdict(f) for f in report.findings],
        "duplicate_groups": [
            {**asdict(g), "cross_class": g.cross_class} for g in report.duplicate_groups
        ],
        "kmeans": [asdict(k) for k in report.kmeans],
        "files": files,
    }


def clean_csv(report: AuditReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "group", "status", "reason"])
    for r in report.clean:
        w.writerow([r.path, r.label, r.group, r.status, r.reason])
    return buf.getvalue()


def write_outputs(report: AuditReport, out: Path, force: bool = False) -> None:
    """All outputs into ``out`` at once (a temporary folder renamed into place)."""
    from skyclass.data.outputs import atomic_dir

    with atomic_dir(out, force) as tmp:
        (tmp / "audit.json").write_text(
            json.dumps(report_dict(report), indent=1) + "\n", encoding="utf-8"
        )
        (tmp / "clean.csv").write_text(clean_csv(report), encoding="utf-8")
