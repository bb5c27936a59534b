"""ONNX Runtime predictor: image bytes in, a typed Prediction out. No web, no torch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from skyclass.core.bundle import ModelBundle, check_session, load_bundle, sha256_file
from skyclass.core.errors import ModelUnavailable
from skyclass.core.explain import CannotExplain, Explanation, cam_overlay
from skyclass.core.preprocess import (
    ImageLimits,
    decode_image,
    normalize,
    preprocess,
    resize_image,
)
from skyclass.core.scope import Scope, ScopeUnavailable, ScopeVerdict, load_scope

log = logging.getLogger(__name__)
CAM_OUTPUT = "cam"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    sha256: str
    variant: str


@dataclass(frozen=True)
class Prediction:
    """The answer for one image. ``probabilities`` holds the top-k classes, best first.

    ``label`` is the best class, or None when ``scope`` judged the photo out of scope (a client
    reading only ``label`` never gets a class for it); ``top_guess`` is the best class always.
    Without a scope verdict and an explanation, ``to_dict`` is the answer as it was before scopes.
    """

    label: str | None
    confidence: float
    probabilities: dict[str, float]
    model: ModelRef
    top_guess: str = ""
    scope: ScopeVerdict | None = None
    explanation: Explanation | None = None

    @property
    def in_scope(self) -> bool:
        return self.scope is None or self.scope.in_scope

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities),
            "model": {
                "name": self.model.name,
                "version": self.model.version,
                "sha256": self.model.sha256,
                "variant": self.model.variant,
            },
        }
        if self.scope is not None:
            out["in_scope"] = self.scope.in_scope
            out["top_guess"] = self.top_guess
            out["scope"] = self.scope.to_dict()
        if self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out


class Predictor:
    """One ONNX Runtime session over a model folder; create once per process and reuse."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        variant: str | None = None,
        limits: ImageLimits | None = None,
        threads: int | None = None,
        verify: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.bundle: ModelBundle = load_bundle(model_dir)
        self.variant = variant or self.bundle.default_variant
        file = self.bundle.file(self.variant)
        path = self.bundle.root / file.path
        if not path.is_file():
            raise ModelUnavailable(f"model file missing: {file.path}")
        if verify and sha256_file(path) != file.sha256:
            raise ModelUnavailable(f"model file {file.path} does not match its sha256")
        self.limits = limits or ImageLimits()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelUnavailable(f"model file {file.path} could not be loaded") from exc
        check_session(self.bundle, self._session)  # model.json must fit the ONNX file
        self.ref = ModelRef(self.bundle.name, self.bundle.version, file.sha256, self.variant)
        self.outputs = {o.name: tuple(o.shape) for o in self._session.get_outputs()}
        self.scope: Scope | None = None
        self.scope_error: str | None = None
        try:
            self.scope = load_scope(self.bundle, self.variant, self.outputs, verify=verify)
        except ScopeUnavailable as exc:
            self.scope_error = str(exc)
            if self.bundle.scope is not None or self.bundle.scope_error:
                log.warning("model %s served without a scope: %s", self.bundle.name, exc)

    @property
    def can_explain(self) -> bool:
        """The ONNX file has a ``cam`` output with one map per class."""
        shape = self.outputs.get(CAM_OUTPUT)
        return shape is not None and len(shape) == 4 and shape[1] == self.bundle.num_classes

    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.labels

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, C) probabilities."""
        (log_probs,) = self._session.run(
            [self.bundle.output_name], {self.bundle.input_name: batch.astype(np.float32)}
        )
        return np.exp(log_probs.astype(np.float64))

    def predict(
        self,
        image_bytes: bytes,
        top_k: int | None = None,
        *,
        reject: bool = True,
        explain: bool = False,
    ) -> Prediction:
        """Classify one encoded image. Raises ImageError subclasses for bad input.

        ``reject``: judge the photo's scope when the model has one (else today's answer, and no
        extra work). ``explain``: add a class activation map overlay (CannotExplain without one).
        """
        if explain and not self.can_explain:
            raise CannotExplain(
                f"model {self.bundle.name!r} cannot explain: its ONNX file has no {CAM_OUTPUT!r} "
                "output (exported before class activation maps; re-export it)"
            )
        scope = self.scope if reject else None
        if not explain and scope is None:
            tensor = preprocess(image_bytes, self.bundle.preprocess, self.limits)
            return self.prediction_from_probs(self.probabilities(tensor)[0], top_k)
        cfg = self.bundle.preprocess
        photo = decode_image(
            image_bytes,
            draft_size=(max(cfg.size), max(cfg.size)) if cfg.draft else None,
            limits=self.limits,
            background=cfg.background,
        )
        pixels = np.asarray(resize_image(photo, cfg.size, cfg.interpolation), dtype=np.uint8)
        tensor = normalize(pixels, cfg.mean, cfg.std)[None]
        names = [self.bundle.output_name, *(scope.needs if scope else ())]
        names += [CAM_OUTPUT] if explain else []
        values = self._session.run(names, {self.bundle.input_name: tensor})
        out = dict(zip(["log_probs", *names[1:]], values, strict=True))
        probs = np.exp(out["log_probs"][0].astype(np.float64))
        prediction = self.prediction_from_probs(probs, top_k, scope.verdict(out) if scope else None)
        if explain:
            best = self.labels.index(prediction.top_guess)
            shown = cam_overlay(photo, out[CAM_OUTPUT][0, best], prediction.top_guess)
            prediction = replace(prediction, explanation=shown)
        return prediction

    def prediction_from_probs(
        self, probs: np.ndarray, top_k: int | None = None, scope: ScopeVerdict | None = None
    ) -> Prediction:
        k = min(top_k or self.bundle.top_k, len(self.labels))
        order = np.argsort(-probs)[:k]
        best = int(order[0])
        rejected = scope is not None and not scope.in_scope
        return Prediction(
            label=None if rejected else self.labels[best],
            confidence=float(probs[best]),
            probabilities={self.labels[int(i)]: float(probs[int(i)]) for i in order},
            model=self.ref,
            top_guess=self.labels[best],
            scope=scope,
        )
