"""A non-destructive audit of a class-per-folder image set, in cleanvision's shape.

The audit reads every file once (never writes, moves or deletes one):

- :mod:`~skyclass.data.audit.schema`: the checks, the config and the typed results;
- :mod:`~skyclass.data.audit.scan`: the file list (class = top-level folder);
- :mod:`~skyclass.data.audit.checks`: per-file scores (capped read, decode, hashes) and findings;
- :mod:`~skyclass.data.audit.duplicates`: exact and near duplicate groups, across classes too;
- :mod:`~skyclass.data.audit.outliers`: K-Means outliers per class;
- :mod:`~skyclass.data.audit.runner`: :func:`run_audit`, scores first, then each finder's
  thresholds and findings, into an :class:`AuditReport` that :mod:`skyclass.data.report` renders.

Severity: an ``error`` finding leaves the file out of ``clean.csv`` (it cannot be used, or it is a
redundant copy, or its label contradicts another copy's); a ``warning`` keeps it and asks for a
look. Near duplicates are kept but share a ``group`` id, so a split keeps them on one side.
"""

from skyclass.data.audit.checks import compute_scores, findings_for, inspect_file, sniff_format
from skyclass.data.audit.duplicates import (
    duplicate_findings,
    duplicate_groups,
    near_pairs,
    thumb_distance,
)
from skyclass.data.audit.outliers import KMEANS_FEATURES, kmeans_findings, kmeans_outliers
from skyclass.data.audit.runner import clean_rows, run_audit
from skyclass.data.audit.scan import list_images, printable_name
from skyclass.data.audit.schema import (
    CHECKS,
    ERROR,
    SCHEMA_VERSION,
    WARNING,
    AuditConfig,
    AuditInputError,
    AuditReport,
    CleanRow,
    DuplicateGroup,
    DuplicateLink,
    FileScores,
    Finding,
    KMeansResult,
)

__all__ = [
    "CHECKS",
    "ERROR",
    "KMEANS_FEATURES",
    "SCHEMA_VERSION",
    "WARNING",
    "AuditConfig",
    "AuditInputError",
    "AuditReport",
    "CleanRow",
    "DuplicateGroup",
    "DuplicateLink",
    "FileScores",
    "Finding",
    "KMeansResult",
    "clean_rows",
    "compute_scores",
    "duplicate_findings",
    "duplicate_groups",
    "findings_for",
    "inspect_file",
    "kmeans_findings",
    "kmeans_outliers",
    "list_images",
    "near_pairs",
    "printable_name",
    "run_audit",
    "sniff_format",
    "thumb_distance",
]
