"""A 2-rank launcher for tests (spawned processes, gloo on 127.0.0.1, a hard timeout), and the
functions the ranks run. Each rank sets the variables torchrun would set, runs one function of
this module, and leaves its result as a pickle; a rank that fails or hangs fails the test."""

from __future__ import annotations

import hashlib
import importlib
import multiprocessing as mp
import os
import pickle
import socket
import traceback
from pathlib import Path
from typing import Any

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn_name: str, rank: int, world: int, port: int, kwargs: dict, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        module, _, name = fn_name.rpartition(":")
        fn = getattr(importlib.import_module(module), name) if module else globals()[name]
        result: Any = {"ok": fn(rank, **kwargs)}
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    with open(out, "wb") as fh:
        pickle.dump(result, fh)


def launch(fn_name: str, tmp: Path, *, world: int = 2, timeout: float = 90, **kwargs: Any) -> list:
    """Run ``fn_name(rank, **kwargs)`` on ``world`` ranks; their results, in rank order. A rank's
    exception comes back as ``{"error": ...}``; a hang past ``timeout`` kills the ranks."""
    ctx = mp.get_context("spawn")
    port = free_port()
    outs = [tmp / f"{fn_name.replace(':', '.')}.rank{r}.pkl" for r in range(world)]
    procs = [
        ctx.Process(target=_entry, args=(fn_name, r, world, port, kwargs, str(outs[r])))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    assert not hung, f"ranks {hung} still running after {timeout} s"
    results = []
    for r, out in enumerate(outs):
        assert out.is_file(), f"rank {r} left no result (exit code {procs[r].exitcode})"
        results.append(pickle.loads(out.read_bytes()))
    return results


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---- what the ranks run ---------------------------------------------------------------------


def head_steps(rank: int, *, features: str, config: dict, epochs: int) -> dict:
    """Train the head on cached block-18 inputs, ``epochs`` epochs, through the real loader,
    DDP tail and loop; returns the head's weights and the schedule's end."""
    return train_head(features, config, epochs, distributed=True)


def train_head(features: str, config: dict, epochs: int, *, distributed: bool) -> dict:
    from skyclass.model import build_model, set_trainable
    from skyclass.train import loop
    from skyclass.train.config import config_from_dict
    from skyclass.train.distributed import split_block, wrap_tail
    from skyclass.train.features import ViewDataset
    from skyclass.train.fit import runtime_for
    from skyclass.train.loaders import per_rank_batch, per_rank_items, seed_for, train_loader
    from skyclass.train.runtime import Runtime, start, stop
    from skyclass.train.schedule import make_optimizer, make_scheduler, steps_per_epoch

    cfg = config_from_dict(config)
    rt = runtime_for(cfg) if distributed else Runtime(threads=1)
    created = start(rt, os.environ, 60)
    try:
        x, y = torch.load(features, weights_only=True)
        torch.manual_seed(0)
        model = build_model(int(y.max()) + 1, weights=None, dropout=0.0)
        set_trainable(model, [])
        tail = wrap_tail(model, split_block(19, 18), rt)
        ds = ViewDataset(x.unsqueeze(0), y.tolist())
        stage = cfg.stages[0]
        steps = steps_per_epoch(per_rank_items(len(ds), rt), per_rank_batch(cfg, rt), None)
        opt = make_optimizer(model, stage, stage.lr)
        sched = make_scheduler(opt, stage, stage.lr, epochs * steps)
        opts = loop.StepOptions(first_trainable=19, start_block=18, tail=tail, runtime=rt)
        losses = []
        for g in range(epochs):
            loader = train_loader(ds, cfg, seed_for(cfg, g), None, rt)
            m = loop.train_one_epoch(model, loader, opt, sched, options=opts, progress=False)
            losses.append(m.loss)
        return {
            "head": {k: v.clone() for k, v in model.classifier.state_dict().items()},
            "last_epoch": sched.last_epoch,
            "last_lr": sched.get_last_lr()[0],
            "total_steps": sched.total_steps,
            "steps_per_epoch": steps,
            "losses": losses,
        }
    finally:
        stop(created)


def fit_rank(
    rank: int, *, config: dict, resume: str | None = None, kill_at: int | None = None
) -> dict:
    """``fit`` on this rank, recording after every stage the weights' digest, whether frozen
    blocks' BatchNorm buffers still equal the ImageNet file's, and the stage rates; with
    ``kill_at``, the ``kill_at``-th epoch dies after one batch (a crash mid-epoch)."""
    from skyclass.train import loop, stages
    from skyclass.train.config import config_from_dict
    from skyclass.train.fit import fit

    cfg = config_from_dict(config)
    imagenet = torch.load(cfg.weights, map_location="cpu", weights_only=True)
    record: dict[str, Any] = {"stages": []}
    original_stage, original_epoch = stages.train_stage, loop.train_one_epoch
    calls = {"n": 0}

    def stage_then_record(ctx: Any, state: Any, saver: Any, si: int, first: int, **kw: Any):
        record.setdefault("rng_at_first_stage", torch.get_rng_state())
        original_stage(ctx, state, saver, si, first, **kw)
        model = ctx.model
        frozen = [
            k
            for k in imagenet
            if k.startswith("features.")
            and ("running_" in k)
            and int(k.split(".")[1]) < min(min(s.unfreeze, default=19) for s in cfg.stages)
        ]
        record["stages"].append(
            {
                "stage": cfg.stages[si].name,
                # Parameters: BatchNorm running statistics of unfrozen blocks are each rank's own
                # between DDP's broadcasts from rank 0 (at every forward); rank 0's are saved.
                "digest": digest(dict(model.named_parameters())),
                "frozen_bn_unchanged": bool(frozen)
                and all(torch.equal(model.state_dict()[k], imagenet[k]) for k in frozen),
                "stage_lrs": dict(state.stage_lrs),
            }
        )

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == kill_at:
            original_epoch(*args, **{**kwargs, "max_steps": 1})
            raise KeyboardInterrupt("killed mid-epoch")
        return original_epoch(*args, **kwargs)

    stages.train_stage = stage_then_record
    loop.train_one_epoch = dying
    try:
        result = fit(cfg, resume=resume, progress=False)
        record["summary"] = result.summary
        record["rank"] = result.rank
    except KeyboardInterrupt as exc:
        record["killed"] = str(exc)
    return record
