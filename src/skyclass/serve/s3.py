"""A model folder from S3: one tar.gz object, downloaded once per container into /tmp.

``MODEL_S3_URI=s3://bucket/models/flying-objects.tar.gz`` names a tar.gz of one model folder (as
``deploy/model_archive.py`` writes it). One object, so the function's IAM role needs
``s3:GetObject`` on that object only. :func:`fetch_model_archive` downloads it, checks its sha256
when one is given, extracts it safely into a temp dir and renames that into the cache, so a later
call in the same container (or a restarted process in a reused sandbox) finds it without any S3
request, and a failed or refused download leaves nothing behind.

boto3 is imported only when a download is needed (it is part of the Lambda Python runtime, so the
artifact does not carry it). The endpoint can be overridden for tests or S3-compatible stores with
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, which botocore itself honours.

Every failure is a :class:`ModelUnavailable` (503) whose message says what was wrong, never how.
The archive itself is built (and uploaded) by ``deploy/model_archive.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from skyclass.core.bundle import MANIFEST
from skyclass.core.errors import ModelUnavailable

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("/tmp/skyclass-models")
CACHE_ENV = "SKYCLASS_MODEL_CACHE"
# Lambda's /tmp is 512 MB unless ephemeral storage is raised; a MobileNetV2 folder is ~15 MB.
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024
MAX_EXTRACTED_BYTES = 512 * 1024 * 1024
MAX_MEMBERS = 1000
SOURCE_FILE = ".skyclass-source.json"
_CHUNK = 1 << 20
_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<key>[^\s].*)$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def default_cache_dir() -> Path:
    """``/tmp/skyclass-models``; ``SKYCLASS_MODEL_CACHE`` is read by the settings, which pass it
    here as ``cache_dir``."""
    return DEFAULT_CACHE_DIR


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); a clear ModelUnavailable otherwise."""
    match = _URI.match(uri.strip())
    if not match or match["key"].endswith("/"):
        raise ModelUnavailable(f"MODEL_S3_URI must look like s3://bucket/key.tar.gz, got {uri!r}")
    return match["bucket"], match["key"]


def _normalise_sha(sha256: str | None) -> str | None:
    if sha256 is None or not sha256.strip():
        return None
    sha = sha256.strip().lower()
    if not _SHA.match(sha):
        raise ModelUnavailable("MODEL_SHA256 must be 64 hex digits")
    return sha


def _cache_name(uri: str, sha256: str | None) -> str:
    # Keyed by the expected content when known, else by the URI (one container, one URI).
    if sha256:
        return f"sha256-{sha256[:32]}"
    return "uri-" + hashlib.sha256(uri.encode()).hexdigest()[:32]


def fetch_model_archive(uri: str, sha256: str | None, cache_dir: Path | None = None) -> Path:
    """Return the local model folder for ``uri``, downloading and extracting it at most once.

    Raises :class:`ModelUnavailable` for a bad URI or hash, an absent object, denied access, an
    unreachable endpoint, an unsafe or invalid archive, or a cache dir that cannot be written.
    """
    bucket, key = parse_s3_uri(uri)
    expected = _normalise_sha(sha256)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache_dir / _cache_name(uri, expected)
    cached = _model_root(final) if final.is_dir() else None
    if cached is not None:
        log.info("model from %s: cached at %s", uri, cached)
        return cached

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot write the model cache {cache_dir}: {exc.strerror or exc}"
        ) from exc
    try:
        started = time.perf_counter()
        archive = work / "model.tar.gz"
        digest, size, etag = _download(bucket, key, archive)
        if expected and digest != expected:
            raise ModelUnavailable(
                f"sha256 mismatch for {uri}: expected {expected}, got {digest}; not using it"
            )
        extracted = work / "model"
        _safe_extract(archive, extracted)
        archive.unlink()
        root = _model_root(extracted)
        if root is None:
            raise ModelUnavailable(f"{uri} holds no model folder ({MANIFEST} not found)")
        source = {"uri": uri, "sha256": digest, "bytes": size, "etag": etag}
        (extracted / SOURCE_FILE).write_text(json.dumps(source) + "\n", encoding="utf-8")
        try:
            os.rename(extracted, final)
        except OSError:
            # Another process got there first (a local server with several workers): use theirs.
            if _model_root(final) is None:
                raise
        log.info(
            "model from %s: %d bytes, sha256 %s, ready in %.2f s at %s",
            uri,
            size,
            digest,
            time.perf_counter() - started,
            final,
        )
        root = _model_root(final)
        assert root is not None
        return root
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot write the model cache {cache_dir}: {exc.strerror or exc}"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _model_root(folder: Path) -> Path | None:
    """The model folder inside an extracted archive: its root, or its only sub-folder."""
    if (folder / MANIFEST).is_file():
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    return None


def _download(bucket: str, key: str, dest: Path) -> tuple[str, int, str]:
    """Stream s3://bucket/key into ``dest``; return (sha256, bytes, etag)."""
    uri = f"s3://{bucket}/{key}"
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:  # the Lambda runtime has boto3; a local install may not
        raise ModelUnavailable(
            "MODEL_S3_URI is set but boto3 is not installed (pip install 'skyclass[s3]')"
        ) from exc

    digest = hashlib.sha256()
    size = 0
    try:
        client = boto3.client("s3")
        response: dict[str, Any] = client.get_object(Bucket=bucket, Key=key)
        length = int(response.get("ContentLength") or 0)
        if length > MAX_ARCHIVE_BYTES:
            raise ModelUnavailable(
                f"{uri} is {length} bytes, over the {MAX_ARCHIVE_BYTES} byte limit"
            )
        body = response["Body"]
        with open(dest, "wb") as out:
            for block in body.iter_chunks(_CHUNK):
                size += len(block)
                if size > MAX_ARCHIVE_BYTES:
                    raise ModelUnavailable(f"{uri} is over the {MAX_ARCHIVE_BYTES} byte limit")
                digest.update(block)
                out.write(block)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        log.warning("S3 GetObject %s failed: %s (%s)", uri, code, status)
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ModelUnavailable(f"model archive not found: {uri}") from exc
        if code == "NoSuchBucket":
            raise ModelUnavailable(f"bucket not found for {uri}") from exc
        if code in ("AccessDenied", "403", "Forbidden") or status == 403:
            raise ModelUnavailable(
                f"access denied reading {uri} (the function needs s3:GetObject on it)"
            ) from exc
        raise ModelUnavailable(f"S3 error reading {uri}: {code or status}") from exc
    except BotoCoreError as exc:
        log.warning("S3 GetObject %s failed: %s", uri, exc)
        raise ModelUnavailable(f"could not read {uri}: {type(exc).__name__}") from exc
    return digest.hexdigest(), size, str(response.get("ETag", "")).strip('"')


def _check_member(member: tarfile.TarInfo) -> str:
    """The reason a tar member is refused, or '' when it is a plain file or folder inside."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in path.parts or "\\" in name:
        return "path outside the archive"
    if member.issym() or member.islnk():
        return "link"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    return ""


def _safe_extract(archive: Path, dest: Path, max_bytes: int | None = None) -> None:
    """Extract only plain files and folders below ``dest``; refuse the whole archive otherwise."""
    max_bytes = max_bytes or MAX_EXTRACTED_BYTES
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            total = 0
            for member in tar:
                reason = _check_member(member)
                if reason:
                    raise ModelUnavailable(f"unsafe model archive: {member.name!r} is a {reason}")
                total += member.size
                members.append(member)
                if total > max_bytes or len(members) > MAX_MEMBERS:
                    raise ModelUnavailable(
                        f"model archive too large: over {max_bytes} bytes or {MAX_MEMBERS} entries"
                    )
            dest.mkdir()
            # The "data" filter re-checks paths/links/modes on top of the checks above.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ModelUnavailable(f"model archive is not a valid tar.gz: {exc}") from exc
