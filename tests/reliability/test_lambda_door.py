"""The Lambda and environment doors (issue 14): events Mangum cannot map, bad settings.

HTTP-shaped events that cannot be read are a 400 JSON (with CORS); non-HTTP events (warmers,
EventBridge, S3, ``{}``) are ignored with a log line; a bad environment value never fails the
import: every request is answered with a 500 JSON that names the setting, with CORS.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from skyclass.serve.handler import LambdaAdapter, SettingsFailure, build_handler
from skyclass.serve.settings import ServeSettings, SettingsError
from tests.conftest import BUNDLED_MODEL, CLASSES, REPO_ROOT
from tests.events import load_event

ORIGIN = "https://example.org"

Mutation = Callable[[dict[str, Any]], None]


def _drop(*keys: str) -> Mutation:
    def edit(event: dict[str, Any]) -> None:
        for key in keys:
            event.pop(key, None)

    return edit


def _put(key: str, value: Any) -> Mutation:
    return lambda event: event.__setitem__(key, value)


def _header(name: str, value: Any) -> Mutation:
    def edit(event: dict[str, Any]) -> None:
        event["headers"][name] = value
        if "multiValueHeaders" in event:
            event["multiValueHeaders"][name] = [value]

    return edit


#: (fixture event, what is done to it): HTTP-shaped events that a handler must answer, not raise.
HTTP_SHAPED: dict[str, tuple[str, Mutation]] = {
    "v1_body_int": ("v1_classify_raw_jpeg_b64", _put("body", 12345)),
    "v1_body_dict": ("v1_classify_raw_jpeg_b64", _put("body", {"image": "x"})),
    "v2_body_int": ("v2_classify_raw_png_b64", _put("body", 12345)),
    "v1_header_int": ("v1_classify_raw_jpeg_b64", _header("X-Number", 5)),
    "v2_header_int": ("v2_classify_raw_png_b64", _header("x-number", 5)),
    "v2_headers_null": ("v2_classify_raw_png_b64", _put("headers", None)),
    "v1_headers_null": ("v1_classify_raw_jpeg_b64", _put("headers", None)),
    "v1_no_request_context": ("v1_classify_raw_jpeg_b64", _drop("requestContext")),
    "v2_no_request_context": ("v2_classify_raw_png_b64", _drop("requestContext")),
    "v1_method_missing": ("v1_classify_raw_jpeg_b64", _drop("httpMethod")),
    "v2_raw_path_int": ("v2_classify_raw_png_b64", _put("rawPath", 7)),
    "v1_query_list": ("v1_classify_raw_jpeg_b64", _put("queryStringParameters", [1, 2])),
    "headers_only": (
        "v1_classify_raw_jpeg_b64",
        lambda e: [e.pop(k) for k in list(e) if k != "headers"],
    ),
}

#: Events that are not HTTP requests: ignored with a log line, no exception.
NOT_HTTP: dict[str, Any] = {
    "empty": {},
    "warmer": {"source": "serverless-plugin-warmup"},
    "warmer_flag": {"warmer": True, "concurrency": 3},
    "eventbridge": {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": "2026-11-29T07:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/keep-warm"],
        "detail": {},
    },
    "s3_put": {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "k.jpg", "size": 10}},
            }
        ]
    },
    "list": [1, 2, 3],
    "string": "ping",
    "null": None,
}


@pytest.fixture(scope="module")
def handler() -> LambdaAdapter:
    made = build_handler(ServeSettings(model_dirs=(BUNDLED_MODEL,)))
    assert isinstance(made, LambdaAdapter)
    return made


def _event(name: str, mutate: Mutation) -> dict[str, Any]:
    event = copy.deepcopy(load_event(name))
    mutate(event)
    return event


def _json(response: dict[str, Any]) -> dict[str, Any]:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body)
    return json.loads(body)


@pytest.mark.parametrize("case", list(HTTP_SHAPED))
def test_http_shaped_events_are_answered(handler: LambdaAdapter, case: str) -> None:
    name, mutate = HTTP_SHAPED[case]
    response = handler(_event(name, mutate), None)
    status = response["statusCode"]
    assert status < 500, response
    body = _json(response)
    if status == 200:  # Mangum could read it after all: then it is a real answer
        assert body["label"] in CLASSES
    else:
        assert status == 400 and body["code"] in ("bad_event", "bad_base64"), body
        assert "Traceback" not in response["body"]


@pytest.mark.parametrize("case", list(NOT_HTTP))
def test_non_http_events_are_ignored_with_a_log_line(
    handler: LambdaAdapter, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="skyclass.serve.handler"):
        response = handler(copy.deepcopy(NOT_HTTP[case]), None)
    assert response == {"ignored": "not an HTTP event"}
    assert any("non-HTTP event" in r.getMessage() for r in caplog.records)


def test_bad_base64_with_origin_only_in_multi_value_headers_has_cors(
    handler: LambdaAdapter,
) -> None:
    event = copy.deepcopy(load_event("v1_classify_bad_base64"))
    event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() != "origin"}
    event["multiValueHeaders"] = {"Origin": [ORIGIN], "Content-Type": ["image/jpeg"]}
    response = handler(event, None)
    assert response["statusCode"] == 400 and _json(response)["code"] == "bad_base64"
    assert response["headers"]["access-control-allow-origin"] == "*"


#: (variable, value, words the answer names): the environment door.
BAD_ENV = [
    ("SKYCLASS_VARIANT", "foo", "SKYCLASS_VARIANT"),
    ("SKYCLASS_THREADS", "-1", "SKYCLASS_THREADS"),
    ("SKYCLASS_THREADS", "100000", "SKYCLASS_THREADS"),
    ("SKYCLASS_MAX_CONCURRENCY", "-5", "SKYCLASS_MAX_CONCURRENCY"),
    ("SKYCLASS_MAX_CONCURRENCY", "10000000", "SKYCLASS_MAX_CONCURRENCY"),
    ("SKYCLASS_MAX_BODY_BYTES", "6MB", "SKYCLASS_MAX_BODY_BYTES"),
    ("SKYCLASS_MAX_BODY_BYTES", "99999999999", "SKYCLASS_MAX_BODY_BYTES"),
    ("SKYCLASS_MAX_PIXELS", "-1", "SKYCLASS_MAX_PIXELS"),
    ("SKYCLASS_TOP_K", "0", "SKYCLASS_TOP_K"),
    ("SKYCLASS_MAX_DECODE_BYTES", "1", "SKYCLASS_MAX_DECODE_BYTES"),
    ("SKYCLASS_MAX_HEAVY_DECODES", "0", "SKYCLASS_MAX_HEAVY_DECODES"),
    ("SKYCLASS_BODY_TIMEOUT", "0", "SKYCLASS_BODY_TIMEOUT"),
    ("SKYCLASS_HEADER_TIMEOUT", "100000", "SKYCLASS_HEADER_TIMEOUT"),
    ("SKYCLASS_CORS_ORIGINS", "javascript:alert(1)", "SKYCLASS_CORS_ORIGINS"),
    ("SKYCLASS_BASE_PATH", "v1 x", "SKYCLASS_BASE_PATH"),
    ("SKYCLASS_DEFAULT_MODEL", "no-such-model", "no-such-model"),
]


@pytest.mark.parametrize(("var", "value", "words"), BAD_ENV)
def test_bad_setting_is_a_500_json_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, words: str
) -> None:
    monkeypatch.setenv("SKYCLASS_MODELS", str(BUNDLED_MODEL))
    monkeypatch.setenv(var, value)
    if var != "SKYCLASS_DEFAULT_MODEL":
        with pytest.raises(SettingsError, match=words):
            ServeSettings.from_env()
    made = build_handler()
    assert isinstance(made, SettingsFailure)
    for event in ("v1_classify_raw_jpeg_b64", "v2_classify_raw_png_b64", "v1_get_health"):
        response = made(load_event(event), None)
        assert response["statusCode"] == 500
        body = _json(response)
        assert body["code"] == "bad_setting" and words in body["error"], body
        assert response["headers"]["access-control-allow-origin"] == "*"


def test_module_import_survives_a_bad_setting() -> None:
    """``skyclass.serve.handler`` as Lambda imports it, with SKYCLASS_THREADS=-1: no import error,
    a 500 JSON naming the setting."""
    code = (
        "import json; from skyclass.serve import handler; from tests.events import load_event\n"
        "r = handler.classify_image(load_event('v1_classify_raw_jpeg_b64'), None)\n"
        "print(json.dumps([r['statusCode'], json.loads(r['body'])]))\n"
    )
    env = {**os.environ, "SKYCLASS_THREADS": "-1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    status, body = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 500 and "SKYCLASS_THREADS" in body["error"]
