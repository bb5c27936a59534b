"""One command: skyclass side by side with the usual way (a PyTorch model in a Lambda handler).

    .venv/bin/python -m benchmarks.run [--quick] [--threads 1] [--only inference,cold,...]

Prints a markdown table and writes ``benchmarks/results/<timestamp>.json`` plus ``latest.json``
and ``latest.md`` (``latest-partial.*`` for a ``--quick`` or ``--only`` run). Every comparison
is measured in this one run on this one machine, with interleaved repetitions, so the ratios hold
even where the machine is busy and absolute times move; each row carries the load average while
its section ran. A part that cannot run (a file not built yet, a tool missing, no training run)
becomes a row that says "n/a (why)"; the command still finishes with exit 0.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from benchmarks.context import REPO, Context, Options, Skip, parse_args, short
from benchmarks.report import Row, machine, na, render

log = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Section:
    name: str  # the --only name
    module: str  # benchmarks.<module>.rows(ctx)
    title: str  # the section heading used when it fails before producing rows
    what: str


#: The registry: each module owns its measurement and its rows, in the table's order.
SECTIONS = (
    Section("inference", "inference", "Inference in process", "inference"),
    Section("cold", "cold_start", "Cold start", "fresh process to first answer"),
    # sub-millisecond differences: measured before the sections that load the machine
    Section("scope", "scope_explain", "scope and explanation", "added latency"),
    Section("http", "http_load", "HTTP", "skyclass serve under wrk"),
    Section("artifact", "artifact", "Lambda artifact", "zipped / unzipped size"),
    Section("training", "training", "Training", "train images/s per stage"),
    Section("audit", "bench_audit", "Audit (benchmarks/bench_audit.py)", "images/s, peak RSS"),
    Section("hostile", "hostile_memory", "Hostile images", "server RSS and valid req/s"),
    Section("train-scaling", "train_scaling", "Training: 2 processes vs 1", "images/s per stage"),
    Section("data-scale", "data_scale", "Data pipeline at scale", "peak RSS at 2k vs 20k photos"),
    Section(
        "label-issues",
        "label_issues_embed",
        "label-issues embedding",
        "images/s, ONNX Runtime vs PyTorch",
    ),
)


def load_text(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    return f"{before[0]:.1f}-{after[0]:.1f}"


def guard(section: Section, ctx: Context, errors: dict[str, str]) -> list[Row]:
    """Run one section; a failure becomes one "n/a (why)" row, never the end of the run."""
    start, load_before = time.perf_counter(), os.getloadavg()
    try:
        rows = importlib.import_module(f"benchmarks.{section.module}").rows(ctx)
    except Skip as exc:
        rows = [Row(section.title, section.what, na(str(exc)))]
    except Exception as exc:  # one broken part must not hide the others
        log.debug("%s failed", section.name, exc_info=True)
        errors[section.name] = traceback.format_exc(limit=3)
        rows = [Row(section.title, section.what, na(short(exc)))]
    load = load_text(load_before, os.getloadavg())
    print(f"[{section.name}: {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    return [replace(r, load=load) for r in rows]


def header(opt: Options, elapsed: float, started: datetime, loads: list[tuple]) -> list[str]:
    info = machine(REPO)
    model_json = opt.model_dir / "model.json"
    model = json.loads(model_json.read_text(encoding="utf-8")) if model_json.is_file() else {}
    return [
        "# skyclass benchmarks"
        + (" (--quick: few repetitions, numbers only indicative)" if opt.quick else ""),
        "",
        f"- when: {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}, took {elapsed:.0f} s",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['platform']}; "
        f"load average (1 min) {loads[0][0]:.2f} before, {loads[1][0]:.2f} after; the `load` "
        "column is the 1-min load average when each section started and ended",
        f"- software: Python {info['python']}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- model: {opt.model_dir.name} {model.get('version', '?')} "
        f"({', '.join(model.get('files', {}))}); "
        f"compute threads pinned to {opt.threads} on both sides",
        "- peer: the seed's way: `import torch, torchvision`, TorchScript model, torchvision "
        "transforms, multipart parsed in the handler (benchmarks/peer/torch_handler.py), at the "
        "seed's 224 px and at the model's own input size",
        "- ratios compare the two sides measured in this same run (interleaved); medians and p95;"
        " absolute rows move with the load, ratios are the figures to quote",
    ]


def latest_name(opt: Options) -> str:
    """``latest`` for a full run; a ``--quick`` or ``--only`` run is ``latest-partial`` so that it
    never replaces the last full table (the one the README and DESIGN quote)."""
    full = not opt.quick and set(opt.sections) == {s.name for s in SECTIONS}
    return "latest" if full else "latest-partial"


def write(opt: Options, table: str, result: dict[str, Any], started: datetime) -> None:
    from skyclass.outputs import write_text_atomic

    opt.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str) + "\n"
    write_text_atomic(opt.out / f"{started:%Y%m%dT%H%M%SZ}.json", text)
    latest = latest_name(opt)
    write_text_atomic(opt.out / f"{latest}.json", text)
    write_text_atomic(opt.out / f"{latest}.md", table)


def main(argv: list[str] | None = None) -> int:
    opt = parse_args(argv, tuple(s.name for s in SECTIONS), __doc__.split("\n")[0])
    logging.basicConfig(level=os.environ.get("BENCH_LOG_LEVEL", "WARNING").upper())
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    opt.work.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.now(UTC), time.perf_counter()
    load_before = os.getloadavg()
    ctx = Context(opt, raw={"options": {k: str(v) for k, v in vars(opt).items()}})
    errors: dict[str, str] = {}
    rows: list[Row] = []
    for section in SECTIONS:
        if section.name in opt.sections:
            rows += guard(section, ctx, errors)
    loads = [load_before, os.getloadavg()]
    elapsed = time.perf_counter() - t0
    table = render(rows, header(opt, elapsed, started, loads))
    print(table, end="")
    result = {
        "started": started.isoformat(),
        "seconds": elapsed,
        "quick": opt.quick,
        "load_average": {"before": loads[0], "after": loads[1]},
        "machine": machine(REPO),
        "model": {"dir": str(opt.model_dir)},
        "rows": [r.to_dict() for r in rows],
        "raw": ctx.raw,
        "errors": errors,
    }
    write(opt, table, result, started)
    for name, err in errors.items():
        print(f"[{name} failed: {err.strip().splitlines()[-1]}]", file=sys.stderr)
    if not shutil.which("wrk"):
        print("note: wrk is not installed (apt-get install wrk)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
