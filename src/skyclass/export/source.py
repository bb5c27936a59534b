"""Where an export's model comes from: a run dir, a checkpoint file, or pretrained weights.

Resolving a source loads the PyTorch model (eval mode, output = log-probabilities), its labels,
its preprocessing and, for a training run, the manifests and reports that go with it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyclass.core.bundle import sha256_file
from skyclass.core.preprocess import PreprocessConfig
from skyclass.export.config import ExportConfig, ExportError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

BEST_CHECKPOINT = Path("checkpoints") / "best.pt"
REQUIRED_KEYS = ("model", "class_names", "preprocess")


@dataclass(frozen=True)
class ExportSource:
    """A model ready to export, and what is known about where it came from."""

    module: nn.Module
    labels: tuple[str, ...]
    preprocess: PreprocessConfig
    kind: str  # "checkpoint" or "pretrained"
    name: str
    version: str
    weights_file: Path
    weights_sha256: str
    run_dir: Path | None = None
    data_root: Path | None = None
    train_manifest: Path | None = None
    test_manifest: Path | None = None
    #: reports/<test-stem>/metrics.json of the run, when present.
    run_metrics: dict[str, Any] | None = None
    #: Every other reports/<manifest-stem>/metrics.json of the run (val, test-ifo, ...), by stem.
    other_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _resolve_path(value: str | None, bases: list[Path]) -> Path | None:
    """An absolute path as is; a relative one against each base in turn (first that exists)."""
    if not value:
        return None
    path = Path(value)
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return (base / path).resolve()
    return (bases[0] / path).resolve() if bases else path


def _load_checkpoint(path: Path) -> dict[str, Any]:
    from skyclass.model import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ExportError(f"{path} is not a skyclass checkpoint (missing {', '.join(missing)})")
    arch = ckpt.get("arch", "mobilenet_v2")
    if arch != "mobilenet_v2":
        raise ExportError(f"{path}: unsupported arch {arch!r} (only mobilenet_v2)")
    return ckpt


def from_checkpoint(config: ExportConfig) -> ExportSource:
    """A run dir (uses checkpoints/best.pt) or a checkpoint file."""
    from skyclass.model import build_model

    given = Path(str(config.source))
    if given.is_dir():
        run_dir: Path | None = given.resolve()
        ckpt_path = given / BEST_CHECKPOINT
        if not ckpt_path.is_file():
            raise ExportError(f"{given} is a folder but has no {BEST_CHECKPOINT}")
    else:
        ckpt_path = given
        parent = given.resolve().parent
        run_dir = parent.parent if parent.name == "checkpoints" else None
    ckpt = _load_checkpoint(ckpt_path)
    labels = tuple(str(x) for x in ckpt["class_names"])
    if len(labels) < 2:
        raise ExportError(f"{ckpt_path}: a classifier needs at least two class names")
    try:
        preprocess = PreprocessConfig.from_dict(dict(ckpt["preprocess"]))
        model = build_model(len(labels), weights=None, dropout=float(ckpt.get("dropout", 0.2)))
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{ckpt_path}: checkpoint does not fit the model: {first}") from exc
    model.eval()

    # Relative data paths: against the working directory, then the repo holding runs/NAME.
    bases = [Path.cwd()]
    if run_dir is not None:
        bases.append(run_dir.parent.parent)
    data = ckpt.get("data") or {}
    data_root = _resolve_path(config.data_root or data.get("root"), bases)
    train = _resolve_path(data.get("train"), bases)
    test = _resolve_path(config.test_manifest or data.get("test"), bases)
    run_metrics = None
    if run_dir is not None and test is not None:
        metrics_path = run_dir / "reports" / test.stem / "metrics.json"
        if metrics_path.is_file():
            run_metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            log.info("using the run's test metrics from %s", metrics_path)
    other_metrics = {}
    if run_dir is not None:
        for path in sorted((run_dir / "reports").glob("*/metrics.json")):
            if test is None or path.parent.name != test.stem:
                other_metrics[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
    name = config.name or (run_dir.name if run_dir is not None else ckpt_path.stem)
    epoch, stage = ckpt.get("epoch"), ckpt.get("stage")
    return ExportSource(
        module=model,
        labels=labels,
        preprocess=preprocess,
        kind="checkpoint",
        name=name,
        version=config.version or _default_version(stage, epoch),
        weights_file=ckpt_path.resolve(),
        weights_sha256=sha256_file(ckpt_path),
        run_dir=run_dir,
        data_root=data_root,
        train_manifest=train,
        test_manifest=test,
        run_metrics=run_metrics,
        other_metrics=other_metrics,
        info={
            "arch": "mobilenet_v2",
            "epoch": epoch,
            "stage": stage,
            "dropout": ckpt.get("dropout", 0.2),
            "val_metrics": ckpt.get("metrics"),
        },
    )


def _default_version(stage: Any, epoch: Any) -> str:
    parts = [str(p) for p in (stage, f"e{epoch}" if epoch is not None else None) if p]
    return "-".join(["1", *parts]) if parts else "1"


def _wrap_log_softmax(model: nn.Module) -> nn.Module:
    import torch
    from torch import nn

    class WithLogSoftmax(nn.Module):
        """An ImageNet classifier whose logits become log-probabilities, as skyclass serves."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log_softmax(self.inner(x), dim=1)

    return WithLogSoftmax(model).eval()


def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in torchvision's order (from torchvision's own code)."""
    from torchvision.models import MobileNet_V2_Weights

    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def from_pretrained(config: ExportConfig) -> ExportSource:
    """The plain 1000-class torchvision MobileNetV2 with a state_dict from ``config.weights``."""
    import torch
    from torchvision.models import mobilenet_v2

    if not config.weights:
        raise ExportError("--pretrained imagenet needs --weights PATH (a mobilenet_v2 state_dict)")
    weights = Path(config.weights)
    if not weights.is_file():
        raise ExportError(f"weights not found: {weights}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model = mobilenet_v2()
        model.load_state_dict(state)
    except Exception as exc:
        raise ExportError(
            f"{weights} is not a mobilenet_v2 state_dict ({type(exc).__name__})"
        ) from exc
    labels = imagenet_labels()
    data_root = Path(config.data_root).resolve() if config.data_root else None
    return ExportSource(
        module=_wrap_log_softmax(model.eval()),
        labels=labels,
        preprocess=PreprocessConfig(),
        kind="pretrained",
        name=config.name or "imagenet-mobilenet-v2",
        version=config.version or "1",
        weights_file=weights.resolve(),
        weights_sha256=sha256_file(weights),
        data_root=data_root,
        train_manifest=_resolve_path(config.calibration_manifest, [Path.cwd()]),
        test_manifest=_resolve_path(config.test_manifest, [Path.cwd()]),
        info={"arch": "mobilenet_v2", "dataset": "ImageNet-1k", "classes": len(labels)},
    )


def resolve_source(config: ExportConfig) -> ExportSource:
    if config.pretrained is not None:
        return from_pretrained(config)
    return from_checkpoint(config)
