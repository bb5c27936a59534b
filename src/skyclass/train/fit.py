"""The orchestrator, in the shape of torchvision's reference ``main`` and fastai's ``fine_tune``:
resolve where it runs, start or resume the run, build the training context once, walk the stage
plan, then report through the same evaluate chain as ``skyclass evaluate``.

Reproducibility: every epoch reseeds torch (dropout), the augmentation RNG and the sampler from
``seed``, the global epoch number and the rank, so a run resumed from ``last.pt`` sees the same
data order and augmentations as an uninterrupted one, and its weights come out bit-identical.
That per-epoch reseeding is what resume relies on; the RNG states a checkpoint also carries (one
per rank) are restored on resume too, for anything that draws outside an epoch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from skyclass.train.config import TrainConfig
from skyclass.train.context import (
    Data,
    TrainingContext,
    build_context,
    check_data,
    preprocess_config,
)
from skyclass.train.evaluation import evaluate_manifest, resolve_checkpoint
from skyclass.train.features import ViewDataset, prefix_features
from skyclass.train.loaders import per_rank_batch
from skyclass.train.loaders import train_loader as _train_loader
from skyclass.train.run_state import RunExists, RunState, prepare_run_dir
from skyclass.train.runtime import Runtime
from skyclass.train.trackers import RunInfo, open_trackers, require, run_tags
from skyclass.train.trackers.csv_metrics import METRICS_COLUMNS

__all__ = [
    "METRICS_COLUMNS",
    "Data",
    "FitResult",
    "RunExists",
    "ViewDataset",
    "_train_loader",
    "check_data",
    "evaluate_manifest",
    "fit",
    "prefix_features",
    "prepare_run_dir",
    "preprocess_config",
    "resolve_checkpoint",
    "runtime_for",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_val_accuracy: float
    history: tuple[dict[str, Any], ...]
    summary: dict[str, Any]
    #: This process's rank (0 with one process); only rank 0 wrote the files.
    rank: int = 0


def runtime_for(config: TrainConfig) -> Runtime:
    """This process's runtime from the config and the environment (torchrun, SLURM)."""
    from skyclass.train.device import probe
    from skyclass.train.runtime import resolve_runtime

    return resolve_runtime(
        device=config.device,
        precision=config.precision,
        threads=config.num_threads,
        sync_bn=config.sync_bn,
        environ=os.environ,
        acc=probe(),
    )


def fit(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> FitResult:
    """Train all stages of ``config`` (or resume the run in ``resume``) and write reports.

    Under torchrun (or a SLURM step of several tasks) every process calls this; rank 0 writes.
    ``device`` overrides the config's (also for a resumed run). Every refusal (device, process
    count, rendezvous, data, run dir) comes before anything is written.
    """
    from skyclass.train.run_state import read_resume
    from skyclass.train.runtime import start, stop

    wall_start = time.perf_counter()
    ckpt = None
    if resume is not None:
        asked = config.log
        config, ckpt = read_resume(resume)
        config = replace(config, log=(*config.log, *asked))  # and any --log added
    if device is not None:
        config = replace(config, device=device)
    runtime = runtime_for(config)
    require(config.log)
    per_rank_batch(config, runtime)  # the global batch must split over the processes
    if ckpt is not None:
        _check_world(ckpt, runtime, resume)
    created = start(runtime, os.environ, config.dist_timeout_s, config.seed)
    try:
        return _fit(config, runtime, ckpt, force=force, progress=progress, wall_start=wall_start)
    finally:
        stop(created)


def _check_world(ckpt: dict[str, Any], runtime: Runtime, resume: Any) -> None:
    from skyclass.data.dataset import DataError

    trained_with = int((ckpt.get("runtime") or {}).get("world_size", 1))
    if trained_with != runtime.world_size:
        raise DataError(
            f"{resume} was trained with {trained_with} process(es); resume it with the same "
            f"number (this launch has {runtime.world_size}): its sampler shards and schedules "
            "depend on it"
        )


def _fit(
    config: TrainConfig,
    runtime: Runtime,
    ckpt: dict[str, Any] | None,
    *,
    force: bool,
    progress: bool,
    wall_start: float,
) -> FitResult:
    from skyclass.train.checkpoint import set_rng_state
    from skyclass.train.run_state import start_run
    from skyclass.train.saver import CheckpointSaver
    from skyclass.train.stages import train_stage

    data = check_data(config)
    state = start_run(config, ckpt, data.class_names, runtime, force=force)
    ctx = build_context(
        config,
        runtime,
        data=data,
        model_state=ckpt["model"] if ckpt else None,
        progress=progress,
    )
    if ckpt is not None:
        states = ckpt.get("rng_per_rank") or [ckpt["rng"]]
        set_rng_state(states[runtime.rank] if runtime.rank < len(states) else states[0])
    saver = CheckpointSaver(state.run_dir, runtime)

    trackers = _open_trackers(ctx, state, resumed=ckpt is not None)

    def write_metrics(s: RunState) -> None:  # metrics.csv is the csv tracker's (rank 0 only)
        trackers.log_epoch(s.history[-1], len(s.history) * trackers.steps_per_epoch)

    for si, stage in enumerate(config.stages):
        first = state.first_epoch(si, config.stage_epochs(stage))
        if first is not None:
            train_stage(
                ctx, state, saver, si, first, progress=progress, on_epoch=write_metrics,
                trackers=trackers,
            )  # fmt: skip
    from skyclass.train.distributed import on_main

    summary = on_main(
        lambda: final_reports(ctx, state, saver, wall_start, progress, trackers), runtime
    )
    trackers.finish()
    return FitResult(
        run_dir=state.run_dir,
        best_checkpoint=saver.best,
        last_checkpoint=saver.last,
        best_val_accuracy=state.best_val_accuracy,
        history=tuple(state.history),
        summary=summary,
        rank=runtime.rank,
    )


def _open_trackers(ctx: TrainingContext, state: RunState, *, resumed: bool) -> Any:
    """The run's trackers (rank 0; none elsewhere), its config and tags logged; global step =
    epochs done x this rank's optimizer steps per epoch."""
    from skyclass.train.loaders import per_rank_items
    from skyclass.train.schedule import steps_per_epoch

    config, rt = ctx.config, ctx.runtime
    n_items = per_rank_items(len(ctx.train_src), rt)
    n_steps = steps_per_epoch(n_items, per_rank_batch(config, rt), config.max_steps)
    info = RunInfo(state.run_dir, config.name, resume=resumed, history=tuple(state.history),
                   start_step=len(state.history) * n_steps)  # fmt: skip
    trackers = open_trackers(config.log, info)
    trackers.steps_per_epoch = n_steps
    manifests = {"train": config.train, "val": config.val, "test": config.test}
    trackers.log_params(config.to_dict(), run_tags(manifests, str(rt.device)))
    return trackers


def final_reports(
    ctx: TrainingContext,
    state: RunState,
    saver: Any,
    wall_start: float,
    progress: bool,
    trackers: Any = None,
) -> dict[str, Any]:
    """Curves, then the best checkpoint through the evaluate chain on val and test, and
    summary.json (rank 0)."""
    from skyclass.outputs import write_text_atomic
    from skyclass.train.checkpoint import load_checkpoint
    from skyclass.train.evaluation import evaluate_to_reports
    from skyclass.train.reports import plot_curves
    from skyclass.train.reproducibility import run_environment

    config, run_dir = ctx.config, state.run_dir
    plot_curves(state.history, run_dir / "reports" / "curves.png")
    summary: dict[str, Any] = {
        "run": config.name,
        "best_val_accuracy": state.best_val_accuracy,
        "epochs": len(state.history),
        "stage_lrs": state.stage_lrs,
        "images_per_s": _stage_speeds(state.history),
        "wall_seconds_this_session": time.perf_counter() - wall_start,
        "feature_cache_seconds": ctx.feature_cache_seconds,
        **ctx.runtime.to_dict(),
        "environment": run_environment(config.workers),
    }
    eval_ckpt = load_checkpoint(saver.best)
    ctx.model.load_state_dict(eval_ckpt["model"])
    summary["best_epoch"] = eval_ckpt["epoch"]
    for split, manifest in (("val", ctx.data.val), ("test", ctx.data.test)):
        if manifest is None:
            continue
        m = evaluate_to_reports(
            ctx.model,
            manifest,
            names=ctx.names,
            pre=ctx.pre,
            out_dir=run_dir / "reports" / manifest.source.stem,
            title=f"{config.name} on {manifest.source.name}",
            batch_size=config.eval_batch_size,
            cache_dir=config.cache_dir,
            runtime=ctx.runtime,
            images=ctx.val_images if split == "val" else None,
            desc=split,
            progress=progress,
        )
        if trackers is not None:
            trackers.log_eval(split, run_dir / "reports" / manifest.source.stem)
        summary[f"{split}_accuracy"] = m["accuracy"]
        summary[f"{split}_recall"] = {c: v["recall"] for c, v in m["per_class"].items()}
    summary["wall_seconds_this_session"] = time.perf_counter() - wall_start
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _stage_speeds(history: list[dict[str, Any]]) -> dict[str, float]:
    speeds: dict[str, list[float]] = {}
    for row in history:
        speeds.setdefault(row["stage"], []).append(row["train_images_per_s"])
    return {k: sum(v) / len(v) for k, v in speeds.items()}
