"""Named models, each loaded once per process on first use.

A :class:`ModelRegistry` knows where each model comes from (a local model folder, or a tar.gz on S3)
without loading anything. ``get(name)`` builds the ONNX Runtime :class:`Predictor` the first time a
model is asked for, under a lock of its own, and keeps it. A failed load is not cached: it raises
:class:`ModelUnavailable` to that request, is remembered for ``/health``, and is tried again on the
next request, so a transient failure (S3 hiccup) heals itself and a broken model never crash-loops.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from skyclass.core.bundle import MANIFEST, ModelBundle, load_bundle, model_name
from skyclass.core.errors import ModelUnavailable
from skyclass.core.predictor import Predictor
from skyclass.core.preprocess import ImageLimits
from skyclass.serve.settings import ServeSettings

log = logging.getLogger(__name__)

State = Literal["not_loaded", "loaded", "failed"]
_ABS_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:,;()]+)+")


class UnknownModel(LookupError):
    """No model of that name is served. Maps to 404."""

    status: int = 404
    code: str = "unknown_model"


def public_reason(message: str) -> str:
    """A load error as users may see it: absolute paths cut down to their last part."""
    return _ABS_PATH.sub(lambda m: re.split(r"[\\/]", m.group(0))[-1], message)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a local folder, or an S3 tar.gz (``uri`` + optional ``sha256``)."""

    name: str
    path: Path | None = None
    uri: str | None = None
    sha256: str | None = None

    @classmethod
    def local(cls, path: str | Path) -> ModelSource:
        """A model folder; named by its ``model.json`` (or the folder's name when unreadable)."""
        path = Path(path)
        name = path.resolve().name or str(path)
        try:
            data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            name = model_name(data["name"])
        except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
            pass  # ([], null, nested too deeply...) reported when the model is loaded
        return cls(name=name, path=path)

    @classmethod
    def s3(cls, uri: str, sha256: str | None = None) -> ModelSource:
        """An archive on S3, named after its key (``s3://b/models/NAME.tar.gz`` -> ``NAME``)."""
        stem = PurePosixPath(uri.rstrip("/")).name
        for suffix in (".tar.gz", ".tgz"):
            stem = stem.removesuffix(suffix)
        return cls(name=stem or "model", uri=uri, sha256=sha256)


@dataclass(frozen=True)
class ModelStatus:
    name: str
    default: bool
    state: State
    error: str | None
    loads: int
    load_seconds: float | None


class _Slot:
    """One model's loaded predictor, its lock and its last failure."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.lock = threading.Lock()
        self.predictor: Predictor | None = None
        self.error: str | None = None
        self.loads = 0
        self.load_seconds: float | None = None


class ModelRegistry:
    """The models a server or Lambda container serves, by name, loaded lazily and once."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        *,
        default: str | None = None,
        variant: str | None = None,
        limits: ImageLimits | None = None,
        threads: int | None = None,
        cache_dir: Path | None = None,
        factory: Callable[..., Predictor] = Predictor,
    ) -> None:
        if not sources:
            raise ValueError("a registry needs at least one model")
        self._slots: dict[str, _Slot] = {}
        for source in sources:
            if source.name in self._slots:
                raise ValueError(f"two models are named {source.name!r}; names must be unique")
            self._slots[source.name] = _Slot(source)
        self.default_name = default or sources[0].name
        if self.default_name not in self._slots:
            raise ValueError(
                f"default model {self.default_name!r} is not one of {', '.join(self._slots)}"
            )
        self.variant = variant
        self.limits = limits or ImageLimits()
        self.threads = threads
        self.cache_dir = cache_dir
        self._factory = factory

    @classmethod
    def from_settings(
        cls, settings: ServeSettings, factory: Callable[..., Predictor] = Predictor
    ) -> ModelRegistry:
        sources: list[ModelSource] = []
        if settings.s3_uri:
            sources.append(ModelSource.s3(settings.s3_uri, settings.s3_sha256))
        sources.extend(ModelSource.local(p) for p in settings.model_dirs)
        return cls(
            sources,
            default=settings.default_model,
            variant=settings.variant,
            limits=settings.limits,
            threads=settings.threads,
            cache_dir=settings.model_cache,
            factory=factory,
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._slots)

    def _slot(self, name: str | None) -> _Slot:
        key = self.default_name if name is None else name
        slot = self._slots.get(key)
        if slot is None:
            raise UnknownModel(f"no model named {key!r}; served: {', '.join(self._slots)}")
        return slot

    def require(self, name: str | None = None) -> str:
        """The served name for ``name`` (the default when None); UnknownModel if none such."""
        return self._slot(name).source.name

    def get(self, name: str | None = None) -> Predictor:
        """The predictor for ``name`` (the default when None), loading it on first use.

        Raises :class:`UnknownModel` or :class:`ModelUnavailable` (again on each call until a
        load succeeds).
        """
        slot = self._slot(name)
        predictor = slot.predictor
        if predictor is not None:
            return predictor
        with slot.lock:
            if slot.predictor is None:
                slot.predictor = self._load(slot)
            return slot.predictor

    def _load(self, slot: _Slot) -> Predictor:
        source = slot.source
        started = time.perf_counter()
        slot.loads += 1
        try:
            folder = self._folder(source)
            predictor = self._factory(
                folder, variant=self.variant, limits=self.limits, threads=self.threads
            )
        except ModelUnavailable as exc:
            slot.error = public_reason(str(exc))
            log.error("model %s could not be loaded: %s", source.name, exc)
            raise ModelUnavailable(f"model {source.name!r} is unavailable: {slot.error}") from exc
        except Exception as exc:  # anything else a broken model file can raise
            slot.error = f"model could not be loaded ({type(exc).__name__})"
            log.exception("model %s could not be loaded", source.name)
            raise ModelUnavailable(f"model {source.name!r} is unavailable: {slot.error}") from exc
        slot.error = None
        slot.load_seconds = time.perf_counter() - started
        log.info(
            "model %s %s (%s) loaded in %.3f s",
            source.name,
            predictor.ref.version,
            predictor.variant,
            slot.load_seconds,
        )
        return predictor

    def _folder(self, source: ModelSource) -> Path:
        if source.path is not None:
            return source.path
        assert source.uri is not None
        from skyclass.serve.s3 import fetch_model_archive  # boto3 only when a model is on S3

        return fetch_model_archive(source.uri, source.sha256, self.cache_dir)

    def bundle(self, name: str | None = None) -> ModelBundle | None:
        """The model's ``model.json`` when known without loading or downloading; else None."""
        slot = self._slot(name)
        if slot.predictor is not None:
            return slot.predictor.bundle
        if slot.source.path is None:
            return None
        try:
            return load_bundle(slot.source.path)
        except ModelUnavailable:
            return None

    def is_loaded(self, name: str | None = None) -> bool:
        return self._slot(name).predictor is not None

    def status(self) -> list[ModelStatus]:
        """Every model's state, the default first."""
        out = []
        for name in sorted(self._slots, key=lambda n: n != self.default_name):
            slot = self._slots[name]
            state: State = "loaded" if slot.predictor else "failed" if slot.error else "not_loaded"
            out.append(
                ModelStatus(
                    name=name,
                    default=name == self.default_name,
                    state=state,
                    error=slot.error,
                    loads=slot.loads,
                    load_seconds=slot.load_seconds,
                )
            )
        return out
