"""One epoch of training and one pass of evaluation; both return metric dataclasses."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from skyclass.model import NUM_FEATURE_BLOCKS, classifier_head, feature_blocks, train_mode


@dataclass(frozen=True)
class EpochMetrics:
    loss: float
    accuracy: float
    n: int
    seconds: float
    images_per_s: float


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    n: int
    seconds: float
    images_per_s: float
    targets: np.ndarray
    probs: np.ndarray
    losses: np.ndarray


def forward(model: nn.Module, x: Any, first_trainable: int = 0, start_block: int = 0) -> Any:
    """Log-probabilities of ``x``, the input of ``features[start_block]`` (0: the image).

    Blocks before ``first_trainable`` run without building a graph.
    """
    import torch
    import torch.nn.functional as F

    if first_trainable <= 0 and start_block == 0:
        return model(x)
    split = max(min(first_trainable, NUM_FEATURE_BLOCKS), start_block)
    h = x
    if split > start_block:
        with torch.no_grad():
            h = feature_blocks(model)[start_block:split](h)
    if split < NUM_FEATURE_BLOCKS:
        h = feature_blocks(model)[split:](h)
    h = torch.flatten(F.adaptive_avg_pool2d(h, (1, 1)), 1)
    return classifier_head(model)(h)


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool, leave: bool = False) -> Any:
    from skyclass.progress import progress_bar

    return progress_bar(
        iterable, total=total, desc=desc, unit="batch", enabled=enabled, leave=leave
    )


def _loss(out: Any, y: Any, class_weights: Any | None, label_smoothing: float) -> Any:
    """NLL on log-probabilities, optionally class-weighted and label-smoothed."""
    import torch.nn.functional as F

    loss = F.nll_loss(out, y, weight=class_weights)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * out.mean(dim=1).mean()
    return loss


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: Any,
    scheduler: Any | None,
    *,
    first_trainable: int = 0,
    start_block: int = 0,
    max_steps: int | None = None,
    channels_last: bool = False,
    class_weights: Any | None = None,
    label_smoothing: float = 0.0,
    mixup_alpha: float = 0.0,
    desc: str = "train",
    progress: bool = True,
) -> EpochMetrics:
    """Train for one pass over ``loader`` (or ``max_steps`` batches); NLL loss on log-softmax.

    ``class_weights`` (a float tensor, one weight per class) weights the loss, e.g. to give a
    small class the same total say as a large one. ``label_smoothing`` (eps) mixes the target with
    the uniform distribution: loss = (1 - eps) NLL + eps mean(-log p), a guard against wrong labels.
    ``mixup_alpha`` > 0 mixes each batch with a shuffled copy of itself, lam ~ Beta(a, a), and the
    loss with it (mixup; on cached prefix features it is manifold mixup at that block). Training
    accuracy is then counted against the dominant target.
    """
    import torch

    train_mode(model)
    total = len(loader) if max_steps is None else min(len(loader), max_steps)  # type: ignore[arg-type]
    loss_sum, correct, n = 0.0, 0, 0
    start = time.perf_counter()
    bar = _progress(loader, total, desc, progress, leave=True)
    for step, (x, y) in enumerate(bar):
        if step >= total:
            break
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if mixup_alpha > 0:
            lam = float(torch.distributions.Beta(mixup_alpha, mixup_alpha).sample())
            perm = torch.randperm(x.shape[0])
            x = lam * x + (1 - lam) * x[perm]
        out = forward(model, x, first_trainable, start_block)
        loss = _loss(out, y, class_weights, label_smoothing)
        if mixup_alpha > 0:
            loss = lam * loss + (1 - lam) * _loss(out, y[perm], class_weights, label_smoothing)
            if lam < 0.5:
                y = y[perm]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        b = y.shape[0]
        loss_sum += loss.item() * b
        correct += int((out.argmax(1) == y).sum())
        n += b
        elapsed = time.perf_counter() - start
        bar.set_postfix(
            loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}", ips=f"{n / elapsed:.1f}"
        )
    seconds = time.perf_counter() - start
    return EpochMetrics(
        loss=loss_sum / max(n, 1),
        accuracy=correct / max(n, 1),
        n=n,
        seconds=seconds,
        images_per_s=n / seconds if seconds > 0 else 0.0,
    )


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    start_block: int = 0,
    channels_last: bool = False,
    desc: str = "eval",
    progress: bool = True,
) -> EvalResult:
    """Eval-mode pass: loss, accuracy, and per-item probabilities and losses."""
    import torch
    import torch.nn.functional as F

    model.eval()
    targets, logps = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for x, y in _progress(loader, len(loader), desc, progress):  # type: ignore[arg-type]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logps.append(forward(model, x, 0, start_block) if start_block else model(x))
            targets.append(y)
    seconds = time.perf_counter() - start
    logp = torch.cat(logps) if logps else torch.empty(0, 0)
    t = torch.cat(targets) if targets else torch.empty(0, dtype=torch.long)
    losses = F.nll_loss(logp, t, reduction="none") if len(t) else torch.empty(0)
    n = len(t)
    return EvalResult(
        loss=float(losses.mean()) if n else float("nan"),
        accuracy=float((logp.argmax(1) == t).float().mean()) if n else float("nan"),
        n=n,
        seconds=seconds,
        images_per_s=n / seconds if seconds > 0 else 0.0,
        targets=t.numpy(),
        probs=logp.exp().numpy(),
        losses=losses.numpy(),
    )
