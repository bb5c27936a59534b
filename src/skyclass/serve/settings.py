"""Serving settings: one frozen value, read from the environment or built by the CLI.

Environment (all optional):

    SKYCLASS_MODELS         comma-separated model folders; the first is the default
    SKYCLASS_DEFAULT_MODEL  the name of the default model (else the first one)
    SKYCLASS_VARIANT        fp32 | int8 (else each model's own default_variant)
    SKYCLASS_CORS_ORIGINS   comma-separated allowed origins, ``*`` by default
    SKYCLASS_MAX_BODY_BYTES request body limit, 6 MB by default (Lambda's synchronous payload limit)
    SKYCLASS_MAX_PIXELS     decoded image limit, 40 MP by default
    SKYCLASS_MAX_DECODE_BYTES  memory one image's decode may take, 128 MiB by default (else a 413)
    SKYCLASS_MAX_HEAVY_DECODES images over 32 MiB decoded that are decoded at once (1); others wait
    SKYCLASS_TOP_K          classes in an answer for models with more than 10 classes (5)
    SKYCLASS_THREADS        ONNX Runtime intra-op threads (ONNX Runtime's own default if unset)
    SKYCLASS_MAX_CONCURRENCY   predictions computed at once (the CPU count if unset)
    SKYCLASS_BODY_TIMEOUT   seconds a request body may take to arrive (30), else a 408
    SKYCLASS_HEADER_TIMEOUT seconds for a request's headers (10), SKYCLASS_KEEP_ALIVE idle seconds
                            (5), SKYCLASS_MAX_CONNECTIONS (256): ``skyclass serve`` only
    SKYCLASS_BASE_PATH      a custom-domain base path stripped on Lambda (``/v1``)
    SKYCLASS_MODEL_CACHE    where S3 model archives are unpacked (/tmp/skyclass-models)
    SKYCLASS_REJECT_OUT_OF_SCOPE  1 (default): a photo a model's scope file judges out of scope
                            gets ``label: null``; 0: answers as before scopes (``?reject=`` wins)
    MODEL_S3_URI            s3://bucket/key.tar.gz of a model folder; it becomes the default model
    MODEL_SHA256            the archive's expected sha256 (checked when given)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from skyclass.core.bundle import MANIFEST, VARIANTS
from skyclass.core.preprocess import ImageLimits

DEFAULT_MODEL_NAME = "flying-objects"
MAX_BODY_BYTES = 6 * 1024 * 1024
MAX_PIXELS = ImageLimits().max_pixels
MAX_DECODE_BYTES = ImageLimits().max_decode_bytes
ALL_CLASSES_UP_TO = 10


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""


_OPTIONAL = ("threads", "max_concurrency")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]{1,253}$")
_BASE_PATH = re.compile(r"^/[A-Za-z0-9._~\-/]{0,200}$")


def _bounds() -> dict[str, tuple[str, int, int]]:
    """field -> (environment variable, lowest, highest): every number a setting can be."""
    cpus = os.cpu_count() or 1
    return {
        "max_body_bytes": ("SKYCLASS_MAX_BODY_BYTES", 1, 64 * 2**20),
        "max_pixels": ("SKYCLASS_MAX_PIXELS", 1, 400_000_000),
        "top_k": ("SKYCLASS_TOP_K", 1, 1000),
        "threads": ("SKYCLASS_THREADS", 1, 4 * cpus),
        "max_concurrency": ("SKYCLASS_MAX_CONCURRENCY", 1, 64 * cpus),
        "max_decode_bytes": ("SKYCLASS_MAX_DECODE_BYTES", 2**20, 4 * 2**30),
        "max_heavy_decodes": ("SKYCLASS_MAX_HEAVY_DECODES", 1, 64),
        "body_timeout_s": ("SKYCLASS_BODY_TIMEOUT", 1, 600),
        "header_timeout_s": ("SKYCLASS_HEADER_TIMEOUT", 1, 600),
        "keep_alive_s": ("SKYCLASS_KEEP_ALIVE", 1, 600),
        "max_connections": ("SKYCLASS_MAX_CONNECTIONS", 1, 65536),
    }


def default_model_dir(cwd: Path | None = None, package_dir: Path | None = None) -> Path:
    """Where ``models/flying-objects`` is when no model folder is given.

    Looked for, in order: under the current directory (a clone), beside the package's parent
    (a Lambda artifact: ``/var/task/skyclass`` and ``/var/task/models``), two levels up from the
    package (an editable install: ``REPO/src/skyclass`` and ``REPO/models``), and inside the
    package (a wheel: ``skyclass/models``, see setup.py). The first that holds a ``model.json``
    wins; when none does, the first candidate is returned so that the error names it.
    """
    cwd = Path.cwd() if cwd is None else cwd
    package_dir = Path(__file__).resolve().parents[1] if package_dir is None else package_dir
    relative = Path("models") / DEFAULT_MODEL_NAME
    candidates = [
        cwd / relative,
        package_dir.parent / relative,
        package_dir.parents[1] / relative,
        package_dir / relative,
    ]
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            return candidate
    return candidates[0]


@dataclass(frozen=True)
class ServeSettings:
    """Everything the serving app needs to know; nothing reads the environment after this."""

    model_dirs: tuple[Path, ...] = ()
    s3_uri: str | None = None
    s3_sha256: str | None = None
    default_model: str | None = None
    variant: str | None = None
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = MAX_BODY_BYTES
    max_pixels: int = MAX_PIXELS
    top_k: int = 5
    threads: int | None = None
    model_cache: Path | None = field(default=None)
    #: Predictions computed at once (more requests wait their turn): bounds the decoded images and
    #: session buffers alive at a time, so memory stays flat under many connections. None = CPUs.
    max_concurrency: int | None = None
    max_decode_bytes: int = MAX_DECODE_BYTES
    #: Heavy decodes (over HEAVY_DECODE_BYTES) running at once, apart from max_concurrency: a few
    #: large images cannot take every prediction slot and the memory with them.
    max_heavy_decodes: int = 1
    #: Seconds a request body may take to arrive (a stalled upload is a 408, its memory freed).
    body_timeout_s: int = 30
    #: ``skyclass serve`` only: seconds for a request's headers, idle keep-alive seconds, and the
    #: open connections past which uvicorn answers 503.
    header_timeout_s: int = 10
    keep_alive_s: int = 5
    max_connections: int = 256
    #: A custom-domain base path stripped from Lambda paths (``/v1``); ``/`` for none.
    base_path: str = "/"
    #: Models with a scope file answer ``label: null`` for out-of-scope photos (request: ?reject=).
    reject_out_of_scope: bool = True

    def __post_init__(self) -> None:
        if self.variant is not None and self.variant not in VARIANTS:
            raise SettingsError(
                f"SKYCLASS_VARIANT (variant) must be one of {', '.join(VARIANTS)}, "
                f"got {self.variant!r}"
            )
        for name, (env, low, high) in _bounds().items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise SettingsError(
                    f"{env} ({name}) must be a whole number from {low:,} to {high:,}, got {value!r}"
                )
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise SettingsError(
                    f"SKYCLASS_CORS_ORIGINS (cors_origins) must be * or http(s)://host[:port] "
                    f"origins, got {origin[:100]!r}"
                )
        if not _BASE_PATH.match(self.base_path):
            raise SettingsError(
                f"SKYCLASS_BASE_PATH (base_path) must be a path like /v1, got {self.base_path!r}"
            )

    @property
    def concurrency(self) -> int:
        return self.max_concurrency or os.cpu_count() or 1

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(
            max_bytes=self.max_body_bytes,
            max_pixels=self.max_pixels,
            max_decode_bytes=self.max_decode_bytes,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeSettings:
        """Read the ``SKYCLASS_*`` / ``MODEL_*`` variables (see the module docstring)."""
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, default: int) -> int:
            value = text(name)
            if value is None:
                return default
            try:
                return int(value)
            except ValueError:
                raise SettingsError(f"{name} must be a whole number, got {value!r}") from None

        def items(name: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in (text(name) or "").split(",") if x.strip())

        s3_uri = text("MODEL_S3_URI")
        dirs = tuple(Path(x) for x in items("SKYCLASS_MODELS"))
        if not dirs and not s3_uri:
            dirs = (default_model_dir(),)
        return cls(
            model_dirs=dirs,
            s3_uri=s3_uri,
            s3_sha256=text("MODEL_SHA256"),
            default_model=text("SKYCLASS_DEFAULT_MODEL"),
            variant=text("SKYCLASS_VARIANT"),
            cors_origins=items("SKYCLASS_CORS_ORIGINS") or ("*",),
            max_body_bytes=number("SKYCLASS_MAX_BODY_BYTES", MAX_BODY_BYTES),
            max_pixels=number("SKYCLASS_MAX_PIXELS", MAX_PIXELS),
            top_k=number("SKYCLASS_TOP_K", 5),
            threads=number("SKYCLASS_THREADS", 0) or None,
            max_concurrency=number("SKYCLASS_MAX_CONCURRENCY", 0) or None,
            max_decode_bytes=number("SKYCLASS_MAX_DECODE_BYTES", MAX_DECODE_BYTES),
            max_heavy_decodes=number("SKYCLASS_MAX_HEAVY_DECODES", 1),
            body_timeout_s=number("SKYCLASS_BODY_TIMEOUT", 30),
            header_timeout_s=number("SKYCLASS_HEADER_TIMEOUT", 10),
            keep_alive_s=number("SKYCLASS_KEEP_ALIVE", 5),
            max_connections=number("SKYCLASS_MAX_CONNECTIONS", 256),
            base_path=text("SKYCLASS_BASE_PATH") or "/",
            model_cache=Path(c) if (c := text("SKYCLASS_MODEL_CACHE")) else None,
            reject_out_of_scope=_flag(text("SKYCLASS_REJECT_OUT_OF_SCOPE"), True),
        )


def _flag(value: str | None, default: bool) -> bool:
    """1/true/yes/on or 0/false/no/off (any case); the default when unset."""
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"SKYCLASS_REJECT_OUT_OF_SCOPE must be 1 or 0, got {value!r}")
