"""Training and audit throughput: read from the newest run, and from the data helper's benchmark.

Training is not re-run here (all stages take minutes to tens of minutes on 2 cores): its numbers
come from the newest ``runs/*/metrics.csv`` (``train_images_per_s`` per epoch, grouped by stage)
and ``summary.json``. The audit is run, through ``benchmarks.bench_audit.run`` when it exists.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from benchmarks.context import REPO, Context, Skip
from benchmarks.report import Row, verdict
from benchmarks.stats import percentile


def newest_run(runs_dir: Path) -> Path | None:
    runs = [p.parent for p in runs_dir.glob("*/metrics.csv")]
    return max(runs, key=lambda p: (p / "metrics.csv").stat().st_mtime) if runs else None


def training(runs_dir: Path) -> dict[str, Any]:
    """Median train images/s per stage, epochs and seconds per stage, of the newest run."""
    run = newest_run(runs_dir)
    if run is None:
        raise FileNotFoundError(f"no runs/*/metrics.csv under {runs_dir} (train a model first)")
    stages: dict[str, dict[str, Any]] = {}
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            stage = stages.setdefault(row["stage"], {"ips": [], "seconds": 0.0, "epochs": 0})
            stage["ips"].append(float(row["train_images_per_s"]))
            stage["seconds"] += float(row.get("seconds") or 0.0)
            stage["epochs"] += 1
    summary: dict[str, Any] = {}
    summary_path = run / "summary.json"
    finished = (
        summary_path.is_file()
        and summary_path.stat().st_mtime >= (run / "metrics.csv").stat().st_mtime
    )
    if finished:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return {
        "run": run.name,
        "finished": finished,
        "stages": {
            name: {
                "train_images_per_s_p50": percentile(s["ips"], 50),
                "epochs": s["epochs"],
                "seconds": s["seconds"],
            }
            for name, s in stages.items()
        },
        "epoch_seconds_total": sum(s["seconds"] for s in stages.values()),
        "feature_cache_seconds": summary.get("feature_cache_seconds"),
        "wall_seconds_last_session": summary.get("wall_seconds_this_session"),
        "test_accuracy": summary.get("test_accuracy"),
    }


def rows(ctx: Context) -> list[Row]:
    """Train images/s per stage and the run's wall time, read from the newest run."""
    section = "Training (read from the newest run; 2 CPU cores)"
    run = newest_run(REPO / "runs")
    if run is None:
        raise Skip("no runs/*/metrics.csv yet: train a model first (README)")
    raw = ctx.raw

    result = training(REPO / "runs")
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
