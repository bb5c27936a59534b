"""A run's place on disk and in time: its folder, and where a resumed run picks up.

``start_run`` makes (rank 0) or reopens the run dir; a resume reads ``checkpoints/last.pt`` and
takes the run's own config from it. Resuming re-derives everything a process draws from the seed
and the epoch number (see ``fit``), so it needs the same number of processes: a run trained with
another world size is refused (its sampler shards and OneCycle lengths would differ).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from skyclass.data.dataset import DataError
from skyclass.train.config import TrainConfig, config_from_dict
from skyclass.train.distributed import on_main
from skyclass.train.runtime import Runtime


class RunExists(FileExistsError):
    """The run dir exists and neither --force nor --resume was given."""


@dataclass
class RunState:
    """What a run has done so far: the history, the best score, each stage's rate, and the last
    finished epoch (stage index, epochs done in it). Updated as epochs finish."""

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_accuracy: float = -1.0
    stage_lrs: dict[str, float] = field(default_factory=dict)
    done_stage: int = -1
    done_in_stage: int = 0
    #: The checkpoint resumed from (None for a fresh run).
    resumed: dict[str, Any] | None = None

    def first_epoch(self, stage_index: int, stage_epochs: int) -> int | None:
        """Epoch of a stage to start at, or None when the stage is done (or has no epochs)."""
        if stage_epochs == 0 or stage_index < self.done_stage:
            return None
        if stage_index == self.done_stage:
            return None if self.done_in_stage >= stage_epochs else self.done_in_stage
        return 0

    def resumes_inside(self, stage_index: int) -> bool:
        """True when this stage's optimizer and schedule continue from the checkpoint."""
        return self.resumed is not None and stage_index == self.done_stage


def prepare_run_dir(config: TrainConfig, *, force: bool) -> Path:
    run_dir = config.run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunExists(f"run dir {run_dir} exists; use --force to overwrite or --resume")
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "reports").mkdir(parents=True, exist_ok=True)
    return run_dir


def read_resume(resume: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """(the run's own config, with its run dir where it is now; its last.pt) or DataError."""
    from skyclass.train.checkpoint import load_checkpoint

    last = Path(resume) / "checkpoints" / "last.pt"
    if not last.is_file():
        raise DataError(f"nothing to resume: {last} not found")
    ckpt = load_checkpoint(last)
    config = replace(
        config_from_dict(ckpt["config"]), out=str(Path(resume).parent), name=Path(resume).name
    )
    return config, ckpt


def start_run(
    config: TrainConfig,
    ckpt: dict[str, Any] | None,
    class_names: tuple[str, ...],
    runtime: Runtime,
    *,
    force: bool,
) -> RunState:
    """The run's state: fresh (rank 0 makes the run dir and writes config.json) or resumed."""
    if ckpt is not None:
        if tuple(ckpt["class_names"]) != class_names:
            raise DataError(f"classes changed since the checkpoint: {ckpt['class_names']}")
        return RunState(
            run_dir=config.run_dir,
            history=list(ckpt["history"]),
            best_val_accuracy=ckpt["best_val_accuracy"],
            stage_lrs=dict(ckpt["stage_lrs"]),
            done_stage=ckpt["stage_index"],
            done_in_stage=ckpt["stage_epoch"],
            resumed=ckpt,
        )
    if config.weights not in (None, "imagenet") and not Path(config.weights).is_file():
        raise DataError(f"weights file not found: {config.weights}")

    def make() -> Path:
        from skyclass.outputs import write_text_atomic

        run_dir = prepare_run_dir(config, force=force)
        record = {**config.to_dict(), "runtime": runtime.to_dict()}
        write_text_atomic(run_dir / "config.json", json.dumps(record, indent=2) + "\n")
        return run_dir

    return RunState(run_dir=on_main(make, runtime))
