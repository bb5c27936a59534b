"""Who this process is and what it trains on: rank and world (torchrun or SLURM), device, precision,
threads; and the process group's start and end.

``resolve_runtime`` is pure (environment and accelerators in, :class:`Runtime` out) so that every
rule, CUDA's included, is tested on a CPU machine; ``start`` is where torch.distributed begins.
As in timm, torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) come first, then
SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) when a job step runs several tasks; the
rendezvous is then MASTER_ADDR:MASTER_PORT, which the batch script sets.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from skyclass.train.device import (
    Accelerators,
    DeviceError,
    Precision,
    backend_for,
    device_type,
    resolve_device,
    resolve_precision,
    threads_per_process,
)

log = logging.getLogger(__name__)


class DistError(DeviceError):
    """A process group that cannot start (bad variables, unreachable rendezvous); one line."""


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launcher: str = "none"


def _int(environ: Mapping[str, str], key: str, default: int) -> int:
    text = environ.get(key, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise DistError(f"{key}={text!r} is not an integer") from None


def _slurm_tasks_per_node(environ: Mapping[str, str], world: int) -> int:
    """SLURM_NTASKS_PER_NODE, else the first count of SLURM_TASKS_PER_NODE ("2(x3),1" -> 2)."""
    if environ.get("SLURM_NTASKS_PER_NODE", "").strip():
        return _int(environ, "SLURM_NTASKS_PER_NODE", 1)
    match = re.match(r"\s*(\d+)", environ.get("SLURM_TASKS_PER_NODE", ""))
    return int(match.group(1)) if match else world


def dist_env(environ: Mapping[str, str]) -> DistEnv:
    """Rank and world of this process from torchrun's variables, else SLURM's, else one process."""
    if "WORLD_SIZE" in environ or "RANK" in environ:
        world = _int(environ, "WORLD_SIZE", 1)
        env = DistEnv(
            rank=_int(environ, "RANK", 0),
            world_size=world,
            local_rank=_int(environ, "LOCAL_RANK", 0),
            local_world_size=_int(environ, "LOCAL_WORLD_SIZE", world),
            launcher="torchrun",
        )
    elif "SLURM_PROCID" in environ and _int(environ, "SLURM_NTASKS", 1) > 1:
        world = _int(environ, "SLURM_NTASKS", 1)
        env = DistEnv(
            rank=_int(environ, "SLURM_PROCID", 0),
            world_size=world,
            local_rank=_int(environ, "SLURM_LOCALID", 0),
            local_world_size=_slurm_tasks_per_node(environ, world),
            launcher="slurm",
        )
    else:
        return DistEnv()
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise DistError(f"rank {env.rank} outside world size {env.world_size}")
    if env.world_size > 1 and not (environ.get("MASTER_ADDR") and environ.get("MASTER_PORT")):
        raise DistError(
            f"{env.world_size} processes ({env.launcher}) but MASTER_ADDR/MASTER_PORT are not "
            "set: launch with torchrun, or export them in the batch script (see the README)"
        )
    return env


@dataclass(frozen=True)
class Runtime:
    """This process's place in the run and what it computes on."""

    device: str = "cpu"
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    threads: int = 1
    sync_bn: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def amp(self) -> Precision:
        return Precision(name=self.precision, device=self.device)

    def to_dict(self) -> dict[str, Any]:
        """What the run's JSON records carry (the same on every rank)."""
        return {
            "world_size": self.world_size,
            "device": device_type(self.device),
            "precision": self.precision,
            "backend": self.backend,
            "threads_per_process": self.threads,
            "sync_bn": self.sync_bn,
        }


def resolve_runtime(
    *,
    device: str,
    precision: str,
    threads: int | None,
    sync_bn: bool,
    environ: Mapping[str, str],
    acc: Accelerators,
) -> Runtime:
    """Every check that can refuse a run, before anything is written or connected."""
    env = dist_env(environ)
    dev = resolve_device(device, acc, env.local_rank)
    kind = device_type(dev)
    if env.world_size > 1:
        if kind == "mps":
            raise DeviceError(f"MPS runs one training process only ({env.world_size} launched)")
        if kind == "cuda" and env.local_world_size > acc.cuda_count:
            raise DeviceError(
                f"{env.local_world_size} processes on this machine but CUDA sees "
                f"{acc.cuda_count} GPU(s); one process per GPU"
            )
    if sync_bn and kind != "cuda":
        raise DeviceError("sync_bn needs CUDA (SyncBatchNorm runs on GPUs with nccl); turn it off")
    return Runtime(
        device=dev,
        precision=resolve_precision(precision, dev, acc),
        rank=env.rank,
        world_size=env.world_size,
        local_rank=env.local_rank,
        local_world_size=env.local_world_size,
        backend=backend_for(dev) if env.world_size > 1 else None,
        threads=threads_per_process(threads, env.local_world_size),
        sync_bn=sync_bn and env.world_size > 1,
    )


def start(runtime: Runtime, environ: Mapping[str, str], timeout_s: float, seed: int = 0) -> bool:
    """Set threads and device; join the process group (bounded by ``timeout_s``) when there is
    more than one process and none is joined yet. True when this call created the group."""
    import torch
    import torch.distributed as dist

    from skyclass.train.reproducibility import make_deterministic

    make_deterministic(seed, runtime.threads, device_type(runtime.device))
    if device_type(runtime.device) == "cuda":
        torch.cuda.set_device(torch.device(runtime.device))
    if not runtime.distributed or dist.is_initialized():
        return False
    where = f"{environ.get('MASTER_ADDR')}:{environ.get('MASTER_PORT')}"
    if runtime.rank != 0:
        port = int(environ.get("MASTER_PORT", 0))
        wait_reachable(str(environ.get("MASTER_ADDR")), port, timeout_s)
    try:
        dist.init_process_group(
            backend=runtime.backend,
            init_method="env://",
            rank=runtime.rank,
            world_size=runtime.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    except (RuntimeError, ValueError, TimeoutError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DistError(
            f"cannot join the process group at {where} within {timeout_s:g} s "
            f"(rank {runtime.rank} of {runtime.world_size}): {first}"
        ) from None
    log.info("rank %d/%d joined %s (%s)", runtime.rank, runtime.world_size, where, runtime.backend)
    return True


def wait_reachable(host: str, port: int, timeout_s: float) -> None:
    """Wait until the rendezvous accepts a TCP connection; DistError after ``timeout_s`` (torch's
    own store client retries as long, but logs a C++ stack trace at each try)."""
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise DistError(
                    f"cannot reach the rendezvous at {host}:{port} within {timeout_s:g} s "
                    f"({exc.strerror or type(exc).__name__}); is rank 0 running, the address "
                    "right and the port open?"
                ) from None
            time.sleep(0.25)


def stop(created: bool) -> None:
    """Leave the process group if :func:`start` created it."""
    if created:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
