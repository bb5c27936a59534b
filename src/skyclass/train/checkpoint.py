"""Checkpoints: atomic save (temp file + os.replace), RNG capture and restore.

Exact resume rests on every epoch reseeding torch, the augmentations and the sampler from ``seed``,
the rank and the global epoch number; the restored RNG states cover only what is drawn outside an
epoch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python RNG states as tensors, ints and strings only, so that a
    checkpoint holding them loads with ``torch.load(weights_only=True)``."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save to a temp file beside ``path``, fsync, then os.replace: never half written."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint, loaded without running code (see :func:`skyclass.model.load_checkpoint`)."""
    from skyclass.model import load_checkpoint as safe_load

    return safe_load(path)
