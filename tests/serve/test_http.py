"""The app through a real uvicorn server on 127.0.0.1, hit with httpx: good and bad requests."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image

from skyclass.core.predictor import Predictor
from tests.conftest import BUNDLED_MODEL, CLASSES, REPO_ROOT, shared_images
from tests.serve.support import SECOND_LABELS, SECOND_MODEL, fixture_image

ORIGIN = {"Origin": "https://someone.example"}


@pytest.fixture(scope="module")
def flagship() -> Predictor:
    return Predictor(BUNDLED_MODEL)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A small, well-formed PNG whose header declares width x height pixels."""
    buf = BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "code"} and body["code"] == code, body
    assert "Traceback" not in body["error"]
    assert str(REPO_ROOT) not in body["error"] and "/tmp" not in body["error"]
    return body


def assert_still_serving(http: httpx.Client, jpeg: bytes) -> None:
    assert http.get("/health").json()["status"] == "ok"
    ok = http.post("/classify", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert ok.status_code == 200 and ok.json()["label"] in CLASSES


def test_multipart_upload_matches_in_process_predict(
    http: httpx.Client, photos: dict[str, Path], flagship: Predictor
) -> None:
    for kind in ("bird", "large_quad", "winged_png"):
        path = photos[kind]
        response = http.post("/classify", files={"anything": (path.name, path.read_bytes())})
        assert response.status_code == 200, response.text
        expected = flagship.predict(path.read_bytes()).to_dict()
        # The flagship's answer over HTTP, with a second model loaded beside it, is unchanged.
        assert response.json() == expected
        assert list(response.json()["probabilities"]) == list(expected["probabilities"])


@pytest.mark.parametrize(
    "content_type",
    ["image/jpeg", "image/png", "image/webp", "image/gif", "application/octet-stream"],
)
def test_raw_body_types(http: httpx.Client, photos: dict[str, Path], content_type: str) -> None:
    data = photos["bird"].read_bytes()
    response = http.post("/classify", content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] in CLASSES
    assert set(body["probabilities"]) == set(CLASSES)  # <= 10 classes: all of them
    assert body["model"]["name"] == "flying-objects" and body["model"]["variant"] == "fp32"


def test_real_png_raw(http: httpx.Client) -> None:
    png = fixture_image("px4ug_vtol_birdseye").read_bytes()
    response = http.post("/classify", content=png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and response.json()["label"] in CLASSES


def _huge_stream() -> Iterator[bytes]:
    for _ in range(8):
        yield b"\xff" * 1_000_000


BAD_REQUESTS = {
    "empty body": (dict(content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty_body"),
    "not an image": (
        dict(content=b"<html><body>hi</body></html>", headers={"Content-Type": "image/jpeg"}),
        400,
        "not_an_image",
    ),
    "text/plain": (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, None),
    "svg type": (
        dict(
            content=b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            headers={"Content-Type": "image/svg+xml"},
        ),
        415,
        "unsupported_media_type",
    ),
    "form-urlencoded": (dict(data={"file": "photo.jpg"}), 415, "unsupported_media_type"),
    "multipart without a file": (dict(data={"note": "x"}, files={}), 400, None),
    "multipart, empty file": (dict(files={"file": ("a.jpg", b"", "image/jpeg")}), 400, None),
    "bad multipart": (
        dict(content=b"garbage", headers={"Content-Type": "multipart/form-data"}),
        400,
        "bad_multipart",
    ),
    "over 6 MB with Content-Length": (
        dict(content=b"\xff" * (6 * 1024 * 1024 + 1), headers={"Content-Type": "image/jpeg"}),
        413,
        "body_too_large",
    ),
    "over 6 MB streamed (chunked)": (
        dict(content=_huge_stream, headers={"Content-Type": "application/octet-stream"}),
        413,
        "body_too_large",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests(http: httpx.Client, photos: dict[str, Path], case: str) -> None:
    kwargs, status, code = BAD_REQUESTS[case]
    kwargs = dict(kwargs)
    if callable(kwargs.get("content")):
        kwargs["content"] = kwargs["content"]()
    if "files" in kwargs and not kwargs["files"]:
        # httpx only sends multipart when there are files: build a file-less multipart by hand.
        boundary = "skyclass-test-boundary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n'
            f"--{boundary}--\r\n"
        ).encode()
        kwargs = {
            "content": body,
            "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        }
        code = "no_file"
    response = http.post("/classify", **kwargs)
    expected_code = code or {400: "empty_body", 415: "unsupported_media_type"}[status]
    body = assert_error(response, status, expected_code)
    assert body["error"]
    assert_still_serving(http, photos["bird"].read_bytes())


def test_bad_images(http: httpx.Client, photos: dict[str, Path]) -> None:
    jpeg = photos["large_quad"].read_bytes()
    raw = {"Content-Type": "image/jpeg"}
    truncated = http.post("/classify", content=jpeg[: len(jpeg) // 2], headers=raw)
    assert_error(truncated, 400, "corrupt_image")
    bomb = http.post("/classify", content=bomb_png(), headers={"Content-Type": "image/png"})
    body = assert_error(bomb, 413, "image_too_large")
    assert "pixels" in body["error"]
    two = http.post(
        "/classify",
        files=[("a", ("a.jpg", jpeg, "image/jpeg")), ("b", ("b.jpg", jpeg, "image/jpeg"))],
    )
    assert_error(two, 400, "too_many_files")
    bomb_form = http.post("/classify", files={"file": ("bomb.png", bomb_png(), "image/png")})
    assert_error(bomb_form, 413, "image_too_large")
    assert_still_serving(http, jpeg)


def test_cors_on_success_error_and_preflight(http: httpx.Client, photos: dict[str, Path]) -> None:
    data = photos["bird"].read_bytes()
    ok = http.post("/classify", content=data, headers={**ORIGIN, "Content-Type": "image/jpeg"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "*"
    bad = http.post("/classify", content=b"", headers={**ORIGIN, "Content-Type": "image/jpeg"})
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == "*"
    missing = http.post("/classify/nope", content=data, headers=ORIGIN)
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == "*"
    preflight = http.options(
        "/classify",
        headers={
            **ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_models_lists_both(http: httpx.Client) -> None:
    body = http.get("/models").json()
    assert body["default"] == "flying-objects"
    models = {m["name"]: m for m in body["models"]}
    assert list(models) == ["flying-objects", SECOND_MODEL]
    flag = models["flying-objects"]
    assert flag["default"] is True and flag["classes"] == 4 and flag["labels"] == list(CLASSES)
    assert len(flag["sha256"]) == 64 and flag["version"]
    other = models[SECOND_MODEL]
    assert other["default"] is False and other["classes"] == 24
    assert other["labels"] is None  # more than 20 classes: not listed
    assert other["version"] == "9.9.9-test"


def test_named_model_and_top_k(http: httpx.Client, photos: dict[str, Path]) -> None:
    data = photos["winged"].read_bytes()
    default_k = http.post(f"/classify/{SECOND_MODEL}", files={"f": ("w.jpg", data)}).json()
    assert default_k["model"]["name"] == SECOND_MODEL
    assert len(default_k["probabilities"]) == 5 and default_k["label"] in SECOND_LABELS
    everything = http.post(f"/classify/{SECOND_MODEL}?top_k=24", content=data).json()
    assert len(everything["probabilities"]) == 24
    assert abs(sum(everything["probabilities"].values()) - 1) < 1e-5
    assert list(everything["probabilities"])[:5] == list(default_k["probabilities"])
    two = http.post("/classify/flying-objects?top_k=2", content=data).json()
    assert len(two["probabilities"]) == 2 and two["model"]["name"] == "flying-objects"
    assert_error(http.post("/classify?top_k=0", content=data), 422, "invalid_request")
    assert_error(http.post("/classify?top_k=many", content=data), 422, "invalid_request")


def test_unknown_model_and_routes(http: httpx.Client) -> None:
    jpeg = fixture_image("bisky_").read_bytes()
    body = assert_error(http.post("/classify/../../etc/passwd", content=jpeg), 404, "not_found")
    body = assert_error(http.post("/classify/imagenet", content=jpeg), 404, "unknown_model")
    assert "imagenet" in body["error"] and "flying-objects" in body["error"]
    assert_error(http.get("/nothing-here"), 404, "not_found")
    assert_error(http.get("/classify"), 405, "method_not_allowed")


def test_health_reports_models(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["status"] == "ok"
    states = {m["name"]: m["state"] for m in body["models"]}
    assert states["flying-objects"] == "loaded"  # `serve` loads the default before listening
    assert states[SECOND_MODEL] in ("loaded", "not_loaded")


def test_page_and_openapi(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and 'id="model"' in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)  # no CDN
    spec = http.get("/openapi.json").json()
    body = spec["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/jpeg", "image/png", "application/octet-stream"} <= set(
        body
    )
    responses = spec["paths"]["/classify/{model}"]["post"]["responses"]
    assert {"200", "400", "404", "413", "415", "422", "503"} <= set(responses)
    assert "ClassifyOut" in spec["components"]["schemas"]
    assert "ErrorOut" in spec["components"]["schemas"]


def test_many_photos_in_a_row(http: httpx.Client, flagship: Predictor) -> None:
    for path in shared_images("flying_birds", 4, "ddt_") + shared_images("winged_drones", 3):
        data = path.read_bytes()
        got = http.post("/classify", content=data, headers={"Content-Type": "image/jpeg"})
        if got.status_code == 200:
            assert got.json() == flagship.predict(data).to_dict()
        else:  # a shared file the decoder refuses must be a clean 4xx, never a 5xx
            assert 400 <= got.status_code < 500, got.text
