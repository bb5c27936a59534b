"""HTTP: the real ``skyclass serve`` on a free 127.0.0.1 port under wrk (1/8/32 connections).

The benchmark starts the server, waits for ``GET /health``, loads it with wrk POSTing a real photo
(raw ``image/jpeg`` body, and a multipart one), reads the server's peak RSS (VmHWM) from /proc, and
stops the server. wrk and the server share this machine's cores, so requests/s is a floor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.context import REPO, Context
from benchmarks.report import Row, mb, ms, na, verdict

LUA = Path(__file__).with_name("post.lua")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
    return out


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> float:
    """Seconds until ``url`` answers 200; raises if the server exits or the time runs out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer {url} within {timeout:.0f} s")


def run_wrk(
    url: str, body: Path | None, content_type: str, connections: int, seconds: float
) -> dict[str, Any]:
    """One wrk run (POST ``body``, or GET where it is None); latency in ms, errors counted."""
    env = {**os.environ, "BENCH_BODY": str(body or ""), "BENCH_CONTENT_TYPE": content_type}
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
    ]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            raw = json.loads(line.removeprefix("BENCH_JSON "))
            seconds_run = raw["duration_us"] / 1e6
            return {
                "connections": connections,
                "requests": raw["requests"],
                "requests_per_s": raw["requests"] / seconds_run if seconds_run else 0.0,
                "p50_ms": raw["p50_us"] / 1000.0,
                "p90_ms": raw["p90_us"] / 1000.0,
                "p99_ms": raw["p99_us"] / 1000.0,
                "max_ms": raw["max_us"] / 1000.0,
                "non2xx": raw["non2xx"],
                "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
                "errors": raw["non2xx"]
                + raw["connect"]
                + raw["read"]
                + raw["write"]
                + raw["timeout"],
            }
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {done.stderr.strip()[:300]}")


def stop_server(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT (uvicorn's graceful stop), then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def serve_command(model_dir: Path, port: int) -> list[str]:
    exe = Path(sys.executable).with_name("skyclass")
    prefix = [str(exe)] if exe.is_file() else [sys.executable, "-m", "skyclass.cli"]
    # -q: no log line per request (it would cost throughput, and nobody reads the pipe)
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(model_dir)]
    return [*prefix, "-q", *serve]


@dataclass(frozen=True)
class Load:
    """One wrk run: a body file POSTed with a Content-Type over a number of connections."""

    name: str
    body: Path | None  # None: GET
    content_type: str
    connections: int
    path: str = "/classify"


def measure(
    model_dir: Path,
    loads: list[Load],
    *,
    seconds: float,
    threads: int,
    cwd: Path,
) -> dict[str, Any]:
    """Start the server, run each load in order (after a warm-up), read its peak RSS, stop it."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk; scripts/test.sh does)")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SKYCLASS_THREADS": str(threads)}
    proc = subprocess.Popen(
        serve_command(model_dir, port),
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        try:
            ready_s = wait_healthy(f"{base}/health", proc)
        except RuntimeError as exc:
            err = b""
            if proc.poll() is not None and proc.stderr:
                err = proc.stderr.read()[-400:]
            raise RuntimeError(f"{exc}: {err.decode(errors='replace').strip()}") from exc
        url = f"{base}/classify"
        run_wrk(url, loads[0].body, loads[0].content_type, 1, 1)  # warm-up, not recorded
        rss_idle = proc_status(proc.pid)
        results = []
        for load in loads:
            result = run_wrk(
                base + load.path, load.body, load.content_type, load.connections, seconds
            )
            results.append({"name": load.name, **result})
        peak = proc_status(proc.pid)
        return {
            "url": url,
            "ready_s": ready_s,
            "loads": results,
            "server_rss_after_warmup_bytes": rss_idle.get("VmRSS"),
            "server_peak_rss_bytes": peak.get("VmHWM"),
            "seconds_per_level": seconds,
        }
    finally:
        stop_server(proc, grace=10)


def rows(ctx: Context) -> list[Row]:
    """`skyclass serve` under wrk (the seed had no local server: no peer column)."""
    from benchmarks.cold_start import multipart_body
    from benchmarks.inference import pick_images

    opt, raw = ctx.opt, ctx.raw

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
        Load(f"raw image/jpeg, 1-2 MP baseline ({kib(baseline)})", baseline, "image/jpeg", c)
        for c in opt.connections
    ]
    loads.append(
        Load(
            f"raw image/jpeg, 1-2 MP progressive ({kib(progressive)})",
            progressive,
            "image/jpeg",
            1,
        )
    )
    loads.append(Load(f"multipart/form-data ({kib(body_path)})", body_path, ctype, 1))
    # no model, no body: the server's own floor per request on a kept-alive connection
    loads.append(Load("GET /health (no model work)", None, "", 1, "/health"))
    result = measure(opt.model_dir, loads, seconds=opt.http_seconds, threads=opt.threads, cwd=REPO)
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
