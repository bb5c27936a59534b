"""``skyclass serve`` logs one line per request (method, path, status, ms); ``-q`` silences it."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx

from tests.conftest import BUNDLED_MODEL, REPO_ROOT
from tests.serve.support import FIXTURE_IMAGES, start_server, stop_server

LINE = re.compile(r"^INFO skyclass\.serve\.access: (\S+) (\S+) (\d{3}) (\d+\.\d) ms$")


def _wait_for(lines: list[str], n: int) -> list[str]:
    """The request lines logged so far, but start_server's /health polls, once there are n."""
    found: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [line.rstrip("\n") for line in lines if LINE.match(line.rstrip("\n"))]
        found = [line for line in found if " /health " not in line]
        if len(found) >= n:
            return found
        time.sleep(0.05)
    return found


def test_one_line_per_request() -> None:
    proc, url = start_server("--model", str(BUNDLED_MODEL))
    try:
        photo = next(FIXTURE_IMAGES.glob("*.jpg")).read_bytes()
        assert httpx.post(url + "classify", content=photo, timeout=30).status_code == 200
        assert httpx.post(url + "classify", content=b"nope", timeout=30).status_code == 400
        assert httpx.get(url + "no/such%1B[2J", timeout=30).status_code == 404
        lines = _wait_for(proc.stderr_lines, 3)
    finally:
        stop_server(proc)
    parsed = [LINE.match(line).groups() for line in lines]  # type: ignore[union-attr]
    assert [(m, p, s) for m, p, s, _ in parsed] == [
        ("POST", "/classify", "200"),
        ("POST", "/classify", "400"),
        ("GET", "/no/such\\x1b[2J", "404"),
    ]
    assert float(parsed[0][3]) > 0


def test_quiet_serves_without_a_log_line() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyclass", "-q", "serve", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = re.search(r"http://\S+/", proc.stdout.readline()).group(0)  # type: ignore[union-attr]
        for _ in range(100):
            try:
                if httpx.get(url + "health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.get(url + "models", timeout=10).status_code == 200
    finally:
        stop_server(proc)
    assert proc.stderr is not None
    assert proc.stderr.read() == ""
