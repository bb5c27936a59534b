"""The Lambda handler with MODEL_S3_URI set, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skyclass.serve.handler import build_handler
from skyclass.serve.lambda_context import LocalContext
from skyclass.serve.settings import ServeSettings
from tests.conftest import shared_images
from tests.deploy.conftest import Archive, S3Server
from tests.events.make_events import BOUNDARY, multipart, v1


def v1_event(jpeg: bytes, path: str = "/classify") -> dict[str, Any]:
    """A real REST API (v1) event: a base64 multipart upload of ``jpeg``."""
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    return v1("POST", path, multipart("file", "photo.jpg", "image/jpeg", jpeg), ctype, True)


def handler_for(uri: str, cache: Path, sha256: str | None = None):
    env = {"MODEL_S3_URI": uri, "SKYCLASS_MODEL_CACHE": str(cache), "SKYCLASS_THREADS": "1"}
    if sha256:
        env["MODEL_SHA256"] = sha256
    return build_handler(ServeSettings.from_env(env))


def invoke(handler: Any, jpeg: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    answer = handler(v1_event(jpeg), LocalContext(function_name="skyclass-test"))
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    return answer["statusCode"], headers, json.loads(answer["body"])


@pytest.fixture()
def jpeg() -> bytes:
    return shared_images("winged_drones", 1)[0].read_bytes()


@pytest.fixture()
def uploaded(s3_env: S3Server, model_archive: Archive) -> str:
    s3_env.client().put_object(
        Bucket=s3_env.bucket,
        Key="models/flying-objects.tar.gz",
        Body=model_archive.path.read_bytes(),
    )
    return f"s3://{s3_env.bucket}/models/flying-objects.tar.gz"


def test_model_downloaded_once_across_invocations_and_containers(
    s3_env: S3Server, uploaded: str, model_archive: Archive, tmp_path: Path, jpeg: bytes
):
    before = s3_env.get_object_count()
    handler = handler_for(uploaded, tmp_path, model_archive.sha256)
    first = invoke(handler, jpeg)
    second = invoke(handler, jpeg)
    assert first[0] == second[0] == 200, first[2]
    assert first[2]["label"] == second[2]["label"]
    assert first[2]["model"]["name"] == "flying-objects"
    assert first[1]["access-control-allow-origin"] == "*"
    assert s3_env.get_object_count() == before + 1
    # a new process in the same sandbox (warm /tmp): still no second download
    again = invoke(handler_for(uploaded, tmp_path, model_archive.sha256), jpeg)
    assert again[0] == 200 and again[2]["label"] == first[2]["label"]
    assert s3_env.get_object_count() == before + 1


def test_wrong_sha256_is_a_clear_503_and_not_cached(
    s3_env: S3Server, uploaded: str, tmp_path: Path, jpeg: bytes
):
    handler = handler_for(uploaded, tmp_path, "f" * 64)
    status, headers, body = invoke(handler, jpeg)
    assert status == 503, body
    assert "sha256 mismatch" in body["error"]
    assert "Traceback" not in json.dumps(body)
    assert headers["access-control-allow-origin"] in ("*", "https://example.org")
    assert list(tmp_path.iterdir()) == []
    # asked again, it tries again (a failed load is not kept) and refuses again
    assert invoke(handler, jpeg)[0] == 503
    assert s3_env.get_object_count() == 2


def test_absent_object_is_a_503(s3_env: S3Server, tmp_path: Path, jpeg: bytes):
    handler = handler_for(f"s3://{s3_env.bucket}/models/missing.tar.gz", tmp_path)
    status, headers, body = invoke(handler, jpeg)
    assert status == 503
    assert "model archive not found" in body["error"]
    assert headers["access-control-allow-origin"] in ("*", "https://example.org")


def test_read_only_cache_is_a_503(s3_env: S3Server, uploaded: str, readonly_dir: Path, jpeg: bytes):
    status, _, body = invoke(handler_for(uploaded, readonly_dir), jpeg)
    assert status == 503
    assert "cannot write the model cache" in body["error"]
