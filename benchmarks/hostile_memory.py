"""Small files, huge memory (issue 14): server RSS and valid throughput while decode bombs arrive.

Starts the real ``skyclass serve`` on a free 127.0.0.1 port and measures, on that one process:

- its peak RSS (VmHWM, reset through ``/proc/PID/clear_refs`` before each) while it answers each
  in-limit image of ``tests/fixtures/bombs``: issue 14's bombs (a 1.5 KB WebP, a 90 KB 16-bit PNG
  and a 260 KB int32 TIFF, all 6300x6300) and two heavy images just inside the decode budget
  (``*_in_budget``: a 6300x6300 16-bit PNG, a 5600x5600 RGB PNG); then two at once;
- valid requests/s with 16 connections POSTing a real 1.2 MP JPEG: alone; while 4 more connections
  loop on issue 14's bombs; while 1 more loops on the heavy in-budget 16-bit PNG (a big image that
  is decoded: real work, not an attack). A bounded asyncio load generator, no wrk needed; the
  three phases alternate in rounds, so a busy spell on the machine hits each.

    python -m benchmarks.hostile_memory [--seconds 10] [--model-dir models/flying-objects]

prints the figures as JSON; :func:`rows` gives them as benchmark rows (for ``benchmarks.run``).
The load generator shares the machine's cores with the server: the ratio is what holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.context import Context
from benchmarks.http_load import (
    free_port,
    proc_status,
    serve_command,
    stop_server,
    wait_healthy,
)
from benchmarks.report import Row, mb, verdict

REPO = Path(__file__).resolve().parents[1]
BOMBS = REPO / "tests" / "fixtures" / "bombs"
RSS_TARGET = 400e6
VALID_CONNECTIONS = 16
PHASES = {
    "alone": (),
    "bombs": ("webp_6300.webp", "png16_6300.png", "tif32_6300.tif", "webp_6300.webp"),
    "heavy": ("png16_6300_in_budget.png",),
}
ROUNDS = 3
MIN_WINDOW_S = 10.0


def bombs() -> dict[str, bytes]:
    """The in-limit decode bombs, by file name."""
    images = (p for p in sorted(BOMBS.iterdir()) if p.suffix in (".png", ".webp", ".tif"))
    return {p.name: p.read_bytes() for p in images}


def _reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _post(client: httpx.AsyncClient, body: bytes) -> int:
    response = await client.post(
        "/classify", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    return response.status_code


async def _peaks(url: str, pid: int, cases: dict[str, bytes]) -> dict[str, Any]:
    """Peak RSS while answering each bomb alone, then the first two at once."""
    out: dict[str, Any] = {}
    names = list(cases)
    in_budget = [n for n in names if "in_budget" in n]
    runs = [[n] for n in names] + [["png16_6300.png", "tif32_6300.tif"], in_budget]
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for run in runs:
            _reset_peak(pid)
            statuses = await asyncio.gather(*(_post(client, cases[n]) for n in run))
            out[" + ".join(run)] = {"status": statuses, "peak_rss_bytes": proc_status(pid)["VmHWM"]}
    return out


async def _loop(url: str, body: bytes, stop_at: float, counts: dict[int, int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while time.monotonic() < stop_at:
            try:
                status = await _post(client, body)
            except httpx.HTTPError:
                status = -1
            if time.monotonic() <= stop_at:
                counts[status] = counts.get(status, 0) + 1


async def _throughput(
    url: str, valid: bytes, hostile: list[bytes], seconds: float
) -> dict[str, Any]:
    """Valid answers per second over ``seconds`` with 16 valid loops (+ a loop per hostile body)."""
    valid_counts: dict[int, int] = {}
    hostile_counts: dict[int, int] = {}
    stop_at = time.monotonic() + seconds
    await asyncio.gather(
        *(_loop(url, valid, stop_at, valid_counts) for _ in range(VALID_CONNECTIONS)),
        *(_loop(url, body, stop_at, hostile_counts) for body in hostile),
    )
    return {
        "valid_per_s": valid_counts.get(200, 0) / seconds,
        "valid_statuses": valid_counts,
        "hostile_statuses": hostile_counts,
    }


def _merge(windows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    def total(key: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for window in windows:
            for status, n in window[key].items():
                out[status] = out.get(status, 0) + n
        return out

    valid = total("valid_statuses")
    return {
        "valid_per_s": valid.get(200, 0) / seconds,
        "valid_statuses": valid,
        "hostile_statuses": total("hostile_statuses"),
        "windows_valid_per_s": [round(w["valid_per_s"], 1) for w in windows],
    }


def measure(model_dir: Path, valid_photo: Path, seconds: float, cwd: Path = REPO) -> dict[str, Any]:
    """Start a server, measure peaks and throughput, stop it. ``MALLOC_ARENA_MAX`` is left alone."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        serve_command(model_dir, port), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_healthy(f"{url}/health", proc)
        cases = bombs()
        valid = valid_photo.read_bytes()
        asyncio.run(_throughput(url, valid, [], 2.0))  # warm-up, not recorded
        idle = proc_status(proc.pid)["VmRSS"]
        peaks = asyncio.run(_peaks(url, proc.pid, cases))
        # 16 connections on 2 busy cores take seconds per answer: a window shorter than ~10 s
        # would count only the few that happen to finish inside it.
        window = max(seconds / ROUNDS, MIN_WINDOW_S)
        windows: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES}
        for _ in range(ROUNDS):
            for phase, names in PHASES.items():
                loop = [cases[n] for n in names]
                windows[phase].append(asyncio.run(_throughput(url, valid, loop, window)))
        return {
            "idle_rss_bytes": idle,
            "peaks": peaks,
            "throughput": {phase: _merge(w, window * ROUNDS) for phase, w in windows.items()},
            "peak_rss_bytes_overall": proc_status(proc.pid)["VmHWM"],
            "seconds_per_phase": window * ROUNDS,
        }
    finally:
        stop_server(proc, grace=15)


def rows(ctx: Context) -> list[Row]:
    """Benchmark rows (a section of ``benchmarks.run``): model_dir, data_root, http_seconds."""
    if ctx.opt.quick:
        from benchmarks.context import Skip

        raise Skip("skipped in --quick (minutes of load)")
    opt, raw = ctx.opt, ctx.raw
    section = "Hostile images: server RSS and valid throughput under decode bombs"
    photo = sorted(Path(opt.data_root).glob("*/cropspray_*.jpg"))[0]
    result = measure(Path(opt.model_dir), photo, float(opt.http_seconds))
    raw["hostile_memory"] = result
    out = [Row(section, "server RSS after warm-up", mb(result["idle_rss_bytes"]))]
    for name, peak in result["peaks"].items():
        value = peak["peak_rss_bytes"]
        out.append(
            Row(
                section,
                f"peak RSS answering {name} (HTTP {', '.join(map(str, peak['status']))})",
                mb(value),
                target="<= 400 MB",
                met=verdict(value <= RSS_TARGET, mb(value)),
            )
        )
    alone = result["throughput"]["alone"]["valid_per_s"]
    for phase, what in (
        ("bombs", "4 looping on issue 14's bombs"),
        ("heavy", "1 looping on a heavy 16-bit PNG in the budget"),
    ):
        under = result["throughput"][phase]["valid_per_s"]
        share = under / alone if alone else 0.0
        out.append(
            Row(
                section,
                f"valid req/s, {VALID_CONNECTIONS} connections: alone; with {what}",
                f"{alone:.1f}; {under:.1f} ({100 * share:.0f}%)",
                target=">= 80% of alone" if phase == "bombs" else "",
                met=verdict(share >= 0.8, f"{100 * share:.0f}%") if phase == "bombs" else "",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile_memory")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "flying-objects")
    shared = Path(os.environ.get("SKYCLASS_SHARED", REPO.parent / "shared"))
    parser.add_argument("--data-root", type=Path, default=shared / "data" / "flying-objects")
    args = parser.parse_args(argv)
    photo = sorted(args.data_root.glob("*/cropspray_*.jpg"))[0]
    print(json.dumps(measure(args.model_dir.resolve(), photo, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
