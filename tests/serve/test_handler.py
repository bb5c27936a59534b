"""The Lambda handler on real API Gateway v1 (REST) and v2 (HTTP API) event fixtures."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skyclass.core.predictor import Predictor
from skyclass.serve.handler import build_handler
from skyclass.serve.registry import ModelRegistry
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL, CLASSES, REPO_ROOT
from tests.events import load_event
from tests.serve.support import SECOND_MODEL, fixture_image

JPEG = fixture_image("bisky_")
JPEG2 = fixture_image("px4ug_vtol_uav")
PNG = fixture_image("px4ug_vtol_birdseye")


class Counting:
    def __init__(self) -> None:
        self.loads: list[str] = []

    def __call__(self, folder: Path, **kwargs: Any) -> Predictor:
        self.loads.append(Path(folder).name)
        return Predictor(folder, **kwargs)


@pytest.fixture(scope="module")
def counted(second_model: Path) -> tuple[Any, Counting]:
    """One 'container': a handler over the flagship (default) and the second model."""
    factory = Counting()
    settings = ServeSettings(model_dirs=(BUNDLED_MODEL, second_model))
    registry = ModelRegistry.from_settings(settings, factory=factory)
    return build_handler(settings, registry), factory


def answer(response: dict[str, Any]) -> dict[str, Any]:
    assert response["isBase64Encoded"] is False
    assert response["headers"]["content-type"] == "application/json"
    return json.loads(response["body"])


@pytest.mark.parametrize(
    ("event", "image"),
    [
        ("v1_classify_multipart_b64", JPEG),
        ("v1_classify_raw_jpeg_b64", JPEG),
        ("v2_classify_multipart_b64", JPEG2),
        ("v2_classify_raw_png_b64", PNG),
    ],
)
def test_classify_events(counted: tuple[Any, Counting], event: str, image: Path) -> None:
    handler, _ = counted
    response = handler(load_event(event), None)
    assert response["statusCode"] == 200, response["body"]
    body = answer(response)
    assert body == Predictor(BUNDLED_MODEL).predict(image.read_bytes()).to_dict()
    assert response["headers"]["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        ("v1_classify_text_body", 415, "unsupported_media_type"),
        ("v2_classify_text_body", 400, "not_an_image"),
        ("v1_classify_bad_base64", 400, "bad_base64"),
    ],
)
def test_bad_events(counted: tuple[Any, Counting], event: str, status: int, code: str) -> None:
    handler, _ = counted
    response = handler(load_event(event), None)
    assert response["statusCode"] == status
    assert answer(response)["code"] == code
    assert response["headers"]["access-control-allow-origin"] == "*"


def test_over_6mb_event_is_413(counted: tuple[Any, Counting]) -> None:
    handler, _ = counted
    event = load_event("v2_classify_raw_png_b64")
    event["body"] = base64.b64encode(b"\x89PNG" + b"\0" * (6 * 1024 * 1024)).decode()
    del event["headers"]["content-length"]
    response = handler(event, None)
    assert response["statusCode"] == 413 and answer(response)["code"] == "body_too_large"


def test_get_events_and_second_model(counted: tuple[Any, Counting]) -> None:
    handler, _ = counted
    health = handler(load_event("v1_get_health"), None)
    assert health["statusCode"] == 200 and answer(health)["status"] == "ok"
    models = answer(handler(load_event("v2_get_models"), None))
    assert [m["name"] for m in models["models"]] == ["flying-objects", SECOND_MODEL]
    event = load_event("v1_classify_raw_jpeg_b64")
    event["path"] = f"/classify/{SECOND_MODEL}"
    body = answer(handler(event, None))
    assert body["model"]["name"] == SECOND_MODEL and len(body["probabilities"]) == 5
    event["path"] = "/classify/unknown"
    missing = handler(event, None)
    assert missing["statusCode"] == 404 and answer(missing)["code"] == "unknown_model"


def test_one_load_per_container(counted: tuple[Any, Counting]) -> None:
    handler, factory = counted
    for name in ("v1_classify_raw_jpeg_b64", "v2_classify_multipart_b64", "v1_get_health"):
        handler(load_event(name), None)
    event = load_event("v1_classify_raw_jpeg_b64")
    event["path"] = f"/classify/{SECOND_MODEL}"
    handler(event, None)
    handler(event, None)
    assert sorted(factory.loads) == sorted(["flying-objects", SECOND_MODEL])


def test_stage_base_path() -> None:
    env = {"SKYCLASS_BASE_PATH": "/v1", "SKYCLASS_MODELS": str(BUNDLED_MODEL)}
    handler = build_handler(ServeSettings.from_env(env))  # the setting, read by settings only
    event = load_event("v1_classify_raw_jpeg_b64")
    event["path"] = "/v1/classify"
    response = handler(event, None)
    assert response["statusCode"] == 200 and answer(response)["label"] in CLASSES


def test_module_handler_in_a_fresh_process() -> None:
    """``skyclass.serve.handler.classify_image`` as Lambda imports it: lazy, then loaded once."""
    code = (
        "import json; from skyclass.serve import handler; from tests.events import load_event\n"
        "before = [s.state for s in handler.registry.status()]\n"
        "r1 = handler.classify_image(load_event('v1_classify_raw_jpeg_b64'), None)\n"
        "r2 = handler.classify_image(load_event('v2_classify_multipart_b64'), None)\n"
        "print(json.dumps([before, r1['statusCode'], r2['statusCode'],"
        " handler.registry.status()[0].loads]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [["not_loaded"], 200, 200, 1]
