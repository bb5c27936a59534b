"""Timing helpers: interleaved repetitions and order statistics (medians, p95)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95, min, max and count of a list of samples."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "n": float(len(values)),
    }


def interleaved_ms(
    calls: Mapping[str, Callable[[], object]], reps: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Time each call ``reps`` times in milliseconds, in rounds (A, B, A, B, ...).

    Interleaving makes a burst of load from other processes hit every contender alike, so the
    ratio between them stays meaningful on a shared machine even when absolute times move.
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return samples


def ratio(peer: float, ours: float) -> float:
    """How many times ``ours`` beats ``peer`` (peer / ours); nan where undefined."""
    if not ours or math.isnan(ours) or math.isnan(peer):
        return math.nan
    return peer / ours
