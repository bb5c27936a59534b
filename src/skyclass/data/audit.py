"""A non-destructive audit of a class-per-folder image set: compute, then threshold.

The audit reads every file once (never writes, moves or deletes one) and works in three steps, as
cleanvision's issue managers do:

1. **compute**: :func:`inspect_file` gives a :class:`FileScores` per file (size, sha256, magic
   bytes, Pillow's format and mode, pixel size, a full-decode result, perceptual hashes of the
   image and of its mirror). Files are streamed through a process pool; no decoded image is kept.
   JPEGs are decoded with Pillow's draft mode (scaled DCT): every byte of the entropy-coded data is
   still decoded, so truncation is caught, but at 1/8 of the pixels.
2. **threshold**: :func:`findings_for` turns scores into typed :class:`Finding` records using the
   limits in :class:`AuditConfig`; :func:`duplicate_groups` links exact (sha256) and near (pHash
   Hamming distance, mirrored copies included) duplicates into groups, within and across classes;
   :func:`kmeans_outliers` clusters (file size, height, width) per class as the seed project did.
3. **render** lives in :mod:`skyclass.data.report` and :mod:`skyclass.data.eda`; they only read the
   :class:`AuditReport` that :func:`run_audit` returns.

Severity: an ``error`` finding leaves the file out of ``clean.csv`` (it cannot be used, or it is a
redundant copy, or its label contradicts another copy's); a ``warning`` keeps it and asks for a
look. Near duplicates are kept but share a ``group`` id, so a split keeps them on one side.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.core.preprocess import SUPPORTED_FORMATS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

ERROR = "error"
WARNING = "warning"

#: Every check the audit can report, with its default severity and a one-line meaning.
CHECKS: dict[str, tuple[str, str]] = {
    "unreadable": (ERROR, "the file cannot be read (permissions or I/O error)"),
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

_EXTENSIONS = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "GIF": (".gif",),
    "WEBP": (".webp",),
    "BMP": (".bmp", ".dib"),
    "TIFF": (".tif", ".tiff"),
}

_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


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


# --------------------------------------------------------------------------------------------
# Listing


def list_images(root: Path) -> list[tuple[str, str]]:
    """(relative POSIX path, label) of every file under each class folder of ``root``, sorted.

    Class = top-level folder; files in nested folders belong to it. Hidden files and OS litter are
    skipped. Raises :class:`AuditInputError` for a missing folder, no class folders, an empty class
    or a symlink loop.
    """
    root = Path(root)
    if not root.exists():
        raise AuditInputError(f"data folder not found: {root}")
    if not root.is_dir():
        raise AuditInputError(f"not a folder: {root}")
    try:
        classes = sorted(
            e.name for e in os.scandir(root) if not e.name.startswith(".") and _is_dir(e.path)
        )
    except PermissionError as exc:
        raise AuditInputError(f"cannot list {root}: permission denied") from exc
    if not classes:
        raise AuditInputError(f"no class subfolders in {root} (expected one folder per class)")
    out: list[tuple[str, str]] = []
    for cls in classes:
        files = list(_walk(root / cls, root, {os.path.realpath(root)}))
        if not files:
            raise AuditInputError(f"class folder {cls!r} has no files")
        out.extend((rel, cls) for rel in sorted(files))
    return out


def _is_dir(path: str) -> bool:
    try:
        return os.path.isdir(path) and (os.stat(path) is not None)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AuditInputError(f"symlink loop at {path}") from exc
        raise


def _walk(folder: Path, root: Path, seen: set[str]) -> Iterator[str]:
    real = os.path.realpath(folder)
    if real in seen:
        raise AuditInputError(f"symlink loop at {folder} (points back to {real})")
    seen = seen | {real}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except PermissionError as exc:
        raise AuditInputError(f"cannot list {folder}: permission denied") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AuditInputError(f"symlink loop at {folder}") from exc
        raise
    for entry in entries:
        if entry.name.startswith(".") or entry.name in _IGNORED_NAMES:
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
            if not is_dir and entry.is_symlink():
                os.stat(entry.path)  # a dangling or looping link raises here
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise AuditInputError(f"symlink loop at {path}") from exc
            is_dir = False  # dangling link: reported as unreadable
        if is_dir:
            yield from _walk(path, root, seen)
        else:
            yield path.relative_to(root).as_posix()


# --------------------------------------------------------------------------------------------
# Compute


def sniff_format(head: bytes) -> str | None:
    """The image format the first bytes announce (magic numbers), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return "HEIF"
    if head.startswith(b"8BPS"):
        return "PSD"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    return None


def inspect_file(root: Path, rel: str, label: str, hash_size: int = 8, draft_side: int = 64):
    """Read and fully decode one file; measure everything the thresholds need. Never raises."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(root) / rel
    ext = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
        return FileScores(rel, label, 0, ext=ext, error="unreadable", detail=str(reason))
    base = {"path": rel, "label": label, "size": len(data), "ext": ext}
    base["sha256"] = hashlib.sha256(data).hexdigest()
    if not data:
        return FileScores(**base, error="zero_byte", detail="0 bytes")
    base["magic"] = sniff_format(data[:16])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            what = base["magic"] or "unknown"
            return FileScores(**base, error="not_an_image", detail=f"unidentified ({what} magic)")
        except Exception as exc:
            return FileScores(**base, error="corrupt", detail=f"header: {exc}")
        base.update(format=img.format, mode=img.mode, width=img.width, height=img.height)
        base["frames"] = int(getattr(img, "n_frames", 1))
        try:
            if img.format == "JPEG":
                img.draft(None, (draft_side, draft_side))
            img.load()  # the whole stream: truncation shows here
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb8(img)
        except Exception as exc:
            check = "truncated" if "truncat" in str(exc).lower() else "corrupt"
            return FileScores(**base, error=check, detail=str(exc))
    import imagehash

    side = 4 * hash_size
    small = rgb.convert("L").resize((side, side), Image.Resampling.LANCZOS)
    base["thumb"] = rgb.resize((8, 8), Image.Resampling.BOX).tobytes().hex()
    base["phash"] = str(imagehash.phash(small, hash_size=hash_size))
    base["phash_mirror"] = str(imagehash.phash(ImageOps.mirror(small), hash_size=hash_size))
    return FileScores(**base)


def _to_rgb8(img):
    """8-bit RGB for hashing: 16-bit scaled down, transparency composited on white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() or 1.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), mode="L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB")


def _inspect_star(args: tuple[Path, str, str, int, int]) -> FileScores:
    return inspect_file(*args)


def compute_scores(
    config: AuditConfig,
    items: Sequence[tuple[str, str]],
    progress: Callable[[int], None] | None = None,
) -> list[FileScores]:
    """Scores of every file, in the order of ``items``; a process pool when workers != 1."""
    jobs = [(config.root, rel, label, config.hash_size, config.draft_side) for rel, label in items]
    workers = config.workers or os.cpu_count() or 1
    out: list[FileScores] = []
    if workers == 1 or len(jobs) < 64:
        results: Iterable[FileScores] = map(_inspect_star, jobs)
        for r in results:
            out.append(r)
            if progress:
                progress(1)
        return out
    chunk = max(8, min(64, len(jobs) // (workers * 8) or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for r in pool.map(_inspect_star, jobs, chunksize=chunk):
            out.append(r)
            if progress:
                progress(1)
    return out


# --------------------------------------------------------------------------------------------
# Threshold


def findings_for(s: FileScores, config: AuditConfig) -> list[Finding]:
    """Per-file findings (everything except duplicates and K-Means)."""
    out: list[Finding] = []

    def add(check: str, message: str, **evidence: Any) -> None:
        out.append(Finding(s.path, s.label, check, CHECKS[check][0], message, evidence))

    if s.error is not None:
        ev = {"size": s.size, "magic": s.magic, "format": s.format, "detail": s.detail}
        add(s.error, f"{CHECKS[s.error][1]}: {s.detail}", **ev)
        return out
    real = s.format or s.magic
    if real and s.ext not in _EXTENSIONS.get(real, ()):
        add(
            "extension_mismatch",
            f"named {s.ext or '(no extension)'} but the bytes are {real}",
            ext=s.ext,
            format=real,
        )
    if s.format not in config.formats:
        add(
            "unsupported_format",
            f"{s.format} is not one of {', '.join(config.formats)}",
            format=s.format,
        )
    w, h = s.width or 0, s.height or 0
    if min(w, h) < config.min_side:
        add("tiny", f"{w}x{h}: short side below {config.min_side} px", width=w, height=h)
    aspect = max(w, h) / max(1, min(w, h))
    if aspect > config.max_aspect:
        add(
            "extreme_aspect",
            f"{w}x{h}: aspect {aspect:.1f} > {config.max_aspect:g}",
            width=w,
            height=h,
            aspect=round(aspect, 2),
        )
    if s.mode != "RGB":
        add("unusual_mode", f"mode {s.mode}", mode=s.mode)
    return out


def _hash_words(hexes: Sequence[str]) -> np.ndarray:
    """Hex hashes -> (n, words) uint64 for popcount distances."""
    raw = [bytes.fromhex(h) for h in hexes]
    width = max((len(r) for r in raw), default=8)
    pad = (-width) % 8
    buf = b"".join(r.rjust(width + pad, b"\0") for r in raw)
    return np.frombuffer(buf, dtype=">u8").astype(np.uint64).reshape(len(raw), -1)


def near_pairs(
    hashes: Sequence[str], mirrors: Sequence[str] | None, threshold: int, block: int = 64
) -> Iterator[tuple[int, int, int, bool]]:
    """(i, j, distance, mirrored) for i < j within ``threshold`` bits; O(block * n) memory."""
    h = _hash_words(hashes)
    m = _hash_words(mirrors) if mirrors is not None else None
    n = len(h)
    for start in range(0, n, block):
        stop = min(n, start + block)
        d = np.bitwise_count(h[start:stop, None, :] ^ h[None, :, :]).sum(-1, dtype=np.int32)
        mirrored = np.zeros_like(d, dtype=bool)
        if m is not None:
            dm = np.bitwise_count(h[start:stop, None, :] ^ m[None, :, :]).sum(-1, dtype=np.int32)
            mirrored = dm < d
            d = np.minimum(d, dm)
        rows, cols = np.nonzero(d <= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c > i:
                yield i, c, int(d[r, c]), bool(mirrored[r, c])


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


def thumb_distance(a: str, b: str, mirrored: bool) -> float:
    """Mean absolute difference (0-255) of two 8x8 RGB thumbnails, ``b`` mirrored if asked."""
    ta = np.frombuffer(bytes.fromhex(a), dtype=np.uint8).reshape(8, 8, 3).astype(np.float32)
    tb = np.frombuffer(bytes.fromhex(b), dtype=np.uint8).reshape(8, 8, 3).astype(np.float32)
    if mirrored:
        tb = tb[:, ::-1]
    return float(np.abs(ta - tb).mean())


def duplicate_groups(scores: Sequence[FileScores], config: AuditConfig) -> list[DuplicateGroup]:
    """Groups of exact (same sha256) and near (pHash) duplicates, across classes too.

    Two files are near duplicates when their pHashes (or one's and the other's mirrored pHash) are
    within ``near_threshold`` bits **and** their 8x8 colour thumbnails differ by at most
    ``colour_threshold`` on average: on the shared set pHash alone links unrelated photos of a
    small dark object on a flat sky (their hashes are noise), while real copies, mirrored or
    recompressed, differ by under 4 levels. Groups are connected components of these links; a
    group is ``exact`` when all members are byte-identical. Its id is its first member's path.
    """
    n = len(scores)
    uf = _UnionFind(n)
    links: list[tuple[int, int, DuplicateLink]] = []
    by_sha: dict[str, int] = {}
    for i, s in enumerate(scores):
        if s.sha256 is None or s.size == 0:
            continue
        j = by_sha.setdefault(s.sha256, i)
        if j != i and uf.union(j, i):
            links.append((j, i, DuplicateLink(scores[j].path, s.path, 0, False, True)))
    hashed = [i for i, s in enumerate(scores) if s.phash]
    mirrors = [scores[i].phash_mirror or scores[i].phash for i in hashed] if config.mirror else None
    for a, b, dist, mirrored in near_pairs(
        [scores[i].phash for i in hashed], mirrors, config.near_threshold
    ):
        i, j = hashed[a], hashed[b]
        ta, tb = scores[i].thumb, scores[j].thumb
        if ta and tb and thumb_distance(ta, tb, mirrored) > config.colour_threshold:
            continue
        if uf.union(i, j):
            exact = scores[i].sha256 == scores[j].sha256
            links.append(
                (i, j, DuplicateLink(scores[i].path, scores[j].path, dist, mirrored, exact))
            )
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(uf.find(i), []).append(i)
    group_links: dict[int, list[DuplicateLink]] = {}
    for i, _j, link in links:
        group_links.setdefault(uf.find(i), []).append(link)
    out = []
    for root, idx in sorted(members.items()):
        if len(idx) < 2:
            continue
        shas = {scores[i].sha256 for i in idx}
        out.append(
            DuplicateGroup(
                id=scores[idx[0]].path,
                kind="exact" if len(shas) == 1 else "near",
                members=tuple(scores[i].path for i in idx),
                labels=tuple(scores[i].label for i in idx),
                links=tuple(group_links.get(root, [])),
            )
        )
    return out


def duplicate_findings(groups: Sequence[DuplicateGroup], config: AuditConfig) -> list[Finding]:
    """Exact copies after the first are errors; near copies are warnings; cross-class: conflict."""
    out: list[Finding] = []
    for g in groups:
        label_of = dict(zip(g.members, g.labels, strict=True))
        ev_base = {"group": g.id, "members": list(g.members), "labels": sorted(set(g.labels))}
        if g.cross_class:
            sev = ERROR if config.drop_label_conflicts else WARNING
            classes = ", ".join(sorted(set(g.labels)))
            for p in g.members:
                out.append(
                    Finding(
                        p,
                        label_of[p],
                        "label_conflict",
                        sev,
                        f"{g.kind} duplicate filed under {classes}",
                        ev_base,
                    )
                )
            continue
        # within one class: keep the first copy of each byte-identical set
        first_by_sha: dict[str, str] = {}
        sha_of = {lk.b: lk for lk in g.links}
        for p in g.members:
            link = sha_of.get(p)
            if link is not None and link.exact:
                kept = first_by_sha.setdefault(link.a, link.a)
                msg = f"byte-identical to {kept}"
                ev = {**ev_base, "copy_of": kept}
                out.append(Finding(p, label_of[p], "exact_duplicate", ERROR, msg, ev))
        if g.kind == "near":
            for lk in g.links:
                if lk.exact:
                    continue
                how = "mirrored " if lk.mirrored else ""
                for p, q in ((lk.a, lk.b), (lk.b, lk.a)):
                    out.append(
                        Finding(
                            p,
                            label_of[p],
                            "near_duplicate",
                            WARNING,
                            f"{how}near copy of {q} (pHash distance {lk.distance})",
                            {
                                **ev_base,
                                "other": q,
                                "distance": lk.distance,
                                "mirrored": lk.mirrored,
                            },
                        )
                    )
    return out


KMEANS_FEATURES = ("file_size", "height", "width")


def kmeans_outliers(scores: Sequence[FileScores], config: AuditConfig) -> list[KMeansResult]:
    """Per class: K-Means on standardised (file size, height, width); far points are outliers.

    Features are z-scored within the class so bytes do not swamp pixels. k is fixed by
    ``config.kmeans_k`` or picked by the best silhouette score in ``kmeans_k_range``. A file is an
    outlier when its distance to its centre exceeds q3 + ``kmeans_iqr`` * IQR of the class's
    distances (a robust fence, so one huge file cannot hide the others).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    out = []
    labels = sorted({s.label for s in scores})
    for label in labels:
        rows = [s for s in scores if s.label == label and s.decoded]
        if len(rows) < 4:
            continue
        x = np.array([[s.size, s.height, s.width] for s in rows], dtype=np.float64)
        mean, std = x.mean(0), x.std(0)
        std[std == 0] = 1.0
        z = (x - mean) / std
        distinct = len(np.unique(z, axis=0))
        lo, hi = config.kmeans_k_range
        candidates = [config.kmeans_k] if config.kmeans_k else list(range(lo, hi + 1))
        candidates = [k for k in candidates if 1 <= k < distinct] or [1]
        best = None
        for k in candidates:
            km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(z)
            # silhouette is O(n^2) in memory: score a fixed-size sample of big classes
            sample = 2000 if len(z) > 2000 else None
            sil = (
                float(silhouette_score(z, km.labels_, sample_size=sample, random_state=0))
                if k > 1
                else None
            )
            if best is None or (sil is not None and (best[1] is None or sil > best[1])):
                best = (km, sil, k)
        assert best is not None
        km, sil, k = best
        dist = np.linalg.norm(z - km.cluster_centers_[km.labels_], axis=1)
        q1, q3 = np.percentile(dist, [25, 75])
        fence = float(q3 + config.kmeans_iqr * (q3 - q1))
        centres = km.cluster_centers_ * std + mean
        out.append(
            KMeansResult(
                label=label,
                k=k,
                silhouette=None if sil is None else round(sil, 4),
                features=KMEANS_FEATURES,
                centres=tuple(tuple(round(float(v), 1) for v in c) for c in centres),
                cluster_sizes=tuple(int(v) for v in np.bincount(km.labels_, minlength=k)),
                threshold=round(fence, 4),
                paths=tuple(s.path for s in rows),
                clusters=tuple(int(c) for c in km.labels_),
                distances=tuple(round(float(d), 4) for d in dist),
                outliers=tuple(s.path for s, d in zip(rows, dist, strict=True) if d > fence),
            )
        )
    return out


def kmeans_findings(results: Sequence[KMeansResult], scores: Sequence[FileScores]) -> list[Finding]:
    info = {s.path: s for s in scores}
    out = []
    for r in results:
        dist = dict(zip(r.paths, r.distances, strict=True))
        cluster = dict(zip(r.paths, r.clusters, strict=True))
        for p in r.outliers:
            s = info[p]
            c = cluster[p]
            out.append(
                Finding(
                    p,
                    r.label,
                    "kmeans_outlier",
                    WARNING,
                    f"{s.size:,} B, {s.width}x{s.height}: distance {dist[p]:.2f} to centre of "
                    f"cluster {c} (fence {r.threshold:.2f}, k={r.k})",
                    {
                        "k": r.k,
                        "cluster": c,
                        "distance": dist[p],
                        "threshold": r.threshold,
                        "centre": list(r.centres[c]),
                    },
                )
            )
    return out


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
    config: AuditConfig, progress: Callable[[int], None] | None = None, *, total=None
) -> AuditReport:
    """List, compute, threshold. Reads the data only; writes nothing."""
    import time

    t0 = time.perf_counter()
    items = list_images(config.root)
    if total is not None:
        total(len(items))
    scores = compute_scores(config, items, progress)
    findings: list[Finding] = []
    for s in scores:
        findings.extend(findings_for(s, config))
    groups = duplicate_groups(scores, config)
    findings.extend(duplicate_findings(groups, config))
    km = kmeans_outliers(scores, config)
    findings.extend(kmeans_findings(km, scores))
    order = {s.path: i for i, s in enumerate(scores)}
    findings.sort(key=lambda f: (order[f.path], f.check))
    return AuditReport(
        schema_version=SCHEMA_VERSION,
        config=config,
        classes=tuple(sorted({label for _, label in items})),
        files=tuple(scores),
        findings=tuple(findings),
        duplicate_groups=tuple(groups),
        kmeans=tuple(km),
        clean=tuple(clean_rows(scores, findings, groups)),
        seconds=round(time.perf_counter() - t0, 3),
    )
