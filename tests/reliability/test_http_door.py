"""The HTTP door (issue 14): slow, idle and stalled connections, oversized bodies, odd routes.

One real ``skyclass serve`` on 127.0.0.1 with short timeouts (2 s for headers and bodies) so the
timeouts are observed, not assumed. Raw sockets play the slow clients; Python's own ``urllib``
plays the client that must read a 413 instead of a connection reset.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import BUNDLED_MODEL, CLASSES
from tests.reliability.corpus import encode, jpeg_with_size, source_photo
from tests.serve.support import start_server, stop_server

TIMEOUT = 2  # SKYCLASS_HEADER_TIMEOUT and SKYCLASS_BODY_TIMEOUT of the server under test


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    env = {"SKYCLASS_HEADER_TIMEOUT": str(TIMEOUT), "SKYCLASS_BODY_TIMEOUT": str(TIMEOUT)}
    proc, url = start_server("--model", str(BUNDLED_MODEL), env=env)
    try:
        yield url
    finally:
        stop_server(proc)


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reads until EOF), or None if it did not."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_idle_socket_is_closed(server: str) -> None:
    with _connect(server) as sock:
        closed = _closed_within(sock, TIMEOUT + 8)
    assert closed is not None and closed < TIMEOUT + 5, closed


def test_slowloris_headers_are_cut(server: str) -> None:
    """A head sent a header line every 0.5 s never completes: closed after the header timeout."""
    with _connect(server) as sock:
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        for i in range(40):
            try:
                sock.sendall(f"X-Slow-{i}: {'a' * 10}\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.5)
            sock.settimeout(0.01)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "the server kept a slowloris connection open for 20 s"
        assert time.monotonic() - started < TIMEOUT + 5


def test_stalled_body_is_a_408_json(server: str) -> None:
    """Content-Length 6 MB, 1 KB sent, then nothing: a 408 JSON after the body timeout."""
    with _connect(server) as sock:
        head = (
            "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {6 * 1024 * 1024 - 1}\r\nOrigin: https://example.org\r\n\r\n"
        )
        sock.sendall(head.encode() + b"\xff" * 1024)
        sock.settimeout(TIMEOUT + 10)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_text, _, body = answer.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"access-control-allow-origin: *" in head_text.lower()
    assert json.loads(body)["code"] == "body_timeout"


def test_over_6mb_body_is_read_as_413_by_urllib(server: str) -> None:
    """Python's urllib (and httpx) get the 413 JSON, not a connection reset mid-upload."""
    body = b"\xff\xd8\xff" + b"\0" * (7 * 1024 * 1024)
    request = urllib.request.Request(
        server + "classify", data=body, headers={"Content-Type": "image/jpeg"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 413
    assert json.loads(caught.value.read())["code"] == "body_too_large"
    answer = httpx.post(
        server + "classify", content=body, headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert answer.status_code == 413 and answer.json()["code"] == "body_too_large"


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /" + b"a" * (1024 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["bad_content_length", "bad_chunk_size", "url_1mb"],
)
def test_malformed_framing_is_a_json_400(server: str, raw: bytes) -> None:
    with _connect(server) as sock:
        # the server may answer and close before the whole head is sent
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        sock.settimeout(15)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"access-control-allow-origin: *" in head.lower()
    assert json.loads(body)["code"] == "bad_http"


@pytest.mark.parametrize("path", ["health", "models", ""])
def test_head_is_answered_where_get_is(server: str, path: str) -> None:
    answer = httpx.head(server + path, timeout=30)
    assert answer.status_code == 200 and answer.content == b""


def test_trailing_slash_is_served_not_redirected(server: str) -> None:
    jpeg = source_photo().read_bytes()
    for path in ("classify/", "classify/flying-objects/"):
        answer = httpx.post(
            server + path,
            content=jpeg,
            headers={"Content-Type": "image/jpeg", "Host": "evil.example"},
            timeout=60,
        )
        assert answer.status_code == 200, (path, answer.status_code, answer.headers)
        assert answer.json()["label"] in CLASSES


@pytest.mark.parametrize(
    ("mime", "fmt"), [("image/jpg", "JPEG"), ("image/bmp", "BMP"), ("image/tiff", "TIFF")]
)
def test_raw_bodies_are_sniffed_by_bytes(server: str, mime: str, fmt: str) -> None:
    from PIL import Image

    photo = Image.open(source_photo()).convert("RGB").resize((300, 400))
    answer = httpx.post(
        server + "classify",
        content=encode(photo, fmt),
        headers={"Content-Type": mime},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] in CLASSES


def test_truncated_jpeg_claiming_6000x6000_is_a_400(server: str) -> None:
    from PIL import Image

    photo = Image.open(source_photo()).convert("RGB").resize((150, 200))
    data = jpeg_with_size(encode(photo, "JPEG", quality=80), 6000, 6000)  # complete, 7 KB
    assert len(data) < 8192
    answer = httpx.post(
        server + "classify", content=data, headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "corrupt_image"


def test_client_gone_mid_upload_is_one_line() -> None:
    """Three clients leave mid-upload: no traceback in the server's log, a line each at most."""
    proc, url = start_server("--model", str(BUNDLED_MODEL))
    try:
        for _ in range(3):
            with _connect(url) as sock:
                sock.sendall(
                    b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                    b"Content-Length: 100000\r\n\r\n" + b"\xff" * 5000
                )
                time.sleep(0.2)
        time.sleep(0.5)
        assert httpx.get(url + "health", timeout=30).status_code == 200
    finally:
        stop_server(proc)
    log = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert len(log.strip().splitlines()) <= 3, log


def test_serve_limits_come_from_the_settings() -> None:
    """What uvicorn runs with: keep-alive, connection limit, head size, the header deadline."""
    from skyclass.serve.server import MAX_HEADER_BYTES, uvicorn_config
    from skyclass.serve.settings import ServeSettings

    env = {"SKYCLASS_KEEP_ALIVE": "7", "SKYCLASS_MAX_CONNECTIONS": "40"}
    env["SKYCLASS_HEADER_TIMEOUT"] = "3"
    config = uvicorn_config(object(), ServeSettings.from_env(env))
    assert (config.timeout_keep_alive, config.limit_concurrency) == (7, 40)
    assert config.h11_max_incomplete_event_size == MAX_HEADER_BYTES
    assert config.http.header_timeout == 3.0  # type: ignore[union-attr]
