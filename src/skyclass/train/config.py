"""Training configuration: frozen dataclasses loaded from TOML, checked before any work starts."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyclass.data.transforms import AugmentConfig


class ConfigError(ValueError):
    """A config file or override that cannot be used: unknown key, wrong type, bad value."""


@dataclass(frozen=True)
class StageConfig:
    """One stage of progressive unfreezing: which ``features[i]`` blocks train, for how long.

    ``lr`` None means: pick the rate by an LR range test at the start of the stage.
    """

    name: str
    epochs: int
    unfreeze: tuple[int, ...] = ()
    lr: float | None = None
    weight_decay: float = 1e-4
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1e3

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"stage {self.name!r}: epochs must be >= 0, got {self.epochs}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"stage {self.name!r}: lr must be > 0, got {self.lr}")
        if not 0 < self.pct_start < 1:
            raise ConfigError(f"stage {self.name!r}: pct_start must be in (0, 1)")
        bad = [i for i in self.unfreeze if not 0 <= i < 19]
        if bad:
            raise ConfigError(f"stage {self.name!r}: feature blocks must be in 0..18, got {bad}")


@dataclass(frozen=True)
class LRFindConfig:
    """Exponential LR sweep from ``start_lr`` to ``end_lr`` over at most ``num_iter`` batches."""

    start_lr: float = 1e-6
    end_lr: float = 1.0
    num_iter: int = 40
    smooth: float = 0.9
    diverge: float = 4.0
    #: "min10" (rate at the smoothed minimum / 10) or "steep" (steepest descent).
    suggest: str = "min10"

    def __post_init__(self) -> None:
        if not 0 < self.start_lr < self.end_lr:
            raise ConfigError("lr_find: need 0 < start_lr < end_lr")
        if self.num_iter < 2:
            raise ConfigError("lr_find: num_iter must be >= 2")
        if self.suggest not in ("min10", "steep"):
            raise ConfigError(f"lr_find: suggest must be 'min10' or 'steep', got {self.suggest!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run dir."""

    name: str
    data_root: str
    train: str
    val: str
    test: str | None = None
    out: str = "runs"
    weights: str | None = "imagenet"
    image_size: int = 224
    batch_size: int = 32
    eval_batch_size: int = 64
    #: torch threads per process; None = this machine's cores / processes on it.
    num_threads: int | None = None
    workers: int = 0
    seed: int = 0
    dropout: float = 0.2
    channels_last: bool = False
    #: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda" (each process its own GPU), "cuda:N", "mps".
    device: str = "auto"
    #: "auto" (bf16 on a GPU that has it, else fp16 with loss scaling; fp32 on CPU and MPS),
    #: "fp32", "bf16" or "fp16".
    precision: str = "auto"
    #: SyncBatchNorm across processes for the unfrozen blocks (CUDA only).
    sync_bn: bool = False
    #: Seconds to wait for the other processes (rendezvous, collectives) before failing.
    dist_timeout_s: float = 600.0
    #: Cap on batches per epoch (tiny runs and tests); None = whole epoch.
    max_steps: int | None = None
    #: On-disk cache of decoded, resized images (npy keyed by file sha256); None = memory only.
    cache_dir: str | None = ".cache/skyclass"
    #: Decoded images held in RAM per split (MB); the rest is read back from ``cache_dir`` on
    #: each access, so memory does not grow with the number of photos.
    cache_memory_mb: float = 1024.0
    epochs_scale: float = 1.0
    #: Speed on CPUs: when > 0, the frozen prefix ``features[:feature_cache_block]`` (frozen in
    #: every stage, BatchNorm in eval mode, so deterministic) is run once on this many augmented
    #: views of each training image, and every epoch draws one view per image. 0 = live pipeline.
    feature_cache_views: int = 0
    feature_cache_block: int = 8
    #: "balanced" weights the training loss by n / (classes x count of the class), so a small
    #: class (winged drones: a third of the others) weighs as much as a large one; "none" = 1.
    class_weights: str = "none"
    #: Mix each training target with the uniform distribution (0 = off; 0.1 is usual): collected
    #: sets carry wrong labels, and a model should not be pushed to certainty on them.
    label_smoothing: float = 0.0
    #: mixup's Beta(a, a) parameter (0 = off; 0.2-0.4 is usual): trains on blends of two images
    #: and of their targets, which keeps a model from memorising single (possibly wrong) labels.
    mixup_alpha: float = 0.0
    #: Within each class, draw a training photo with weight (photos of its class from its
    #: source) ** -source_balance, each class keeping its share: 0 = off, 1 = every source of a
    #: class drawn equally often (epochs then sample with replacement). Needs ``sources``.
    source_balance: float = 0.0
    #: A CSV/TSV naming each file's source, as ``skyclass split --groups`` reads it (a ``path``
    #: column, or ``class``/``label`` + ``file``); the source is its ``source_column`` value.
    sources: str | None = None
    source_column: str = "source_repo"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    stages: tuple[StageConfig, ...] = (StageConfig(name="head", epochs=3),)
    #: Experiment trackers: "csv" (metrics.csv, always on), "tensorboard", "mlflow", "wandb".
    log: tuple[str, ...] = ("csv",)

    def __post_init__(self) -> None:
        from skyclass.train.trackers.base import parse_log

        object.__setattr__(self, "log", parse_log(self.log))
        if not self.stages:
            raise ConfigError("at least one stage is needed")
        if self.image_size < 32:
            raise ConfigError(f"image_size must be >= 32, got {self.image_size}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps must be >= 1")
        if self.cache_memory_mb < 0:
            raise ConfigError(f"cache_memory_mb must be >= 0, got {self.cache_memory_mb}")
        if self.epochs_scale <= 0:
            raise ConfigError("epochs_scale must be > 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixup_alpha < 0:
            raise ConfigError(f"mixup_alpha must be >= 0, got {self.mixup_alpha}")
        if not 0 <= self.source_balance <= 1:
            raise ConfigError(f"source_balance must be in [0, 1], got {self.source_balance}")
        if self.source_balance and not self.sources:
            raise ConfigError("source_balance needs sources (a table naming each file's source)")
        if self.class_weights not in ("none", "balanced"):
            raise ConfigError(
                f"class_weights must be 'none' or 'balanced', got {self.class_weights!r}"
            )
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.dist_timeout_s <= 0:
            raise ConfigError("dist_timeout_s must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout must be in [0, 1)")
        if self.feature_cache_views < 0:
            raise ConfigError("feature_cache_views must be >= 0")
        if self.feature_cache_views and not 1 <= self.feature_cache_block < 19:
            raise ConfigError("feature_cache_block must be in 1..18")
        if self.feature_cache_views:
            deep = [
                s.name for s in self.stages if any(i < self.feature_cache_block for i in s.unfreeze)
            ]
            if deep:
                raise ConfigError(
                    f"stage(s) {deep} unfreeze blocks below feature_cache_block="
                    f"{self.feature_cache_block}; lower it or set feature_cache_views = 0"
                )
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stage names must be unique, got {names}")

    def stage_epochs(self, stage: StageConfig) -> int:
        """Epochs of a stage after ``epochs_scale`` (at least 1 if the stage had any)."""
        if stage.epochs == 0:
            return 0
        return max(1, round(stage.epochs * self.epochs_scale))

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (TOML types) and convert lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return from_mapping(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def from_mapping(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a TOML config; ``overrides`` (None values ignored) replace top-level keys."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if "stages" in data and not isinstance(data["stages"], list):
        raise ConfigError(f"{path}: 'stages' must be an array of tables ([[stages]])")
    data.update({k: v for k, v in overrides.items() if v is not None})
    # Relative paths in a config file are relative to the working directory (the repo root).
    return from_mapping(TrainConfig, data, where=path.name)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from its ``to_dict()`` (checkpoint, config.json; the ``runtime``
    record that config.json carries beside the config is not part of it)."""
    return from_mapping(TrainConfig, {k: v for k, v in data.items() if k != "runtime"})
