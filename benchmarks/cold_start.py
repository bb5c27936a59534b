"""Cold start: a fresh interpreter to the Lambda handler's first answer on a real v1 event.

Each run is a new process (``python -c``) that imports the handler module, reads the event, calls
the handler once and prints one JSON line with its own breakdown and its peak RSS (VmHWM). The
parent times from just before spawning to the moment that line arrives, so interpreter start,
imports, model load and the first inference are all inside. skyclass and the peer alternate.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.context import REPO, Context
from benchmarks.report import Row, mb, na, times, verdict
from benchmarks.stats import ratio, summary

CHILD = r"""
import importlib, json, sys, time
t0 = time.perf_counter()
module, attr = sys.argv[1].split(":")
handler = getattr(importlib.import_module(module), attr)
t1 = time.perf_counter()
with open(sys.argv[2], encoding="utf-8") as fh:
    event = json.load(fh)
response = handler(event, None)
t2 = time.perf_counter()
status = {}
with open("/proc/self/status", encoding="ascii") as fh:
    for line in fh:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            status[key] = int(value.split()[0]) * 1024
print(json.dumps({
    "import_s": t1 - t0, "first_call_s": t2 - t1,
    "statusCode": response.get("statusCode"), "body": str(response.get("body"))[:300],
    "peak_rss_bytes": status.get("VmHWM"), "rss_bytes": status.get("VmRSS"),
}), flush=True)
"""


def multipart_body(
    image: bytes, filename: str, content_type: str = "image/jpeg"
) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, as a browser or ``curl -F`` sends it."""
    boundary = f"----skyclassbench{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    body = head + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _template(events_dir: Path) -> dict[str, Any] | None:
    """A recorded API Gateway REST (payload v1) event from tests/events/, if one is there."""
    if not events_dir.is_dir():
        return None
    # a multipart classify event first, then any other v1 event
    paths = sorted(events_dir.glob("*.json"), key=lambda p: ("multipart" not in p.name, p.name))
    for path in paths:
        if "v1" not in path.name.lower():
            continue
        event = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(event, dict) and "httpMethod" in event and "requestContext" in event:
            return event
    return None


def v1_event(image: bytes, filename: str, events_dir: Path) -> dict[str, Any]:
    """API Gateway REST (payload v1) POST /classify, multipart body, base64 (binary media types on).

    Starts from a recorded fixture in ``events_dir`` when there is one (so every field a real
    event has is there), else from the documented shape.
    """
    body, content_type = multipart_body(image, filename)
    event = _template(events_dir) or {
        "resource": "/classify",
        "path": "/classify",
        "httpMethod": "POST",
        "headers": {},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/classify",
            "httpMethod": "POST",
            "path": "/dev/classify",
            "stage": "dev",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "skyclass-bench"},
            "accountId": "123456789012",
            "apiId": "bench",
        },
    }
    headers = {
        k: v
        for k, v in (event.get("headers") or {}).items()
        if k.lower() not in ("content-type", "content-length")
    }
    headers.update({"Content-Type": content_type, "Content-Length": str(len(body))})
    event.update(
        {
            "httpMethod": "POST",
            "path": "/classify",
            "resource": "/classify",
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "body": base64.b64encode(body).decode("ascii"),
            "isBase64Encoded": True,
        }
    )
    return event


def one_run(handler: str, event_path: Path, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Spawn one fresh interpreter; wall time to its answer line, plus what it reported."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, handler, str(event_path)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    wall = time.perf_counter() - start
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0 or not line.strip():
        tail = err.strip().splitlines()[-1:] if err else []
        raise RuntimeError(f"{handler} failed (exit {proc.returncode}): {' '.join(tail)}")
    report = json.loads(line)
    report["wall_s"] = wall
    if report["statusCode"] != 200:
        raise RuntimeError(f"{handler} answered {report['statusCode']}: {report['body']}")
    return report


def measure(
    contenders: dict[str, tuple[str, dict[str, str]]],
    event_path: Path,
    *,
    runs: int,
    cwd: Path,
) -> dict[str, Any]:
    """``contenders``: name -> (module:attr, extra env). One discarded warm-up run each (disk
    cache, .pyc files), then ``runs`` alternating fresh processes each. A contender that fails is
    reported with its error instead of numbers."""
    results: dict[str, Any] = {}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    failed: dict[str, str] = {}
    for round_ in range(runs + 1):
        for name, (handler, extra) in contenders.items():
            if name in failed:
                continue
            env = {**os.environ, **extra}
            try:
                report = one_run(handler, event_path, env, cwd)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                failed[name] = str(exc)
                continue
            if round_ > 0:
                samples[name].append(report)
    for name in contenders:
        if name in failed:
            results[name] = {"error": failed[name]}
            continue
        runs_ = samples[name]
        results[name] = {
            "wall_s": summary([r["wall_s"] for r in runs_]),
            "import_s": summary([r["import_s"] for r in runs_]),
            "first_call_s": summary([r["first_call_s"] for r in runs_]),
            "peak_rss_bytes": summary([float(r["peak_rss_bytes"]) for r in runs_]),
            "answer": runs_[-1]["body"],
        }
    return results


def _measure_both(ctx: Context) -> dict[str, Any]:
    """Cold starts of the skyclass handler and the peer's, alternating, on one real v1 event."""
    from benchmarks.inference import pick_images

    opt, peer = ctx.opt, ctx.peer()
    image = pick_images(opt.data_root)["1-2 MP progressive JPEG"]
    event = v1_event(image.read_bytes(), image.name, REPO / "tests" / "events")
    event_path = opt.work / "event_v1_multipart.json"
    event_path.parent.mkdir(parents=True, exist_ok=True)
    event_path.write_text(json.dumps(event), encoding="utf-8")
    threads = str(opt.threads)
    return measure(
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


def _p50(r: dict[str, Any], key: str) -> float:
    return math.nan if "error" in r else float(r[key]["p50"])


def _cell(r: dict[str, Any], key: str, fmt: Callable[[float], str]) -> str:
    return na(r["error"]) if "error" in r else fmt(r[key]["p50"])


def _wall_verdict(ours_wall: float, wall_ratio: float) -> str:
    if math.isnan(ours_wall):
        return ""
    misses = (
        f"+{ours_wall - 0.5:.2f} s" if ours_wall >= 0.5 else "",
        f"{wall_ratio:.1f}x" if wall_ratio < 5 else "",
    )
    return verdict(ours_wall < 0.5 and wall_ratio >= 5, ", ".join(x for x in misses if x))


def _split(r: dict[str, Any]) -> str:
    return "" if "error" in r else f"{_p50(r, 'import_s'):.2f} / {_p50(r, 'first_call_s'):.2f}"


def rows(ctx: Context) -> list[Row]:
    """Fresh process to first Lambda answer, skyclass and the peer alternating."""
    section = (
        f"Cold start: fresh process to first Lambda answer (v1, median of {ctx.opt.cold_runs})"
    )
    results = _measure_both(ctx)
    ctx.raw["cold_start"] = results
    ours, theirs = results["skyclass"], results["peer"]
    if "error" in ours and "error" in theirs:
        return [
            Row(section, "fresh process to first answer", na(ours["error"]), na(theirs["error"]))
        ]
    wall_ratio = ratio(_p50(theirs, "wall_s"), _p50(ours, "wall_s"))
    ours_rss = _p50(ours, "peak_rss_bytes")
    return [
        Row(
            section,
            "fresh process to first answer, s (interpreter, import, model load, first inference)",
            _cell(ours, "wall_s", lambda s: f"{s:.2f}"),
            _cell(theirs, "wall_s", lambda s: f"{s:.2f}"),
            times(wall_ratio),
            "< 0.5 s and >= 5x",
            _wall_verdict(_p50(ours, "wall_s"), wall_ratio),
        ),
        Row(
            section,
            "of which: import of the handler module, s / first call (model load + inference), s",
            _split(ours),
            _split(theirs),
        ),
        Row(
            section,
            "peak RSS of that process (VmHWM)",
            _cell(ours, "peak_rss_bytes", mb),
            _cell(theirs, "peak_rss_bytes", mb),
            times(ratio(_p50(theirs, "peak_rss_bytes"), ours_rss), "smaller"),
            "< 200 MB",
            ""
            if math.isnan(ours_rss)
            else verdict(ours_rss < 200e6, f"+{(ours_rss - 200e6) / 1e6:.0f} MB"),
        ),
    ]
