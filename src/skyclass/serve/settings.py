"""Serving settings: one frozen value, read from the environment or built by the CLI.

Environment (all optional):

    SKYCLASS_MODELS         comma-separated model folders; the first is the default
    SKYCLASS_DEFAULT_MODEL  the name of the default model (else the first one)
    SKYCLASS_VARIANT        fp32 | int8 (else each model's own default_variant)
    SKYCLASS_CORS_ORIGINS   comma-separated allowed origins, ``*`` by default
    SKYCLASS_MAX_BODY_BYTES request body limit, 6 MB by default (Lambda's synchronous payload limit)
    SKYCLASS_MAX_PIXELS     decoded image limit, 40 MP by default
    SKYCLASS_TOP_K          classes in an answer for models with more than 10 classes (5)
    SKYCLASS_THREADS        ONNX Runtime intra-op threads (ONNX Runtime's own default if unset)
    SKYCLASS_REJECT_OUT_OF_SCOPE  1 (default): a photo a model's scope file judges out of scope
                            gets ``label: null``; 0: answers as before scopes (``?reject=`` wins)
    MODEL_S3_URI            s3://bucket/key.tar.gz of a model folder; it becomes the default model
    MODEL_SHA256            the archive's expected sha256 (checked when given)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from skyclass.core.bundle import MANIFEST, VARIANTS
from skyclass.core.preprocess import ImageLimits

DEFAULT_MODEL_NAME = "flying-objects"
MAX_BODY_BYTES = 6 * 1024 * 1024
MAX_PIXELS = ImageLimits().max_pixels
ALL_CLASSES_UP_TO = 10


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""


def default_model_dir(cwd: Path | None = None, package_dir: Path | None = None) -> Path:
    """Where ``models/flying-objects`` is when no model folder is given.

    Looked for, in order: under the current directory (a clone), beside the package's parent
    (a Lambda artifact: ``/var/task/skyclass`` and ``/var/task/models``), and two levels up from the
    package (an editable install: ``REPO/src/skyclass`` and ``REPO/models``). The first that holds a
    ``model.json`` wins; when none does, the first candidate is returned so that the error names it.
    """
    cwd = Path.cwd() if cwd is None else cwd
    package_dir = Path(__file__).resolve().parents[1] if package_dir is None else package_dir
    relative = Path("models") / DEFAULT_MODEL_NAME
    candidates = [cwd / relative, package_dir.parent / relative, package_dir.parents[1] / relative]
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
    #: Models with a scope file answer ``label: null`` for out-of-scope photos (request: ?reject=).
    reject_out_of_scope: bool = True

    def __post_init__(self) -> None:
        if self.variant is not None and self.variant not in VARIANTS:
            raise SettingsError(
                f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}"
            )
        for name in ("max_body_bytes", "max_pixels", "top_k"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be a positive number")
        if self.threads is not None and self.threads < 1:
            raise SettingsError("threads must be a positive number")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise SettingsError("max_concurrency must be a positive number")

    @property
    def concurrency(self) -> int:
        return self.max_concurrency or os.cpu_count() or 1

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_body_bytes, max_pixels=self.max_pixels)

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
