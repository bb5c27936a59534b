"""Reliability fixtures: the hostile corpus, a real server, a Lambda handler, answers as records."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skyclass.core.errors import ImageError
from skyclass.core.predictor import Predictor
from skyclass.serve.handler import LambdaAdapter, build_handler
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL, REPO_ROOT
from tests.deploy.conftest import model_archive, readonly_dir, s3_env, s3_server  # noqa: F401
from tests.events.make_events import v1, v2
from tests.reliability.corpus import Hostile, build_corpus
from tests.serve.support import start_server, stop_server

ARTIFACTS = REPO_ROOT / "test-artifacts"

#: What an answer must never show: a traceback, a source file, an absolute path of this machine.
_INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|/work/|/home/|/tmp/|/var/|/usr/|/etc/passwd"
)


@dataclass(frozen=True)
class Answer:
    """One channel's answer to one input: status, error code or label, and the raw text."""

    status: int
    code: str | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    text: str = ""
    content_type: str = ""

    def short(self) -> str:
        if self.status == 200 and self.label:
            return f"200 {self.label} {self.probabilities and max(self.probabilities.values()):.2f}"
        return f"{self.status} {self.code}"


def internals_in(text: str) -> list[str]:
    return _INTERNALS.findall(text)


def answer_from_json(status: int, text: str, content_type: str) -> Answer:
    try:
        body = json.loads(text)
    except ValueError:
        return Answer(status, "not_json", text=text, content_type=content_type)
    if status == 200 and "label" in body:
        return Answer(200, None, body["label"], body["probabilities"], text, content_type)
    return Answer(status, body.get("code"), text=text, content_type=content_type)


def predict_answer(predictor: Predictor, data: bytes) -> Answer:
    """predict() as an Answer: a typed ImageError becomes its status and code; nothing else may."""
    try:
        result = predictor.predict(data)
    except ImageError as exc:
        return Answer(exc.status, exc.code, text=str(exc))
    return Answer(200, None, result.label, result.probabilities, json.dumps(result.to_dict()))


def lambda_event(version: str, case: Hostile, path: str = "/classify") -> dict[str, Any]:
    make = v1 if version == "v1" else v2
    event = make("POST", path, case.body, case.content_type, True)
    if case.event_body is not None:
        event["body"] = case.event_body
    return event


def lambda_answer(handler: LambdaAdapter, event: dict[str, Any]) -> Answer:
    response = handler(event, None)
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    return answer_from_json(response["statusCode"], body, headers.get("content-type", ""))


@pytest.fixture(scope="session")
def corpus() -> list[Hostile]:
    return build_corpus()


@pytest.fixture(scope="session")
def predictor() -> Predictor:
    return Predictor(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def handler() -> LambdaAdapter:
    """A fresh 'container': the Lambda handler over the bundled model."""
    return build_handler(ServeSettings(model_dirs=(BUNDLED_MODEL,)))


@dataclass(frozen=True)
class LiveServer:
    url: str
    proc: subprocess.Popen

    def rss_kib(self) -> int:
        """The server process's resident set size (VmRSS), in KiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    """``skyclass serve`` on 127.0.0.1 (a free port) with the bundled model; stopped after."""
    proc, url = start_server("--model", str(BUNDLED_MODEL))
    try:
        yield LiveServer(url, proc)
    finally:
        stop_server(proc)
