"""Experiment trackers on tiny real runs (a dozen shared photos, 64 px, 2 steps an epoch), read
back with each library's own reader: TensorBoard event files, the MLflow sqlite store, W&B
offline run files. No network: W&B runs with WANDB_MODE=offline."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from skyclass.cli import build_app
from skyclass.train import loop
from skyclass.train.config import StageConfig
from skyclass.train.fit import fit
from skyclass.train.trackers.tensorboard_tracker import TensorBoardTracker
from tests.conftest import CLASSES, REPO_ROOT
from tests.train import tracker_files
from tests.train.test_train import tiny_config

ALL = ("csv", "tensorboard", "mlflow", "wandb")
STEPS = 6  # 3 epochs x 2 steps


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_CACHE_DIR", str(tmp_path_factory.mktemp("wandb-cache")))
        mp.setenv("WANDB_DATA_DIR", str(tmp_path_factory.mktemp("wandb-data")))
        mp.setenv("WANDB_CONFIG_DIR", str(tmp_path_factory.mktemp("wandb-config")))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(scope="module")
def tracked(manifests: dict[str, Path], offline: None, tmp_path_factory: pytest.TempPathFactory):
    """A tiny run with every tracker, killed in its third epoch, then resumed to the end."""
    out = tmp_path_factory.mktemp("tracked")
    cfg = tiny_config(manifests, out, log=ALL)
    original = loop.train_one_epoch
    calls = {"n": 0}

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            original(*args, **{**kwargs, "max_steps": 1})
            raise Killed
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "train_one_epoch", dying)
        with pytest.raises(Killed):
            fit(cfg, progress=False)
    # A killed process takes its W&B service (and open run) with it; here the process lives on.
    import wandb

    wandb.teardown()
    first = json.loads((cfg.run_dir / "trackers.json").read_text())
    result = fit(cfg, resume=cfg.run_dir, progress=False)
    return {"out": out, "run": result.run_dir, "first": first, "result": result}


def test_csv_stays_the_complete_record(tracked: dict[str, Any]) -> None:
    rows = list(csv.DictReader((tracked["run"] / "metrics.csv").open()))
    assert [r["stage"] for r in rows] == ["head", "top", "top"]
    history = tracked["result"].history
    assert [float(r["val_accuracy"]) for r in rows] == pytest.approx(
        [h["val_accuracy"] for h in history], abs=1e-5
    )


def test_tensorboard_events_hold_scalars_stages_and_images(tracked: dict[str, Any]) -> None:
    acc = tracker_files.tensorboard(tracked["run"])
    tags = acc.Tags()
    for tag in ("loss/step", "lr/step", "loss/train", "loss/val", "accuracy/val",
                "speed/train_images_per_s", "lr_find/head/loss", "stage/index",
                "val/accuracy", "test/accuracy", *(f"val/{c}/f1" for c in CLASSES)):  # fmt: skip
        assert tag in tags["scalars"], tag
    # Resumed in epoch 3: the killed epoch's step is purged, every step is there once.
    assert [e.step for e in acc.Scalars("loss/step")] == list(range(1, STEPS + 1))
    assert [e.step for e in acc.Scalars("accuracy/val")] == [2, 4, 6]
    # Stage boundaries: head at 0, top at 2, and top again where the resumed session took it up.
    stages = [(e.step, e.value) for e in acc.Scalars("stage/index")]
    assert stages == [(0, 0.0), (2, 1.0), (4, 1.0)]
    assert len(acc.Scalars("lr_find/head/loss")) == 4  # lr_find num_iter
    assert {"val/confusion", "test/confusion", "lr_find/head"} <= set(tags["images"])
    confusion = acc.Images("val/confusion")[-1]
    assert confusion.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and confusion.width > 100
    assert any(t.startswith("val/misclassified/") for t in tags["images"]) or (
        json.loads((tracked["run"] / "reports/val/metrics.json").read_text())["accuracy"] == 1.0
    )
    assert any(t.startswith("config") for t in tags["tensors"])
    assert any(t.startswith("_hparams_") for t in acc.summary_metadata)


def test_mlflow_store_holds_one_run_with_params_metrics_artifacts(tracked: dict[str, Any]) -> None:
    client = tracker_files.mlflow_client(tracked["out"])
    exp = client.get_experiment_by_name("skyclass")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, "--resume continues the same MLflow run"
    run = runs[0]
    ids = json.loads((tracked["run"] / "trackers.json").read_text())
    assert run.info.run_id == ids["mlflow"]["run_id"] == tracked["first"]["mlflow"]["run_id"]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert run.data.params["batch_size"] == "4"
    assert run.data.params["stages.1.name"] == "top"
    tags = run.data.tags
    manifest = json.loads((tracked["run"] / "config.json").read_text())["train"]
    train_sha = hashlib.sha256(Path(manifest).read_bytes()).hexdigest()
    assert tags["data.train.sha256"] == train_sha
    assert tags["device"] == "cpu" and tags["world_size"] == "1"
    assert tags["skyclass.version"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert tags["git.commit"] == head.stdout.strip()
    assert "stage.top" in tags
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss/step")]
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert len(client.get_metric_history(run.info.run_id, "accuracy/val")) == 3
    assert "val/accuracy" in run.data.metrics and "val/winged_drones/recall" in run.data.metrics
    reports = {f.path for f in client.list_artifacts(run.info.run_id, "reports/val")}
    assert {"reports/val/confusion.png", "reports/val/metrics.json"} <= reports
    assert client.list_artifacts(run.info.run_id, "lr_find/head")
    assert Path(tracked["out"], "mlartifacts").is_dir() and not Path("mlruns").exists()


def _wandb_files(run_dir: Path, run_id: str) -> list[Path]:
    return sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))


def _logged(history: list[dict[str, Any]], prefix: str) -> bool:
    return any(key.startswith(prefix) for row in history for key in row)


def test_wandb_offline_run_holds_history_and_summary(tracked: dict[str, Any]) -> None:
    run_id = json.loads((tracked["run"] / "trackers.json").read_text())["wandb"]["id"]
    assert run_id == tracked["first"]["wandb"]["id"]
    files = _wandb_files(tracked["run"], run_id)
    assert len(files) == 2, "the first session and the resumed one, one W&B run id"
    first, resumed = (tracker_files.wandb_run(f) for f in files)
    assert first["id"] == resumed["id"] == run_id
    assert first["config"]["batch_size"] == 4
    assert first["config"]["run_tags"]["device"] == "cpu"
    steps = [row["_step"] for row in first["history"] + resumed["history"] if "loss/step" in row]
    assert sorted(set(steps)) == list(range(1, STEPS + 1))
    assert _logged(first["history"], "lr_find/head_table/")  # the curve, as a W&B table
    assert _logged(first["history"], "lr_find/head/")  # its plot, as an image
    assert _logged(first["history"], "stage/index")
    assert resumed["summary"]["val/accuracy"] == pytest.approx(
        tracked["result"].summary["val_accuracy"]
    )
    assert _logged(resumed["history"], "val/confusion/")
    assert _logged(resumed["history"], "val/per_class/")


def test_export_logs_the_model_folder_with_its_sha256(
    tracked: dict[str, Any], tmp_path: Path
) -> None:
    model = tmp_path / "tiny-model"
    args = ["export", str(tracked["run"]), "--out", str(model), "--no-int8", "--parity-size", "2"]
    res = CliRunner().invoke(build_app(), [*args, "--log", "mlflow,wandb"])
    assert res.exit_code == 0, res.output
    digest = res.output.split("model folder sha256")[-1].split()[0]
    listing = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(model).as_posix()}\n"
        for p in sorted(model.rglob("*"))
        if p.is_file()
    )
    assert digest == hashlib.sha256(listing.encode()).hexdigest()
    client = tracker_files.mlflow_client(tracked["out"])
    run_id = json.loads((tracked["run"] / "trackers.json").read_text())["mlflow"]["run_id"]
    run = client.get_run(run_id)
    assert run.data.tags["model.sha256"] == digest
    logged = {f.path for f in client.list_artifacts(run_id, "model")}
    assert "model/model.json" in logged
    wandb_id = json.loads((tracked["run"] / "trackers.json").read_text())["wandb"]["id"]
    last = tracker_files.wandb_run(_wandb_files(tracked["run"], wandb_id)[-1])
    assert any(json.loads(a.metadata)["sha256"] == digest for a in last["artifacts"])


def test_a_tracker_raising_leaves_training_and_csv_intact(
    manifests: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    calls = {"n": 0}

    def disk_full(self: Any, step: int, values: Any) -> None:
        calls["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TensorBoardTracker, "scalars", disk_full)
    cfg = tiny_config(
        manifests, tmp_path, log=("tensorboard",),
        stages=(StageConfig(name="head", epochs=2, lr=1e-3),),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="skyclass.train.trackers"):
        result = fit(cfg, progress=False)
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert (result.run_dir / "checkpoints/best.pt").is_file()
    warnings = [r for r in caplog.records if "tracker tensorboard failed" in r.getMessage()]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    assert calls["n"] == 1, "a failed tracker is not called again (no stall on retries)"
    assert json.loads((result.run_dir / "trackers.json").read_text())["tensorboard"]


def test_missing_extra_is_one_line_before_training(
    manifests: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    cfg = tiny_config(manifests, tmp_path)
    toml = tmp_path / "c.toml"
    keys = {"name": "x", "out": tmp_path / "runs", "data_root": cfg.data_root,
            "train": cfg.train, "val": cfg.val, "weights": cfg.weights}  # fmt: skip
    toml.write_text(
        "".join(f'{k} = "{v}"\n' for k, v in keys.items())
        + "[[stages]]\nname = 'head'\nepochs = 1\nlr = 0.001\n"
    )
    runner = CliRunner()
    res = runner.invoke(build_app(), ["train", "--config", str(toml), "--log", "csv,mlflow"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert lines == [
        "error: --log mlflow: the mlflow package is not installed; pip install 'skyclass[mlflow]'"
    ]
    assert not (tmp_path / "runs" / "x").exists()
    res = runner.invoke(build_app(), ["train", "--config", str(toml), "--log", "comet"])
    assert res.exit_code == 2 and "unknown tracker(s) comet" in res.output
    assert "Traceback" not in res.output


def test_only_rank_0_logs(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "ddp"
    run_dir.mkdir()
    mp.spawn(tracker_files.ddp_worker, args=(2, port, str(run_dir)), nprocs=2, join=True)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [r["train_loss"] for r in rows] == ["1"]  # rank 0's row, once
    assert json.loads((run_dir / "trackers.json").read_text())["step"] == 2
    for rank in (0, 1):
        assert json.loads((run_dir / f"tags-{rank}.json").read_text())["world_size"] == "2"
    acc = tracker_files.tensorboard(run_dir)
    assert acc.Tags()["tensors"]  # rank 0's config text


def test_evaluate_logs_into_the_run_it_evaluates(
    tracked: dict[str, Any], manifests: dict[str, Path], tmp_path: Path
) -> None:
    holdout = tmp_path / "holdout.csv"
    shutil.copyfile(manifests["val"], holdout)
    args = ["evaluate", str(tracked["run"]), str(holdout), "--out", str(tmp_path / "eval")]
    res = CliRunner().invoke(build_app(), [*args, "--log", "mlflow,tensorboard", "--no-progress"])
    assert res.exit_code == 0, res.output
    client = tracker_files.mlflow_client(tracked["out"])
    run_id = json.loads((tracked["run"] / "trackers.json").read_text())["mlflow"]["run_id"]
    metrics = client.get_run(run_id).data.metrics
    accuracy = json.loads((tmp_path / "eval/metrics.json").read_text())["accuracy"]
    assert metrics["holdout/accuracy"] == pytest.approx(accuracy)
    assert len(client.search_runs([client.get_experiment_by_name("skyclass").experiment_id])) == 1
    acc = tracker_files.tensorboard(tracked["run"])
    assert [e.step for e in acc.Scalars("holdout/accuracy")] == [STEPS]
    assert "holdout/confusion" in acc.Tags()["images"]


def test_lr_find_command_logs_its_curve(
    manifests: dict[str, Path], tmp_path: Path, offline: None
) -> None:
    cfg = tiny_config(manifests, tmp_path)
    keys = {"name": "lr", "out": tmp_path / "runs", "data_root": cfg.data_root,
            "train": cfg.train, "val": cfg.val, "weights": cfg.weights,
            "cache_dir": cfg.cache_dir}  # fmt: skip
    toml = tmp_path / "c.toml"
    toml.write_text(
        "".join(f'{k} = "{v}"\n' for k, v in keys.items())
        + "image_size = 64\nbatch_size = 4\nlog = ['tensorboard']\n"
        + "[[stages]]\nname = 'head'\nepochs = 1\n"
    )
    args = ["lr-find", "--config", str(toml), "--num-iter", "5", "--no-progress"]
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    folder = tmp_path / "runs" / "lr-find-lr"
    acc = tracker_files.tensorboard(folder)
    curve = json.loads((folder / "lr_find_head.json").read_text())
    logged = [e.value for e in acc.Scalars("lr_find/head/lr")]
    assert logged == pytest.approx(curve["lrs"], rel=1e-6)
    assert "lr_find/head" in acc.Tags()["images"]


def test_export_missing_extra_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    out = tmp_path / "model"
    args = ["export", str(tmp_path / "no-run"), "--out", str(out), "--log", "wandb"]
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: --log wandb: the wandb package is not installed; pip install 'skyclass[wandb]'"
    ]
    assert not out.exists()
