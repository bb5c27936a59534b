"""One epoch of training and one pass of evaluation; both return metric dataclasses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from skyclass.model import NUM_FEATURE_BLOCKS, classifier_head, feature_blocks, train_mode
from skyclass.train.distributed import all_reduce_max, all_reduce_sum
from skyclass.train.runtime import Runtime


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


def forward(
    model: nn.Module,
    x: Any,
    first_trainable: int = 0,
    start_block: int = 0,
    tail: nn.Module | None = None,
) -> Any:
    """Log-probabilities of ``x``, the input of ``features[start_block]`` (0: the image).

    Blocks before ``first_trainable`` run without building a graph. ``tail`` (a DDP-wrapped
    :class:`~skyclass.train.distributed.Tail` of this stage) takes over after them.
    """
    import torch
    import torch.nn.functional as F

    if tail is None and first_trainable <= 0 and start_block == 0:
        return model(x)
    split = max(min(first_trainable, NUM_FEATURE_BLOCKS), start_block)
    h = x
    if split > start_block:
        with torch.no_grad():
            h = feature_blocks(model)[start_block:split](h)
    if tail is not None:
        return tail(h)
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


@dataclass(frozen=True)
class StepOptions:
    """How each training step computes: where, in which precision, through which wrapper."""

    first_trainable: int = 0
    start_block: int = 0
    channels_last: bool = False
    class_weights: Any | None = None
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    #: This stage's DDP-wrapped trainable tail (None with one process).
    tail: nn.Module | None = None
    runtime: Runtime = field(default_factory=Runtime)
    #: A GradScaler for fp16, None otherwise.
    scaler: Any | None = None


def _to_device(x: Any, y: Any, opts: StepOptions) -> tuple[Any, Any]:
    import torch

    if opts.runtime.device != "cpu":
        x = x.to(opts.runtime.device, non_blocking=True)
        y = y.to(opts.runtime.device, non_blocking=True)
    if opts.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def train_step(model: nn.Module, x: Any, y: Any, optimizer: Any, opts: StepOptions) -> tuple:
    """One optimizer step; returns (loss, log-probabilities, targets counted for accuracy)."""
    import torch

    if opts.mixup_alpha > 0:
        lam = float(torch.distributions.Beta(opts.mixup_alpha, opts.mixup_alpha).sample())
        perm = torch.randperm(x.shape[0]).to(x.device)
        x = lam * x + (1 - lam) * x[perm]
    weights = opts.class_weights
    with opts.runtime.amp.autocast():
        out = forward(model, x, opts.first_trainable, opts.start_block, opts.tail)
    out = out.float()
    loss = _loss(out, y, weights, opts.label_smoothing)
    if opts.mixup_alpha > 0:
        loss = lam * loss + (1 - lam) * _loss(out, y[perm], weights, opts.label_smoothing)
        if lam < 0.5:
            y = y[perm]
    optimizer.zero_grad(set_to_none=True)
    if opts.scaler is not None:
        opts.scaler.scale(loss).backward()
        opts.scaler.step(optimizer)
        opts.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss, out, y


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: Any,
    scheduler: Any | None,
    *,
    max_steps: int | None = None,
    desc: str = "train",
    progress: bool = True,
    options: StepOptions | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    **step: Any,
) -> EpochMetrics:
    """Train for one pass over ``loader`` (or ``max_steps`` batches); NLL loss on log-softmax.

    ``options`` (or its fields as keywords): ``class_weights`` (a float tensor, one weight per
    class) weights the loss, e.g. to give a small class the same total say as a large one.
    ``label_smoothing`` (eps) mixes the target with the uniform distribution: loss = (1 - eps) NLL
    + eps mean(-log p), a guard against wrong labels. ``mixup_alpha`` > 0 mixes each batch with a
    shuffled copy of itself, lam ~ Beta(a, a), and the loss with it (mixup; on cached prefix
    features it is manifold mixup at that block). Training accuracy is then counted against the
    dominant target. With several processes, loss and accuracy are summed over all ranks.
    ``on_step(step, loss, lr)`` is called after each optimizer step (1-based within the epoch;
    lr: the rate that step used; this process's loss).
    """
    opts = options if options is not None else StepOptions(**step)
    train_mode(model)
    class_weights = opts.class_weights
    if class_weights is not None and opts.runtime.device != "cpu":
        opts = replace(opts, class_weights=class_weights.to(opts.runtime.device))
    total = len(loader) if max_steps is None else min(len(loader), max_steps)  # type: ignore[arg-type]
    loss_sum, correct, n = 0.0, 0, 0
    start = time.perf_counter()
    bar = _progress(loader, total, desc, progress and opts.runtime.is_main, leave=True)
    for i, (x, y) in enumerate(bar):
        if i >= total:
            break
        x, y = _to_device(x, y, opts)
        loss, out, y = train_step(model, x, y, optimizer, opts)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(i + 1, float(loss.item()), float(lr))
        b = y.shape[0]
        loss_sum += loss.item() * b
        correct += int((out.argmax(1) == y).sum())
        n += b
        elapsed = time.perf_counter() - start
        bar.set_postfix(
            loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}", ips=f"{n / elapsed:.1f}"
        )
    seconds = time.perf_counter() - start
    loss_sum, correct_f, n_f = all_reduce_sum([loss_sum, correct, n], opts.runtime)
    correct, n = round(correct_f), round(n_f)
    seconds = all_reduce_max(seconds, opts.runtime)
    return EpochMetrics(
        loss=loss_sum / max(n, 1),
        accuracy=correct / max(n, 1),
        n=int(n),
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
    runtime: Runtime | None = None,
) -> EvalResult:
    """Eval-mode pass in this process (rank 0 evaluates alone): loss, accuracy, and per-item
    probabilities and losses. ``runtime`` gives the device and precision (default CPU, fp32)."""
    import torch
    import torch.nn.functional as F

    opts = StepOptions(channels_last=channels_last, runtime=runtime or Runtime())
    model.eval()
    targets, logps = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for x, y in _progress(loader, len(loader), desc, progress):  # type: ignore[arg-type]
            x, y = _to_device(x, y, opts)
            with opts.runtime.amp.autocast():
                out = forward(model, x, 0, start_block) if start_block else model(x)
            logps.append(out.float().cpu())
            targets.append(y.cpu())
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
