"""Training on tiny real runs: a dozen shared photos, 64x64 input, 2 steps per epoch."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from skyclass.cli import build_app
from skyclass.core.preprocess import PreprocessConfig, preprocess
from skyclass.data.dataset import DataError, load_images, read_manifest
from skyclass.data.transforms import (
    AugmentConfig,
    build_test_transform,
    build_train_transform,
    eval_input,
)
from skyclass.model import build_model, set_trainable, train_mode
from skyclass.train import loop
from skyclass.train.checkpoint import load_checkpoint
from skyclass.train.config import ConfigError, LRFindConfig, StageConfig, TrainConfig, load_config
from skyclass.train.fit import RunExists, fit
from skyclass.train.schedule import make_optimizer, make_scheduler
from tests.conftest import CLASSES, DATA_ROOT, WEIGHTS, shared_images

torch.set_num_threads(2)


def tiny_config(manifests: dict[str, Path], out: Path, **kw) -> TrainConfig:
    base = TrainConfig(
        name="tiny",
        out=str(out),
        data_root=str(DATA_ROOT),
        train=str(manifests["train"]),
        val=str(manifests["val"]),
        test=str(manifests["val"]),
        weights=str(WEIGHTS),
        image_size=64,
        batch_size=4,
        eval_batch_size=8,
        max_steps=2,
        cache_dir=str(manifests["cache"]),
        augment=AugmentConfig(cache_size=96),
        lr_find=LRFindConfig(num_iter=4),
        stages=(
            StageConfig(name="head", epochs=1, lr=None),
            StageConfig(name="top", epochs=2, unfreeze=(16, 17, 18), lr=1e-3),
        ),
    )
    return replace(base, **kw)


def test_test_pipeline_equals_serve_preprocess() -> None:
    pre = PreprocessConfig()
    tf = build_test_transform(pre)
    files = [shared_images(c, 1)[0] for c in CLASSES] + shared_images(
        "large_quadcopters", 2, "cropspray_"
    )
    for f in files:
        data = f.read_bytes()
        ours = tf(image=eval_input(data, pre))["image"].numpy()
        served = preprocess(data, pre)[0]
        assert ours.shape == served.shape == (3, 224, 224)
        assert np.abs(ours - served).max() < 1e-5, f.name


def test_train_transform_gives_model_sized_tensors_and_varies() -> None:
    pre = PreprocessConfig(size=(64, 64))
    aug = AugmentConfig(cache_size=96)
    img = load_images(
        shared_images("flying_birds", 1),
        lambda b: eval_input(b, PreprocessConfig(size=(96, 96))),
        tag="t",
        progress=False,
    )[0]
    tf = build_train_transform(pre, aug, seed=3)
    a = tf(image=img)["image"]
    b = tf(image=img)["image"]
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert not torch.equal(a, b)
    tf.set_random_seed(3)
    assert torch.equal(tf(image=img)["image"], a)


def _batch(n_per_class: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    pre = PreprocessConfig(size=(size, size))
    tf = build_test_transform(pre)
    xs, ys = [], []
    for i, cls in enumerate(CLASSES):
        for f in shared_images(cls, n_per_class):
            xs.append(tf(image=eval_input(f.read_bytes(), pre))["image"])
            ys.append(i)
    return torch.stack(xs), torch.tensor(ys)


def test_loss_goes_down_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = build_model(len(CLASSES), weights=WEIGHTS, dropout=0.0)
    set_trainable(model, [17, 18])
    x, y = _batch()
    opt = make_optimizer(model, StageConfig(name="s", epochs=1), 1e-3)
    losses = []
    for _ in range(8):
        train_mode(model)
        loss = torch.nn.functional.nll_loss(loop.forward(model, x, 17), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_frozen_blocks_stay_bit_identical() -> None:
    model = build_model(len(CLASSES), weights=WEIGHTS)
    set_trainable(model, [17, 18])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch(1)
    opt = make_optimizer(model, StageConfig(name="s", epochs=1), 1e-2)
    for _ in range(2):
        train_mode(model)
        loss = torch.nn.functional.nll_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    frozen = [k for k in after if k.startswith("features.") and int(k.split(".")[1]) < 17]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    # BatchNorm running statistics of frozen blocks did not move either (eval mode).
    assert any("running_mean" in k for k in frozen)
    moved = [
        k for k in after if k.startswith("features.17.") and not torch.equal(before[k], after[k])
    ]
    assert moved
    assert not torch.equal(before["classifier.1.weight"], after["classifier.1.weight"])


def test_onecycle_warms_up_then_anneals() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    stage = StageConfig(name="s", epochs=1, pct_start=0.25, div_factor=25, final_div_factor=1e3)
    sched = make_scheduler(opt, stage, max_lr=0.01, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(0.01 / 25)
    assert 23 <= peak <= 26 and lrs[peak] == pytest.approx(0.01, rel=1e-3)
    assert all(a <= b for a, b in itertools.pairwise(lrs[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[peak:]))
    assert lrs[-1] < 0.01 / 25 / 100


class Killed(Exception):
    pass


@pytest.mark.parametrize("views", [0, 2], ids=["live", "prefix-cache"])
def test_resume_after_interrupted_epoch_gives_identical_weights(
    manifests: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, views: int
) -> None:
    full = fit(tiny_config(manifests, tmp_path / "a", feature_cache_views=views), progress=False)
    # Reports of a finished run.
    run = full.run_dir
    for rel in (
        "config.json",
        "metrics.csv",
        "summary.json",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "reports/curves.png",
        "reports/lr_find_head.png",
        "reports/val/metrics.json",
        "reports/val/confusion.png",
        "reports/val/misclassified.html",
    ):
        assert (run / rel).is_file(), rel
    metrics = json.loads((run / "reports/val/metrics.json").read_text())
    assert metrics["n"] == 8 and set(metrics["per_class"]) == set(CLASSES)
    assert sum(map(sum, metrics["confusion"])) == 8
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["stage"] for r in rows] == ["head", "top", "top"]

    # Same run, killed in the middle of its third epoch (stage "top", epoch 2).
    original = loop.train_one_epoch
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            original(*args, **{**kwargs, "max_steps": 1})
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", dying)
    cfg_b = tiny_config(manifests, tmp_path / "b", feature_cache_views=views)
    with pytest.raises(Killed):
        fit(cfg_b, progress=False)
    monkeypatch.setattr(loop, "train_one_epoch", original)
    assert load_checkpoint(cfg_b.run_dir / "checkpoints/last.pt")["epoch"] == 2
    resumed = fit(cfg_b, resume=cfg_b.run_dir, progress=False)

    a = load_checkpoint(full.last_checkpoint)
    b = load_checkpoint(resumed.last_checkpoint)
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_existing_run_dir_needs_force(manifests: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_config(manifests, tmp_path, stages=(StageConfig(name="head", epochs=1, lr=1e-3),))
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "keep.txt").write_text("x")
    with pytest.raises(RunExists):
        fit(cfg, progress=False)
    assert (cfg.run_dir / "keep.txt").is_file()


def test_config_errors(tmp_path: Path) -> None:
    good = """name = "x"\ndata_root = "d"\ntrain = "t.csv"\nval = "v.csv"\n
[[stages]]\nname = "head"\nepochs = 2\n"""
    p = tmp_path / "c.toml"
    p.write_text(good)
    cfg = load_config(p, batch_size=8)
    assert cfg.batch_size == 8 and cfg.stages[0].epochs == 2
    p.write_text(good + "bogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(p)
    p.write_text(good.replace("epochs = 2", 'epochs = "two"'))
    with pytest.raises(ConfigError, match="epochs"):
        load_config(p)
    p.write_text(good + "unfreeze = [3]\n" + "[[stages]]\nname = 'b'\nepochs = 1\n")
    with pytest.raises(ConfigError, match="feature_cache_block"):
        load_config(p, feature_cache_views=2)
    p.write_text(good + "unfreeze = [30]\n")
    with pytest.raises(ConfigError, match=r"0\.\.18"):
        load_config(p)
    p.write_text(
        good.replace('name = "x"\n', "").replace("[[stages]]", "[augment]\nhflip_p = 2\n[[stages]]")
    )
    with pytest.raises(ConfigError):
        load_config(p)


def test_manifest_errors(tmp_path: Path) -> None:
    f = shared_images("flying_birds", 1)[0]
    rel = f.relative_to(DATA_ROOT).as_posix()
    cases = {
        "missing file": "path,label,group\nflying_birds/nope.jpg,flying_birds,g\n",
        "unknown class": f"path,label,group\n{rel},zeppelins,g\n",
        "empty": "path,label,group\n",
        "missing column": f"path,label\n{rel},flying_birds\n",
    }
    for expect, text in cases.items():
        p = tmp_path / "m.csv"
        p.write_text(text)
        with pytest.raises(DataError, match=expect.split()[-1] if expect != "empty" else "empty"):
            read_manifest(p, DATA_ROOT, CLASSES)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(f.read_bytes()[:300])
    with pytest.raises(DataError, match=r"broken\.jpg"):
        load_images([bad], lambda b: eval_input(b, PreprocessConfig()), tag="x", progress=False)


def test_cli_bad_input_one_line_and_nonzero(manifests: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    app = build_app()
    p = tmp_path / "c.toml"
    p.write_text(f'name = "x"\ndata_root = "{DATA_ROOT}"\ntrain = "t.csv"\nval = "v.csv"\nlr = 3\n')
    res = runner.invoke(app, ["train", "--config", str(p)])
    assert res.exit_code == 2 and "unknown key" in res.output and "Traceback" not in res.output
    p.write_text(
        f'name = "x"\nout = "{tmp_path}"\ndata_root = "{DATA_ROOT}"\n'
        f'train = "{tmp_path}/none.csv"\n'
        f'val = "{manifests["val"]}"\nweights = "{WEIGHTS}"\n'
    )
    res = runner.invoke(app, ["train", "--config", str(p)])
    assert res.exit_code == 2 and "manifest not found" in res.output
    assert not (tmp_path / "x").exists()


def test_evaluate_command_writes_reports(manifests: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_config(
        manifests, tmp_path, test=None, stages=(StageConfig(name="head", epochs=1, lr=1e-3),)
    )
    run = fit(cfg, progress=False).run_dir
    runner = CliRunner()
    args = ["evaluate", str(run), str(manifests["train"]), "--no-progress"]
    res = runner.invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    out = run / "reports" / "train"
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 12 and len(m["confusion"]) == 4
    assert (out / "confusion.png").stat().st_size > 1000
    html = (out / "misclassified.html").read_text()
    assert "misclassified" in html
    # predictions.csv: one row per manifest row, in order, consistent with metrics.json.
    preds = list(csv.DictReader((out / "predictions.csv").open()))
    manifest = list(csv.DictReader(manifests["train"].open()))
    assert [Path(r["file"]).name for r in preds] == [Path(r["path"]).name for r in manifest]
    assert [r["label"] for r in preds] == [r["label"] for r in manifest]
    correct = sum(r["predicted"] == r["label"] for r in preds)
    assert correct == sum(m["confusion"][i][i] for i in range(4))
    for r in preds:
        ps = [float(r[f"p_{c}"]) for c in CLASSES]
        assert abs(sum(ps) - 1) < 1e-4 and float(r["confidence"]) == max(ps)
        assert r["predicted"] == CLASSES[ps.index(max(ps))]
    # The README's sequence: evaluate right after train on a manifest train already reported on
    # replaces that report (same images, same checkpoint), atomically.
    before = (run / "reports" / "val" / "metrics.json").read_text()
    again = ["evaluate", str(run), str(manifests["val"]), "--no-progress"]
    res = runner.invoke(build_app(), again)
    assert res.exit_code == 0, res.output
    assert json.loads((run / "reports" / "val" / "metrics.json").read_text()) == json.loads(before)
    assert sorted(p.name for p in (run / "reports").iterdir() if p.name.startswith(".")) == []
    # Another manifest of the same stem (other images) does not replace it without --force.
    other = tmp_path / "other" / "train.csv"
    other.parent.mkdir()
    other.write_text(manifests["val"].read_text())
    res = runner.invoke(build_app(), ["evaluate", str(run), str(other), "--no-progress"])
    assert res.exit_code == 2 and "--force" in res.output and "other images" in res.output
    assert json.loads((out / "metrics.json").read_text()) == m


@pytest.mark.parametrize("balance", ["", 'source_balance = 0.5\nsources = "{sources}"\n'])
def test_lr_find_command_writes_the_curve(
    manifests: dict[str, Path], tmp_path: Path, balance: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'name = "tiny"\nout = "{tmp_path}"\ndata_root = "{DATA_ROOT}"\n'
        f'train = "{manifests["train"]}"\nval = "{manifests["val"]}"\nweights = "{WEIGHTS}"\n'
        f'image_size = 64\nbatch_size = 4\ncache_dir = "{manifests["cache"]}"\n'
        + balance.format(sources=DATA_ROOT / "SOURCES.tsv")
        + '[[stages]]\nname = "head"\nepochs = 1\n'
    )
    args = ["lr-find", "--config", str(config), "--num-iter", "6", "--no-progress"]
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    png = tmp_path / "lr-find-tiny" / "lr_find_head.png"
    assert png.stat().st_size > 1000 and f"curve: {png}" in res.output
    curve = json.loads(png.with_suffix(".json").read_text())
    suggested = float(res.output.split("suggested lr (min10): ")[1].split()[0])
    assert suggested == pytest.approx(curve["suggestion"], rel=0.01)
    assert suggested > 0 and curve["method"] == "min10"
    assert len(curve["lrs"]) <= 6 and curve["lrs"] == sorted(curve["lrs"])
    # A second run refuses to overwrite the curve without --force.
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 2 and "--force" in res.output
