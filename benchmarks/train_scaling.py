"""Training on 1 process vs 2 processes (torchrun, gloo) on this CPU, side by side.

The same small real config (photos of the shared set, live augmentation, a head stage and an
unfreezing stage, global batch 16) is trained by one process with 2 threads, by
``torchrun --standalone --nproc_per_node=2`` with 1 thread each, and by one process with 1 thread
(the same work per process), in a rotating order, ``reps`` times each.
Rows: train images/s per stage (median over epochs and repetitions; with 2 processes the images of
both ranks over the slower rank's time) and the ratio, then each run's validation accuracy.
On a shared machine other people's load moves both sides; the ratio measured side by side holds
better than either absolute number.

    python -m benchmarks.train_scaling [--reps 1] [--per-class 24] [--size 128]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.report import Row, times, verdict

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKYCLASS_SHARED", REPO.parent / "shared")).resolve()
SECTION = "Training: 2 processes (torchrun, gloo) vs 1, same config, this CPU"
CONFIG = """
name = "scaling"
out = "{out}"
data_root = "{data}"
train = "{train}"
val = "{val}"
weights = "{weights}"
image_size = {size}
batch_size = 16
eval_batch_size = 32
cache_dir = "{cache}"
seed = 0
[augment]
cache_size = {cache_size}
[[stages]]
name = "head"
epochs = 2
lr = 3e-3
[[stages]]
name = "blocks14-18"
epochs = 2
lr = 3e-4
unfreeze = [14, 15, 16, 17, 18]
"""


def write_config(work: Path, per_class: int, size: int) -> Path:
    """Manifests (first ``per_class`` photos of each class for training, the next third of that
    for validation) and the TOML config, under ``work``."""
    data = SHARED / "data" / "flying-objects"
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {"train": [], "val": []}
    for cls in sorted(p.name for p in data.iterdir() if p.is_dir()):
        files = sorted(f for f in (data / cls).iterdir() if f.suffix.lower() in (".jpg", ".png"))
        n_val = max(2, per_class // 3)
        rows["train"] += [f"{cls}/{f.name},{cls},{f.stem}" for f in files[:per_class]]
        rows["val"] += [f"{cls}/{f.name},{cls},{f.stem}" for f in files[per_class:][:n_val]]
    for split, lines in rows.items():
        (work / f"{split}.csv").write_text("path,label,group\n" + "\n".join(lines) + "\n")
    config = work / "scaling.toml"
    config.write_text(
        CONFIG.format(
            out=work / "runs",
            data=data,
            train=work / "train.csv",
            val=work / "val.csv",
            weights=SHARED / "weights" / "mobilenet_v2_imagenet.pth",
            size=size,
            cache_size=int(size * 1.25),
            cache=work / "cache",
        )
    )
    return config


def train(config: Path, nproc: int, threads_each: int, name: str) -> dict[str, Any]:
    """One run of ``nproc`` processes with ``threads_each`` torch threads; its per-stage
    images/s from metrics.csv, its summary and wall time."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": str(threads_each)}
    tail = ["train", "--config", str(config), "--name", name, "--force", "--no-progress"]
    threads = ["--threads", str(threads_each)]
    if nproc == 1:
        cmd = [sys.executable, "-m", "skyclass", *tail, *threads]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*launcher, f"--nproc_per_node={nproc}", "-m", "skyclass", *tail, *threads]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise RuntimeError(f"{nproc}-process run failed: {res.stderr.strip().splitlines()[-1:]}")
    run = config.parent / "runs" / name
    stages: dict[str, list[float]] = {}
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            stages.setdefault(row["stage"], []).append(float(row["train_images_per_s"]))
    summary = json.loads((run / "summary.json").read_text())
    return {"stages": stages, "summary": summary, "wall_s": wall, "load": os.getloadavg()[0]}


def measure(work: Path, reps: int = 1, per_class: int = 24, size: int = 128) -> dict[str, Any]:
    """Runs of 1 process x 2 threads, 2 processes x 1 thread and 1 process x 1 thread, in a
    rotating order, ``reps`` times each; raw results per case."""
    config = write_config(work, per_class, size)
    n_val = len((work / "val.csv").read_text().splitlines()) - 1
    cases = [("1x2", 1, 2), ("2x1", 2, 1), ("1x1", 1, 1)]
    out: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in cases}
    for i in range(reps):
        for name, nproc, threads in cases[i % 3 :] + cases[: i % 3]:
            out[name].append(train(config, nproc, threads, f"{name}-r{i}"))
    return {"per_class": per_class, "n_val": n_val, "size": size, "reps": reps, "runs": out}


def _median_ips(runs: list[dict[str, Any]], stage: str) -> float:
    return statistics.median(v for r in runs for v in r["stages"].get(stage, []))


def rows_from(raw: dict[str, Any]) -> list[Row]:
    runs = raw["runs"]
    two, one, single = runs["2x1"], runs["1x2"], runs["1x1"]
    load = statistics.mean(r["load"] for case in runs.values() for r in case)
    out = []
    for stage in two[0]["stages"]:
        b = _median_ips(two, stage)
        for peer, label, target in ((one, "1 x 2 threads", ">= 1.6x"), (single, "1 x 1", "")):
            a = _median_ips(peer, stage)
            out.append(
                Row(
                    SECTION,
                    f"stage {stage}: train images/s, 2 processes x 1 thread (peer: {label}), "
                    f"{raw['size']} px, load {load:.1f}",
                    f"{b:.1f}",
                    f"{a:.1f}",
                    times(b / a),
                    target,
                    verdict(b / a >= 1.6, f"{b / a:.2f}x") if target else "",
                )
            )
    acc1 = statistics.mean(r["summary"]["val_accuracy"] for r in one)
    acc2 = statistics.mean(r["summary"]["val_accuracy"] for r in two)
    out.append(
        Row(
            SECTION,
            f"validation accuracy ({raw['n_val']} photos), 2 processes (peer: 1 x 2 threads)",
            f"{acc2:.2%}",
            f"{acc1:.2%}",
            f"{(acc2 - acc1) * 100:+.1f} points",
            "within 1 point",
            verdict(abs(acc2 - acc1) <= 0.01),
        )
    )
    wall1 = statistics.mean(r["wall_s"] for r in one)
    wall2 = statistics.mean(r["wall_s"] for r in two)
    what = "wall time per run, s (imports, decode, epochs, reports; peer: 1 x 2 threads)"
    out.append(Row(SECTION, what, f"{wall2:.0f}", f"{wall1:.0f}", times(wall1 / wall2)))
    return out


def rows(ctx: Any) -> list[Row]:
    """The section's rows (``benchmarks.run`` registers it; ``ctx`` is its Context): one
    two repetitions (skipped with --quick)."""
    if ctx.opt.quick:
        from benchmarks.context import Skip

        raise Skip("skipped in --quick (minutes of load)")
    work = ctx.opt.work / "train_scaling"
    raw = measure(work, reps=1 if ctx.opt.quick else 2)
    ctx.raw["train_scaling"] = raw
    return rows_from(raw)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / ".cache" / "bench-train-scaling")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--per-class", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    a = p.parse_args(argv)
    raw = measure(a.work, a.reps, a.per_class, a.size)
    (a.work / "raw.json").write_text(json.dumps(raw, indent=1) + "\n")
    for row in rows_from(raw):
        print(f"| {row.what} | {row.skyclass} | {row.peer} | {row.ratio} | {row.met} |")


if __name__ == "__main__":
    main()
