"""One stage of progressive unfreezing (fastai's ``fine_tune`` step): unfreeze its blocks, wrap
the trainable tail for DDP, pick the rate (LR range test unless given), then OneCycle epochs, each
validated on rank 0 and checkpointed."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from skyclass.train import loop
from skyclass.train.context import TrainingContext
from skyclass.train.distributed import barrier, on_main, split_block, wrap_tail
from skyclass.train.loaders import per_rank_batch, per_rank_items, seed_for, train_loader
from skyclass.train.run_state import RunState
from skyclass.train.saver import CheckpointSaver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageParts:
    """What one stage trains with: step options (its DDP tail), optimizer, OneCycle, rate."""

    options: loop.StepOptions
    optimizer: Any
    scheduler: Any
    max_lr: float


def epochs_before(ctx: TrainingContext, stage_index: int) -> int:
    config = ctx.config
    return sum(config.stage_epochs(s) for s in config.stages[:stage_index])


def stage_rate(
    ctx: TrainingContext,
    state: RunState,
    stage_index: int,
    options: loop.StepOptions,
    progress: bool,
    trackers: Any = None,
) -> float:
    """The stage's max rate: from the resumed run, the config, or an LR range test (its curve
    written by rank 0; every rank gets the same suggestion, the loss being all-reduced)."""
    from skyclass.outputs import write_text_atomic
    from skyclass.train.lr_find import lr_find, plot_lr_find

    config, rt = ctx.config, ctx.runtime
    stage = config.stages[stage_index]
    if stage.name in state.stage_lrs:
        return state.stage_lrs[stage.name]
    if stage.lr is not None:
        state.stage_lrs[stage.name] = stage.lr
        return stage.lr
    seed = seed_for(config, epochs_before(ctx, stage_index), salt=17)
    res = lr_find(
        ctx.model,
        train_loader(ctx.train_src, config, seed, ctx.data.train_weights, rt),
        config=config.lr_find,
        stage=stage,
        first_trainable=options.first_trainable,
        start_block=ctx.start_block,
        num_iter=config.lr_find.num_iter,
        progress=progress,
        tail=options.tail,
        runtime=rt,
    )
    if rt.is_main:
        reports = state.run_dir / "reports"
        plot_lr_find(res, reports / f"lr_find_{stage.name}.png", f"stage {stage.name}")
        text = json.dumps(res.to_dict(), indent=1) + "\n"
        write_text_atomic(reports / f"lr_find_{stage.name}.json", text)
        if trackers is not None:
            trackers.log_lr_find(stage.name, res, reports / f"lr_find_{stage.name}.png")
    barrier(rt)
    state.stage_lrs[stage.name] = res.suggestion
    return res.suggestion


def checkpoint_payload(
    ctx: TrainingContext,
    state: RunState,
    stage_index: int,
    stage_epoch: int,
    parts: StageParts,
    row: dict[str, Any],
) -> dict[str, Any]:
    """What a checkpoint holds after an epoch whose metrics are ``row``."""
    config = ctx.config
    payload = {
        "model": ctx.model.state_dict(),
        "class_names": ctx.names,
        "preprocess": ctx.pre.to_dict(),
        "dropout": config.dropout,
        "arch": "mobilenet_v2",
        "epoch": epochs_before(ctx, stage_index) + stage_epoch,
        "stage": config.stages[stage_index].name,
        "stage_index": stage_index,
        "stage_epoch": stage_epoch,
        "config": config.to_dict(),
        "runtime": ctx.runtime.to_dict(),
        "data": {
            "root": str(config.data_root),
            "train": str(config.train),
            "val": str(config.val),
            "test": str(config.test) if config.test else None,
        },
        "metrics": row,
        "best_val_accuracy": state.best_val_accuracy,
        "history": state.history,
        "stage_lrs": state.stage_lrs,
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
    }
    if parts.options.scaler is not None:
        payload["scaler"] = parts.options.scaler.state_dict()
    return payload


def validate(ctx: TrainingContext, progress: bool) -> tuple[float, float, float, float]:
    """(loss, accuracy, images/s, seconds) on the validation set, computed by rank 0 alone and
    shared with every rank."""

    def run() -> tuple[float, float, float, float]:
        vm = loop.evaluate(
            ctx.model,
            ctx.val_loader,
            start_block=ctx.start_block,
            channels_last=ctx.config.channels_last,
            desc="val",
            progress=progress,
            runtime=ctx.runtime,
        )
        return vm.loss, vm.accuracy, vm.images_per_s, vm.seconds

    return on_main(run, ctx.runtime)


def run_epoch(
    ctx: TrainingContext,
    state: RunState,
    stage_index: int,
    epoch: int,
    parts: StageParts,
    progress: bool,
    trackers: Any = None,
) -> dict[str, Any]:
    """Train one epoch (this rank's shard of the seeded draw), validate, and record the row."""
    config = ctx.config
    stage = config.stages[stage_index]
    g = epochs_before(ctx, stage_index) + epoch
    loader = train_loader(
        ctx.train_src, config, seed_for(config, g), ctx.data.train_weights, ctx.runtime
    )
    desc = f"{stage.name} {epoch + 1}/{config.stage_epochs(stage)}"
    tm = loop.train_one_epoch(
        ctx.model,
        loader,
        parts.optimizer,
        parts.scheduler,
        max_steps=config.max_steps,
        desc=desc,
        progress=progress,
        options=parts.options,
        on_step=trackers.step_logger(g * trackers.steps_per_epoch) if trackers else None,
    )
    val_loss, val_acc, val_ips, val_seconds = validate(ctx, progress)
    row = {
        "epoch": g + 1,
        "stage": stage.name,
        "stage_epoch": epoch + 1,
        "max_lr": parts.max_lr,
        "train_loss": tm.loss,
        "train_accuracy": tm.accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "train_images_per_s": tm.images_per_s,
        "val_images_per_s": val_ips,
        "seconds": tm.seconds + val_seconds,
    }
    state.history.append(row)
    log.info(
        "epoch %d (%s): train loss %.3f acc %.3f | val loss %.3f acc %.3f | %.1f img/s",
        g + 1, desc, tm.loss, tm.accuracy, val_loss, val_acc, tm.images_per_s,
    )  # fmt: skip
    return row


def stage_parts(
    ctx: TrainingContext, state: RunState, stage_index: int, progress: bool, trackers: Any = None
) -> StageParts:
    """Unfreeze the stage's blocks, wrap the new trainable tail, and build its rate, optimizer,
    OneCycle (epochs x this rank's batches) and scaler, continued from a resumed checkpoint."""
    from skyclass.model import set_trainable
    from skyclass.train.schedule import (
        first_trainable_block,
        make_optimizer,
        make_scheduler,
        steps_per_epoch,
    )

    config, rt, model = ctx.config, ctx.runtime, ctx.model
    stage = config.stages[stage_index]
    set_trainable(model, stage.unfreeze)
    k = first_trainable_block(model)
    options = loop.StepOptions(
        first_trainable=k,
        start_block=ctx.start_block,
        channels_last=config.channels_last,
        class_weights=ctx.class_weights,
        label_smoothing=config.label_smoothing,
        mixup_alpha=config.mixup_alpha,
        tail=wrap_tail(model, split_block(k, ctx.start_block), rt),
        runtime=rt,
        scaler=rt.amp.scaler(),
    )
    max_lr = stage_rate(ctx, state, stage_index, options, progress, trackers)
    n_items = per_rank_items(len(ctx.train_src), rt)
    n_steps = steps_per_epoch(n_items, per_rank_batch(config, rt), config.max_steps)
    optimizer = make_optimizer(model, stage, max_lr)
    scheduler = make_scheduler(optimizer, stage, max_lr, config.stage_epochs(stage) * n_steps)
    if state.resumes_inside(stage_index):
        assert state.resumed is not None
        optimizer.load_state_dict(state.resumed["optimizer"])
        scheduler.load_state_dict(state.resumed["scheduler"])
        if options.scaler is not None and "scaler" in state.resumed:
            options.scaler.load_state_dict(state.resumed["scaler"])
    log.info(
        "stage %s: blocks %s, %d epochs, max lr %.2e",
        stage.name, stage.unfreeze, config.stage_epochs(stage), max_lr,
    )  # fmt: skip
    if trackers is not None:
        trackers.log_stage(
            stage.name, index=stage_index, blocks=list(stage.unfreeze),
            epochs=config.stage_epochs(stage), max_lr=max_lr,
        )  # fmt: skip
    return StageParts(options=options, optimizer=optimizer, scheduler=scheduler, max_lr=max_lr)


def train_stage(
    ctx: TrainingContext,
    state: RunState,
    saver: CheckpointSaver,
    stage_index: int,
    first_epoch: int,
    *,
    progress: bool,
    on_epoch: Any = None,
    trackers: Any = None,
) -> None:
    """Epochs ``first_epoch``.. of a stage; best.pt when validation improves, last.pt always."""
    parts = stage_parts(ctx, state, stage_index, progress, trackers)
    for ep in range(first_epoch, ctx.config.stage_epochs(ctx.config.stages[stage_index])):
        row = run_epoch(ctx, state, stage_index, ep, parts, progress, trackers)
        is_best = row["val_accuracy"] > state.best_val_accuracy
        if is_best:
            state.best_val_accuracy = row["val_accuracy"]
        payload = checkpoint_payload(ctx, state, stage_index, ep + 1, parts, row)
        saver.save(payload, is_best=is_best)
        if on_epoch is not None:
            on_epoch(state)
