"""Per-file checks: read each file once (capped), decode it, score it; then threshold the scores.

:func:`inspect_file` reads regular files only (a link to ``/dev/zero``, a FIFO or a socket is a
``not_a_file`` finding, never a read; see :mod:`skyclass.core.files`), refuses files over the size
cap before reading a byte, and images over the pixel cap before decoding one. JPEGs are decoded
in draft mode (scaled DCT): every byte of the entropy-coded data is still decoded, so truncation
is caught, but at 1/8 of the pixels.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.core.files import NotReadable, read_regular_file
from skyclass.data.audit.scan import printable_name
from skyclass.data.audit.schema import CHECKS, AuditConfig, FileScores, Finding

_EXTENSIONS = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "GIF": (".gif",),
    "WEBP": (".webp",),
    "BMP": (".bmp", ".dib"),
    "TIFF": (".tif", ".tiff"),
}


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


def inspect_file(
    root: Path,
    rel: str,
    label: str,
    hash_size: int = AuditConfig.hash_size,
    draft_side: int = AuditConfig.draft_side,
    max_bytes: int = AuditConfig.max_bytes,
    max_pixels: int = AuditConfig.max_pixels,
) -> FileScores:
    """Read and fully decode one file; measure everything the thresholds need. Never raises."""
    ext = Path(rel).suffix.lower()
    name = printable_name(rel)
    if name != rel:
        shown = FileScores(name, printable_name(label), 0, ext=printable_name(ext))
        detail = f"{name} (the bytes shown as \\xNN are not UTF-8)"
        return _failed(shown, "undecodable_name", detail)
    data = read_regular_file(Path(root) / rel, max_bytes)
    if isinstance(data, NotReadable):
        return FileScores(rel, label, data.size, ext=ext, error=data.check, detail=data.detail)
    scores = FileScores(rel, label, len(data), sha256=hashlib.sha256(data).hexdigest(), ext=ext)
    if not data:
        return _failed(scores, "zero_byte", "0 bytes")
    scores = replace(scores, magic=sniff_format(data[:16]))
    return _decode(scores, data, hash_size, draft_side, max_pixels)


def _failed(scores: FileScores, check: str, detail: str) -> FileScores:
    return replace(scores, error=check, detail=detail)


def _decode(
    s: FileScores, data: bytes, hash_size: int, draft_side: int, max_pixels: int
) -> FileScores:
    """Header, pixel cap, full decode, then the hashes of the decoded image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            return _failed(s, "not_an_image", f"unidentified ({s.magic or 'unknown'} magic)")
        except Image.DecompressionBombError as exc:
            return _failed(s, "too_many_pixels", str(exc))
        except Exception as exc:
            return _failed(s, "corrupt", f"header: {exc}")
        s = replace(s, format=img.format, mode=img.mode, width=img.width, height=img.height)
        if img.width * img.height > max_pixels:
            px = f"{img.width}x{img.height} = {img.width * img.height:,} pixels"
            return _failed(s, "too_many_pixels", f"{px}; the cap is {max_pixels:,}")
        s = replace(s, frames=int(getattr(img, "n_frames", 1)))
        try:
            if img.format == "JPEG":
                img.draft(None, (draft_side, draft_side))
            img.load()  # the whole stream: truncation shows here
            rgb = _to_rgb8(ImageOps.exif_transpose(img) or img)
        except Exception as exc:
            check = "truncated" if "truncat" in str(exc).lower() else "corrupt"
            return _failed(s, check, str(exc))
    import imagehash

    side = 4 * hash_size
    small = rgb.convert("L").resize((side, side), Image.Resampling.LANCZOS)
    return replace(
        s,
        thumb=rgb.resize((8, 8), Image.Resampling.BOX).tobytes().hex(),
        phash=str(imagehash.phash(small, hash_size=hash_size)),
        phash_mirror=str(imagehash.phash(ImageOps.mirror(small), hash_size=hash_size)),
    )


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


def _inspect_item(config: AuditConfig, item: tuple[str, str]) -> FileScores:
    rel, label = item
    c = config
    return inspect_file(c.root, rel, label, c.hash_size, c.draft_side, c.max_bytes, c.max_pixels)


def compute_scores(
    config: AuditConfig,
    items: Sequence[tuple[str, str]],
    progress: Callable[[int], None] | None = None,
) -> list[FileScores]:
    """Scores of every file, in the order of ``items``; a process pool when workers != 1."""
    inspect = functools.partial(_inspect_item, config)
    workers = config.workers or os.cpu_count() or 1
    out: list[FileScores] = []
    if workers == 1 or len(items) < 64:
        for item in items:
            out.append(inspect(item))
            if progress:
                progress(1)
        return out
    chunk = max(8, min(64, len(items) // (workers * 8) or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for r in pool.map(inspect, items, chunksize=chunk):
            out.append(r)
            if progress:
                progress(1)
    return out


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
