"""Learning-rate range test (Smith 2015, fastai's lr_find): exponential sweep, smoothed loss.

The model and its BatchNorm statistics are restored afterwards: the sweep only measures.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from skyclass.model import train_mode
from skyclass.train.config import LRFindConfig, StageConfig
from skyclass.train.distributed import all_reduce_sum
from skyclass.train.loop import forward
from skyclass.train.runtime import Runtime
from skyclass.train.schedule import make_optimizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LRFindResult:
    """The curve and the suggestions; ``suggestion`` is the one ``method`` picks."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float
    method: str
    min_loss_lr: float
    steepest_lr: float
    diverged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggestion": self.suggestion,
            "method": self.method,
            "min_loss_lr": self.min_loss_lr,
            "steepest_lr": self.steepest_lr,
            "diverged": self.diverged,
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "smoothed": list(self.smoothed),
        }


def _cycle(loader: Iterable) -> Iterator:
    while True:
        yield from loader


def suggest(
    lrs: np.ndarray, smoothed: np.ndarray, method: str = "min10"
) -> tuple[float, float, float]:
    """(suggestion, min_loss_lr / 10 source, steepest_lr) from a smoothed curve."""
    # Ignore the very start (EMA warm-up) and the last point (often the divergence).
    lo = min(len(lrs) - 1, max(1, len(lrs) // 10))
    hi = max(lo + 1, len(lrs) - 1)
    window = slice(lo, hi)
    i_min = lo + int(np.argmin(smoothed[window]))
    min_loss_lr = float(lrs[i_min])
    if hi - lo >= 3:
        grad = np.gradient(smoothed[window], np.log(lrs[window]))
        steepest_lr = float(lrs[lo + int(np.argmin(grad))])
    else:
        steepest_lr = min_loss_lr / 10
    # A model that already fits its data (a later unfreezing stage) gives a flat, noisy curve whose
    # minimum falls among the first, tiny rates; a tenth of that trains nothing. When the minimum
    # sits in the first quarter of the sweep, the curve has no descent to read: take the steepest.
    flat = i_min < lo + (hi - lo) // 4
    suggestion = min_loss_lr / 10 if method == "min10" and not flat else steepest_lr
    return suggestion, min_loss_lr, steepest_lr


def lr_find(
    model: nn.Module,
    loader: Iterable,
    *,
    config: LRFindConfig,
    stage: StageConfig,
    first_trainable: int = 0,
    start_block: int = 0,
    num_iter: int | None = None,
    progress: bool = True,
    tail: nn.Module | None = None,
    runtime: Runtime | None = None,
) -> LRFindResult:
    """Sweep the rate exponentially over ``num_iter`` batches; stop when the smoothed loss
    exceeds ``diverge`` x its best. Model weights and buffers are restored at the end.

    With several processes (``tail`` wrapped in DDP), each step's loss is averaged over the ranks
    before it is read, so every rank sees the same curve, stops at the same step and suggests the
    same rate."""
    import torch.nn.functional as F

    from skyclass.progress import progress_bar

    n = num_iter or config.num_iter
    saved = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(model, stage, config.start_lr)
    ratio = config.end_lr / config.start_lr
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    diverged = False
    rt = runtime or Runtime()
    train_mode(model)
    batches = _cycle(loader)
    quiet = not (progress and rt.is_main)
    bar = progress_bar(range(n), desc=f"lr-find {stage.name}", enabled=not quiet)
    try:
        for i in bar:
            lr = config.start_lr * ratio ** (i / max(n - 1, 1))
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = next(batches)
            if rt.device != "cpu":
                x, y = x.to(rt.device), y.to(rt.device)
            with rt.amp.autocast():
                out = forward(model, x, first_trainable, start_block, tail)
            loss = F.nll_loss(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = all_reduce_sum([loss.item()], rt)[0] / rt.world_size
            if not math.isfinite(value):
                diverged = True
                break
            avg = config.smooth * avg + (1 - config.smooth) * value
            s = avg / (1 - config.smooth ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(s)
            best = min(best, s)
            if i > 2 and s > config.diverge * best:
                diverged = True
                break
    finally:
        model.load_state_dict(saved)
    if len(lrs) < 2:
        raise RuntimeError("lr_find: the loss diverged at once; lower start_lr")
    sug, min_lr, steep = suggest(np.array(lrs), np.array(smoothed), config.suggest)
    log.info("lr_find %s: suggestion %.2e (%s)", stage.name, sug, config.suggest)
    return LRFindResult(
        lrs=tuple(lrs),
        losses=tuple(losses),
        smoothed=tuple(smoothed),
        suggestion=sug,
        method=config.suggest,
        min_loss_lr=min_lr,
        steepest_lr=steep,
        diverged=diverged,
    )


def plot_lr_find(result: LRFindResult, path: str | Path, title: str = "LR range test") -> Path:
    """Write the loss-vs-rate curve (log x) with the suggestion marked, as PNG."""
    from skyclass.reporting.figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed")
    ax.axvline(result.suggestion, color="C3", ls="--", label=f"suggestion {result.suggestion:.1e}")
    ax.axvline(result.steepest_lr, color="C2", ls=":", label=f"steepest {result.steepest_lr:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, Path(path))


def run_lr_find(
    config: Any,
    stage: StageConfig,
    *,
    checkpoint: Path | None,
    num_iter: int | None,
    png: Path,
    progress: bool = True,
) -> LRFindResult:
    """The ``lr-find`` command: the run's training context (live pipeline, no validation), the
    stage's blocks unfrozen, one sweep; rank 0 writes the curve as PNG and JSON."""
    import json
    import os

    from skyclass.data.dataset import DataError
    from skyclass.model import load_checkpoint, set_trainable
    from skyclass.outputs import write_text_atomic
    from skyclass.train.context import build_context
    from skyclass.train.distributed import barrier, split_block, wrap_tail
    from skyclass.train.fit import runtime_for
    from skyclass.train.loaders import train_loader
    from skyclass.train.runtime import start, stop
    from skyclass.train.schedule import first_trainable_block

    rt = runtime_for(config)
    state = None
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        if "model" not in ckpt:
            raise DataError(f"{checkpoint} is not a skyclass checkpoint (no 'model' state)")
        state = ckpt["model"]
    created = start(rt, os.environ, config.dist_timeout_s, config.seed)
    try:
        ctx = build_context(
            config, rt, model_state=state, with_val=False, feature_cache=False, progress=progress
        )
        set_trainable(ctx.model, stage.unfreeze)
        k = first_trainable_block(ctx.model)
        result = lr_find(
            ctx.model,
            train_loader(ctx.train_src, config, config.seed, ctx.data.train_weights, rt),
            config=config.lr_find,
            stage=stage,
            first_trainable=k,
            num_iter=num_iter or config.lr_find.num_iter,
            progress=progress,
            tail=wrap_tail(ctx.model, split_block(k, 0), rt),
            runtime=rt,
        )
        if rt.is_main:
            plot_lr_find(result, png, f"stage {stage.name}")
            text = json.dumps(result.to_dict(), indent=1) + "\n"
            write_text_atomic(png.with_suffix(".json"), text)
        barrier(rt)
    finally:
        stop(created)
    return result
