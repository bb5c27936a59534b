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
from skyclass.train.loop import forward
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
) -> LRFindResult:
    """Sweep the rate exponentially over ``num_iter`` batches; stop when the smoothed loss
    exceeds ``diverge`` x its best. Model weights and buffers are restored at the end."""
    import torch.nn.functional as F

    from skyclass.progress import progress_bar

    n = num_iter or config.num_iter
    saved = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(model, stage, config.start_lr)
    ratio = config.end_lr / config.start_lr
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    diverged = False
    train_mode(model)
    batches = _cycle(loader)
    try:
        for i in progress_bar(range(n), desc=f"lr-find {stage.name}", enabled=progress):
            lr = config.start_lr * ratio ** (i / max(n - 1, 1))
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = next(batches)
            out = forward(model, x, first_trainable, start_block)
            loss = F.nll_loss(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.item())
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
