"""Serving never imports torch, torchvision, albumentations or cv2 (not in the Lambda artifact)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

HEAVY = ("torch", "torchvision", "albumentations", "cv2")


def test_app_handler_and_a_prediction_import_no_heavy_module() -> None:
    code = (
        "import json, sys\n"
        "from skyclass.serve.app import create_app\n"
        "from skyclass.serve import handler, commands, registry, settings\n"
        "from tests.events import load_event\n"
        "r = handler.classify_image(load_event('v1_classify_multipart_b64'), None)\n"
        "assert r['statusCode'] == 200, r\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
