"""What the scope score and an explanation add to one prediction (issue 16).

    .venv/bin/python -m benchmarks.scope_explain [MODEL_DIR] [--reps N]

Three ways to call ``Predictor.predict`` on the same real photos, interleaved so that machine load
hits them alike: raw (``reject=False``: no scope, today's answer), with the scope score, and with
the scope plus an explanation (CAM overlay PNG). The added latency is the paired difference of
medians. The scope score and the overlay are also timed alone, on the outputs of one run, because
on a busy 2-core machine a sub-millisecond difference between two ~20 ms calls is mostly noise.
``rows(ctx)`` gives the benchmark table's rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.report import Row, verdict

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKYCLASS_SHARED", REPO.parent / "shared")).resolve()
SECTION = "scope and explanation (issue 16)"
PHOTOS = (
    "flying_birds/bisky_Flying_Birds_2.jpg",
    "small_quadcopters/dronenet_03012017-dji-phantom-4-pro.jpg",
    "winged_drones/px4ug_vtol_uav_works_valaq_patrol_hero.jpg",
)


def _photos(data_root: Path) -> list[bytes]:
    found = [data_root / p for p in PHOTOS if (data_root / p).is_file()]
    if not found:  # any three photos of the set
        found = sorted(data_root.rglob("*.jpg"))[:3]
    return [p.read_bytes() for p in found]


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def measure(model_dir: Path, data_root: Path, reps: int = 40, threads: int = 1) -> dict[str, float]:
    """p50 milliseconds: predict raw / +scope / +scope+explain, and the scope and overlay alone."""
    from skyclass.core.explain import cam_overlay
    from skyclass.core.predictor import Predictor
    from skyclass.core.preprocess import decode_image, preprocess

    predictor = Predictor(model_dir, threads=threads)
    if predictor.scope is None or not predictor.can_explain:
        raise RuntimeError(f"{model_dir} has no scope or cannot explain: {predictor.scope_error}")
    photos = _photos(data_root)
    calls = {
        "raw": lambda b: predictor.predict(b, reject=False),
        "scope": lambda b: predictor.predict(b),
        "explain": lambda b: predictor.predict(b, explain=True),
    }
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for data in photos:  # warm up
        for call in calls.values():
            call(data)
    for i in range(reps):
        data = photos[i % len(photos)]
        for name, call in calls.items():
            t = time.perf_counter()
            call(data)
            samples[name].append(time.perf_counter() - t)
    scope = predictor.scope
    names = [predictor.bundle.output_name, *scope.needs, "cam"]
    tensor = preprocess(photos[0], predictor.bundle.preprocess)
    values = predictor._session.run(names, {predictor.bundle.input_name: tensor})
    outputs = dict(zip(["log_probs", *names[1:]], values, strict=True))
    side = max(predictor.bundle.preprocess.size)
    photo = decode_image(photos[0], draft_size=(side, side))
    alone: dict[str, list[float]] = {"scope_alone": [], "explain_alone": []}
    for _ in range(reps):
        t = time.perf_counter()
        scope.verdict(outputs)
        alone["scope_alone"].append(time.perf_counter() - t)
        t = time.perf_counter()
        cam_overlay(photo, outputs["cam"][0, 0], "x")
        alone["explain_alone"].append(time.perf_counter() - t)
    out = {k: _p50_ms(v) for k, v in (samples | alone).items()}
    out["scope_added"] = out["scope"] - out["raw"]
    out["explain_added"] = out["explain"] - out["scope"]
    return out


def rows(ctx: Any) -> list[Row]:
    """The benchmark table's rows (``benchmarks.run`` registers this module with its context:
    ``ctx.opt.model_dir``, ``ctx.opt.data_root``, ``ctx.opt.quick``, ``ctx.opt.threads``)."""
    opt = ctx.opt
    m = measure(opt.model_dir, opt.data_root, 10 if opt.quick else 40, threads=opt.threads)
    ctx.raw["scope_explain"] = m
    return table(m)


def table(m: dict[str, float]) -> list[Row]:
    return [
        Row(SECTION, "predict(bytes) p50 ms: raw / +scope / +scope+explain",
            f"{m['raw']:.1f} / {m['scope']:.1f} / {m['explain']:.1f}"),
        Row(SECTION, "scope score alone, p50 ms (on the ONNX outputs)", f"{m['scope_alone']:.3f}",
            target="< 1 ms", met=verdict(m["scope_alone"] < 1.0)),
        Row(SECTION, "scope added to predict, p50 ms (paired medians)", f"{m['scope_added']:.2f}",
            target="< 1 ms", met=verdict(m["scope_added"] < 1.0)),
        Row(SECTION, "explanation alone (CAM overlay + PNG), p50 ms", f"{m['explain_alone']:.2f}",
            target="< 5 ms", met=verdict(m["explain_alone"] < 5.0)),
        Row(SECTION, "explanation added to predict, p50 ms", f"{m['explain_added']:.2f}",
            target="< 5 ms", met=verdict(m["explain_added"] < 5.0)),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", type=Path, default=REPO / "models/flying-objects")
    parser.add_argument("--data-root", type=Path, default=SHARED / "data" / "flying-objects")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    m = measure(args.model_dir, args.data_root, args.reps, threads=args.threads)
    for row in table(m):
        print(f"{row.what}: {row.skyclass} {row.target} {row.met}")


if __name__ == "__main__":
    main()
