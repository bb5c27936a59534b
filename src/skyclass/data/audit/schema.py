"""What an audit records: its checks, its config and the typed values it returns.

Scores (:class:`FileScores`) are measured once per file and do not depend on any threshold;
findings (:class:`Finding`) are what thresholds make of them; :class:`AuditReport` holds both, and
the writers in :mod:`skyclass.data.report` and :mod:`skyclass.data.eda` only render it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skyclass.core.files import MAX_FILE_BYTES
from skyclass.core.preprocess import SUPPORTED_FORMATS, ImageLimits

SCHEMA_VERSION = 1

ERROR = "error"
WARNING = "warning"

#: Every check the audit can report, with its default severity and a one-line meaning.
CHECKS: dict[str, tuple[str, str]] = {
    "unreadable": (ERROR, "the file cannot be read (permissions or I/O error)"),
    "not_a_file": (ERROR, "not a regular file (a device, a FIFO, a socket, or a link to one)"),
    "undecodable_name": (ERROR, "the file name is not valid UTF-8 (shown escaped): rename it"),
    "too_large": (ERROR, "the file is larger than the size cap, so it is not read"),
    "too_many_pixels": (ERROR, "more pixels than the pixel cap, so it is not decoded"),
    "zero_byte": (ERROR, "the file is empty"),
    "not_an_image": (ERROR, "the bytes are not an image in any format Pillow knows"),
    "unsupported_format": (ERROR, "an image format the model does not take"),
    "truncated": (ERROR, "a full decode stops early: the file is cut short"),
    "corrupt": (ERROR, "a full decode fails: the data is damaged"),
    "tiny": (ERROR, "the short side is below the minimum"),
    "extreme_aspect": (ERROR, "the long side is many times the short side"),
    "exact_duplicate": (ERROR, "a byte-identical copy of a file that is kept"),
    "label_conflict": (ERROR, "the same (or a near-identical) image is filed under another class"),
    "extension_mismatch": (WARNING, "the file extension does not match the real format"),
    "unusual_mode": (WARNING, "not 8-bit RGB: CMYK, 16-bit, alpha, palette or grayscale"),
    "near_duplicate": (WARNING, "a near-identical image (perceptual hash) in the same class"),
    "kmeans_outlier": (WARNING, "far from its K-Means cluster centre over (size, height, width)"),
}


class AuditInputError(Exception):
    """The data folder cannot be audited at all (missing, no classes, empty class, loop)."""

    exit_code: int = 2


@dataclass(frozen=True)
class AuditConfig:
    """What to audit and where the thresholds are. Scores do not depend on the thresholds."""

    root: Path
    near_threshold: int = 6  # max Hamming distance between 64-bit pHashes for a near duplicate
    colour_threshold: float = 10.0  # and max mean abs difference of 8x8 RGB thumbnails (0-255)
    hash_size: int = 8
    mirror: bool = True  # also compare with the mirrored image (Roboflow exports carry such copies)
    min_side: int = 32
    max_aspect: float = 4.0
    formats: tuple[str, ...] = SUPPORTED_FORMATS
    kmeans_k: int | None = None  # None: pick k in kmeans_k_range by silhouette score
    kmeans_k_range: tuple[int, int] = (2, 6)
    kmeans_iqr: float = 3.0  # outlier if distance > q3 + kmeans_iqr * (q3 - q1) within its class
    drop_label_conflicts: bool = True
    workers: int = 0  # 0: one per CPU core; 1: in process
    draft_side: int = 64
    max_bytes: int = MAX_FILE_BYTES  # larger files are a finding, never read
    max_pixels: int = ImageLimits.max_pixels  # serving refuses more, so the audit flags it

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["root"] = str(self.root)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class FileScores:
    """What one read of one file measured; no threshold applied yet."""

    path: str  # POSIX, relative to the root
    label: str
    size: int
    sha256: str | None = None
    ext: str = ""
    magic: str | None = None  # format told by the first bytes
    format: str | None = None  # format Pillow identified
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int = 1
    error: str | None = None  # a check name from CHECKS when the file failed to read/decode
    detail: str = ""
    phash: str | None = None  # hex
    phash_mirror: str | None = None
    thumb: str | None = None  # 8x8 RGB, hex: confirms pHash matches (flat skies fool pHash)

    @property
    def decoded(self) -> bool:
        return self.error is None and self.width is not None


@dataclass(frozen=True)
class Finding:
    path: str
    label: str
    check: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DuplicateLink:
    a: str
    b: str
    distance: int
    mirrored: bool
    exact: bool


@dataclass(frozen=True)
class DuplicateGroup:
    id: str
    kind: str  # "exact" (all byte-identical) or "near"
    members: tuple[str, ...]
    labels: tuple[str, ...]
    links: tuple[DuplicateLink, ...]  # the links that joined the group (a spanning tree)

    @property
    def cross_class(self) -> bool:
        return len(set(self.labels)) > 1


@dataclass(frozen=True)
class KMeansResult:
    label: str
    k: int
    silhouette: float | None
    features: tuple[str, ...]
    centres: tuple[tuple[float, ...], ...]  # in original units (bytes, px, px)
    cluster_sizes: tuple[int, ...]
    threshold: float  # on the distance in standardised units
    paths: tuple[str, ...]
    clusters: tuple[int, ...]
    distances: tuple[float, ...]
    outliers: tuple[str, ...]


@dataclass(frozen=True)
class CleanRow:
    path: str
    label: str
    group: str
    status: str  # "use" or "excluded"
    reason: str


@dataclass(frozen=True)
class AuditReport:
    schema_version: int
    config: AuditConfig
    classes: tuple[str, ...]
    files: tuple[FileScores, ...]
    findings: tuple[Finding, ...]
    duplicate_groups: tuple[DuplicateGroup, ...]
    kmeans: tuple[KMeansResult, ...]
    clean: tuple[CleanRow, ...]
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Files per check (a file counts once per check)."""
        out = {name: 0 for name in CHECKS}
        seen: set[tuple[str, str]] = set()
        for f in self.findings:
            if (f.path, f.check) not in seen:
                seen.add((f.path, f.check))
                out[f.check] += 1
        return out

    def by_path(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for f in self.findings:
            out.setdefault(f.path, []).append(f)
        return out
