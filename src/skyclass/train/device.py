"""Where and how training computes: device, precision, threads.

The rules are pure functions of what the machine has (:class:`Accelerators`), so they are tested on
a CPU-only machine for CUDA and MPS too; :func:`probe` is the only place that asks torch.

- device ``auto``: CUDA, else MPS, else CPU; ``cuda`` means the process's own GPU (its local rank);
- precision ``auto``: bf16 on a GPU that has it, else fp16 with a GradScaler; fp32 on CPU and MPS;
- threads: the configured number, else the machine's cores / processes on this machine.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class DeviceError(ValueError):
    """A device, precision or process count this machine cannot run; one line for the user."""


@dataclass(frozen=True)
class Accelerators:
    """What the machine offers: CUDA devices, MPS, and whether its GPUs compute in bf16."""

    cuda_count: int = 0
    mps: bool = False
    cuda_bf16: bool = False


def probe() -> Accelerators:
    """Ask torch what this machine has (cheap; no CUDA context is created for a CPU run)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Accelerators(
        cuda_count=count, mps=mps, cuda_bf16=bool(count and torch.cuda.is_bf16_supported())
    )


def resolve_device(requested: str, acc: Accelerators, local_rank: int = 0) -> str:
    """``auto|cpu|cuda|cuda:N|mps`` -> a concrete torch device string, or DeviceError."""
    req = requested.strip().lower()
    if req == "auto":
        req = "cuda" if acc.cuda_count else "mps" if acc.mps else "cpu"
    if req == "cpu":
        return "cpu"
    if req == "mps":
        if not acc.mps:
            raise DeviceError("device mps: MPS (Apple GPU) is not available on this machine")
        return "mps"
    if req == "cuda" or req.startswith("cuda:"):
        if not acc.cuda_count:
            raise DeviceError(
                f"device {requested}: CUDA is not available on this machine "
                "(torch sees no GPU); use --device cpu or auto"
            )
        index_text = req.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise DeviceError(f"device {requested!r}: expected cuda:N with N a GPU index")
        index = int(index_text) if index_text else local_rank
        if index >= acc.cuda_count:
            raise DeviceError(
                f"device {requested}: GPU {index} does not exist (CUDA sees {acc.cuda_count})"
            )
        return f"cuda:{index}"
    raise DeviceError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps")


def check_processes(requested: str, nproc: int, acc: Accelerators) -> None:
    """Refuse a process count the device cannot carry: MPS runs one process, CUDA one per GPU."""
    if nproc < 1:
        raise DeviceError(f"--nproc-per-node must be >= 1, got {nproc}")
    device = resolve_device(requested, acc)
    if device == "mps" and nproc > 1:
        raise DeviceError(
            f"MPS runs one training process only (asked for {nproc}); "
            "torch.distributed has no MPS backend"
        )
    if device.startswith("cuda") and nproc > acc.cuda_count:
        raise DeviceError(
            f"--nproc-per-node {nproc} needs {nproc} GPUs; CUDA sees {acc.cuda_count}"
        )
    if device.startswith("cuda") and ":" in requested and nproc > 1:
        raise DeviceError(f"--device {requested} pins one GPU; with several processes use cuda")


def resolve_precision(requested: str, device: str, acc: Accelerators) -> str:
    """``auto|fp32|bf16|fp16`` on ``device`` -> the precision to train in, or DeviceError."""
    req = requested.strip().lower()
    if req not in PRECISIONS:
        raise DeviceError(f"unknown precision {requested!r}; use {', '.join(PRECISIONS)}")
    kind = device_type(device)
    if req == "auto":
        if kind == "cuda":
            return "bf16" if acc.cuda_bf16 else "fp16"
        return "fp32"
    if req == "bf16" and kind == "cuda" and not acc.cuda_bf16:
        raise DeviceError("precision bf16: this GPU does not compute in bf16; use fp16 or auto")
    if req == "fp16" and kind == "cpu":
        raise DeviceError("precision fp16 needs a GPU; on CPU use bf16 or fp32")
    return req


def device_type(device: str) -> str:
    """``cuda:1`` -> ``cuda``."""
    return device.partition(":")[0]


def needs_scaler(precision: str) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return precision == "fp16"


def backend_for(device: str) -> str:
    """The torch.distributed backend for a device: nccl on CUDA, gloo on CPU."""
    kind = device_type(device)
    if kind == "mps":
        raise DeviceError("torch.distributed has no MPS backend; train on MPS with one process")
    return "nccl" if kind == "cuda" else "gloo"


def threads_per_process(configured: int | None, local_world_size: int) -> int:
    """The configured torch threads, else this machine's cores shared by its processes."""
    if configured is not None:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, local_world_size))


@dataclass(frozen=True)
class Precision:
    """Autocast and loss scaling for one precision on one device."""

    name: str
    device: str

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.name == "fp32":
            return contextlib.nullcontext()
        import torch

        dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
        return torch.autocast(device_type=device_type(self.device), dtype=dtype)

    def scaler(self) -> Any | None:
        """A GradScaler for fp16, None otherwise."""
        if not needs_scaler(self.name):
            return None
        import torch

        return torch.amp.GradScaler(device_type(self.device))


def fp32_on(device: str) -> Precision:
    return Precision(name="fp32", device=device)
