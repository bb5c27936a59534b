"""Answers with a scope: label null out of scope (HTTP app, Lambda v1/v2); rejection off gives the
answer as before scopes byte for byte; old and broken model folders still serve, never a 500."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from skyclass.core.bundle import load_bundle
from skyclass.core.predictor import Predictor
from skyclass.serve.app import create_app
from skyclass.serve.handler import build_handler
from skyclass.serve.registry import ModelRegistry
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL
from tests.events import make_events
from tests.scope.support import out_of_scope_photos, pre_scope_copy
from tests.serve.support import fixture_image

JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
def flagship() -> Predictor:
    return Predictor(BUNDLED_MODEL, threads=1)


@pytest.fixture(scope="module")
def rejected_photo(flagship: Predictor) -> bytes:
    """A real everyday photo (CC0 clothing source) the flagship judges out of scope."""
    for path in out_of_scope_photos("everyday"):
        if path.name.startswith("cloth_"):
            data = path.read_bytes()
            if not flagship.predict(data).in_scope:
                return data
    pytest.fail("no clothing photo is rejected")


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(ServeSettings(model_dirs=(BUNDLED_MODEL,), threads=1)))


@pytest.fixture(scope="module")
def old_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pre_scope_copy(tmp_path_factory.mktemp("old") / "flying-objects")


def test_out_of_scope_answer_has_no_label(client: TestClient, rejected_photo: bytes) -> None:
    body = client.post("/classify", content=rejected_photo, headers=JPEG).json()
    assert body["label"] is None
    assert body["in_scope"] is False
    assert body["top_guess"] in body["probabilities"]
    assert body["scope"]["score"] < body["scope"]["threshold"]
    assert body["scope"]["method"] == load_scope_method()
    assert len(body["probabilities"]) == 4


def load_scope_method() -> str:
    return json.loads((BUNDLED_MODEL / "scope_report.json").read_text())["method"]


def test_in_scope_answer_keeps_its_label(client: TestClient) -> None:
    photo = fixture_image("bisky_").read_bytes()
    body = client.post("/classify", content=photo, headers=JPEG).json()
    assert body["label"] == "flying_birds" and body["in_scope"] is True
    assert body["scope"]["score"] >= body["scope"]["threshold"]


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_lambda_events_label_null(kind: str, rejected_photo: bytes) -> None:
    settings = ServeSettings(model_dirs=(BUNDLED_MODEL,), threads=1)
    handler = build_handler(settings, ModelRegistry.from_settings(settings))
    body = make_events.multipart("file", "photo.jpg", "image/jpeg", rejected_photo)
    content_type = f"multipart/form-data; boundary={make_events.BOUNDARY}"
    make = make_events.v1 if kind == "v1" else make_events.v2
    event = make("POST", "/classify", body, content_type, True)
    response = handler(event, None)
    assert response["statusCode"] == 200, response["body"]
    answer = json.loads(response["body"])
    assert answer["label"] is None and answer["in_scope"] is False


def _raw(client: TestClient, url: str, photo: bytes) -> bytes:
    response = client.post(url, content=photo, headers=JPEG)
    assert response.status_code == 200, response.text
    return response.content


def test_rejection_off_is_the_answer_before_scopes_byte_for_byte(
    old_folder: Path, rejected_photo: bytes
) -> None:
    """The same model without its scope (and with its ONNX outputs as exported before scopes)
    answers exactly what ?reject=false and SKYCLASS_REJECT_OUT_OF_SCOPE=0 answer."""
    new = TestClient(create_app(ServeSettings(model_dirs=(BUNDLED_MODEL,), threads=1)))
    env_off = ServeSettings.from_env(
        {"SKYCLASS_MODELS": str(BUNDLED_MODEL), "SKYCLASS_REJECT_OUT_OF_SCOPE": "0"}
    )
    off = TestClient(create_app(env_off))
    old = TestClient(create_app(ServeSettings(model_dirs=(old_folder,), threads=1)))
    for photo in (rejected_photo, fixture_image("bisky_").read_bytes()):
        raw = _raw(new, "/classify?reject=false", photo)
        assert raw == _raw(off, "/classify", photo)
        before = json.loads(_raw(old, "/classify", photo))
        got = json.loads(raw)
        assert set(got) == {"label", "confidence", "probabilities", "model"} == set(before)
        assert got["probabilities"] == before["probabilities"]  # same floats, bit for bit
        assert got["label"] == before["label"] is not None
        # ...and the very bytes: only the model file's hash and version differ.
        before["model"] = got["model"]
        assert raw == json.dumps(before, separators=(",", ":")).encode()
    # The request can still turn rejection on when the environment turned it off.
    assert json.loads(_raw(off, "/classify?reject=true", rejected_photo))["label"] is None


def test_old_model_folder_serves_without_scope(old_folder: Path) -> None:
    client = TestClient(create_app(ServeSettings(model_dirs=(old_folder,), threads=1)))
    photo = fixture_image("bisky_").read_bytes()
    body = client.post("/classify", content=photo, headers=JPEG).json()
    assert body["label"] == "flying_birds" and "in_scope" not in body
    explain = client.post("/classify?explain=true", content=photo, headers=JPEG)
    assert explain.status_code == 422
    assert explain.json()["code"] == "cannot_explain" and "cam" in explain.json()["error"]
    health = client.get("/health").json()
    assert health["models"][0]["scope"] == "off: the model folder has no scope file"
    models = client.get("/models").json()["models"][0]
    assert models["explain"] is False and models["scope"].startswith("off")


def _broken(tmp: Path, how: str) -> Path:
    folder = tmp / how
    shutil.copytree(BUNDLED_MODEL, folder)
    scope = folder / "scope.npz"
    if how == "missing":
        scope.unlink()
    elif how == "corrupt":
        data = bytearray(scope.read_bytes())
        data[len(data) // 2] ^= 0xFF
        scope.write_bytes(bytes(data))
    elif how == "width":  # a valid file, its sha256 in model.json, fitted on other features
        arrays = dict(np.load(scope, allow_pickle=False))
        arrays["feature_width"] = np.array(1000, dtype=np.int64)
        np.savez(scope, **arrays)
        _rehash_scope(folder)
    elif how == "garbage":  # not an npz at all, hash updated so only the content is wrong
        scope.write_bytes(b"not a scope file")
        _rehash_scope(folder)
    return folder


def _rehash_scope(folder: Path) -> None:
    from skyclass.core.bundle import sha256_file

    data = json.loads((folder / "model.json").read_text())
    data["scope"]["sha256"] = sha256_file(folder / "scope.npz")
    data["scope"]["bytes"] = (folder / "scope.npz").stat().st_size
    (folder / "model.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("missing", "is missing"),
        ("corrupt", "does not match its sha256"),
        ("width", "fitted on 1000 features"),
        ("garbage", "unreadable"),
    ],
)
def test_broken_scope_file_serves_without_scope_and_says_why(
    how: str, reason: str, tmp_path: Path, rejected_photo: bytes
) -> None:
    folder = _broken(tmp_path, how)
    client = TestClient(create_app(ServeSettings(model_dirs=(folder,), threads=1)))
    response = client.post("/classify", content=rejected_photo, headers=JPEG)
    assert response.status_code == 200
    assert response.json()["label"] is not None and "in_scope" not in response.json()
    state = client.get("/health").json()["models"][0]["scope"]
    assert state.startswith("off: ") and reason in state
    assert reason in client.get("/models").json()["models"][0]["scope"]
    assert str(tmp_path) not in state  # paths are never shown


def test_explain_returns_an_overlay_png(client: TestClient) -> None:
    import io

    from PIL import Image

    photo = fixture_image("bisky_").read_bytes()
    plain = client.post("/classify", content=photo, headers=JPEG).json()
    assert "explanation" not in plain
    body = client.post("/classify?explain=true", content=photo, headers=JPEG).json()
    ex = body["explanation"]
    png = base64.b64decode(ex["png_base64"])
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (ex["width"], ex["height"])
    original = Image.open(io.BytesIO(photo)).size
    assert abs(ex["width"] / ex["height"] - original[0] / original[1]) < 0.02
    assert ex["label"] == body["label"] and 0 <= ex["peak"]["x"] <= 1
    assert {k: v for k, v in body.items() if k != "explanation"} == plain


def test_bundle_describes_the_scope_file_with_its_sha256() -> None:
    from skyclass.core.bundle import sha256_file

    bundle = load_bundle(BUNDLED_MODEL)
    assert bundle.scope is not None and bundle.scope.path == "scope.npz"
    assert sha256_file(BUNDLED_MODEL / "scope.npz") == bundle.scope.sha256


def test_reject_setting_from_the_environment() -> None:
    from skyclass.serve.settings import SettingsError

    def read(value: str) -> bool:
        env = {"SKYCLASS_MODELS": str(BUNDLED_MODEL), "SKYCLASS_REJECT_OUT_OF_SCOPE": value}
        return ServeSettings.from_env(env).reject_out_of_scope

    assert ServeSettings.from_env({"SKYCLASS_MODELS": str(BUNDLED_MODEL)}).reject_out_of_scope
    assert read("1") and read("true") and read("ON")
    assert not read("0") and not read("false") and not read("off")
    with pytest.raises(SettingsError, match="SKYCLASS_REJECT_OUT_OF_SCOPE"):
        read("maybe")
