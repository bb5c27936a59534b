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
from skyclass.reporting.cells import spreadsheet_safe
from skyclass.reporting.html import image_or_placeholder, page, png_uri, thumbnail_uri

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
    """One row per file; cells a spreadsheet would run as formulas are escaped (see
    :mod:`skyclass.reporting.cells`; the manifest readers undo it)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "group", "status", "reason"])
    for r in report.clean:
        w.writerow([spreadsheet_safe(c) for c in (r.path, r.label, r.group, r.status, r.reason)])
    return buf.getvalue()


def write_outputs(report: AuditReport, out: Path, force: bool = False) -> None:
    """All outputs into ``out`` at once (a temporary folder renamed into place)."""
    from skyclass.outputs import atomic_dir

    with atomic_dir(out, force) as tmp:
        (tmp / "audit.json").write_text(
            json.dumps(report_dict(report), indent=1) + "\n", encoding="utf-8"
        )
        (tmp / "clean.csv").write_text(clean_csv(report), encoding="utf-8")
        from skyclass.data.eda import PLOTS

        plots = {name: make(report) for name, make in PLOTS.items()}
        for name, png in plots.items():
            (tmp / name).write_bytes(png)
        (tmp / "report.html").write_text(render_html(report, plots), encoding="utf-8")


def render_html(report: AuditReport, plots: dict[str, bytes]) -> str:
    """One self-contained page: summary, plots, flagged files by finding, duplicate groups."""
    import html

    esc = html.escape
    root = report.config.root
    thumbs: dict[str, str | None] = {}

    def card(path: str, note: str = "") -> str:
        if path not in thumbs:
            thumbs[path] = thumbnail_uri(root / path)
        img = image_or_placeholder(thumbs[path])
        return f'<div class="card">{img}{esc(path)}<br><i>{esc(note)}</i></div>'

    counts = report.counts()
    d = report_dict(report)["summary"]
    parts = [
        f"<h1>Audit of {esc(str(root))}</h1>",
        f"<p>{d['files']} files, {d['use']} to use, {d['excluded']} left out; "
        f"schema v{report.schema_version}; {report.seconds:.1f} s. Nothing in the data folder "
        "was changed.</p>",
        "<h2>Summary</h2><table><tr><th>check</th><th>severity</th><th>files</th>"
        "<th>meaning</th></tr>",
    ]
    for check, (sev, meaning) in CHECKS.items():
        cls = "err" if sev == "error" else "warn"
        parts.append(
            f"<tr><td>{check}</td><td class='{cls}'>{sev}</td><td>{counts[check]}</td>"
            f"<td>{esc(meaning)}</td></tr>"
        )
    parts.append("</table><table><tr><th>class</th><th>files</th><th>use</th></tr>")
    for c, v in d["per_class"].items():
        parts.append(f"<tr><td>{esc(c)}</td><td>{v['files']}</td><td>{v['use']}</td></tr>")
    parts.append("</table><h2>Plots</h2>")
    for name, png in plots.items():
        parts.append(f'<img class="plot" alt="{name}" src="{png_uri(png)}">')
    parts.append(
        "<h2>K-Means outliers</h2><table><tr><th>class</th><th>k</th>"
        "<th>silhouette</th><th>centres (bytes, h, w)</th><th>fence</th>"
        "<th>outliers</th></tr>"
    )
    for km in report.kmeans:
        parts.append(
            f"<tr><td>{esc(km.label)}</td><td>{km.k}</td><td>{km.silhouette}</td>"
            f"<td>{esc(str(list(km.centres)))}</td><td>{km.threshold}</td>"
            f"<td>{len(km.outliers)}</td></tr>"
        )
    parts.append("</table><h2>Flagged files by finding</h2>")
    by_check: dict[str, list] = {}
    for f in report.findings:
        if f.check in ("near_duplicate", "exact_duplicate", "label_conflict"):
            continue  # shown as groups below
        by_check.setdefault(f.check, []).append(f)
    for check, fs in by_check.items():
        parts.append(f"<h3>{check} ({len(fs)})</h3><div class='grid'>")
        parts.extend(card(f.path, f.message) for f in fs)
        parts.append("</div>")
    parts.append(f"<h2>Duplicate groups ({len(report.duplicate_groups)})</h2>")
    status = {r.path: r for r in report.clean}
    for g in sorted(report.duplicate_groups, key=lambda g: (not g.cross_class, g.id)):
        title = "label conflict, " if g.cross_class else ""
        parts.append(
            f"<div class='group'><b>{title}{g.kind}</b>: {len(g.members)} files<div class='grid'>"
        )
        for p, lb in zip(g.members, g.labels, strict=True):
            parts.append(card(p, f"{lb}: {status[p].status}"))
        parts.append("</div></div>")
    return page("skyclass audit", "\n".join(parts))
