"""Issue 20: a run is reproducible (fresh processes, fresh or warm caches give bit-identical
weights) and its log reads well outside a terminal (one line per epoch, no carriage returns)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skyclass.train.checkpoint import load_checkpoint
from tests.conftest import CLASSES, DATA_ROOT, REPO_ROOT, WEIGHTS, shared_images, write_manifest

EPOCH_LINE = re.compile(r"^(head|top) (\d+)/(\d+): \d+/\d+ batch in [\d.]+ s .*loss=")


def _config(tmp: Path, name: str, cache: Path, manifests: tuple[Path, Path]) -> Path:
    train, val = manifests
    path = tmp / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nout = "{tmp / "runs"}"\ndata_root = "{DATA_ROOT}"\n'
        f'train = "{train}"\nval = "{val}"\nweights = "{WEIGHTS}"\n'
        f"image_size = 64\nbatch_size = 4\neval_batch_size = 8\nmax_steps = 2\nnum_threads = 2\n"
        f'cache_dir = "{cache}"\nfeature_cache_views = 2\nfeature_cache_block = 8\n'
        "dropout = 0.2\n[augment]\ncache_size = 96\n[lr_find]\nnum_iter = 4\n"
        '[[stages]]\nname = "head"\nepochs = 1\n'
        '[[stages]]\nname = "top"\nepochs = 2\nunfreeze = [16, 17, 18]\nlr = 1e-3\n'
    )
    return path


def _train_in_fresh_process(config: Path, log: Path) -> Path:
    """``python -m skyclass train`` with stdout and stderr to a file, as under CI or nohup."""
    env = {k: v for k, v in os.environ.items() if k != "SKYCLASS_PROGRESS"}
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    with log.open("wb") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "skyclass", "train", "--config", str(config)],
            cwd=REPO_ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, log.read_text(errors="replace")[-3000:]
    return config.parent / "runs" / config.stem


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fresh_processes_cold_and_warm_caches_give_identical_weights(tmp_path: Path) -> None:
    train, val = [], []
    for cls in CLASSES:
        files = shared_images(cls, 5)
        train += files[:3]
        val += files[3:5]
    manifests = (
        write_manifest(tmp_path / "train.csv", train),
        write_manifest(tmp_path / "val.csv", val),
    )
    cache_a, cache_b = tmp_path / "cache-a", tmp_path / "cache-b"
    runs = {}
    for name, cache in (("cold_a", cache_a), ("cold_b", cache_b), ("warm_a", cache_a)):
        log = tmp_path / f"{name}.log"
        runs[name] = _train_in_fresh_process(_config(tmp_path, name, cache, manifests), log)
        text = log.read_bytes().decode()
        # Readable log: no carriage-return frames, one line per epoch, nothing else noisy.
        assert "\r" not in text, text[:500]
        epochs = [m.groups() for line in text.splitlines() if (m := EPOCH_LINE.match(line))]
        assert epochs == [("head", "1", "1"), ("top", "1", "2"), ("top", "2", "2")], text
        assert len(text) < 4000, text
    assert any(cache_a.glob("*.npy")) and any(cache_b.glob("*.npy"))

    weights = {n: load_checkpoint(r / "checkpoints" / "last.pt")["model"] for n, r in runs.items()}
    ref = weights["cold_a"]
    for name in ("cold_b", "warm_a"):
        assert weights[name].keys() == ref.keys()
        for k, v in ref.items():
            assert torch.equal(v, weights[name][k]), f"{name}: {k} differs"
    # The tensors did change in training (identical because reproducible, not because frozen).
    init = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert not torch.equal(ref["features.17.conv.0.0.weight"], init["features.17.conv.0.0.weight"])

    summary = json.loads((runs["cold_a"] / "summary.json").read_text())
    env = summary["environment"]
    assert env["torch"] == torch.__version__ and env["num_threads"] == 2
    assert env["deterministic_algorithms"] is True and env["cpu_model"]
    assert "cpu_capability" in env and "depends_on" in env
    assert env["versions"]["pillow"] and isinstance(env["cpu_isa_flags"], list)
