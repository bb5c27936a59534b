"""One command: skyclass side by side with the usual way (a PyTorch model in a Lambda handler).

    .venv/bin/python -m benchmarks.run [--quick] [--threads 1]

Prints a markdown table and writes ``benchmarks/results/<timestamp>.json`` plus ``latest.json``
and ``latest.md``. Every comparison is measured in this one run on this one machine, with
interleaved repetitions, so the ratios hold even where the machine is busy and absolute times
move. A part that cannot run (a file not built yet, a tool missing) becomes a row that says
"n/a (why)"; the command still finishes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.report import Row, machine, mb, ms, na, render, times, verdict
from benchmarks.stats import ratio

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKYCLASS_SHARED", REPO.parent / "shared")).resolve()

log = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Options:
    quick: bool
    threads: int
    model_dir: Path
    data_root: Path
    weights: Path
    checkpoint: Path | None
    out: Path
    work: Path
    sections: tuple[str, ...]
    model_reps: int
    batch_reps: int
    e2e_reps: int
    cold_runs: int
    http_seconds: float
    connections: tuple[int, ...]


SECTIONS = ("inference", "cold", "http", "artifact", "training", "audit")


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few repetitions, no builds (smoke test)")
    p.add_argument("--threads", type=int, default=1, help="compute threads, both sides (1)")
    p.add_argument("--model-dir", type=Path, default=REPO / "models" / "flying-objects")
    p.add_argument("--data-root", type=Path, default=SHARED / "data" / "flying-objects")
    p.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenet_v2_imagenet.pth")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the training checkpoint the model folder was exported from (the peer's weights); "
        "default: the newest runs/*/checkpoints/best.pt that matches model.onnx, else the shared "
        "backbone + the head read from model.onnx",
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    p.add_argument("--cold-runs", type=int, default=None, help="fresh processes per side (7)")
    p.add_argument("--http-seconds", type=float, default=None, help="wrk run per level (10)")
    args = p.parse_args(argv)
    sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    quick = args.quick
    return Options(
        quick=quick,
        threads=args.threads,
        model_dir=args.model_dir.resolve(),
        data_root=args.data_root.resolve(),
        weights=args.weights.resolve(),
        checkpoint=args.checkpoint.resolve() if args.checkpoint else None,
        out=args.out.resolve(),
        work=args.work.resolve(),
        sections=sections,
        model_reps=10 if quick else 150,
        batch_reps=2 if quick else 12,
        e2e_reps=5 if quick else 40,
        cold_runs=args.cold_runs or (2 if quick else 7),
        http_seconds=args.http_seconds or (3.0 if quick else 10.0),
        connections=(1, 8, 32),
    )


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


# -- inference -------------------------------------------------------------------------------


def _variants(model_dir: Path) -> list[str]:
    from skyclass.core.bundle import load_bundle

    bundle = load_bundle(model_dir)
    return [
        v
        for v in ("fp32", "int8")
        if v in bundle.files and (model_dir / bundle.files[v].path).is_file()
    ]


def inference_rows(opt: Options, peer: Any, raw: dict[str, Any]) -> list[Row]:
    import torch

    from benchmarks import inference

    section = (
        f"Inference in process ({opt.threads} thread{'s' if opt.threads > 1 else ''} each side)"
    )
    variants = _variants(opt.model_dir)
    images = inference.pick_images(opt.data_root)
    torchscript = torch.jit.load(str(peer.model_dir / "model.pt"), map_location="cpu").eval()
    model_image = images["1-2 MP progressive JPEG"].read_bytes()
    mo = inference.model_only(
        opt.model_dir,
        variants,
        peer.eager,
        torchscript,
        model_image,
        threads=opt.threads,
        reps=opt.model_reps,
        batch_reps=opt.batch_reps,
    )
    e2e = inference.end_to_end(
        opt.model_dir, variants, peer.model_dir, images, threads=opt.threads, reps=opt.e2e_reps
    )
    raw["inference"] = {
        "images": {k: inference.describe(v) for k, v in images.items()},
        "model_only": mo,
        "end_to_end": e2e,
        "peer_weights": peer.weights_source,
    }
    lat = mo["latency_ms"]
    ips = mo["images_per_s"]
    eager = lat["pytorch eager"]
    rows: list[Row] = []
    for v in variants:
        ours = lat[f"onnxruntime {v}"]
        rows.append(
            Row(
                section,
                f"model only, batch 1, p50 / p95 ms: ONNX Runtime {v} vs PyTorch eager",
                f"{ms(ours['p50'])} / {ms(ours['p95'])}",
                f"{ms(eager['p50'])} / {ms(eager['p95'])}",
                times(ratio(eager["p50"], ours["p50"])),
            )
        )
    ts = lat["torchscript"]
    fp32 = lat["onnxruntime fp32"]
    rows.append(
        Row(
            section,
            "model only, batch 1, p50 / p95 ms: ONNX Runtime fp32 vs TorchScript",
            f"{ms(fp32['p50'])} / {ms(fp32['p95'])}",
            f"{ms(ts['p50'])} / {ms(ts['p95'])}",
            times(ratio(ts["p50"], fp32["p50"])),
        )
    )
    for size in inference.BATCH_SIZES:
        key = str(size)
        ours_txt = ", ".join(f"{v} {ips[f'onnxruntime {v}'][key]:.0f}" for v in variants)
        best = max(ips[f"onnxruntime {v}"][key] for v in variants)
        peer_ips = ips["pytorch eager"][key]
        rows.append(
            Row(
                section,
                f"model only, images/s at batch {size} (ONNX Runtime vs PyTorch eager)",
                ours_txt,
                f"eager {peer_ips:.0f}, TorchScript {ips['torchscript'][key]:.0f}",
                times(ratio(best, peer_ips), "more"),
            )
        )
    parity = mo["max_abs_prob_diff_onnx_vs_torch"]
    rows.append(
        Row(
            section,
            "same network on both sides: max abs diff of probabilities, ONNX fp32 vs PyTorch",
            f"{parity:.1e}",
            peer.weights_source,
            "",
            "< 1e-4",
            verdict(parity < 1e-4, "different weights: timings still comparable"),
        )
    )
    peer_name = "peer (torchvision + TorchScript)"
    for name, result in e2e.items():
        peer_lat = result["latency_ms"][peer_name]
        is_big = name.startswith("1-2 MP")
        for v in variants:
            ours = result["latency_ms"][f"skyclass {v}"]
            rows.append(
                Row(
                    section,
                    f"predict(bytes) end to end, p50 / p95 ms, {v}: {name} {result['image']}",
                    f"{ms(ours['p50'])} / {ms(ours['p95'])}",
                    f"{ms(peer_lat['p50'])} / {ms(peer_lat['p95'])}",
                    times(ratio(peer_lat["p50"], ours["p50"])),
                    "p50 < 10 ms" if is_big else "",
                    verdict(ours["p50"] < 10, f"+{ours['p50'] - 10:.1f} ms") if is_big else "",
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


# -- cold start ------------------------------------------------------------------------------


def cold_rows(opt: Options, peer: Any, raw: dict[str, Any]) -> list[Row]:
    from benchmarks import cold_start
    from benchmarks.inference import pick_images

    section = f"Cold start: fresh process to first Lambda answer (v1, median of {opt.cold_runs})"
    image = pick_images(opt.data_root)["1-2 MP progressive JPEG"]
    event = cold_start.v1_event(image.read_bytes(), image.name, REPO / "tests" / "events")
    event_path = opt.work / "event_v1_multipart.json"
    event_path.parent.mkdir(parents=True, exist_ok=True)
    event_path.write_text(json.dumps(event), encoding="utf-8")
    threads = str(opt.threads)
    results = cold_start.measure(
        {
            "skyclass": (
                "skyclass.serve.handler:classify_image",
                {"SKYCLASS_MODELS": str(opt.model_dir), "SKYCLASS_THREADS": threads},
            ),
            "peer": (
                "benchmarks.peer.torch_handler:classify_image",
                {"PEER_MODEL_DIR": str(peer.model_dir), "OMP_NUM_THREADS": threads},
            ),
        },
        event_path,
        runs=opt.cold_runs,
        cwd=REPO,
    )
    raw["cold_start"] = results
    ours, theirs = results["skyclass"], results["peer"]
    if "error" in ours and "error" in theirs:
        return [
            Row(section, "fresh process to first answer", na(ours["error"]), na(theirs["error"]))
        ]

    def cell(r: dict[str, Any], key: str, fmt: Callable[[float], str]) -> str:
        return na(r["error"]) if "error" in r else fmt(r[key]["p50"])

    def p50(r: dict[str, Any], key: str) -> float:
        return math.nan if "error" in r else float(r[key]["p50"])

    wall_ratio = ratio(p50(theirs, "wall_s"), p50(ours, "wall_s"))
    ours_wall = p50(ours, "wall_s")
    ours_rss = p50(ours, "peak_rss_bytes")
    return [
        Row(
            section,
            "fresh process to first answer, s (interpreter, import, model load, first inference)",
            cell(ours, "wall_s", lambda s: f"{s:.2f}"),
            cell(theirs, "wall_s", lambda s: f"{s:.2f}"),
            times(wall_ratio),
            "< 0.5 s and >= 5x",
            ""
            if math.isnan(ours_wall)
            else verdict(
                ours_wall < 0.5 and wall_ratio >= 5,
                ", ".join(
                    x
                    for x in (
                        f"+{ours_wall - 0.5:.2f} s" if ours_wall >= 0.5 else "",
                        f"{wall_ratio:.1f}x" if wall_ratio < 5 else "",
                    )
                    if x
                ),
            ),
        ),
        Row(
            section,
            "of which: import of the handler module, s / first call (model load + inference), s",
            ""
            if "error" in ours
            else f"{p50(ours, 'import_s'):.2f} / {p50(ours, 'first_call_s'):.2f}",
            ""
            if "error" in theirs
            else f"{p50(theirs, 'import_s'):.2f} / {p50(theirs, 'first_call_s'):.2f}",
        ),
        Row(
            section,
            "peak RSS of that process (VmHWM)",
            cell(ours, "peak_rss_bytes", mb),
            cell(theirs, "peak_rss_bytes", mb),
            times(ratio(p50(theirs, "peak_rss_bytes"), ours_rss), "smaller"),
            "< 200 MB",
            ""
            if math.isnan(ours_rss)
            else verdict(ours_rss < 200e6, f"+{(ours_rss - 200e6) / 1e6:.0f} MB"),
        ),
    ]


# -- HTTP ------------------------------------------------------------------------------------


def http_rows(opt: Options, raw: dict[str, Any]) -> list[Row]:
    from benchmarks import http_load
    from benchmarks.cold_start import multipart_body
    from benchmarks.inference import pick_images

    section = f"HTTP: `skyclass serve` on 127.0.0.1 under wrk, {opt.http_seconds:.0f} s per run"
    images = pick_images(opt.data_root)
    baseline = images["1-2 MP baseline JPEG"]
    progressive = images["1-2 MP progressive JPEG"]
    body, ctype = multipart_body(baseline.read_bytes(), baseline.name)
    body_path = opt.work / "multipart_body.bin"
    body_path.parent.mkdir(parents=True, exist_ok=True)
    body_path.write_bytes(body)

    def kib(path: Path) -> str:
        return f"{path.stat().st_size // 1024} KiB"

    loads = [
        http_load.Load(
            f"raw image/jpeg, 1-2 MP baseline ({kib(baseline)})", baseline, "image/jpeg", c
        )
        for c in opt.connections
    ]
    loads.append(
        http_load.Load(
            f"raw image/jpeg, 1-2 MP progressive ({kib(progressive)})",
            progressive,
            "image/jpeg",
            1,
        )
    )
    loads.append(http_load.Load(f"multipart/form-data ({kib(body_path)})", body_path, ctype, 1))
    # no model, no body: the server's own floor per request on a kept-alive connection
    loads.append(http_load.Load("GET /health (no model work)", None, "", 1, "/health"))
    result = http_load.measure(
        opt.model_dir, loads, seconds=opt.http_seconds, threads=opt.threads, cwd=REPO
    )
    raw["http"] = result
    no_peer = na("the seed had no local server")

    def load_cell(level: dict[str, Any]) -> str:
        if not level["requests"]:
            return f"no request completed in {opt.http_seconds:.0f} s, {level['errors']} errors"
        return (
            f"{level['requests_per_s']:.1f} req/s, "
            f"{ms(level['p50_ms'])} / {ms(level['p99_ms'])} ms, {level['errors']} errors"
        )

    rows: list[Row] = []
    for i, level in enumerate(result["loads"]):
        c = level["connections"]
        target, met = "", ""
        if i == 0:
            miss = f"+{level['p50_ms'] - 20:.1f} ms"
            target, met = "p50 < 20 ms", verdict(0 < level["p50_ms"] < 20, miss)
        if c == 32:
            target, met = "0 errors", verdict(level["errors"] == 0, f"{level['errors']} errors")
        rows.append(
            Row(
                section,
                f"{level['name']}, {c} connection{'s' if c > 1 else ''}: "
                "req/s, p50 / p99 ms, errors",
                load_cell(level),
                no_peer,
                "",
                target,
                met,
            )
        )
    rows.append(
        Row(
            section,
            "server peak RSS over all runs (VmHWM); RSS after warm-up",
            f"{mb(result['server_peak_rss_bytes'])}; {mb(result['server_rss_after_warmup_bytes'])}",
            no_peer,
        )
    )
    return rows


# -- artifact --------------------------------------------------------------------------------


def artifact_rows(opt: Options, peer: Any, raw: dict[str, Any]) -> list[Row]:
    from benchmarks import artifact

    section = "Lambda artifact (zip as uploaded; unzipped = what Lambda's 250 MB limit counts)"
    work = opt.work / "artifacts"
    shipped = artifact.packaged(REPO)
    built: dict[str, Any] | str
    try:
        built = artifact.build(
            artifact.skyclass_spec(REPO, opt.model_dir), work, allow_build=not opt.quick
        )
    except RuntimeError as exc:
        built = short(exc)
    try:
        theirs: dict[str, Any] | str = artifact.build(
            artifact.peer_spec(REPO, peer.model_dir), work, allow_build=not opt.quick
        )
    except RuntimeError as exc:
        theirs = short(exc)
    raw["artifact"] = {"packaged": shipped, "skyclass_pip_build": built, "peer_pip_build": theirs}
    ours = shipped or (built if isinstance(built, dict) else None)
    rows: list[Row] = []
    peer_zip = theirs["zip_bytes"] if isinstance(theirs, dict) else math.nan
    peer_raw = theirs["unzipped_bytes"] if isinstance(theirs, dict) else math.nan
    peer_note = "" if isinstance(theirs, dict) else na(theirs)
    how = ours["how"] if ours else na(built if isinstance(built, str) else "not built")
    for key, label, limit in (("zip_bytes", "zipped", 50e6), ("unzipped_bytes", "unzipped", 150e6)):
        value = ours[key] if ours else math.nan
        peer_value = peer_zip if key == "zip_bytes" else peer_raw
        r = ratio(peer_value, value)
        target = f"< {limit / 1e6:.0f} MB" + (" and >= 3x" if key == "zip_bytes" else "")
        ok = value < limit and (key != "zip_bytes" or math.isnan(r) or r >= 3)
        miss = ", ".join(
            x
            for x in (
                f"+{(value - limit) / 1e6:.1f} MB" if value >= limit else "",
                f"{r:.1f}x" if key == "zip_bytes" and not math.isnan(r) and r < 3 else "",
            )
            if x
        )
        rows.append(
            Row(
                section,
                f"{label} size, skyclass: {how}",
                mb(value) if ours else how,
                peer_note or mb(peer_value),
                times(r, "smaller"),
                target,
                "" if not ours else verdict(ok, miss),
            )
        )
    if shipped and isinstance(built, dict):
        rows.append(
            Row(
                section,
                "skyclass built like the peer (pip --target + generic slim): zipped / unzipped",
                f"{mb(built['zip_bytes'])} / {mb(built['unzipped_bytes'])}",
                peer_note or f"{mb(peer_zip)} / {mb(peer_raw)}",
                times(ratio(peer_zip, built["zip_bytes"]), "smaller"),
            )
        )
    torch_inside = ours["torch_inside"] if ours else None
    rows.append(
        Row(
            section,
            "torch inside the artifact",
            "n/a" if torch_inside is None else ("yes" if torch_inside else "no"),
            "yes (torch 2.13.0+cpu, torchvision 0.28.0)" if isinstance(theirs, dict) else peer_note,
        )
    )
    return rows


# -- training and audit ----------------------------------------------------------------------


def training_rows(opt: Options, raw: dict[str, Any]) -> list[Row]:
    from benchmarks import training

    section = "Training (read from the newest run; 2 CPU cores)"
    result = training.training(REPO / "runs")
    raw["training"] = result
    rows = [
        Row(
            section,
            f"stage {name}: train images/s (median over {s['epochs']} epochs), seconds",
            f"{s['train_images_per_s_p50']:.0f} images/s, {s['seconds']:.0f} s",
        )
        for name, s in result["stages"].items()
    ]
    total = result["epoch_seconds_total"] + (result["feature_cache_seconds"] or 0.0)
    rows.append(
        Row(
            section,
            f"run {result['run']}: all stages (epochs + feature cache), minutes"
            + ("" if result["finished"] else " (still training: the stages so far)"),
            f"{total / 60:.1f} min",
            "",
            "",
            "< 30 min",
            verdict(total < 1800, f"+{(total - 1800) / 60:.1f} min")
            if result["finished"] or total >= 1800
            else "so far",
        )
    )
    return rows


def audit_rows(opt: Options, raw: dict[str, Any]) -> list[Row]:
    from benchmarks import training

    section = "Audit (benchmarks/bench_audit.py)"
    if opt.quick:
        return [Row(section, "audit images/s and peak RSS", na("skipped in --quick"))]
    results = training.audit(opt.data_root, opt.work / "audit")
    raw["audit"] = results
    rows = []
    for r in results:
        name = str(r.get("set") or r.get("name") or "audit")
        ips = r.get("images_per_s")
        if isinstance(ips, int | float) and "peak_rss_main_mb" in r:
            value = (
                f"{ips:.0f} images/s ({r.get('files')} files, {r.get('seconds')} s, "
                f"{r.get('workers')} workers); peak RSS main {r['peak_rss_main_mb']:.0f} MB, "
                f"largest worker {r.get('peak_rss_worker_mb', 0):.0f} MB"
            )
        else:
            value = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("set", "name"))
        first = not rows
        ok = isinstance(ips, int | float) and ips >= 100
        flat = ""
        if not first and "peak_rss_main_mb" in r and "peak_rss_main_mb" in results[0]:
            base = results[0]
            grew = max(
                r["peak_rss_main_mb"] / max(base["peak_rss_main_mb"], 1e-9),
                r.get("peak_rss_worker_mb", 0) / max(base.get("peak_rss_worker_mb", 0), 1e-9),
            )
            flat = verdict(grew < 1.5, f"{grew:.1f}x the shared set's peak")
        rows.append(
            Row(
                section,
                f"{name}: images/s, peak RSS" + (f" ({r['note']})" if r.get("note") else ""),
                value,
                "",
                "",
                ">= 100 images/s" if first else "memory flat vs the shared set",
                verdict(ok, f"{ips:.0f} images/s")
                if first and isinstance(ips, int | float)
                else flat,
            )
        )
    return rows


# -- orchestration ---------------------------------------------------------------------------


def _guard(
    name: str, section: str, what: str, fn: Callable[[], list[Row]], errors: dict[str, str]
) -> list[Row]:
    start = time.perf_counter()
    try:
        rows = fn()
    except Exception as exc:  # one broken part must not hide the others
        log.debug("%s failed", name, exc_info=True)
        errors[name] = traceback.format_exc(limit=3)
        rows = [Row(section, what, na(short(exc)))]
    print(f"[{name}: {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    opt = parse_args(argv)
    logging.basicConfig(level=os.environ.get("BENCH_LOG_LEVEL", "WARNING").upper())
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    opt.work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    raw: dict[str, Any] = {"options": {k: str(v) for k, v in vars(opt).items()}}
    errors: dict[str, str] = {}
    rows: list[Row] = []

    peer: Any = None
    peer_error = ""
    needs_peer = {"inference", "cold", "artifact"} & set(opt.sections)
    if needs_peer:
        try:
            from benchmarks.inference import pick_images
            from benchmarks.peer.build import build_peer
            from skyclass.core.bundle import load_bundle
            from skyclass.core.preprocess import preprocess

            bundle = load_bundle(opt.model_dir)
            checkpoints = sorted(
                REPO.glob("runs/*/checkpoints/best.pt"), key=lambda p: p.stat().st_mtime
            )[::-1][:3]

            peer = build_peer(
                bundle,
                opt.weights,
                opt.work / "peer-model",
                preprocess(
                    pick_images(opt.data_root)["1-2 MP baseline JPEG"].read_bytes(),
                    bundle.preprocess,
                ),
                [opt.checkpoint] if opt.checkpoint else checkpoints,
            )
        except Exception as exc:
            peer_error = f"peer model: {short(exc)}"
            errors["peer"] = traceback.format_exc(limit=3)

    def with_peer(fn: Callable[[], list[Row]]) -> Callable[[], list[Row]]:
        def call() -> list[Row]:
            if peer is None:
                raise RuntimeError(peer_error)
            return fn()

        return call

    plan: list[tuple[str, str, str, Callable[[], list[Row]]]] = [
        (
            "inference",
            "Inference in process",
            "inference",
            with_peer(lambda: inference_rows(opt, peer, raw)),
        ),
        (
            "cold",
            "Cold start",
            "fresh process to first answer",
            with_peer(lambda: cold_rows(opt, peer, raw)),
        ),
        ("http", "HTTP", "skyclass serve under wrk", lambda: http_rows(opt, raw)),
        (
            "artifact",
            "Lambda artifact",
            "zipped / unzipped size",
            with_peer(lambda: artifact_rows(opt, peer, raw)),
        ),
        ("training", "Training", "train images/s per stage", lambda: training_rows(opt, raw)),
        (
            "audit",
            "Audit (benchmarks/bench_audit.py)",
            "audit images/s and peak RSS",
            lambda: audit_rows(opt, raw),
        ),
    ]
    for name, section, what, fn in plan:
        if name in opt.sections:
            rows += _guard(name, section, what, fn, errors)

    load_after = os.getloadavg()
    elapsed = time.perf_counter() - t0
    info = machine(REPO)
    model_json = (
        json.loads((opt.model_dir / "model.json").read_text(encoding="utf-8"))
        if (opt.model_dir / "model.json").is_file()
        else {}
    )
    header = [
        "# skyclass benchmarks"
        + (" (--quick: few repetitions, numbers only indicative)" if opt.quick else ""),
        "",
        f"- when: {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}, took {elapsed:.0f} s",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['platform']}; "
        f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        f"- software: Python {info['python']}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- model: {opt.model_dir.name} {model_json.get('version', '?')} "
        f"({', '.join(model_json.get('files', {}))}); "
        f"compute threads pinned to {opt.threads} on both sides",
        "- peer: the seed's way: `import torch, torchvision`, TorchScript model, torchvision "
        "transforms, multipart parsed in the handler (benchmarks/peer/torch_handler.py)",
        "- ratios compare the two sides measured in this same run (interleaved); medians and p95",
    ]
    table = render(rows, header)
    print(table, end="")
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    result = {
        "started": started.isoformat(),
        "seconds": elapsed,
        "quick": opt.quick,
        "load_average": {"before": load_before, "after": load_after},
        "machine": info,
        "model": {"dir": str(opt.model_dir), "version": model_json.get("version")},
        "rows": [r.to_dict() for r in rows],
        "raw": raw,
        "errors": errors,
    }
    opt.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str) + "\n"
    (opt.out / f"{stamp}.json").write_text(text, encoding="utf-8")
    (opt.out / "latest.json").write_text(text, encoding="utf-8")
    (opt.out / "latest.md").write_text(table, encoding="utf-8")
    for name, err in errors.items():
        print(f"[{name} failed]\n{err}", file=sys.stderr)
    if not shutil.which("wrk"):
        print("note: wrk is not installed (apt-get install wrk)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
