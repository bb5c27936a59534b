"""Data pipeline at scale: peak RSS and images/s at 2,000 and 20,000 photos.

    python -m benchmarks.data_scale [DATA_ROOT] [WORKDIR] [--cache-size 512]

The photos are generated from the shared set (every photo re-encoded 13 times: long side 800 px
down to 416 px, JPEG quality 95 down to 59) under ``WORKDIR`` (``benchmarks/work/data-scale``,
gitignored): 20,878 files, of which 20,000 evenly spaced ones make the big manifest and every
10th of those the small one, so both sets have the same mix of classes, sources and sizes.

Each set runs in a fresh subprocess with its own empty decoded-image cache: the decode pass
(``load_images``: decode + resize to the training cache size + write ``.npy`` entries), then one
epoch of training batches out of a DataLoader (RandomResizedCrop, CutOut, flip, rotate, jitter,
normalize: the flagship's augmentation). The child reports its wall times and its own peak RSS
(VmHWM). Memory is flat when the 20k row's peak stays near the 2k row's; the "in RAM" row is the
old pipeline (the whole decoded set held in memory) on the 2k set, for scale.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

COPIES = 13
SIDES = (800, 768, 736, 704, 672, 640, 608, 576, 544, 512, 480, 448, 416)
BIG, SMALL = 20_000, 2_000

_CHILD = r"""
import json, sys, time
from pathlib import Path
from skyclass.core.preprocess import PreprocessConfig
from skyclass.data.dataset import ImageDataset, load_images, read_manifest
from skyclass.data.transforms import (
    AugmentConfig, build_train_transform, train_cache_tag, train_input)
import torch
from torch.utils.data import DataLoader

manifest, root, cache, cache_size, image_size, budget_mb, max_batches = sys.argv[1:8]
torch.set_num_threads(1)
pre = PreprocessConfig(size=(int(image_size), int(image_size)))
aug = AugmentConfig(cache_size=int(cache_size))
m = read_manifest(manifest, root)
names = sorted(set(m.labels))
t = time.perf_counter()
imgs = load_images(
    m.files(), lambda b: train_input(b, pre, aug), tag=train_cache_tag(pre, aug),
    cache_dir=None if cache == "-" else cache, progress=False,
    memory_budget_mb=None if budget_mb == "-" else float(budget_mb),
)
decode_s = time.perf_counter() - t
ds = ImageDataset(imgs, m.targets(names), build_train_transform(pre, aug, seed=0))
loader = DataLoader(ds, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
t, n = time.perf_counter(), 0
for i, (x, y) in enumerate(loader):
    n += x.shape[0]
    if i + 1 >= int(max_batches):
        break
batch_s = time.perf_counter() - t
print(json.dumps({
    "files": len(m), "decode_seconds": decode_s, "batch_images": n, "batch_seconds": batch_s,
    "in_memory": imgs.in_memory if hasattr(imgs, "in_memory") else len(imgs),
    "rss_mb": next(int(l.split()[1]) for l in open("/proc/self/status")
                   if l.startswith("VmHWM:")) / 1024,
}))
"""


def _reencode(job: tuple[Path, Path]) -> int:
    from PIL import Image

    src, dst_dir = job
    made = 0
    try:
        with Image.open(src) as img:
            img.draft("RGB", (SIDES[0], SIDES[0]))
            rgb = img.convert("RGB")
    except Exception:
        return 0
    for k, side in enumerate(SIDES[:COPIES]):
        out = dst_dir / f"{src.stem}_s{k:02d}.jpg"
        if out.exists():
            made += 1
            continue
        copy = rgb.copy()
        copy.thumbnail((side, side))
        buf = io.BytesIO()
        copy.save(buf, format="JPEG", quality=95 - 3 * k)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, out)
        made += 1
    return made


def make_set(data_root: Path, target: Path, workers: int = 2) -> list[Path]:
    """Generate (or complete) the re-encoded set; returns every generated file, sorted."""
    jobs = []
    for cls in sorted(p for p in data_root.iterdir() if p.is_dir()):
        (target / cls.name).mkdir(parents=True, exist_ok=True)
        jobs += [(f, target / cls.name) for f in sorted(cls.iterdir()) if f.is_file()]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_reencode, jobs, chunksize=8))
    return sorted(p for p in target.glob("*/*.jpg"))


def write_manifests(files: list[Path], root: Path, work: Path) -> dict[int, Path]:
    """Manifests of BIG evenly spaced files and of every 10th of those."""
    if len(files) < BIG:
        raise RuntimeError(f"only {len(files)} generated files, need {BIG}")
    big = [files[i * len(files) // BIG] for i in range(BIG)]
    out = {}
    for n, chosen in ((BIG, big), (SMALL, big[::10])):
        path = work / f"manifest-{n}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "group"])
            for f in chosen:
                w.writerow([f.relative_to(root).as_posix(), f.parent.name, f.stem])
        out[n] = path
    return out


def measure(
    manifest: Path,
    root: Path,
    cache: Path | None,
    *,
    cache_size: int,
    image_size: int,
    budget_mb: float | None,
    max_batches: int,
) -> dict[str, Any]:
    """One child process: cold decode pass into ``cache`` (emptied first), then batches."""
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [str(manifest), str(root), str(cache) if cache else "-", str(cache_size)]
    args += [str(image_size), "-" if budget_mb is None else str(budget_mb), str(max_batches)]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    data_root: Path,
    work: Path,
    *,
    cache_size: int = 512,
    image_size: int = 288,
    budget_mb: float = 256.0,
    max_batches: int = 100,
) -> list[dict[str, Any]]:
    """Rows: set, files, decode and batch images/s, peak RSS; 2k in RAM, 2k and 20k on disk."""
    t = time.perf_counter()
    root = work / "photos"
    files = make_set(data_root, root)
    made = time.perf_counter() - t
    manifests = write_manifests(files, root, work)
    plan = [
        ("2k, decoded set in RAM (old)", SMALL, None, None),
        ("2k, disk cache", SMALL, work / "cache-2k", budget_mb),
        ("20k, disk cache", BIG, work / "cache-20k", budget_mb),
    ]
    rows = []
    for name, n, cache, budget in plan:
        m = measure(
            manifests[n],
            root,
            cache,
            cache_size=cache_size,
            image_size=image_size,
            budget_mb=budget,
            max_batches=max_batches,
        )
        rows.append(
            {
                "set": name,
                "files": m["files"],
                "decode_images_per_s": round(m["files"] / m["decode_seconds"], 1),
                "batch_images_per_s": round(m["batch_images"] / m["batch_seconds"], 1),
                "peak_rss_mb": round(m["rss_mb"], 1),
                "held_in_ram": m["in_memory"],
            }
        )
    rows[-1]["note"] = (
        f"{len(files)} photos generated/checked in {made:.0f} s; cache {cache_size} px, model "
        f"{image_size} px, memory budget {budget_mb:.0f} MB, {max_batches} batches of 32"
    )
    for _, _, cache, _ in plan:
        if cache is not None:  # 20k entries at 512 px are 15 GB
            shutil.rmtree(cache, ignore_errors=True)
    return rows


def rows(ctx: Any) -> list[Any]:
    """Table rows for benchmarks/run.py (``benchmarks.context.Context``)."""
    from benchmarks.report import Row, na, verdict

    section = "Data pipeline at scale (benchmarks/data_scale.py)"
    if ctx.opt.quick:
        return [Row(section, "peak RSS at 2k vs 20k photos", na("skipped in --quick"))]
    result = run(ctx.opt.data_root, ctx.opt.work / "data-scale")
    ctx.raw["data_scale"] = result
    by = {r["set"]: r for r in result}
    small, big = by["2k, disk cache"], by["20k, disk cache"]
    growth = big["peak_rss_mb"] / small["peak_rss_mb"]
    out = [
        Row(
            section,
            f"{r['set']}: peak RSS MB / decode images/s / batch images/s",
            f"{r['peak_rss_mb']:.0f} / {r['decode_images_per_s']:.0f} / "
            f"{r['batch_images_per_s']:.0f}",
        )
        for r in result
    ]
    out.append(
        Row(
            section,
            "peak RSS, 20k vs 2k photos (disk cache)",
            f"{growth:.2f}x",
            target="flat (not 10x)",
            met=verdict(growth < 1.5, f"{growth:.1f}x"),
        )
    )
    return out


def markdown(result: list[dict[str, Any]]) -> str:
    keys = [k for k in result[0] if k != "note"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in result]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_scale")
    shared = repo.parent / "shared/data/flying-objects"
    p.add_argument("data_root", nargs="?", type=Path, default=shared)
    p.add_argument("work", nargs="?", type=Path, default=repo / "benchmarks/work/data-scale")
    p.add_argument("--cache-size", type=int, default=512)
    p.add_argument("--budget-mb", type=float, default=256.0)
    p.add_argument("--max-batches", type=int, default=100)
    p.add_argument("--generate-only", action="store_true")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.generate_only:
        print(len(make_set(a.data_root, a.work / "photos")), "files")
        return
    result = run(
        a.data_root,
        a.work,
        cache_size=a.cache_size,
        budget_mb=a.budget_mb,
        max_batches=a.max_batches,
    )
    print(markdown(result))
    print(f"\n{result[-1]['note']}; {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    main()
