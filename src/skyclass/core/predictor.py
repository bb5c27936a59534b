"""ONNX Runtime predictor: image bytes in, a typed Prediction out. No web, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyclass.core.bundle import ModelBundle, check_session, load_bundle, sha256_file
from skyclass.core.errors import ModelUnavailable
from skyclass.core.preprocess import ImageLimits, preprocess


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    sha256: str
    variant: str


@dataclass(frozen=True)
class Prediction:
    """The answer for one image. ``probabilities`` holds the top-k classes, best first."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    model: ModelRef

    def to_dict(self) -> dict[str, object]:
        return {
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

    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.labels

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, C) probabilities."""
        (log_probs,) = self._session.run(
            [self.bundle.output_name], {self.bundle.input_name: batch.astype(np.float32)}
        )
        return np.exp(log_probs.astype(np.float64))

    def predict(self, image_bytes: bytes, top_k: int | None = None) -> Prediction:
        """Classify one encoded image. Raises ImageError subclasses for bad input."""
        tensor = preprocess(image_bytes, self.bundle.preprocess, self.limits)
        probs = self.probabilities(tensor)[0]
        return self.prediction_from_probs(probs, top_k)

    def prediction_from_probs(self, probs: np.ndarray, top_k: int | None = None) -> Prediction:
        k = min(top_k or self.bundle.top_k, len(self.labels))
        order = np.argsort(-probs)[:k]
        best = int(order[0])
        return Prediction(
            label=self.labels[best],
            confidence=float(probs[best]),
            probabilities={self.labels[int(i)]: float(probs[int(i)]) for i in order},
            model=self.ref,
        )
