"""Several processes on CPU (gloo, 127.0.0.1): a real torchrun run of a tiny config on real photos,
and 2-rank runs from a spawn launcher (tests/train/ranks.py) for what must hold between ranks."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from skyclass.cli import build_app
from skyclass.core.preprocess import PreprocessConfig
from skyclass.data.transforms import build_test_transform, eval_input
from skyclass.model import build_model
from skyclass.train.checkpoint import load_checkpoint
from skyclass.train.config import StageConfig, TrainConfig, load_config
from skyclass.train.evaluation import evaluate_manifest
from skyclass.train.sampling import ShardedDraw, epoch_draw, shard
from skyclass.train.schedule import make_scheduler
from tests.conftest import (
    CLASSES,
    DATA_ROOT,
    REPO_ROOT,
    WEIGHTS,
    shared_images,
    tiny_toml,
)
from tests.train.ranks import launch, train_head


@pytest.mark.parametrize("weights", [None, [0.5, 3.0, 1.0, 1.0, 0.2, 2.0, 1.0, 1.0, 1.0, 4.0, 1.0]])
def test_shards_are_disjoint_parts_of_the_single_process_draw(weights: list | None) -> None:
    n, seed = 11, 1234
    single = epoch_draw(n, seed, weights)
    # One process: exactly torch's own samplers with a generator seeded the same way.
    g = torch.Generator().manual_seed(seed)
    if weights is None:
        reference = list(torch.utils.data.RandomSampler(range(n), generator=g))
    else:
        reference = list(torch.utils.data.WeightedRandomSampler(weights, n, generator=g))
    assert single == reference == list(ShardedDraw(n, seed=seed, weights=weights))
    for world in (2, 3, 4):
        parts = [shard(single, r, world) for r in range(world)]
        assert len({len(p) for p in parts}) == 1  # every rank runs as many batches
        # Positions: rank r holds r, r + W, ...; together they are the draw (padded from its start).
        padded = single + single[: len(parts[0]) * world - n]
        for r, p in enumerate(parts):
            assert p == padded[r::world]
        woven = [parts[r][i] for i in range(len(parts[0])) for r in range(world)]
        assert woven == padded
    if weights is None:  # a permutation: the shards of one epoch overlap only in the padding
        two = [set(shard(single, r, 2)) for r in range(2)]
        assert len(two[0] & two[1]) <= 1 and two[0] | two[1] == set(range(n))
    assert epoch_draw(n, seed + 1, weights) != single  # every epoch its own draw


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 real photos (16 per class) at 64 px, as the input of features[18] (ImageNet weights)."""
    pre = PreprocessConfig(size=(64, 64))
    tf = build_test_transform(pre)
    xs, ys = [], []
    for i, cls in enumerate(CLASSES):
        for f in shared_images(cls, 16):
            xs.append(tf(image=eval_input(f.read_bytes(), pre))["image"])
            ys.append(i)
    model = build_model(len(CLASSES), weights=WEIGHTS).eval()
    with torch.no_grad():
        x = model.features[:18](torch.stack(xs))
    path = tmp_path_factory.mktemp("features") / "block18.pt"
    torch.save((x, torch.tensor(ys)), path)
    return path


def test_two_ranks_of_16_equal_one_process_of_32_on_the_head_stage(
    features: Path, tmp_path: Path
) -> None:
    cfg = TrainConfig(
        name="eq",
        data_root=str(DATA_ROOT),
        train="t",
        val="v",
        batch_size=32,
        dropout=0.0,
        stages=(StageConfig(name="head", epochs=3, lr=3e-3),),
    ).to_dict()
    one = train_head(str(features), cfg, 3, distributed=False)
    ranks = launch("head_steps", tmp_path, features=str(features), config=cfg, epochs=3)
    for r in ranks:
        assert "ok" in r, r.get("trace")
    a, b = ranks[0]["ok"], ranks[1]["ok"]
    for k, v in one["head"].items():
        assert torch.equal(a["head"][k], b["head"][k]), k  # ranks identical, bit for bit
        torch.testing.assert_close(a["head"][k], v, rtol=1e-4, atol=1e-6)
    assert not torch.equal(one["head"]["1.weight"], build_head_init())
    # OneCycle: epochs x per-rank batches (64 photos / 2 ranks / 16 = 2 a epoch), to its end.
    assert one["steps_per_epoch"] == a["steps_per_epoch"] == 2
    assert one["last_epoch"] == a["last_epoch"] == one["total_steps"] == a["total_steps"] == 6
    assert a["last_lr"] == one["last_lr"]
    # Stepped exactly total_steps times, the last step ran at the schedule's final rate.
    stage = StageConfig(name="head", epochs=3, lr=3e-3)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, stage, 3e-3, a["total_steps"])
    for _ in range(a["total_steps"] - 1):
        opt.step()
        sched.step()
    final = 3e-3 / stage.div_factor / stage.final_div_factor
    assert sched.get_last_lr()[0] == pytest.approx(final)
    assert a["losses"] == pytest.approx(one["losses"], rel=1e-4)


def build_head_init() -> torch.Tensor:
    torch.manual_seed(0)
    return build_model(len(CLASSES), weights=None, dropout=0.0).classifier[1].weight.detach()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, manifests: dict[str, Path]) -> dict[str, Path]:
    """The shared tiny manifests (tests/train/conftest.py) and a 2-rank config over them."""
    d = tmp_path_factory.mktemp("ddp")
    paths = {"dir": d, **manifests}
    paths["config"] = d / "tiny.toml"
    paths["config"].write_text(
        tiny_toml(
            out=d / "torchrun",
            data_root=DATA_ROOT,
            train=paths["train"],
            val=paths["val"],
            weights=WEIGHTS,
            cache_dir=paths["cache"],
            dist_timeout_s=60.0,
            # The frozen prefix computed once, each rank its share, gathered by all.
            feature_cache_views=2,
            feature_cache_block=8,
        ),
        encoding="utf-8",
    )
    return paths


@pytest.fixture(scope="module")
def torchrun_run(tiny: dict[str, Path]) -> Path:
    """``torchrun --standalone --nproc_per_node=2 -m skyclass train`` on the tiny config."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}
    args = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "skyclass", "train"]
    res = subprocess.run(
        [*args, "--config", str(tiny["config"]), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert res.stdout.count("best val accuracy") == 1  # rank 0 reports, rank 1 is quiet
    return tiny["dir"] / "torchrun" / "tiny"


def test_torchrun_run_records_its_world(torchrun_run: Path) -> None:
    summary = json.loads((torchrun_run / "summary.json").read_text())
    assert (summary["world_size"], summary["device"], summary["precision"]) == (2, "cpu", "fp32")
    assert summary["backend"] == "gloo"
    config = json.loads((torchrun_run / "config.json").read_text())
    assert config["runtime"]["world_size"] == 2 and config["batch_size"] == 4
    rows = list(csv.DictReader((torchrun_run / "metrics.csv").open()))
    assert [r["stage"] for r in rows] == ["head", "top", "top"]
    ckpt = load_checkpoint(torchrun_run / "checkpoints" / "last.pt")
    assert len(ckpt["rng_per_rank"]) == 2
    assert not torch.equal(ckpt["rng_per_rank"][0]["torch"], ckpt["rng_per_rank"][1]["torch"])


def test_two_rank_run_killed_and_resumed_is_bit_identical(
    torchrun_run: Path, tiny: dict[str, Path], tmp_path: Path
) -> None:
    cfg = load_config(tiny["config"], out=str(tmp_path / "runs"))
    killed = launch("fit_rank", tmp_path, timeout=300, config=cfg.to_dict(), kill_at=3)
    for r in killed:
        assert "ok" in r, r.get("trace")
        assert "killed" in r["ok"]
    at_kill = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")
    assert at_kill["epoch"] == 2
    resumed = launch(
        "fit_rank", tmp_path, timeout=300, config=cfg.to_dict(), resume=str(cfg.run_dir)
    )
    for r in resumed:
        assert "ok" in r, r.get("trace")

    # Ranks hold the same parameters after every stage; frozen BatchNorm buffers never moved.
    for run in (killed, resumed):
        a, b = run[0]["ok"]["stages"], run[1]["ok"]["stages"]
        assert [s["stage"] for s in a] == [s["stage"] for s in b] and a
        assert [s["digest"] for s in a] == [s["digest"] for s in b]
        assert all(s["frozen_bn_unchanged"] for s in a + b)
    # Each rank resumed with its own RNG state from the checkpoint.
    for rank, r in enumerate(resumed):
        assert torch.equal(r["ok"]["rng_at_first_stage"], at_kill["rng_per_rank"][rank]["torch"])
    # lr-find: the same suggestion on both ranks, and the same as the torchrun run's.
    head_lr = [r["ok"]["stages"][0]["stage_lrs"]["head"] for r in killed]
    reference = json.loads((torchrun_run / "summary.json").read_text())["stage_lrs"]["head"]
    assert head_lr[0] == head_lr[1] == reference

    a = load_checkpoint(torchrun_run / "checkpoints" / "last.pt")
    b = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]

    # Rank 0's evaluation equals a single process's, and the checkpoint exports.
    out = tmp_path / "eval"
    metrics, _ = evaluate_manifest(cfg.run_dir, tiny["val"], out_dir=out, progress=False)
    report = cfg.run_dir / "reports" / "val"
    assert metrics == json.loads((report / "metrics.json").read_text())
    assert (out / "predictions.csv").read_text() == (report / "predictions.csv").read_text()
    args = ["export", str(cfg.run_dir), "--out", str(tmp_path / "model")]
    args += ["--calibration-size", "8", "--parity-size", "8", "--no-int8"]
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "model" / "model.onnx").is_file()
