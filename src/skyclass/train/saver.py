"""Checkpoints of a run: ``best.pt`` when validation improves, ``last.pt`` after every epoch
(timm's CheckpointSaver keeps the same two), written atomically by rank 0 while the others wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skyclass.train.checkpoint import rng_state, save_checkpoint
from skyclass.train.distributed import barrier, gather_objects
from skyclass.train.runtime import Runtime


class CheckpointSaver:
    def __init__(self, run_dir: Path, runtime: Runtime) -> None:
        self.folder = run_dir / "checkpoints"
        self.runtime = runtime

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    def save(self, payload: dict[str, Any], *, is_best: bool) -> None:
        """Write ``payload`` (plus every rank's RNG state) as last.pt, and as best.pt too when
        ``is_best``. Call on every rank: the RNG states are gathered from all of them."""
        states = gather_objects(rng_state(), self.runtime)
        if self.runtime.is_main:
            full = {**payload, "rng": states[0], "rng_per_rank": states}
            if is_best:
                save_checkpoint(self.best, full)
            save_checkpoint(self.last, full)
        barrier(self.runtime)
