"""Collectives and the DDP wrap, each a no-op with one process.

Progressive unfreezing meets DDP here: DDP registers its gradient hooks, when it is built, for the
parameters that need a gradient then. So each stage wraps a new :class:`Tail` (the trainable blocks
from the first unfrozen one on, pooling and the head); the frozen prefix runs under ``no_grad``
outside DDP, and nothing calls a submodule of the wrapped tail directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from skyclass.model import NUM_FEATURE_BLOCKS, classifier_head, feature_blocks
from skyclass.train.device import device_type
from skyclass.train.runtime import Runtime


class Tail(nn.Module):
    """``features[split:]`` -> global average pool -> classifier, sharing the model's modules."""

    def __init__(self, model: nn.Module, split: int) -> None:
        super().__init__()
        self.split = split
        self.blocks = feature_blocks(model)[split:]
        self.classifier = classifier_head(model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if self.split < NUM_FEATURE_BLOCKS:
            h = self.blocks(h)
        h = torch.flatten(F.adaptive_avg_pool2d(h, (1, 1)), 1)
        return self.classifier(h)


def split_block(first_trainable: int, start_block: int) -> int:
    """Where the frozen prefix ends: the input of the first trainable block (or the cache's)."""
    return max(min(first_trainable, NUM_FEATURE_BLOCKS), start_block)


def wrap_tail(model: nn.Module, split: int, runtime: Runtime) -> nn.Module | None:
    """A DDP over this stage's :class:`Tail` (None with one process: the plain forward is used).

    Call after ``set_trainable`` for the stage, on every rank; the wrap broadcasts rank 0's
    parameters and buffers, so ranks start each stage identical.
    """
    if not runtime.distributed:
        return None
    from torch.nn.parallel import DistributedDataParallel as DDP

    tail: nn.Module = Tail(model, split)
    if runtime.sync_bn:
        tail = nn.SyncBatchNorm.convert_sync_batchnorm(tail)
    ids = [torch.device(runtime.device).index] if device_type(runtime.device) == "cuda" else None
    return DDP(tail, device_ids=ids)


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        _dist().barrier()


def all_reduce_sum(values: Sequence[float], runtime: Runtime) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if not runtime.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=runtime.device)
    _dist().all_reduce(t)
    return [float(v) for v in t.cpu().tolist()]


def all_reduce_max(value: float, runtime: Runtime) -> float:
    if not runtime.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
    return float(t.item())


def broadcast_object(obj: Any, runtime: Runtime) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not runtime.distributed:
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, runtime: Runtime) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not runtime.distributed:
        return [obj]
    out: list[Any] = [None] * runtime.world_size
    _dist().all_gather_object(out, obj)
    return out


def all_gather_rows(t: torch.Tensor, runtime: Runtime) -> list[torch.Tensor]:
    """Every rank's tensor (same shape on all), in rank order."""
    if not runtime.distributed:
        return [t]
    out = [torch.empty_like(t) for _ in range(runtime.world_size)]
    _dist().all_gather(out, t.contiguous())
    return out


def on_main(fn: Callable[[], Any], runtime: Runtime) -> Any:
    """``fn()`` on rank 0 only; every rank returns its result, or raises its error, so a refusal
    on rank 0 (an existing run dir) stops all ranks instead of leaving them at a barrier."""
    if not runtime.distributed:
        return fn()
    result: Any = None
    error: BaseException | None = None
    if runtime.is_main:
        try:
            result = fn()
        except Exception as exc:
            error = exc
    result, shared_error = broadcast_object((result, error), runtime)
    if error is not None:
        raise error
    if shared_error is not None:
        raise shared_error
    return result
