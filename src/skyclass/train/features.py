"""The CPU fast path: the frozen prefix ``features[:block]`` run once on a few augmented views of
every training image (and once on validation); each epoch then draws one view per image.

With several processes each rank computes its share of the images and the shares are gathered, so
the cache is computed once per run, not once per rank.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from torch import nn

from skyclass.train.distributed import all_gather_rows
from skyclass.train.runtime import Runtime

log = logging.getLogger(__name__)


class ViewDataset:
    """Cached prefix features: ``views[v, i]`` is view v of item i; ``reseed`` picks, for each
    item, which view this epoch sees."""

    def __init__(self, views: Any, targets: list[int]) -> None:
        import torch

        self.views = views
        self.targets = list(targets)
        self.choice = torch.zeros(len(targets), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.views[self.choice[i], i], self.targets[i]

    def reseed(self, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.choice = torch.randint(self.views.shape[0], (len(self.targets),), generator=g)


def prefix_features(
    model: nn.Module,
    ds: Any,
    block: int,
    batch_size: int,
    desc: str,
    progress: bool,
    device: str = "cpu",
) -> Any:
    """Outputs of ``model.features[:block]`` (eval mode, no grad) for every item of ``ds``, on
    the CPU."""
    import torch
    from torch.utils.data import DataLoader

    from skyclass.model import feature_blocks
    from skyclass.progress import progress_bar

    model.eval()
    out = []
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for x, _ in progress_bar(loader, desc=desc, unit="batch", enabled=progress):
            out.append(feature_blocks(model)[:block](x.to(device)).cpu())
    return torch.cat(out)


def shared_prefix_features(
    model: nn.Module, ds: Any, block: int, batch_size: int, desc: str, progress: bool, rt: Runtime
) -> Any:
    """:func:`prefix_features` of every item, each rank computing items rank, rank + W, ...
    (the last shares padded with their own first item) and all ranks gathering all."""
    import torch
    from torch.utils.data import Subset

    if not rt.distributed:
        return prefix_features(model, ds, block, batch_size, desc, progress, rt.device)
    n, w = len(ds), rt.world_size
    per = -(-n // w)
    mine = list(range(rt.rank, n, w))
    mine += [mine[0]] * (per - len(mine))
    part = prefix_features(
        model, Subset(ds, mine), block, batch_size, desc, progress and rt.is_main, rt.device
    )
    parts = all_gather_rows(part.to(rt.device), rt)
    full = torch.empty((per * w, *part.shape[1:]), dtype=part.dtype)
    for r, p in enumerate(parts):
        full[r::w] = p.cpu()
    return full[:n]


def build_feature_cache(
    model: nn.Module,
    train_ds: Any,
    val_ds: Any,
    *,
    views: int,
    block: int,
    batch_size: int,
    view_seed: Any,
    progress: bool,
    rt: Runtime,
) -> tuple[ViewDataset, Any, float]:
    """(training views dataset, validation features, seconds); ``view_seed(v)`` seeds view v."""
    import torch

    t0 = time.perf_counter()
    stack = []
    for v in range(views):
        train_ds.reseed(view_seed(v) + rt.rank * 104_729)
        desc = f"cache view {v + 1}/{views}"
        stack.append(shared_prefix_features(model, train_ds, block, batch_size, desc, progress, rt))
    val_x = shared_prefix_features(model, val_ds, block, batch_size, "cache val", progress, rt)
    seconds = time.perf_counter() - t0
    log.info("prefix cache: %d views in %.0f s", views, seconds)
    return ViewDataset(torch.stack(stack), train_ds.targets), val_x, seconds
