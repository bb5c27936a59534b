"""``skyclass train --nproc-per-node N``: checks, then hands the same command over to torchrun's
own launcher (``torch.distributed.run``), one process per device, rendezvous on this machine.
Several machines: run ``torchrun --nnodes ... -m skyclass train`` on each (see the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from skyclass.train.device import Accelerators, DeviceError, check_processes


def check_launch(
    nproc: int, device: str, batch_size: int, acc: Accelerators, environ: Mapping[str, str]
) -> None:
    """Every refusal of a launch, before a process starts or a file is written."""
    if "TORCHELASTIC_RUN_ID" in environ or "LOCAL_RANK" in environ:
        raise DeviceError("already running under torchrun: drop --nproc-per-node")
    check_processes(device, nproc, acc)
    if batch_size % nproc:
        raise DeviceError(
            f"batch_size {batch_size} does not split over {nproc} processes; the config's batch "
            "is the global batch: make it a multiple of the process count"
        )


def torchrun_args(nproc: int, cli_args: Sequence[str]) -> list[str]:
    """torchrun's arguments for ``skyclass <cli_args>`` on ``nproc`` local processes."""
    return ["--standalone", f"--nproc-per-node={nproc}", "-m", "skyclass", *cli_args]


def hand_over(nproc: int, cli_args: Sequence[str]) -> int:
    """Run torchrun's launcher in this process; 0 when every rank succeeded, else 1 (each rank
    has printed its own one-line error)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default; skyclass sets its own
    try:
        torchrun_main(torchrun_args(nproc, cli_args))
    except ChildFailedError:
        return 1
    return 0
