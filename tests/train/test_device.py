"""Where training runs: device, precision, process and rendezvous rules as pure functions (CUDA
and MPS included, on a CPU machine), and the CLI's one-line refusals, before anything is written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from skyclass.cli import build_app
from skyclass.data.dataset import DataError
from skyclass.train.checkpoint import save_checkpoint
from skyclass.train.config import TrainConfig
from skyclass.train.device import (
    Accelerators,
    DeviceError,
    Precision,
    check_processes,
    needs_scaler,
    resolve_device,
    resolve_precision,
    threads_per_process,
)
from skyclass.train.fit import fit
from skyclass.train.launch import check_launch, torchrun_args
from skyclass.train.runtime import DistError, dist_env, resolve_runtime
from tests.conftest import DATA_ROOT, REPO_ROOT, WEIGHTS, shared_images, write_manifest

CPU = Accelerators()
ONE_GPU = Accelerators(cuda_count=1, cuda_bf16=True)
OLD_GPUS = Accelerators(cuda_count=4, cuda_bf16=False)
MAC = Accelerators(mps=True)


def test_device_rules() -> None:
    assert resolve_device("auto", CPU) == "cpu"
    assert resolve_device("auto", MAC) == "mps"
    assert resolve_device("auto", ONE_GPU) == "cuda:0"
    assert resolve_device("cuda", OLD_GPUS, local_rank=3) == "cuda:3"
    assert resolve_device("cuda:2", OLD_GPUS, local_rank=0) == "cuda:2"
    assert resolve_device("CPU", ONE_GPU) == "cpu"
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda", CPU)
    with pytest.raises(DeviceError, match="GPU 4 does not exist"):
        resolve_device("cuda:4", OLD_GPUS)
    with pytest.raises(DeviceError, match="MPS"):
        resolve_device("mps", ONE_GPU)
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu", CPU)
    assert resolve_device("auto", Accelerators(cuda_count=torch.cuda.device_count())) == (
        "cuda:0" if torch.cuda.is_available() else "cpu"
    )


def test_precision_rules() -> None:
    assert resolve_precision("auto", "cpu", CPU) == "fp32"
    assert resolve_precision("auto", "mps", MAC) == "fp32"
    assert resolve_precision("auto", "cuda:0", ONE_GPU) == "bf16"
    assert resolve_precision("auto", "cuda:1", OLD_GPUS) == "fp16"
    assert resolve_precision("bf16", "cpu", CPU) == "bf16"
    with pytest.raises(DeviceError, match="bf16"):
        resolve_precision("bf16", "cuda:0", OLD_GPUS)
    with pytest.raises(DeviceError, match="fp16 needs a GPU"):
        resolve_precision("fp16", "cpu", CPU)
    with pytest.raises(DeviceError, match="unknown precision"):
        resolve_precision("int4", "cpu", CPU)
    # fp16 implies a GradScaler; bf16 and fp32 none.
    assert needs_scaler("fp16") and not needs_scaler("bf16") and not needs_scaler("fp32")
    assert Precision("bf16", "cpu").scaler() is None and Precision("fp32", "cpu").scaler() is None
    x = torch.randn(4, 8)
    with Precision("bf16", "cpu").autocast():
        assert (x @ x.T).dtype == torch.bfloat16
    with Precision("fp32", "cpu").autocast():
        assert (x @ x.T).dtype == torch.float32


def test_process_rules() -> None:
    check_processes("cpu", 2, CPU)
    check_processes("auto", 4, OLD_GPUS)
    with pytest.raises(DeviceError, match="needs 2 GPUs; CUDA sees 1"):
        check_processes("cuda", 2, ONE_GPU)
    with pytest.raises(DeviceError, match="MPS runs one training process"):
        check_processes("auto", 2, MAC)
    with pytest.raises(DeviceError, match="pins one GPU"):
        check_processes("cuda:1", 2, OLD_GPUS)
    with pytest.raises(DeviceError, match="multiple of the process count"):
        check_launch(3, "cpu", 32, CPU, {})
    with pytest.raises(DeviceError, match="already running under torchrun"):
        check_launch(2, "cpu", 32, CPU, {"LOCAL_RANK": "0"})
    assert torchrun_args(2, ["train", "--config", "c.toml"]) == [
        *("--standalone", "--nproc-per-node=2", "-m", "skyclass"),
        *("train", "--config", "c.toml"),
    ]
    cores = len(os.sched_getaffinity(0))
    assert threads_per_process(None, 1) == cores
    assert threads_per_process(None, 2) == max(1, cores // 2)
    assert threads_per_process(3, 2) == 3


TORCHRUN = {
    "RANK": "3",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "29500",
}
SLURM = {
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_TASKS_PER_NODE": "4(x2)",
    "MASTER_ADDR": "node001",
    "MASTER_PORT": "29500",
}


def test_rank_and_world_from_torchrun_and_slurm() -> None:
    assert dist_env({}).world_size == 1
    env = dist_env(TORCHRUN)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    env = dist_env(SLURM)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (5, 8, 1, 4)
    assert env.launcher == "slurm"
    assert dist_env({**SLURM, "SLURM_NTASKS_PER_NODE": "2"}).local_world_size == 2
    # torchrun inside a SLURM allocation: torchrun's variables win.
    assert dist_env({**SLURM, **TORCHRUN}).launcher == "torchrun"
    # One SLURM task is one process, whatever else is set.
    assert dist_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).world_size == 1
    no_master = {k: v for k, v in SLURM.items() if not k.startswith("MASTER")}
    with pytest.raises(DistError, match="MASTER_ADDR/MASTER_PORT"):
        dist_env(no_master)
    with pytest.raises(DistError, match="outside world size"):
        dist_env({**TORCHRUN, "RANK": "4"})
    with pytest.raises(DistError, match="not an integer"):
        dist_env({**TORCHRUN, "RANK": "x"})


def test_runtime_resolution() -> None:
    kw = {"device": "auto", "precision": "auto", "threads": None, "sync_bn": False}
    one = resolve_runtime(**kw, environ={}, acc=CPU)
    assert (one.device, one.precision, one.world_size, one.backend) == ("cpu", "fp32", 1, None)
    two = resolve_runtime(**kw, environ={**TORCHRUN, "LOCAL_RANK": "1"}, acc=CPU)
    assert (two.backend, two.rank, two.world_size, two.is_main) == ("gloo", 3, 4, False)
    gpu = resolve_runtime(**kw, environ=TORCHRUN, acc=OLD_GPUS)
    assert (gpu.device, gpu.backend, gpu.precision) == ("cuda:1", "nccl", "fp16")
    assert gpu.amp.scaler is not None and needs_scaler(gpu.precision)
    with pytest.raises(DeviceError, match="2 processes on this machine but CUDA sees 1"):
        resolve_runtime(**kw, environ={**TORCHRUN, "LOCAL_RANK": "0"}, acc=ONE_GPU)
    with pytest.raises(DeviceError, match="MPS runs one training process"):
        resolve_runtime(**kw, environ=TORCHRUN, acc=MAC)
    with pytest.raises(DeviceError, match="sync_bn needs CUDA"):
        resolve_runtime(**{**kw, "sync_bn": True}, environ=TORCHRUN, acc=CPU)
    assert resolve_runtime(**{**kw, "sync_bn": True}, environ=TORCHRUN, acc=OLD_GPUS).sync_bn
    assert one.to_dict()["world_size"] == 1 and two.to_dict()["device"] == "cpu"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dev")
    files = [f for c in ("flying_birds", "winged_drones") for f in shared_images(c, 2)]
    train = write_manifest(d / "train.csv", files)
    path = d / "c.toml"
    path.write_text(
        f'name = "dev"\nout = "{d / "runs"}"\ndata_root = "{DATA_ROOT}"\n'
        f'train = "{train}"\nval = "{train}"\nweights = "{WEIGHTS}"\n'
        f"image_size = 64\nbatch_size = 4\nmax_steps = 1\ndist_timeout_s = 2.0\n"
        '[[stages]]\nname = "head"\nepochs = 1\nlr = 1e-3\n',
        encoding="utf-8",
    )
    return path


def _one_line_refusal(res, needle: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_refuses_cuda_without_cuda_and_writes_nothing(config_file: Path) -> None:
    runs = config_file.parent / "runs"
    app = build_app()
    for args in (
        ["train", "--config", str(config_file), "--device", "cuda"],
        ["train", "--config", str(config_file), "--device", "cuda", "--nproc-per-node", "2"],
        ["train", "--config", str(config_file), "--device", "mps", "--nproc-per-node", "2"],
        ["lr-find", "--config", str(config_file), "--device", "cuda:1"],
        ["evaluate", str(runs), str(config_file.parent / "train.csv"), "--device", "cuda"],
        [
            *("label-issues", str(config_file.parent / "train.csv"), "--data-root", str(DATA_ROOT)),
            *("--out", str(runs), "--weights", str(WEIGHTS), "--device", "cuda"),
        ],
    ):
        res = CliRunner().invoke(app, args)
        _one_line_refusal(res, "not available")
        assert not runs.exists()
    res = CliRunner().invoke(app, ["train", "--config", str(config_file), "--device", "gpu"])
    _one_line_refusal(res, "unknown device")
    res = CliRunner().invoke(
        app, ["train", "--config", str(config_file), "--nproc-per-node", "3", "--device", "cpu"]
    )
    _one_line_refusal(res, "multiple of the process count")
    assert not runs.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_rendezvous_is_a_bounded_one_line_error(config_file: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "src"),
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),  # nobody listens there
    }
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "skyclass", "train", "--config", str(config_file), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the rendezvous" in lines[0], res.stderr
    assert "within 2 s" in lines[0]
    assert elapsed < 60
    assert not (config_file.parent / "runs").exists()


def test_resume_with_another_world_size_is_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(name="r", out=str(tmp_path), data_root=str(DATA_ROOT), train="t", val="v")
    save_checkpoint(
        tmp_path / "r" / "checkpoints" / "last.pt",
        {"config": cfg.to_dict(), "runtime": {"world_size": 2}},
    )
    before = sorted(p.name for p in (tmp_path / "r").rglob("*"))
    with pytest.raises(DataError, match="trained with 2 process"):
        fit(cfg, resume=tmp_path / "r", progress=False)
    assert sorted(p.name for p in (tmp_path / "r").rglob("*")) == before


def test_nproc_per_node_hands_the_same_command_to_torchrun(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from skyclass.train import launch

    seen: dict = {}

    def fake_hand_over(nproc: int, cli_args: list[str]) -> int:
        seen["args"] = launch.torchrun_args(nproc, cli_args)
        return 0

    monkeypatch.setattr(launch, "hand_over", fake_hand_over)
    args = ["train", "--config", str(config_file), "--nproc-per-node", "2", "--seed", "3"]
    res = CliRunner().invoke(build_app(), [*args, "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    forwarded = seen["args"]
    assert forwarded[:4] == ["--standalone", "--nproc-per-node=2", "-m", "skyclass"]
    rest = forwarded[4:]
    assert rest[0] == "train" and "--nproc-per-node" not in rest
    pairs = {rest[i]: rest[i + 1] for i in range(1, len(rest) - 1) if rest[i].startswith("--")}
    assert pairs["--config"] == str(config_file) and pairs["--seed"] == "3"
    assert pairs["--device"] == "cpu" and "--no-progress" in rest
    assert not (config_file.parent / "runs").exists()
    # An existing run dir is refused before any process starts.
    seen.clear()
    run_dir = tmp_path / "dev"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("x")
    res = CliRunner().invoke(build_app(), [*args, "--out", str(tmp_path)])
    _one_line_refusal(res, "exists")
    assert not seen and (run_dir / "keep.txt").is_file()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_train_on_real_photos(precision: str) -> None:
    """The autocast + GradScaler path of the loop (what CUDA runs), here on the CPU's autocast."""
    from skyclass.core.preprocess import PreprocessConfig
    from skyclass.data.transforms import build_test_transform, eval_input
    from skyclass.model import build_model, set_trainable
    from skyclass.train import loop
    from skyclass.train.config import StageConfig
    from skyclass.train.runtime import Runtime
    from skyclass.train.schedule import make_optimizer

    pre = PreprocessConfig(size=(64, 64))
    tf = build_test_transform(pre)
    files = [f for c in ("flying_birds", "winged_drones") for f in shared_images(c, 2)]
    x = torch.stack([tf(image=eval_input(f.read_bytes(), pre))["image"] for f in files])
    y = torch.tensor([0, 0, 1, 1])
    torch.manual_seed(0)
    model = build_model(2, weights=WEIGHTS, dropout=0.0)
    set_trainable(model, [18])
    rt = Runtime(precision=precision)
    scaler = rt.amp.scaler()
    assert (scaler is not None) == (precision == "fp16")
    opts = loop.StepOptions(first_trainable=18, runtime=rt, scaler=scaler)
    opt = make_optimizer(model, StageConfig(name="s", epochs=1), 1e-3)
    before = model.classifier[1].weight.detach().clone()
    m = loop.train_one_epoch(model, [(x, y)] * 3, opt, None, options=opts, progress=False)
    assert np.isfinite(m.loss) and m.n == 12
    assert (model.classifier[1].weight - before).abs().max() > 1e-3
    assert model.classifier[1].weight.dtype == torch.float32  # master weights stay fp32
    if scaler is not None:
        assert scaler.get_scale() > 0
