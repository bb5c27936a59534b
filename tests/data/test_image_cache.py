"""The disk-backed decoded-image cache: same pixels as decoding, memory budget, shared."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from skyclass.core.preprocess import PreprocessConfig
from skyclass.data.dataset import DataError, ImageDataset, cache_key, load_images
from skyclass.data.transforms import (
    AugmentConfig,
    build_train_transform,
    eval_cache_tag,
    train_cache_tag,
    train_input,
)
from tests.conftest import CLASSES, shared_images

PRE = PreprocessConfig(size=(64, 64))
AUG = AugmentConfig(cache_size=96)
TAG = train_cache_tag(PRE, AUG)


def _decode(data: bytes) -> np.ndarray:
    return train_input(data, PRE, AUG)


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return [f for c in CLASSES for f in shared_images(c, 3)]


def test_cached_pixels_equal_fresh_decoding_cold_warm_and_budgeted(
    photos: list[Path], tmp_path: Path
) -> None:
    direct = [_decode(f.read_bytes()) for f in photos]
    cold = load_images(photos, _decode, tag=TAG, cache_dir=tmp_path, progress=False)
    warm_disk = load_images(
        photos, _decode, tag=TAG, cache_dir=tmp_path, progress=False, memory_budget_mb=0
    )
    in_ram = load_images(photos, _decode, tag=TAG, progress=False)
    assert cold.in_memory == len(photos) and warm_disk.in_memory == 0
    for i, ref in enumerate(direct):
        for got in (cold[i], warm_disk[i], in_ram[i]):
            assert got.dtype == np.uint8 and got.shape == (96, 96, 3)
            assert np.array_equal(got, ref), photos[i].name
    assert len(list(tmp_path.glob("*.npy"))) == len(photos)
    assert not list(tmp_path.glob(".*.tmp.npy"))


def test_augmented_batches_bit_identical_from_disk_and_from_ram(
    photos: list[Path], tmp_path: Path
) -> None:
    targets = list(range(len(photos)))
    ram = load_images(photos, _decode, tag=TAG, progress=False)
    disk = load_images(
        photos, _decode, tag=TAG, cache_dir=tmp_path, progress=False, memory_budget_mb=0
    )
    a = ImageDataset(ram, targets, build_train_transform(PRE, AUG, seed=5))
    b = ImageDataset(disk, targets, build_train_transform(PRE, AUG, seed=5))
    for i in range(len(photos)):
        xa, ya = a[i]
        xb, yb = b[i]
        assert ya == yb and bool((xa == xb).all()), photos[i].name


def test_memory_budget_holds_the_first_images_and_reads_the_rest(
    photos: list[Path], tmp_path: Path
) -> None:
    one = _decode(photos[0].read_bytes()).nbytes
    budget_mb = 2.5 * one / 2**20
    imgs = load_images(
        photos, _decode, tag=TAG, cache_dir=tmp_path, progress=False, memory_budget_mb=budget_mb
    )
    assert imgs.in_memory == 2
    # warm: same split between RAM and disk, same pixels
    again = load_images(
        photos, _decode, tag=TAG, cache_dir=tmp_path, progress=False, memory_budget_mb=budget_mb
    )
    assert again.in_memory == 2
    assert all(np.array_equal(imgs[i], again[i]) for i in range(len(photos)))
    assert [a.shape for a in imgs[1:4]] == [(96, 96, 3)] * 3


def test_truncated_entry_is_decoded_again(photos: list[Path], tmp_path: Path) -> None:
    f = photos[0]
    load_images([f], _decode, tag=TAG, cache_dir=tmp_path, progress=False)
    (entry,) = tmp_path.glob("*.npy")
    whole = entry.read_bytes()
    entry.write_bytes(whole[:-100])
    imgs = load_images([f], _decode, tag=TAG, cache_dir=tmp_path, progress=False)
    assert np.array_equal(imgs[0], _decode(f.read_bytes()))
    assert entry.read_bytes() == whole


def test_stale_temporary_entries_are_removed(photos: list[Path], tmp_path: Path) -> None:
    old, fresh = tmp_path / ".abc.123.tmp.npy", tmp_path / ".def.456.tmp.npy"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    os.utime(old, (time.time() - 2 * 3600,) * 2)
    load_images(photos[:1], _decode, tag=TAG, cache_dir=tmp_path, progress=False)
    assert not old.exists() and fresh.exists()


def test_key_names_every_setting_of_the_pixels(photos: list[Path]) -> None:
    data = photos[0].read_bytes()
    grey = PreprocessConfig(size=(64, 64), background=(128, 128, 128))
    assert train_cache_tag(grey, AUG) != TAG
    assert eval_cache_tag(grey) != eval_cache_tag(PRE)
    assert cache_key(data, TAG) != cache_key(data, train_cache_tag(PRE, AugmentConfig(128)))
    assert cache_key(data, TAG) != cache_key(data + b"\0", TAG)


def test_undecodable_file_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"bad\.jpg"):
        load_images([bad], _decode, tag=TAG, cache_dir=tmp_path / "c", progress=False)


def _rank(args: tuple[list[Path], Path, multiprocessing.Queue]) -> None:
    files, cache, queue = args
    decoded: list[int] = []

    def counting(data: bytes) -> np.ndarray:
        decoded.append(1)
        return _decode(data)

    imgs = load_images(files, counting, tag=TAG, cache_dir=cache, progress=False)
    queue.put((len(decoded), [cache_key(f.read_bytes(), TAG) for f in files], imgs[3].tobytes()))


def test_two_processes_share_one_cache_one_decodes(photos: list[Path], tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=((photos, tmp_path, queue),)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(r[0] for r in results) == [0, len(photos)]
    assert results[0][2] == results[1][2] == _decode(photos[3].read_bytes()).tobytes()
    assert sorted(p.stem for p in tmp_path.glob("*.npy")) == sorted(results[0][1])
    assert not list(tmp_path.glob(".*.tmp.npy"))


def test_dataloader_workers_read_disk_entries_as_the_main_process_does(
    photos: list[Path], tmp_path: Path
) -> None:
    """Spawned workers (macOS's and Windows' default) get the images by pickling: the paths of
    the entries, not the pixels."""
    import pickle

    import torch
    from torch.utils.data import DataLoader

    from skyclass.data.transforms import build_test_transform

    imgs = load_images(
        photos, _decode, tag=TAG, cache_dir=tmp_path, progress=False, memory_budget_mb=0
    )
    assert len(pickle.dumps(imgs)) < 20_000  # paths only; the pixels are 330 kB
    ds = ImageDataset(imgs, list(range(len(photos))), build_test_transform(PRE))
    ref = torch.cat([x for x, _ in DataLoader(ds, batch_size=4)])
    spawned = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    assert torch.equal(torch.cat([x for x, _ in spawned]), ref)
