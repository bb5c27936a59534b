"""What every tracker answers to, the run it logs into, and the extra each one needs."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from skyclass.train.config import ConfigError
from skyclass.train.trackers.report import EvalReport

#: Backend name -> (module to import, pip extra). csv needs nothing and is always on.
EXTRAS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}
BACKENDS: tuple[str, ...] = ("csv", *EXTRAS)


class TrackerUnavailable(ConfigError):
    """A tracker was asked for whose extra is not installed (a one-line message naming it)."""


def parse_log(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"csv,tensorboard"`` or a list -> known names, in order, without repeats; csv always first.

    Unknown names raise ConfigError listing the known ones.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip().lower() for n in items if str(n).strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(
            f"log: unknown tracker(s) {', '.join(unknown)} (known: {', '.join(BACKENDS)})"
        )
    return tuple(dict.fromkeys(["csv", *names]))


def require(names: Sequence[str]) -> None:
    """Import the library of every tracker in ``names`` now, before any work: a missing or
    broken one raises TrackerUnavailable with a one-line message naming the extra."""
    for name in names:
        if name not in EXTRAS:
            continue
        module, extra = EXTRAS[name]
        try:
            importlib.import_module(module)
        except Exception as exc:
            why = "is not installed" if isinstance(exc, ModuleNotFoundError) else "fails to import"
            raise TrackerUnavailable(
                f"--log {name}: the {module} package {why}; pip install 'skyclass[{extra}]'"
            ) from None


@dataclass(frozen=True)
class RunInfo:
    """The tracker run of one command: its folder, what it is, and what to say about it.

    ``run_dir`` holds ``trackers.json`` (the ids a later --resume, evaluate or export continues)
    and TensorBoard's event files. ``history`` seeds metrics.csv when a run is resumed.
    """

    run_dir: Path
    name: str
    kind: str = "train"
    resume: bool = False
    history: tuple[Mapping[str, Any], ...] = ()
    #: The global step this command starts at (a resumed run: steps already done).
    start_step: int = 0


class Tracker(Protocol):
    """One backend. Steps are global optimizer steps; every call may raise (the fan-out warns)."""

    name: str

    def state(self) -> dict[str, Any]:
        """Ids that let a later command continue this tracker run (stored in trackers.json)."""
        ...

    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None: ...

    def log_step(self, step: int, loss: float, lr: float) -> None: ...

    def log_epoch(self, step: int, row: Mapping[str, Any]) -> None: ...

    def log_stage(self, step: int, stage: str, info: Mapping[str, Any]) -> None: ...

    def log_curve(
        self, step: int, tag: str, xs: Sequence[float], ys: Sequence[float], x: str, y: str
    ) -> None: ...

    def log_eval(self, step: int, split: str, report: EvalReport) -> None: ...

    def log_image(self, step: int, tag: str, path: Path) -> None: ...

    def log_artifact(self, step: int, path: Path, name: str, sha256: str) -> None: ...

    def finish(self) -> None: ...
