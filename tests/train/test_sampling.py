"""Source-balanced sampling: the weights by hand, the draws they give, and their bad input."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from skyclass.data.dataset import DataError
from skyclass.train.config import ConfigError, StageConfig, TrainConfig
from skyclass.train.fit import ViewDataset, _train_loader, check_data, fit
from skyclass.train.sampling import source_balanced_weights
from tests.conftest import DATA_ROOT, WEIGHTS, shared_images, write_manifest

SOURCES = DATA_ROOT / "SOURCES.tsv"


def test_weights_by_hand() -> None:
    labels = ["a", "a", "a", "a", "a", "b", "b"]
    sources = ["x", "x", "x", "x", "y", "x", "z"]
    # power 1: class a's sources x (4 photos) and y (1) get half of a's 5 draws each.
    w = source_balanced_weights(labels, sources, 1.0)
    np.testing.assert_allclose(w, [0.625] * 4 + [2.5, 1.0, 1.0])
    # power 0.5: raw 1/2 for x, 1 for y; scaled so class a still sums to 5.
    w = source_balanced_weights(labels, sources, 0.5)
    np.testing.assert_allclose(w, [5 / 6] * 4 + [5 / 3, 1.0, 1.0])
    np.testing.assert_allclose(source_balanced_weights(labels, sources, 0.0), np.ones(7))
    with pytest.raises(ValueError, match="power"):
        source_balanced_weights(labels, sources, 1.5)
    with pytest.raises(ValueError, match="sources"):
        source_balanced_weights(labels, sources[:-1], 1.0)


@pytest.fixture()
def lopsided(tmp_path: Path) -> dict[str, Path]:
    """large_quadcopters from two sources, 6 to 2 (the real SOURCES.tsv names them); every
    other class from one."""
    large = shared_images("large_quadcopters", 6, "cropspray_") + shared_images(
        "large_quadcopters", 2, "ifo_"
    )
    others = [
        f
        for c in ("flying_birds", "small_quadcopters", "winged_drones")
        for f in shared_images(c, 2, "ifo_")
    ]
    val = [shared_images(c, 3, "ifo_")[2] for c in ("flying_birds", "large_quadcopters")]
    return {
        "train": write_manifest(tmp_path / "train.csv", large + others),
        "val": write_manifest(tmp_path / "val.csv", val),
        "out": tmp_path / "runs",
    }


def _config(m: dict[str, Path], **kw) -> TrainConfig:
    base = {
        "name": "srcbal",
        "out": str(m["out"]),
        "data_root": str(DATA_ROOT),
        "train": str(m["train"]),
        "val": str(m["val"]),
        "weights": str(WEIGHTS),
        "image_size": 64,
        "batch_size": 4,
        "eval_batch_size": 8,
        "max_steps": 2,
        "cache_dir": None,
        "stages": (StageConfig(name="head", epochs=1, lr=1e-3),),
        "source_balance": 1.0,
        "sources": str(SOURCES),
    }
    return TrainConfig(**{**base, **kw})


def test_real_sources_even_out_a_class_and_keep_its_share(lopsided: dict[str, Path]) -> None:
    config = _config(lopsided)
    data = check_data(config)
    assert data.train_weights is not None
    src = ["ifo" if "/ifo_" in p else "crop" for p in data.train.paths]
    w = dict(zip(data.train.paths, data.train_weights, strict=True))
    large = [p for p in data.train.paths if p.startswith("large_quadcopters/")]
    assert sum(w[p] for p in large) == pytest.approx(8.0)
    assert {round(w[p], 6) for p in large if "/ifo_" in p} == {2.0}
    assert {round(w[p], 6) for p in large if "/cropspray_" in p} == {round(8 / 12, 6)}
    # The draws follow: over many seeded epochs, the 2 ifo photos of large_quadcopters are
    # drawn about as often as the 6 crop-sprayer photos together, and the class keeps 8/14.
    n = len(data.train.paths)
    # One cached "view" per photo whose value is the photo's index: a batch names its photos.
    items = ViewDataset(torch.arange(n, dtype=torch.float32).view(1, n), list(range(n)))
    counts: Counter[str] = Counter()
    for seed in range(300):
        loader = _train_loader(items, replace(config, batch_size=7), seed, data.train_weights)
        for x, _ in loader:
            for i in x.long().tolist():
                label = data.train.labels[i]
                counts[f"{label}|{src[i]}" if label == "large_quadcopters" else label] += 1
    total = sum(counts.values())
    ifo, crop = counts["large_quadcopters|ifo"], counts["large_quadcopters|crop"]
    assert 0.85 < ifo / crop < 1.15
    assert (ifo + crop) / total == pytest.approx(8 / 14, abs=0.02)
    # Off by default: no weights, every photo once per epoch.
    assert check_data(_config(lopsided, source_balance=0.0, sources=None)).train_weights is None


def test_a_weighted_run_trains_and_reports(lopsided: dict[str, Path]) -> None:
    torch.set_num_threads(2)
    result = fit(_config(lopsided, source_balance=0.5), progress=False)
    assert 0 <= result.best_val_accuracy <= 1
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["source_balance"] == 0.5 and saved["sources"] == str(SOURCES)
    assert (result.run_dir / "reports" / "val" / "metrics.json").is_file()


def test_bad_source_settings(lopsided: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs sources"):
        _config(lopsided, sources=None)
    with pytest.raises(ConfigError, match="source_balance"):
        _config(lopsided, source_balance=2.0)
    partial = tmp_path / "partial.tsv"
    rows = SOURCES.read_text(encoding="utf-8").splitlines()
    partial.write_text("\n".join(r for r in rows if "cropspray_" not in r) + "\n")
    with pytest.raises(DataError, match=r"no source for 6 training file\(s\)"):
        check_data(_config(lopsided, sources=str(partial)))
    with pytest.raises(DataError, match="no column 'origin'"):
        check_data(_config(lopsided, source_column="origin"))
    with pytest.raises(DataError, match="file not found"):
        check_data(_config(lopsided, sources=str(tmp_path / "none.tsv")))
