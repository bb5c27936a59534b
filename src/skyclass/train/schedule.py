"""Stages of progressive unfreezing: optimizer and OneCycle schedule per stage."""

from __future__ import annotations

from typing import Any

from torch import nn

from skyclass.model import NUM_FEATURE_BLOCKS
from skyclass.train.config import StageConfig


def first_trainable_block(model: nn.Module) -> int:
    """Index of the first ``features`` block with a trainable parameter (19 if head only).

    Everything before it can run under ``torch.no_grad()``.
    """
    for i, block in enumerate(model.features):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return NUM_FEATURE_BLOCKS


def make_optimizer(model: nn.Module, stage: StageConfig, lr: float) -> Any:
    """AdamW over the trainable parameters; no weight decay on biases and BatchNorm."""
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": stage.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def make_scheduler(optimizer: Any, stage: StageConfig, max_lr: float, total_steps: int) -> Any:
    """OneCycle: warm up from max_lr/div_factor to max_lr over pct_start, then cosine-anneal."""
    import torch

    # Tiny runs (tests, --max-steps): keep both phases at least 1.5 steps long.
    total = max(total_steps, 4)
    pct = min(max(stage.pct_start, 1.5 / total), 1 - 1.5 / total)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total,
        pct_start=pct,
        div_factor=stage.div_factor,
        final_div_factor=stage.final_div_factor,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )


def steps_per_epoch(n_items: int, batch_size: int, max_steps: int | None) -> int:
    """Optimizer steps in an epoch (last partial batch dropped when there is more than one)."""
    steps = n_items // batch_size if n_items > batch_size else 1
    if max_steps is not None:
        steps = min(steps, max_steps)
    return max(steps, 1)
