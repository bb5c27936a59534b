"""Which training photos an epoch draws: per-photo sampling weights.

Collected sets are lopsided inside a class as well as across classes: one source can hold half
of a class's photos (crop-sprayer photos are 43% of large_quadcopters here), and a model then
learns that source's look and convention for the class. ``source_balanced_weights`` evens the
sources of each class out without changing how often the class itself is drawn (class balance
stays the loss's job, ``class_weights``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np


def source_balanced_weights(
    labels: Sequence[str], sources: Sequence[str], power: float
) -> np.ndarray:
    """Weight of each photo: ``n(class, source) ** -power``, rescaled so that each class's
    weights sum to its photo count. ``power`` 0 = uniform (no change), 1 = every source of a
    class is drawn equally often, 0.5 = halfway on a log scale (a source 4x bigger is drawn 2x as
    often, not 4x)."""
    if len(labels) != len(sources):
        raise ValueError(f"{len(labels)} labels but {len(sources)} sources")
    if not 0 <= power <= 1:
        raise ValueError(f"power must be in [0, 1], got {power}")
    pair = Counter(zip(labels, sources, strict=True))
    raw = np.array([pair[(c, s)] ** -power for c, s in zip(labels, sources, strict=True)])
    out = np.empty(len(labels), dtype=np.float64)
    lab = np.asarray(labels, dtype=object)
    for c in set(labels):
        idx = np.flatnonzero(lab == c)
        out[idx] = raw[idx] * len(idx) / raw[idx].sum()
    return out


def epoch_draw(n: int, seed: int, weights: Sequence[float] | None = None) -> list[int]:
    """One epoch's order for one process: a seeded permutation of ``range(n)``, or, with
    ``weights``, ``n`` seeded draws with replacement. The same indices torch's RandomSampler and
    WeightedRandomSampler give with a generator seeded ``seed``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if weights is None:
        return torch.randperm(n, generator=g).tolist()
    w = torch.as_tensor(list(weights), dtype=torch.double)
    return torch.multinomial(w, n, True, generator=g).tolist()


def shard(sequence: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s part of one seeded sequence: positions rank, rank + W, rank + 2W, ...,
    after padding the sequence from its start to a multiple of W (every rank then runs the same
    number of batches, as torch's DistributedSampler does). Ranks' parts are disjoint positions of
    the same draw, and with a per-rank batch b, batch i of every rank together is the single
    process's batch i of size W x b."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    seq = list(sequence)
    pad = (-len(seq)) % world_size
    seq += (seq * (pad // max(len(seq), 1) + 1))[:pad]
    return seq[rank::world_size]


class ShardedDraw:
    """A torch Sampler over this rank's shard of the epoch's seeded draw (uniform or weighted).

    The sampler is built per epoch with that epoch's seed (what DistributedSampler.set_epoch
    does), so every epoch reshuffles and a resumed run draws what an uninterrupted one drew.
    With one process it yields exactly RandomSampler's / WeightedRandomSampler's order.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        weights: Sequence[float] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.indices = shard(epoch_draw(n, seed, weights), rank, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
