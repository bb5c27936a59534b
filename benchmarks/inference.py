"""In-process inference: model only (ONNX Runtime fp32/int8 vs PyTorch) and end to end.

Both sides run in this one process with the same thread count, on the same real photos; the
repetitions are interleaved (see :func:`benchmarks.stats.interleaved_ms`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.stats import interleaved_ms, summary

BATCH_SIZES = (8, 32)


def pick_images(data_root: Path) -> dict[str, Path]:
    """Real shared photos: 1-2 MP drone JPEGs (one baseline, one progressive) and a 400x400 one.

    Most 1-2 MP photos in the shared set (and on the web) are progressive JPEGs, which decode
    several times slower than baseline ones even at reduced scale, so both kinds get a row.
    """
    picked: dict[str, Path] = {}
    for path in sorted((data_root / "large_quadcopters").glob("cropspray_*.jpg")):
        with Image.open(path) as img:
            if img.format == "JPEG" and 1_000_000 <= img.width * img.height <= 2_000_000:
                kind = "progressive" if img.info.get("progressive") else "baseline"
                picked.setdefault(f"1-2 MP {kind} JPEG", path)
        if len(picked) == 2:
            break
    for path in sorted(data_root.glob("*/ifo_*.jpg")):
        with Image.open(path) as img:
            if img.size == (400, 400):
                picked["400x400 JPEG"] = path
                break
    if len(picked) != 3:
        raise FileNotFoundError(f"no suitable benchmark photos under {data_root}: {picked}")
    return dict(sorted(picked.items()))


def describe(path: Path) -> str:
    with Image.open(path) as img:
        return f"{path.name} ({img.width}x{img.height}, {path.stat().st_size / 1024:.0f} KiB)"


def pin_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)


def _torch_call(model: Any, batch: np.ndarray) -> Callable[[], object]:
    import torch

    tensor = torch.from_numpy(batch.copy())

    def call() -> object:
        with torch.no_grad():
            return model(tensor)

    return call


def model_only(
    model_dir: Path,
    variants: list[str],
    eager: Any,
    torchscript: Any,
    image: bytes,
    *,
    threads: int,
    reps: int,
    batch_reps: int,
) -> dict[str, Any]:
    """Batch-1 latency (p50/p95 ms) and batch-8/32 throughput (images/s) of each engine."""
    from skyclass.core.predictor import Predictor
    from skyclass.core.preprocess import preprocess

    pin_torch_threads(threads)
    predictors = {v: Predictor(model_dir, variant=v, threads=threads) for v in variants}
    x1 = preprocess(image, predictors[variants[0]].bundle.preprocess)

    def engines(batch: np.ndarray) -> dict[str, Callable[[], object]]:
        calls: dict[str, Callable[[], object]] = {
            f"onnxruntime {v}": (lambda p=p: p.probabilities(batch)) for v, p in predictors.items()
        }
        calls["pytorch eager"] = _torch_call(eager, batch)
        calls["torchscript"] = _torch_call(torchscript, batch)
        return calls

    import torch

    with torch.no_grad():
        torch_probs = eager(torch.from_numpy(x1.copy())).exp().numpy()
    onnx_probs = predictors[variants[0]].probabilities(x1)
    parity = float(np.abs(onnx_probs - torch_probs).max())

    latency = {k: summary(v) for k, v in interleaved_ms(engines(x1), reps).items()}
    throughput: dict[str, dict[str, float]] = {k: {} for k in latency}
    for size in BATCH_SIZES:
        batch = np.repeat(x1, size, axis=0)
        samples = interleaved_ms(engines(batch), batch_reps, warmup=1)
        for name, ms in samples.items():
            throughput[name][str(size)] = size / (summary(ms)["p50"] / 1000.0)
    return {
        "threads": threads,
        "latency_ms": latency,
        "images_per_s": throughput,
        "max_abs_prob_diff_onnx_vs_torch": parity,
    }


def end_to_end(
    model_dir: Path,
    variants: list[str],
    peer_model_dir: Path,
    images: dict[str, Path],
    *,
    threads: int,
    reps: int,
) -> dict[str, Any]:
    """``Predictor.predict(bytes)`` vs the peer handler's transforms + TorchScript, per photo."""
    from benchmarks.peer import torch_handler
    from skyclass.core.predictor import Predictor

    pin_torch_threads(threads)
    predictors = {v: Predictor(model_dir, variant=v, threads=threads) for v in variants}
    out: dict[str, Any] = {}
    for name, path in images.items():
        data = path.read_bytes()
        calls: dict[str, Callable[[], object]] = {
            f"skyclass {v}": (lambda p=p, d=data: p.predict(d)) for v, p in predictors.items()
        }
        calls["peer (torchvision + TorchScript)"] = lambda d=data: torch_handler.get_prediction(
            d, str(peer_model_dir)
        )
        samples = interleaved_ms(calls, reps)
        labels = {v: p.predict(data).label for v, p in predictors.items()}
        labels["peer"] = torch_handler.get_prediction(data, str(peer_model_dir))[0]
        out[name] = {
            "image": describe(path),
            "latency_ms": {k: summary(v) for k, v in samples.items()},
            "labels": labels,
        }
    return out
