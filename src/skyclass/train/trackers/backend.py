"""The semantic calls of a tracker written once over a few primitives each backend provides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skyclass.train.trackers.report import EvalReport

#: metrics.csv column -> scalar name (grouped the way TensorBoard and W&B group panels).
EPOCH_SCALARS: dict[str, str] = {
    "epoch": "epoch",
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "train_images_per_s": "speed/train_images_per_s",
    "val_images_per_s": "speed/val_images_per_s",
    "max_lr": "lr/stage_max",
    "seconds": "time/epoch_seconds",
}


def epoch_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric columns of a metrics.csv row under their tracker names."""
    return {
        name: float(row[key])
        for key, name in EPOCH_SCALARS.items()
        if isinstance(row.get(key), int | float) and not isinstance(row.get(key), bool)
    }


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"a.b": value}``; lists of tables become ``a.0.b``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple) and value and isinstance(value[0], Mapping):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        else:
            out[name] = value
    return out


class Backend:
    """Base of the TensorBoard, MLflow and W&B trackers: subclasses implement ``scalars``,
    ``text`` and ``images`` (and override a semantic call where their idiom differs)."""

    name = ""

    def state(self) -> dict[str, Any]:
        return {}

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def text(self, step: int, tag: str, text: str) -> None:
        raise NotImplementedError

    def images(self, step: int, tag: str, items: Sequence[tuple[Path, str]]) -> None:
        raise NotImplementedError

    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        raise NotImplementedError

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.scalars(step, {"loss/step": loss, "lr/step": lr})

    def log_epoch(self, step: int, row: Mapping[str, Any]) -> None:
        self.scalars(step, epoch_scalars(row))

    def log_stage(self, step: int, stage: str, info: Mapping[str, Any]) -> None:
        self.text(step, "stage", f"{stage}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        if "index" in info:
            self.scalars(step, {"stage/index": float(info["index"])})

    def log_curve(
        self, step: int, tag: str, xs: Sequence[float], ys: Sequence[float], x: str, y: str
    ) -> None:
        for i, (xv, yv) in enumerate(zip(xs, ys, strict=True)):
            self.scalars(i, {f"{tag}/{y}": float(yv), f"{tag}/{x}": float(xv)})

    def log_eval(self, step: int, split: str, report: EvalReport) -> None:
        self.scalars(step, report.scalars(split))
        if report.confusion_png is not None:
            caption = f"{split}: accuracy {float(report.metrics['accuracy']):.2%}"
            self.images(step, f"{split}/confusion", [(report.confusion_png, caption)])
        if report.misclassified:
            self.images(step, f"{split}/misclassified", report.misclassified)

    def log_image(self, step: int, tag: str, path: Path) -> None:
        self.images(step, tag, [(Path(path), Path(path).name)])

    def log_artifact(self, step: int, path: Path, name: str, sha256: str) -> None:
        self.text(step, f"artifact/{name}", f"{path} (sha256 {sha256})")

    def finish(self) -> None:
        return None
