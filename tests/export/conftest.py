"""The tiny real checkpoint the export tests share: shared weights, a few steps on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skyclass.core.preprocess import PreprocessConfig, preprocess
from skyclass.model import build_model
from tests.conftest import CLASSES, DATA_ROOT, shared_images, write_manifest

PRE = PreprocessConfig()


def batch(files: list[Path]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([preprocess(f.read_bytes(), PRE) for f in files]))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Path:
    """Contract-format checkpoint: shared ImageNet backbone + head trained 3 steps on 12 photos."""
    tmp = tmp_path_factory.mktemp("ckpt")
    train = [f for c in CLASSES for f in shared_images(c, 6)]
    test = [f for c in CLASSES for f in shared_images(c, 8)[6:8]]
    torch.manual_seed(0)
    model = build_model(len(CLASSES), weights=weights_path)
    for p in model.features.parameters():
        p.requires_grad = False
    x = batch(train[::2])
    y = torch.tensor([CLASSES.index(f.parent.name) for f in train[::2]])
    opt = torch.optim.Adam(model.classifier.parameters(), lr=3e-3)
    model.train()
    model.features.eval()
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    ckpt = {
        "model": model.state_dict(),
        "class_names": list(CLASSES),
        "preprocess": PRE.to_dict(),
        "dropout": 0.2,
        "arch": "mobilenet_v2",
        "epoch": 1,
        "stage": "head",
        "config": {},
        "data": {
            "root": str(DATA_ROOT),
            "train": str(write_manifest(tmp / "train.csv", train)),
            "val": str(write_manifest(tmp / "val.csv", test)),
            "test": str(write_manifest(tmp / "test.csv", test)),
        },
        "metrics": {"val_accuracy": 0.5},
        "optimizer": opt.state_dict(),
        "scheduler": None,
        "rng": None,
    }
    path = tmp / "best.pt"
    torch.save(ckpt, path)
    return path
