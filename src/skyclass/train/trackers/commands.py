"""Tracking for the commands around a training run: lr-find, evaluate and export log into the
run's trackers (the ids in RUN_DIR/trackers.json), or start one when there is none yet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skyclass.train.trackers.base import RunInfo, parse_log
from skyclass.train.trackers.fanout import open_trackers
from skyclass.train.trackers.identity import run_tags


def run_dir_of(target: str | Path) -> Path:
    """The run dir of a run dir or checkpoint (``RUN/checkpoints/best.pt`` -> RUN)."""
    target = Path(target)
    if target.is_dir():
        return target
    if target.parent.name == "checkpoints":
        return target.parent.parent
    return target.parent


def wanted(*logs: str | Sequence[str] | None) -> tuple[str, ...]:
    """The union of config and --log lists; () when only csv (nothing to open)."""
    names = parse_log([n for log in logs if log for n in parse_log(log)])
    return names if names != ("csv",) else ()


def track_lr_find(
    log: Sequence[str],
    folder: Path,
    config: Mapping[str, Any],
    stage: str,
    result: Any,
    png: Path,
    device: str = "cpu",
) -> None:
    """One tracker run for an ``lr-find`` (folder: its output folder): config and the curve."""
    if not log:
        return
    trackers = open_trackers(log, RunInfo(folder, folder.name, kind="lr-find"))
    manifests = {k: config.get(k) for k in ("train", "val", "test")}
    trackers.log_params(config, run_tags(manifests, device))
    trackers.log_lr_find(stage, result, png)
    trackers.finish()


def track_evaluate(log: Sequence[str], target: str | Path, manifest: Path, folder: Path) -> None:
    """Log an ``evaluate`` report folder into the run's trackers, under the manifest's stem."""
    if not log:
        return
    run_dir = run_dir_of(target)
    trackers = open_trackers(log, RunInfo(run_dir, run_dir.name, kind="evaluate"))
    trackers.log_eval(Path(manifest).stem, folder)
    trackers.finish()


def track_export(log: Sequence[str], source: str | None, model_dir: Path) -> str | None:
    """Log an exported model folder (and its sha256) into the trackers of the run it came from
    (``runs/export-NAME`` for a --pretrained export). Returns the folder's digest."""
    if not log:
        return None
    run_dir = run_dir_of(source) if source else Path("runs") / f"export-{model_dir.name}"
    trackers = open_trackers(log, RunInfo(run_dir, run_dir.name, kind="export"))
    digest = trackers.log_artifact(model_dir, "model")
    trackers.finish()
    return digest
