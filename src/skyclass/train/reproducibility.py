"""What a run's weights depend on, made deterministic where it can be and written down where not.

A run's numbers are a function of its config, its data, and of the machine's arithmetic: the
torch/oneDNN kernels chosen for the CPU's instruction set (``cpu_capability``), the number of
intra-op threads (reductions are split per thread), the DataLoader worker count (each worker has
its own augmentation stream), and the library versions that decode, resize and augment (Pillow,
OpenCV, Albumentations, NumPy). :func:`make_deterministic` fixes what a process can fix (seeds,
deterministic algorithms, threads); :func:`run_environment` records the rest into the run.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
from typing import Any

#: Library versions that define a run's pixels and arithmetic.
VERSIONED = (
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "albumentations",
    "albucore",
    "opencv-python-headless",
)
#: Environment variables that change threads or the kernels chosen (and so the arithmetic).
KERNEL_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
)
#: CPU features that select different oneDNN convolution kernels. Measured: the same tiny run
#: with oneDNN held to AVX2 on an AVX-512 machine gives other weights (37 of 314 tensors).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")

DEPENDS_ON = (
    "config (seed, stages, batch sizes, workers), the data files' bytes, the library versions "
    "listed, the number of torch threads, and the CPU's instruction set (cpu_isa_flags: "
    "oneDNN picks its convolution kernels by it) or the GPU model; the same on all of these "
    "gives bit-identical weights on CPU"
)


def make_deterministic(seed: int, threads: int, device_type: str = "cpu") -> bool:
    """Seed Python, NumPy and torch, fix the thread count, and ask torch for deterministic
    kernels. Returns whether deterministic algorithms are enforced (True on CPU; on CUDA, ops
    without a deterministic kernel, such as adaptive pooling's backward, only warn)."""
    import numpy as np
    import torch

    if device_type == "cuda":
        # cuBLAS needs a fixed workspace for reproducible GEMMs; read when CUDA initialises.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    strict = device_type == "cpu"
    torch.use_deterministic_algorithms(True, warn_only=not strict)
    return strict


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_isa_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_environment(workers: int = 0) -> dict[str, Any]:
    """Everything besides the config that a run's weights depend on, for summary.json."""
    import torch

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "versions": {d: _version(d) for d in VERSIONED},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_isa_flags": _cpu_isa_flags(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "kernel_variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
        "dataloader_workers": workers,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "depends_on": DEPENDS_ON,
    }
    return env
