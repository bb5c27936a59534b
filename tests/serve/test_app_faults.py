"""The app in process: a model that cannot load (503), an unexpected error (500), CORS lists."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from skyclass.core.predictor import Predictor
from skyclass.serve.app import create_app
from skyclass.serve.registry import ModelRegistry, ModelSource
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL
from tests.serve.support import fixture_image

JPEG = {"Content-Type": "image/jpeg"}


def test_missing_model_is_503_and_health_says_so(tmp_path: Path) -> None:
    settings = ServeSettings(model_dirs=(tmp_path / "no-such-model",))
    client = TestClient(create_app(settings))
    jpeg = fixture_image("bisky_").read_bytes()
    for _ in range(2):  # asked again, it fails again (and is retried), never crashes
        response = client.post("/classify", content=jpeg, headers=JPEG)
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "model_unavailable"
        assert "no-such-model" in body["error"] and str(tmp_path) not in body["error"]
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["models"][0]["state"] == "failed"
    # Bad input is still judged as bad input first, before any model is needed.
    assert client.post("/classify", content=b"", headers=JPEG).status_code == 400


def test_failed_second_model_degrades_health_only(tmp_path: Path) -> None:
    registry = ModelRegistry(
        [ModelSource.local(BUNDLED_MODEL), ModelSource.local(tmp_path / "broken")]
    )
    client = TestClient(create_app(registry))
    jpeg = fixture_image("bisky_").read_bytes()
    assert client.post("/classify/broken", content=jpeg, headers=JPEG).status_code == 503
    assert client.post("/classify", content=jpeg, headers=JPEG).status_code == 200
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["broken"]["state"] == "failed" and models["broken"]["classes"] is None


class Exploding(Predictor):
    def predict(self, image_bytes: bytes, top_k: int | None = None, **options: Any) -> Any:
        raise RuntimeError("secret internal detail /srv/app/thing.py")


def test_unexpected_error_is_500_json_with_cors(caplog: pytest.LogCaptureFixture) -> None:
    registry = ModelRegistry([ModelSource.local(BUNDLED_MODEL)], factory=Exploding)
    client = TestClient(create_app(registry), raise_server_exceptions=False)
    jpeg = fixture_image("bisky_").read_bytes()
    with caplog.at_level(logging.ERROR, logger="skyclass.serve.app"):
        response = client.post(
            "/classify", content=jpeg, headers={**JPEG, "Origin": "https://x.example"}
        )
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal error; it has been logged",
        "code": "internal_error",
    }
    assert response.headers["access-control-allow-origin"] == "*"
    assert "secret internal detail" in caplog.text  # logged, not returned


def test_cors_origin_list() -> None:
    settings = ServeSettings(model_dirs=(BUNDLED_MODEL,), cors_origins=("https://ok.example",))
    client = TestClient(create_app(settings))
    jpeg = fixture_image("bisky_").read_bytes()
    allowed = client.post(
        "/classify", content=jpeg, headers={**JPEG, "Origin": "https://ok.example"}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://ok.example"
    other = client.post(
        "/classify", content=b"", headers={**JPEG, "Origin": "https://evil.example"}
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


def test_body_limit_setting_applies() -> None:
    settings = ServeSettings(model_dirs=(BUNDLED_MODEL,), max_body_bytes=10_000)
    client = TestClient(create_app(settings))
    big = fixture_image("cropspray_").read_bytes()  # 23 kB
    response = client.post("/classify", content=big, headers=JPEG)
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"
    small = fixture_image("bisky_").read_bytes()  # 4.7 kB
    assert client.post("/classify", content=small, headers=JPEG).status_code == 200
