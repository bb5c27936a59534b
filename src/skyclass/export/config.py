"""Export configuration: what to export, where, and the bounds its parity check must meet."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PRETRAINED = ("imagenet",)


class ExportError(Exception):
    """An export that cannot start or finish; its message is one line for the user."""


@dataclass(frozen=True)
class ParityBounds:
    """What a model folder must meet. A missed fp32 bound writes nothing; a missed int8 bound
    leaves the int8 file out of the folder (or fails with ``require_int8``)."""

    #: fp32 ONNX vs PyTorch: max abs difference of probabilities, and identical top-1.
    max_prob_diff: float = 1e-4
    #: int8 vs fp32 ONNX top-1 agreement: the lower end of its Wilson score interval (at
    #: ``confidence``) must reach this, so that a handful of images cannot pass or fail it by luck:
    #: 20 of 20 agreeing gives a lower bound of 83.9%, 233 of 235 gives 96.9%.
    min_int8_agreement: float = 0.95
    #: Two-sided confidence of that interval.
    confidence: float = 0.95
    #: int8 accuracy may be at most this far (absolute) below fp32 accuracy (labelled images).
    max_int8_accuracy_drop: float = 0.01
    #: fp32 bytes / int8 bytes.
    min_size_ratio: float = 3.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ExportConfig:
    """Everything ``skyclass export`` needs; the CLI only parses into this.

    Exactly one of ``source`` (a run dir or a checkpoint file) and ``pretrained`` ("imagenet",
    with ``weights`` a torchvision state_dict) names the model.
    """

    out: str
    source: str | None = None
    pretrained: str | None = None
    weights: str | None = None
    name: str | None = None
    version: str | None = None
    data_root: str | None = None
    calibration_manifest: str | None = None
    calibration_size: int = 300
    test_manifest: str | None = None
    #: Cap on the parity images (test split rows; or a sample of the data root when no manifest).
    parity_size: int | None = None
    #: Photos of none of the model's classes, to report what it answers for them in the card.
    ood_images: tuple[str, ...] = ()
    #: Photos whose top-5 answers the card shows.
    examples: tuple[str, ...] = ()
    #: A markdown file whose text the card carries as a section of its own (e.g. results of other
    #: evaluation protocols, what was tried and what closed a gap).
    card_notes: str | None = None
    int8: bool = True
    #: Fail (write nothing) when int8 misses a bound, instead of leaving it out of the folder.
    require_int8: bool = False
    force: bool = False
    opset: int = 17
    top_k: int | None = None
    seed: int = 0
    threads: int = 2
    batch_size: int = 16
    bounds: ParityBounds = field(default_factory=ParityBounds)
    #: Scope score (issue 16): calibrate and write scope.npz (see skyclass.export.scope_step).
    scope: bool = True
    scope_train: str | None = None
    scope_val: str | None = None
    scope_test: str | None = None
    out_of_scope: str | None = None
    scope_method: str = "auto"

    def __post_init__(self) -> None:
        if (self.source is None) == (self.pretrained is None):
            if self.source is None:
                raise ExportError(
                    "nothing to export: give a run dir or checkpoint (skyclass export "
                    "runs/NAME --out models/NAME) or --pretrained imagenet --weights FILE"
                )
            raise ExportError("give either a run dir / checkpoint or --pretrained, not both")
        if self.pretrained is not None and self.pretrained not in PRETRAINED:
            raise ExportError(
                f"unknown --pretrained {self.pretrained!r} (known: {', '.join(PRETRAINED)})"
            )
        if self.calibration_size < 1:
            raise ExportError(
                f"--calibration-size must be >= 1, got {self.calibration_size} "
                "(--no-int8 skips int8 and its calibration)"
            )
        if self.require_int8 and not self.int8:
            raise ExportError("--require-int8 and --no-int8 contradict each other")
        if not 0.0 < self.bounds.min_int8_agreement <= 1.0:
            raise ExportError("--min-int8-agreement must be in (0, 1]")
        if self.parity_size is not None and self.parity_size < 1:
            raise ExportError("--parity-size must be >= 1")
        if self.opset < 17:
            raise ExportError(f"--opset must be >= 17, got {self.opset}")
        if self.top_k is not None and self.top_k < 1:
            raise ExportError(f"--top-k must be >= 1, got {self.top_k}")
        if self.batch_size < 1 or self.threads < 1:
            raise ExportError("batch size and threads must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ood_images"] = list(self.ood_images)
        data["examples"] = list(self.examples)
        return data
