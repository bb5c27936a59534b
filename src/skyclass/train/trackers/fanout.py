"""``Trackers``: one call fans out to every tracker of the run; a tracker that raises costs one
WARNING line, is switched off for the rest of the command, and the run goes on (the csv tracker,
the run's record, is the exception)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from skyclass.train.trackers.base import RunInfo, Tracker, parse_log, require
from skyclass.train.trackers.identity import folder_sha256, read_state, world, write_state
from skyclass.train.trackers.report import read_eval_report

log = logging.getLogger(__name__)


def _backend(name: str) -> Callable[[RunInfo, Mapping[str, Any]], Tracker]:
    """The tracker class of ``name``; its module (and its library) is imported only here."""
    if name == "csv":
        from skyclass.train.trackers.csv_metrics import CsvTracker

        return CsvTracker
    if name == "tensorboard":
        from skyclass.train.trackers.tensorboard_tracker import TensorBoardTracker

        return TensorBoardTracker
    if name == "mlflow":
        from skyclass.train.trackers.mlflow_tracker import MlflowTracker

        return MlflowTracker
    if name == "wandb":
        from skyclass.train.trackers.wandb_tracker import WandbTracker

        return WandbTracker
    raise ValueError(f"unknown tracker {name!r}")


class Trackers:
    """The trackers of one command. ``step`` is the last global step logged."""

    def __init__(
        self,
        info: RunInfo,
        trackers: Sequence[Tracker],
        state: dict[str, Any],
        *,
        writer: bool = True,
    ) -> None:
        self.info = info
        self.trackers = list(trackers)
        #: False on ranks other than 0: nothing is logged and trackers.json is left alone.
        self.writer = writer
        self.step = info.start_step
        #: Optimizer steps in an epoch (set by the training run; global step = epochs x this).
        self.steps_per_epoch = 1
        self._state = state
        self._failed: set[str] = set()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.trackers)

    def _each(self, method: str, *args: Any) -> None:
        for tracker in self.trackers:
            if getattr(tracker, "required", False):
                getattr(tracker, method)(*args)
                continue
            if tracker.name in self._failed:
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:
                # Off for the rest of the command: a server that is gone would otherwise stall
                # every later step on its client's retries. Its ids stay in trackers.json.
                self._failed.add(tracker.name)
                first = (str(exc).splitlines() or [""])[0]
                log.warning(
                    "tracker %s failed in %s (%s: %s); it is off for the rest of this command, "
                    "training goes on and metrics.csv is kept",
                    tracker.name, method, type(exc).__name__, first,
                )  # fmt: skip

    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """The resolved config (nested) and the run's tags."""
        self._each("log_params", params, tags)

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.step = max(self.step, step)
        self._each("log_step", step, loss, lr)

    def step_logger(self, offset: int) -> Callable[[int, float, float], None]:
        """``on_step`` for train_one_epoch: step i of an epoch is global step ``offset + i``."""

        def on_step(step: int, loss: float, lr: float) -> None:
            self.log_step(offset + step, loss, lr)

        return on_step

    def log_epoch(self, row: Mapping[str, Any], step: int | None = None) -> None:
        self.step = max(self.step, step or self.step)
        self._each("log_epoch", self.step, row)
        self._save()

    def log_stage(self, stage: str, **info: Any) -> None:
        self._each("log_stage", self.step, stage, info)

    def log_lr_find(self, stage: str, result: Any, png: Path | None = None) -> None:
        """The LR range-test curve (loss against rate) of ``stage``, and its plot."""
        tag = f"lr_find/{stage}"
        self._each("log_curve", self.step, tag, result.lrs, result.losses, "lr", "loss")
        if png is not None:
            self._each("log_image", self.step, tag, Path(png))

    def log_eval(self, split: str, folder: Path) -> None:
        """Per-class precision/recall/F1, the confusion matrix image and the misclassified
        photos of an evaluation report folder."""
        if len(self.trackers) == 1 and self.trackers[0].name == "csv":
            return
        self._each("log_eval", self.step, split, read_eval_report(Path(folder)))

    def log_artifact(self, folder: Path, name: str = "model") -> str:
        """Log a folder (the exported model) with its sha256; returns the digest."""
        digest, _ = folder_sha256(Path(folder))
        self._each("log_artifact", self.step, Path(folder), name, digest)
        return digest

    def finish(self) -> None:
        self._each("finish")
        self._save()

    def _save(self) -> None:
        if not self.writer:
            return
        state = dict(self._state)
        for tracker in self.trackers:
            if tracker.name != "csv" and tracker.name not in self._failed:
                try:
                    state[tracker.name] = tracker.state()
                except Exception as exc:  # a broken tracker must not stop the run
                    log.debug("tracker %s: no state: %s", tracker.name, exc)
        state["step"] = self.step
        self._state = state
        write_state(self.info.run_dir, state)


def open_trackers(log_names: Sequence[str] | str, info: RunInfo) -> Trackers:
    """Start (or continue, from ``run_dir/trackers.json``) every tracker of ``log_names``.

    Only rank 0 of a distributed run logs: other ranks get no trackers at all. A missing extra
    raises TrackerUnavailable; a tracker failing to start is a WARNING and is left out.
    """
    names = parse_log(log_names)
    require(names)
    if world()[0] != 0:
        return Trackers(info, [], {}, writer=False)
    state = read_state(info.run_dir)
    if not info.resume and info.kind in ("train", "lr-find"):
        state = {}  # a new run (evaluate and export continue the run dir's)
    start = info.start_step or int(state.get("step", 0))
    info = RunInfo(
        run_dir=info.run_dir,
        name=info.name,
        kind=info.kind,
        resume=info.resume,
        history=info.history,
        start_step=start,
    )
    trackers: list[Tracker] = []
    for name in names:
        try:
            trackers.append(_backend(name)(info, state.get(name) or {}))
        except Exception as exc:
            if name == "csv":
                raise
            log.warning("tracker %s could not start (%s: %s); going on without it",
                        name, type(exc).__name__, exc)  # fmt: skip
    fan = Trackers(info, trackers, state)
    fan._save()
    log.info("trackers: %s (ids in %s)", ", ".join(fan.names), info.run_dir / "trackers.json")
    return fan
