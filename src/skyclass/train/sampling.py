"""Which training photos an epoch draws: per-photo sampling weights.

Collected sets are lopsided inside a class as well as across classes: one source can hold half
of a class's photos (crop-sprayer photos are 43% of large_quadcopters here), and a model then
learns that source's look and convention for the class. ``source_balanced_weights`` evens the
sources of each class out without changing how often the class itself is drawn (class balance
stays the loss's job, ``class_weights``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

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
