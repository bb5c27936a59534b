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

from benchmarks.context import Context
from benchmarks.report import Row, ms, times, verdict
from benchmarks.stats import interleaved_ms, ratio, summary

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
        for name, samples_ms in samples.items():
            throughput[name][str(size)] = size / (summary(samples_ms)["p50"] / 1000.0)
    return {
        "threads": threads,
        "latency_ms": latency,
        "images_per_s": throughput,
        "max_abs_prob_diff_onnx_vs_torch": parity,
    }


SEED_PEER = "peer (torchvision + TorchScript)"
SAME_SIZE_PEER = "peer at the model's input size"


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
    own = predictors[variants[0]].bundle.preprocess.size[0]
    peers = {SEED_PEER: torch_handler.SEED_SIZE, SAME_SIZE_PEER: own}
    own = predictors[variants[0]].bundle.preprocess.size[0]
    peers = {SEED_PEER: torch_handler.SEED_SIZE, SAME_SIZE_PEER: own}
    out: dict[str, Any] = {}
    for name, path in images.items():
        data = path.read_bytes()
        calls: dict[str, Callable[[], object]] = {
            f"skyclass {v}": (lambda p=p, d=data: p.predict(d)) for v, p in predictors.items()
        }
        for peer_name, size in peers.items():
            calls[peer_name] = lambda d=data, s=size: torch_handler.get_prediction(
                d, str(peer_model_dir), s
            )
        samples = interleaved_ms(calls, reps)
        labels = {v: p.predict(data).label for v, p in predictors.items()}
        labels["peer"] = torch_handler.get_prediction(data, str(peer_model_dir), own)[0]
        out[name] = {
            "image": describe(path),
            "latency_ms": {k: summary(v) for k, v in samples.items()},
            "labels": labels,
        }
    return out


def _variants(model_dir: Path) -> list[str]:
    from skyclass.core.bundle import load_bundle

    bundle = load_bundle(model_dir)
    return [
        v
        for v in ("fp32", "int8")
        if v in bundle.files and (model_dir / bundle.files[v].path).is_file()
    ]


def rows(ctx: Context) -> list[Row]:
    """Model-only and end-to-end rows: ONNX Runtime vs the peer's PyTorch, same photos."""
    import torch

    opt, peer = ctx.opt, ctx.peer()
    section = (
        f"Inference in process ({opt.threads} thread{'s' if opt.threads > 1 else ''} each side)"
    )
    variants = _variants(opt.model_dir)
    images = pick_images(opt.data_root)
    torchscript = torch.jit.load(str(peer.model_dir / "model.pt"), map_location="cpu").eval()
    mo = model_only(
        opt.model_dir,
        variants,
        peer.eager,
        torchscript,
        images["1-2 MP progressive JPEG"].read_bytes(),
        threads=opt.threads,
        reps=opt.model_reps,
        batch_reps=opt.batch_reps,
    )
    e2e = end_to_end(
        opt.model_dir, variants, peer.model_dir, images, threads=opt.threads, reps=opt.e2e_reps
    )
    ctx.raw["inference"] = {
        "images": {k: describe(v) for k, v in images.items()},
        "model_only": mo,
        "end_to_end": e2e,
        "peer_weights": peer.weights_source,
    }
    return [
        *_model_only_rows(section, mo, variants, peer.weights_source),
        *_end_to_end_rows(section, e2e, variants),
    ]


def _model_only_rows(
    section: str, mo: dict[str, Any], variants: list[str], weights_source: str
) -> list[Row]:
    lat, ips = mo["latency_ms"], mo["images_per_s"]
    eager, ts, fp32 = lat["pytorch eager"], lat["torchscript"], lat["onnxruntime fp32"]

    def p50_p95(x: dict[str, float]) -> str:
        return f"{ms(x['p50'])} / {ms(x['p95'])}"

    rows = [
        Row(
            section,
            f"model only, batch 1, p50 / p95 ms: ONNX Runtime {v} vs PyTorch eager",
            p50_p95(lat[f"onnxruntime {v}"]),
            p50_p95(eager),
            times(ratio(eager["p50"], lat[f"onnxruntime {v}"]["p50"])),
        )
        for v in variants
    ]
    rows.append(
        Row(
            section,
            "model only, batch 1, p50 / p95 ms: ONNX Runtime fp32 vs TorchScript",
            p50_p95(fp32),
            p50_p95(ts),
            times(ratio(ts["p50"], fp32["p50"])),
        )
    )
    for size in BATCH_SIZES:
        key = str(size)
        best = max(ips[f"onnxruntime {v}"][key] for v in variants)
        rows.append(
            Row(
                section,
                f"model only, images/s at batch {size} (ONNX Runtime vs PyTorch eager)",
                ", ".join(f"{v} {ips[f'onnxruntime {v}'][key]:.0f}" for v in variants),
                f"eager {ips['pytorch eager'][key]:.0f}, TorchScript {ips['torchscript'][key]:.0f}",
                times(ratio(best, ips["pytorch eager"][key]), "more"),
            )
        )
    parity = mo["max_abs_prob_diff_onnx_vs_torch"]
    rows.append(
        Row(
            section,
            "same network on both sides: max abs diff of probabilities, ONNX fp32 vs PyTorch",
            f"{parity:.1e}",
            weights_source,
            "",
            "< 1e-4",
            verdict(parity < 1e-4, "different weights: timings still comparable"),
        )
    )
    return rows


def _end_to_end_rows(section: str, e2e: dict[str, Any], variants: list[str]) -> list[Row]:
    """Per photo: skyclass vs the peer at the model's own size (the same work, the ratio to
    quote and the >= 2x target), then vs the seed's 224 px pipeline."""
    rows: list[Row] = []
    for name, result in e2e.items():
        lat = result["latency_ms"]
        same, seed = lat[SAME_SIZE_PEER], lat[SEED_PEER]
        is_big = name.startswith("1-2 MP")
        for v in variants:
            ours = lat[f"skyclass {v}"]
            r = ratio(same["p50"], ours["p50"])
            rows.append(
                Row(
                    section,
                    f"predict(bytes) end to end, p50 / p95 ms, {v}: {name} {result['image']} "
                    "(peer at the same input size)",
                    f"{ms(ours['p50'])} / {ms(ours['p95'])}",
                    f"{ms(same['p50'])} / {ms(same['p95'])}",
                    times(r),
                    ">= 2x" if is_big else "",
                    verdict(r >= 2, f"{r:.1f}x") if is_big else "",
                )
            )
        fp32 = lat[f"skyclass {variants[0]}"]
        rows.append(
            Row(
                section,
                f"predict(bytes), {variants[0]}, {name}: vs the seed's 224 px pipeline",
                f"{ms(fp32['p50'])} / {ms(fp32['p95'])}",
                f"{ms(seed['p50'])} / {ms(seed['p95'])}",
                times(ratio(seed["p50"], fp32["p50"])),
            )
        )
    agree = all(len(set(r["labels"].values())) == 1 for r in e2e.values())
    rows.append(
        Row(
            section,
            "same top-1 label from skyclass and the peer on every photo",
            "yes" if agree else "no",
            ", ".join(f"{r['labels']['peer']}" for r in e2e.values()),
        )
    )
    return rows
