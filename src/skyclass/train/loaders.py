"""Seeded loaders: one epoch's training draw (this rank's shard of it) and evaluation batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from skyclass.train.config import TrainConfig
from skyclass.train.runtime import Runtime
from skyclass.train.sampling import ShardedDraw


def seed_for(config: TrainConfig, global_epoch: int, salt: int = 0) -> int:
    """The seed of one epoch (or of one sweep, with a salt): from the config's seed only."""
    return (config.seed * 1_000_003 + global_epoch * 7_919 + salt) % (2**31)


def per_rank_batch(config: TrainConfig, runtime: Runtime) -> int:
    """Each rank's batch: the config's batch is the global one, split over the processes."""
    if config.batch_size % runtime.world_size:
        from skyclass.train.config import ConfigError

        raise ConfigError(
            f"batch_size {config.batch_size} does not split over {runtime.world_size} processes; "
            "the config's batch is the global batch: make it a multiple of the process count"
        )
    return config.batch_size // runtime.world_size


def per_rank_items(n_items: int, runtime: Runtime) -> int:
    """Items each rank sees per epoch (the draw padded to a multiple of the world size)."""
    return -(-n_items // runtime.world_size)


def train_loader(
    ds: Any,
    config: TrainConfig,
    seed: int,
    weights: Sequence[float] | None = None,
    runtime: Runtime | None = None,
) -> Any:
    """One epoch's loader: this rank's shard of every photo once in a seeded order, or, with
    ``weights``, of len(ds) seeded draws with replacement. Each rank reseeds torch (dropout,
    mixup) and the augmentation with its own offset, the sampler with the shared seed."""
    import torch
    from torch.utils.data import DataLoader

    rt = runtime or Runtime()
    own = seed + rt.rank * 104_729
    torch.manual_seed(own)
    ds.reseed(own)
    sampler = ShardedDraw(
        len(ds), seed=seed, weights=weights, rank=rt.rank, world_size=rt.world_size
    )
    batch = per_rank_batch(config, rt)

    def init_worker(worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            cast(Any, info.dataset).reseed(own + 1 + worker_id)

    return DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,
        drop_last=len(sampler) > batch,
        num_workers=config.workers,
        worker_init_fn=init_worker if config.workers > 0 else None,
        pin_memory=rt.device.startswith("cuda"),
    )


def eval_loader(ds: Any, batch_size: int, runtime: Runtime | None = None) -> Any:
    from torch.utils.data import DataLoader

    cuda = runtime is not None and runtime.device.startswith("cuda")
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=cuda)
