"""Training on a GPU, every figure issue 15 asks for, in one timed go (no GPU was available when
this was written: it has not been run; it refuses to start without CUDA).

    python -m benchmarks.gpu_train [--steps 30] [--out benchmarks/results/gpu_train.json]
        [--skip-flagship]

1. train images/s per stage of the flagship config at its 288 px, on the real photos:
   fp32 vs bf16, channels_last off/on (live augmentation, 8 workers); feature cache vs live
   augmentation (bf16); DataLoader workers 0/4/8 (head stage, live, bf16); peak GPU memory each;
2. the flagship config end to end on the GPU (bf16): wall time and test accuracy, beside the CPU
   run's (README: 10.7 min, 92.77%);
3. the same with 2 processes (torchrun, nccl) when the machine has 2 GPUs or more.
Results: a JSON file and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FLAGSHIP = REPO / "configs" / "flying-objects.toml"


def stage_speed(ctx: Any, config: Any, stage_index: int, steps: int) -> dict[str, float]:
    """images/s of ``steps`` training batches of one stage (after 3 warm-up batches) and the
    peak GPU memory, through the training loop itself."""
    import torch

    from skyclass.model import set_trainable
    from skyclass.train import loop
    from skyclass.train.loaders import train_loader
    from skyclass.train.schedule import first_trainable_block, make_optimizer

    stage = config.stages[stage_index]
    model = ctx.model
    set_trainable(model, stage.unfreeze)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    else:
        model.to(memory_format=torch.contiguous_format)
    opts = loop.StepOptions(
        first_trainable=first_trainable_block(model),
        start_block=ctx.start_block,
        channels_last=config.channels_last,
        class_weights=ctx.class_weights,
        runtime=ctx.runtime,
        scaler=ctx.runtime.amp.scaler(),
    )
    opt = make_optimizer(model, stage, 1e-4)
    loader = train_loader(ctx.train_src, config, 0, None, ctx.runtime)
    loop.train_one_epoch(model, loader, opt, None, max_steps=3, progress=False, options=opts)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    m = loop.train_one_epoch(
        model, loader, opt, None, max_steps=steps, progress=False, options=opts
    )
    torch.cuda.synchronize()
    return {"images_per_s": m.images_per_s, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def grid(steps: int) -> list[dict[str, Any]]:
    """Section 1: one training context per (cache, precision), every stage measured in it."""
    from skyclass.train.config import load_config
    from skyclass.train.context import build_context
    from skyclass.train.fit import runtime_for

    out = []
    cases = [(0, p, cl, 8) for p in ("fp32", "bf16") for cl in (False, True)]
    cases += [(5, "bf16", True, 8)] + [(0, "bf16", True, w) for w in (0, 4)]
    for views, precision, channels_last, workers in cases:
        config = load_config(
            FLAGSHIP,
            device="cuda",
            precision=precision,
            channels_last=channels_last,
            workers=workers,
            feature_cache_views=views,
        )
        t0 = time.perf_counter()
        ctx = build_context(config, runtime_for(config), progress=False)
        built = time.perf_counter() - t0
        indices = range(len(config.stages)) if workers == 8 else [0]
        for si in indices:
            r = stage_speed(ctx, config, si, steps)
            out.append(
                {
                    "stage": config.stages[si].name,
                    "pipeline": "feature cache" if views else "live augmentation",
                    "precision": precision,
                    "channels_last": channels_last,
                    "workers": workers,
                    "context_seconds": built,
                    **r,
                }
            )
            print(json.dumps(out[-1]), flush=True)
    return out


def flagship(nproc: int) -> dict[str, Any]:
    """Sections 2 and 3: the flagship config trained end to end on ``nproc`` GPU processes."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    name = f"flagship-gpu-{nproc}p"
    args = ["train", "--config", str(FLAGSHIP), "--device", "cuda", "--precision", "bf16"]
    args += ["--name", name, "--out", "runs-gpu", "--force", "--no-progress"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={nproc}", "-m", "skyclass", *args]
    else:
        cmd = [sys.executable, "-m", "skyclass", *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode:
        return {"nproc": nproc, "error": res.stderr.strip().splitlines()[-3:]}
    summary = json.loads((REPO / "runs-gpu" / name / "summary.json").read_text())
    return {
        "nproc": nproc,
        "wall_minutes": wall / 60,
        "test_accuracy": summary.get("test_accuracy"),
        "images_per_s": summary.get("images_per_s"),
        "world_size": summary.get("world_size"),
        "precision": summary.get("precision"),
    }


def table(result: dict[str, Any]) -> str:
    lines = ["| stage | pipeline | precision | channels_last | workers | images/s | peak GiB |"]
    lines.append("|---|---|---|---|---|---|---|")
    for r in result["grid"]:
        lines.append(
            f"| {r['stage']} | {r['pipeline']} | {r['precision']} | {r['channels_last']} | "
            f"{r['workers']} | {r['images_per_s']:.0f} | {r['peak_gib']:.2f} |"
        )
    for f in result.get("flagship", []):
        lines.append(f"\nflagship, {f['nproc']} process(es): {json.dumps(f)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_train.json")
    p.add_argument("--skip-flagship", action="store_true")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device; this benchmark measures GPU training only", file=sys.stderr)
        return 2
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "grid": grid(a.steps),
    }
    if not a.skip_flagship:
        result["flagship"] = [flagship(1)]
        if torch.cuda.device_count() >= 2:
            result["flagship"].append(flagship(2))
        else:
            result["flagship_2_processes"] = "skipped: one GPU (nccl needs a GPU per process)"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
