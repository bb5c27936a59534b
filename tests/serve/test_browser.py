"""The web page in headless Chromium (Debian's), against the real server: pick and drop a photo.

And the page behind an API Gateway REST stage (the Lambda handler under a stand-in for the stage),
opened as ``/dev`` with no trailing slash, where a naive relative fetch would leave the stage.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from skyclass.core.predictor import Predictor
from skyclass.serve.handler import build_handler
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL, REPO_ROOT
from tests.events import load_event

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


LISTED = "#model option[value='flying-objects']"


def open_page(browser, url: str):
    """A fresh tab at ``url``, once the page has listed the models (fails if it could not)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(
            "sel => document.querySelector(sel) ||"
            " document.getElementById('status').classList.contains('error')",
            arg=LISTED,
        )
        assert page.locator(LISTED).count() == 1, page.inner_text("#status")
    except BaseException:
        context.close()
        raise
    return page


@pytest.fixture(scope="module")
def page(browser, server: str):
    page = open_page(browser, server)
    try:
        yield page
    finally:
        page.context.close()


def api_label(server: str, path: Path, model: str | None = None) -> dict:
    url = server + ("classify" if model is None else f"classify/{model}")
    response = httpx.post(url, files={"file": (path.name, path.read_bytes())}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_result(page, name: str) -> None:
    page.wait_for_function(
        "name => document.body.dataset.state !== 'busy' &&"
        " document.getElementById('status').textContent.includes(name)",
        arg=name,
        timeout=30_000,
    )


def test_pick_a_file(page, server: str, photos: dict[str, Path]) -> None:
    path = photos["large_quad"]
    page.set_input_files("#file", str(path))
    wait_for_result(page, path.name)
    expected = api_label(server, path)
    assert page.inner_text("#label") == expected["label"]
    bars = page.locator("#bars li")
    assert bars.count() == len(expected["probabilities"])
    names = [bars.nth(i).locator(".bar-name").inner_text() for i in range(bars.count())]
    assert names == list(expected["probabilities"])
    widths = page.eval_on_selector_all(".fill", "els => els.map(e => parseFloat(e.style.width))")
    assert abs(sum(widths) - 100) < 0.5 and widths == sorted(widths, reverse=True)
    assert page.get_attribute("#preview", "src").startswith("blob:")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)


def test_drop_a_file_with_the_second_model(page, server: str, photos: dict[str, Path]) -> None:
    path = photos["bird"]
    page.select_option("#model", "second-test-model")
    payload = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const file = new File([bytes], name, { type: "image/jpeg" });
            const dt = new DataTransfer();
            dt.items.add(file);
            const zone = document.getElementById("drop");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true,
                                                           cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true,
                                                       cancelable: true }));
        }""",
        [payload, path.name],
    )
    wait_for_result(page, path.name)
    expected = api_label(server, path, "second-test-model")
    assert page.inner_text("#label") == expected["label"]
    assert page.locator("#bars li").count() == 5
    assert "second-test-model" in page.inner_text("#model-info")


def test_a_bad_file_shows_the_error(page, tmp_path: Path) -> None:
    page.select_option("#model", "flying-objects")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    page.set_input_files("#file", str(bad))
    wait_for_result(page, bad.name)
    status = page.locator("#status")
    assert "error" in (status.get_attribute("class") or "")
    assert "not an image" in status.inner_text()


STAGE = "dev"


class RestStage(HTTPServer):
    """A stand-in for an API Gateway REST (payload v1) stage ``/dev`` before the Lambda handler.

    ``/dev`` and ``/dev/...`` become proxy events with the stage stripped from ``path`` (``/dev`` is
    ``/``) and bodies base64-encoded (binary media types on, as deployed); any other path is
    answered 403, as API Gateway does. Every path asked for is kept in ``paths``. One request at a
    time, on one thread with its own event loop, as in one Lambda container.
    """

    def __init__(self, handler: Any) -> None:
        super().__init__(("127.0.0.1", 0), StageRequest)
        self.handler = handler
        self.paths: list[str] = []
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self.serve_forever()
        finally:
            loop.close()


class StageRequest(BaseHTTPRequestHandler):
    server: RestStage

    def do_GET(self) -> None:
        self.forward()

    def do_POST(self) -> None:
        self.forward()

    def forward(self) -> None:
        url = urlsplit(self.path)
        self.server.paths.append(url.path)
        prefix = f"/{STAGE}"
        if url.path != prefix and not url.path.startswith(prefix + "/"):
            body = json.dumps({"message": "Forbidden"}).encode()
            self.reply(403, [("content-type", "application/json")], body)
            return
        response = self.server.handler(self.event(url.path[len(prefix) :] or "/", url.query), None)
        body = response.get("body") or ""
        data = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
        headers = [
            (k, v) for k, vs in (response.get("multiValueHeaders") or {}).items() for v in vs
        ]
        headers += list((response.get("headers") or {}).items())
        self.reply(response["statusCode"], headers, data)

    def event(self, path: str, query: str) -> dict[str, Any]:
        """A REST v1 proxy event, shaped as the recorded one in tests/events."""
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        params = parse_qs(query, keep_blank_values=True)
        event = load_event("v1_get_health")
        event.update(
            resource="/{proxy+}" if path != "/" else "/",
            path=path,
            httpMethod=self.command,
            headers={k: v for k, v in self.headers.items()},
            multiValueHeaders={k: self.headers.get_all(k) for k in set(self.headers.keys())},
            queryStringParameters={k: v[-1] for k, v in params.items()} or None,
            multiValueQueryStringParameters=params or None,
            pathParameters={"proxy": path[1:]} if path != "/" else None,
            body=base64.b64encode(body).decode() if body else None,
            isBase64Encoded=bool(body),
        )
        context = event["requestContext"]
        context.update(
            resourcePath=event["resource"],
            httpMethod=self.command,
            path=f"/{STAGE}{path if path != '/' else ''}",
            stage=STAGE,
        )
        return event

    def reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def rest_stage(monkeypatch: pytest.MonkeyPatch) -> Iterator[RestStage]:
    """The flagship's Lambda handler behind a REST stage ``/dev`` on 127.0.0.1 (free port)."""
    monkeypatch.delenv("SKYCLASS_BASE_PATH", raising=False)
    stage = RestStage(build_handler(ServeSettings(model_dirs=(BUNDLED_MODEL,))))
    thread = threading.Thread(target=stage.run, daemon=True)
    thread.start()
    try:
        yield stage
    finally:
        stage.shutdown()
        stage.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.parametrize("path", [STAGE, STAGE + "/"])
def test_behind_a_rest_stage(browser, rest_stage: RestStage, photos: dict[str, Path], path: str):
    """``/dev`` (no trailing slash) must call ``/dev/models``, not ``/models`` outside the stage."""
    page = open_page(browser, f"{rest_stage.origin}/{path}")
    try:
        image = photos["bird"]
        page.set_input_files("#file", str(image))
        wait_for_result(page, image.name)
        expected = Predictor(BUNDLED_MODEL).predict(image.read_bytes()).to_dict()
        assert page.inner_text("#label") == expected["label"]
        assert "error" not in (page.get_attribute("#status", "class") or "")
        # Everything asked for went to the stage (Chromium's own favicon request aside).
        calls = [p for p in rest_stage.paths if p != "/favicon.ico"]
        assert calls == [
            f"/{path}",
            f"/{STAGE}/models",
            f"/{STAGE}/classify/flying-objects",
        ]
    finally:
        page.context.close()


def test_out_of_scope_message_explanation_toggle_and_model_change(
    page, server: str, photos: dict[str, Path]
) -> None:
    """A photo of none of the classes: the page says so, with the top guess beneath; the
    explanation overlay shows over the photo and the toggle hides it; the time is shown; another
    model re-runs the photo already shown."""
    from tests.scope.support import out_of_scope_photos

    page.select_option("#model", "flying-objects")
    rejected = None
    for path in out_of_scope_photos("everyday"):
        if path.name.startswith("cloth_") and api_label(server, path)["label"] is None:
            rejected = path
            break
    assert rejected is not None
    page.set_input_files("#file", str(rejected))
    wait_for_result(page, rejected.name)
    expected = api_label(server, rejected)
    label = page.inner_text("#label")
    assert label.startswith("This does not look like any of: ")
    assert all(name in label for name in expected["probabilities"])
    assert page.inner_text("#guess").startswith(f"Top guess: {expected['top_guess']} (")
    assert page.is_visible("#overlay") and page.is_visible("#explain-toggle")
    assert page.get_attribute("#overlay", "src").startswith("data:image/png;base64,")
    page.uncheck("#show-cam")
    assert not page.is_visible("#overlay")
    page.check("#show-cam")
    assert page.is_visible("#overlay")
    assert page.inner_text("#timing").startswith("answered in ")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-out-of-scope.png"), full_page=True)
    # Changing the model classifies the same photo again, with that model (which cannot explain).
    page.select_option("#model", "second-test-model")
    page.wait_for_function(
        "() => document.getElementById('model-info').textContent.includes('second-test-model')"
        " && document.body.dataset.state === 'done'",
        timeout=30_000,
    )
    assert not page.is_visible("#explain-toggle")
    assert page.inner_text("#label") == api_label(server, rejected, "second-test-model")["label"]
