"""``run_audit()``: list the files, score each, then let each finder threshold its scores."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from skyclass.data.audit.checks import compute_scores, findings_for
from skyclass.data.audit.duplicates import duplicate_findings, duplicate_groups
from skyclass.data.audit.outliers import kmeans_findings, kmeans_outliers
from skyclass.data.audit.scan import list_images, printable_name
from skyclass.data.audit.schema import (
    ERROR,
    SCHEMA_VERSION,
    AuditConfig,
    AuditReport,
    CleanRow,
    DuplicateGroup,
    FileScores,
    Finding,
)


def clean_rows(
    scores: Sequence[FileScores], findings: Sequence[Finding], groups: Sequence[DuplicateGroup]
) -> list[CleanRow]:
    """Every file with its leakage group and whether to use it (and if not, why)."""
    group_of = {p: g.id for g in groups for p in g.members}
    errors: dict[str, list[str]] = {}
    for f in findings:
        if f.severity == ERROR:
            errors.setdefault(f.path, []).append(f"{f.check}: {f.message}")
    return [
        CleanRow(
            s.path,
            s.label,
            group_of.get(s.path, s.path),
            "excluded" if s.path in errors else "use",
            "; ".join(dict.fromkeys(errors.get(s.path, []))),
        )
        for s in scores
    ]


def run_audit(
    config: AuditConfig,
    progress: Callable[[int], None] | None = None,
    *,
    total: Callable[[int], None] | None = None,
) -> AuditReport:
    """List, score, threshold. Reads the data only; writes nothing.

    Scores first (one read per file), then each finder thresholds them into findings: the
    per-file checks, the duplicate groups, the K-Means outliers.
    """
    t0 = time.perf_counter()
    items = list_images(config.root)
    if total is not None:
        total(len(items))
    scores = compute_scores(config, items, progress)
    findings = [f for s in scores for f in findings_for(s, config)]
    groups = duplicate_groups(scores, config)
    findings.extend(duplicate_findings(groups, config))
    km = kmeans_outliers(scores, config)
    findings.extend(kmeans_findings(km, scores))
    order = {s.path: i for i, s in enumerate(scores)}
    findings.sort(key=lambda f: (order[f.path], f.check))
    return AuditReport(
        schema_version=SCHEMA_VERSION,
        config=config,
        classes=tuple(sorted({printable_name(label) for _, label in items})),
        files=tuple(scores),
        findings=tuple(findings),
        duplicate_groups=tuple(groups),
        kmeans=tuple(km),
        clean=tuple(clean_rows(scores, findings, groups)),
        seconds=round(time.perf_counter() - t0, 3),
    )
