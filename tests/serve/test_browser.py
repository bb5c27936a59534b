"""The web page in headless Chromium (Debian's), against the real server: pick and drop a photo."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT

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
def page(server: str):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            page = context.new_page()
            page.goto(server)
            page.wait_for_selector("#model option[value='flying-objects']", state="attached")
            yield page
        finally:
            browser.close()


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
