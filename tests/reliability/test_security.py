"""Security checks: nothing a request names is opened; CORS origins restricted when configured.

File opens are watched with a Python audit hook (``sys.addaudithook``: every ``open()`` in the
process raises an "open" event) while hostile requests go through the app in process.
"""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

import httpx
import pytest

from skyclass.serve.app import create_app
from skyclass.serve.handler import build_handler
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL
from tests.events.make_events import v1, v2
from tests.reliability.corpus import FORM, multipart, source_photo
from tests.serve.support import start_server, stop_server

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

GOOD = "https://good.example"
EVIL = "https://evil.example"


class OpenWatch:
    """Paths opened by this process while ``active`` (an audit hook cannot be removed, so gated)."""

    def __init__(self) -> None:
        self.active = False
        self.opened: list[str] = []
        self.lock = threading.Lock()
        sys.addaudithook(self.hook)

    def hook(self, event: str, args: tuple) -> None:
        if self.active and event == "open" and args and isinstance(args[0], str | bytes | Path):
            with self.lock:
                self.opened.append(str(args[0]))


@pytest.fixture(scope="module")
def watch() -> OpenWatch:
    return OpenWatch()


def test_request_paths_and_file_names_are_never_opened(watch: OpenWatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(source_photo().read_bytes())  # a real image, if anything opened it
    client = TestClient(create_app(ServeSettings(model_dirs=(BUNDLED_MODEL,))))
    jpeg = source_photo().read_bytes()
    assert client.post("/classify", content=jpeg, headers={"Content-Type": "image/jpeg"})
    requests = [
        (str(secret).encode(), "image/jpeg", 400),
        (f"file://{secret}".encode(), "application/octet-stream", 400),
        (multipart(("file", str(secret), b"")), FORM, 400),
        (multipart(("file", "../../etc/passwd", jpeg)), FORM, 200),
        (multipart(("file", str(secret), jpeg)), FORM, 200),
    ]
    watch.active = True
    try:
        answers = [
            client.post("/classify", content=body, headers={"Content-Type": ctype}).status_code
            for body, ctype, _ in requests
        ]
        for name in ("..%2F..%2Fetc%2Fpasswd", str(secret).replace("/", "%2F")):
            answers.append(client.post(f"/classify/{name}", content=jpeg).status_code)
    finally:
        watch.active = False
    assert answers == [status for _, _, status in requests] + [404, 404]
    opened = [p for p in watch.opened if "passwd" in p or "secret" in p]
    assert opened == []
    watch.active = True  # the watch itself works: a real open of the file is seen
    secret.read_bytes()
    watch.active = False
    assert [p for p in watch.opened if "secret" in p] == [str(secret)]


def test_restricted_cors_origins_on_a_live_server() -> None:
    proc, url = start_server("--model", str(BUNDLED_MODEL), "--cors-origin", GOOD)
    jpeg = source_photo().read_bytes()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for origin, allowed in ((GOOD, True), (EVIL, False)):
                headers = {"Origin": origin, "Content-Type": "image/jpeg"}
                for response in (
                    client.post("/classify", content=jpeg, headers=headers),
                    client.post("/classify", content=b"", headers=headers),  # errors too
                ):
                    got = response.headers.get("access-control-allow-origin")
                    assert got == (origin if allowed else None), (origin, response.status_code)
                preflight = client.options(
                    "/classify",
                    headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
                )
                got = preflight.headers.get("access-control-allow-origin")
                assert got == (origin if allowed else None)
                assert preflight.status_code == (200 if allowed else 400)
    finally:
        stop_server(proc)


@pytest.mark.parametrize("make", [v1, v2], ids=["v1", "v2"])
def test_restricted_cors_origins_in_lambda(make) -> None:
    handler = build_handler(ServeSettings(model_dirs=(BUNDLED_MODEL,), cors_origins=(GOOD,)))
    jpeg = source_photo().read_bytes()
    for origin, allowed in ((GOOD, True), (EVIL, False)):
        for body, b64_junk in ((jpeg, False), (b"x", True)):
            event = make("POST", "/classify", body, "image/jpeg", True)
            if b64_junk:
                event["body"] = "@@ not base64 @@"  # answered by the adapter, not the app
            headers = event["headers"]
            for key in [k for k in headers if k.lower() == "origin"]:
                headers[key] = origin
            if "multiValueHeaders" in event:
                event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
            response = handler(event, None)
            got = {k.lower(): v for k, v in response["headers"].items()}.get(
                "access-control-allow-origin"
            )
            assert got == (origin if allowed else None), (origin, response["statusCode"])
