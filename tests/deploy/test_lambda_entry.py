"""The Lambda entry point: the real handler when it starts, a 502 naming why when it cannot."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

CALL = """
import json, sys
{block}
from skyclass.serve.lambda_entry import classify_image
event = json.load(open({event!r}))
print(json.dumps(classify_image(event, None)))
"""
EVENT = REPO_ROOT / "tests" / "events" / "v1_get_health.json"


def _invoke(block: str) -> dict:
    code = CALL.format(block=block, event=str(EVENT))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_entry_is_the_real_handler_when_it_starts() -> None:
    answer = _invoke("")
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["status"] == "ok"


def test_a_handler_that_cannot_start_answers_502_naming_why() -> None:
    answer = _invoke("sys.modules['mangum'] = None  # as on a Python without the serve deps")
    assert answer["statusCode"] == 502
    assert answer["headers"]["content-type"] == "application/json"
    body = json.loads(answer["body"])
    assert body["code"] == "handler_unavailable"
    assert "mangum" in body["error"] and "serve dependencies" in body["error"]
