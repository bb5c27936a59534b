"""Fixtures the training tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CLASSES, shared_images, write_manifest


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train (3 a class) and val (2 a class) manifests of shared photos, and a cache folder."""
    d = tmp_path_factory.mktemp("manifests")
    train, val = [], []
    for cls in CLASSES:
        files = shared_images(cls, 5)
        train += files[:3]
        val += files[3:5]
    return {
        "train": write_manifest(d / "train.csv", train),
        "val": write_manifest(d / "val.csv", val),
        "cache": d / "cache",
    }
