"""The embedding of `skyclass label-issues`: ONNX Runtime (its CPU engine) vs eager PyTorch.

The same real photos, the same decoded-image cache (warmed first), the same backbone weights; the
two engines alternate, and the embeddings are compared (they must agree to ~1e-5).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.context import Context
from benchmarks.report import Row, times, verdict
from benchmarks.stats import ratio

SECTION = "label-issues: frozen-backbone embedding (224 px, image + mirror)"


def photos(data_root: Path, n: int) -> list[Path]:
    """n shared photos, spread over the classes (sorted, every k-th)."""
    files = sorted(p for p in data_root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    step = max(1, len(files) // n)
    return files[::step][:n]


def measure(files: list[Path], weights: Path, cache: Path, threads: int, rounds: int) -> dict:
    from skyclass.train.label_issues import LabelIssueConfig, embed

    cfg = LabelIssueConfig(
        cache / "unused.csv", cache, str(weights), threads=threads, cache_dir=str(cache)
    )
    engines = {
        "onnxruntime": replace(cfg, engine="onnxruntime"),
        "torch": replace(cfg, engine="torch"),
    }
    embed(files[:2], engines["onnxruntime"], progress=False)  # export the backbone once
    embed(files, engines["torch"], progress=False)  # warm the decoded-image cache
    seconds: dict[str, list[float]] = {k: [] for k in engines}
    out: dict[str, Any] = {}
    for _ in range(rounds):
        for name, c in engines.items():
            start = time.perf_counter()
            out[name] = embed(files, c, progress=False)
            seconds[name].append(time.perf_counter() - start)
    diff = float(np.abs(out["onnxruntime"] - out["torch"]).max())
    return {
        "photos": len(files),
        "threads": threads,
        "images_per_s": {k: len(files) / float(np.median(v)) for k, v in seconds.items()},
        "max_abs_diff": diff,
    }


def rows(ctx: Context) -> list[Row]:
    opt = ctx.opt
    n, rounds = (24, 1) if opt.quick else (200, 3)
    files = photos(opt.data_root, n)
    result = measure(
        files, opt.weights, opt.work / "label-issues-cache", max(opt.threads, 2), rounds
    )
    ctx.raw["label_issues_embed"] = result
    ips = result["images_per_s"]
    r = ratio(ips["onnxruntime"], ips["torch"])
    return [
        Row(
            SECTION,
            f"images/s, {result['photos']} shared photos, {result['threads']} threads, "
            f"median of {rounds}: ONNX Runtime vs eager PyTorch (the engine before)",
            f"{ips['onnxruntime']:.1f}",
            f"{ips['torch']:.1f}",
            times(r, "more"),
            ">= 3x",
            verdict(r >= 3, f"{r:.1f}x"),
        ),
        Row(
            SECTION,
            "max abs difference of the embeddings, ONNX Runtime vs PyTorch",
            f"{result['max_abs_diff']:.1e}",
            "",
            "",
            "< 1e-4",
            verdict(result["max_abs_diff"] < 1e-4),
        ),
    ]
