"""Real API Gateway event fixtures (REST payload v1, HTTP API payload v2), as Powertools keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent


def load_event(name: str) -> dict[str, Any]:
    """The event ``tests/events/NAME.json`` (``.json`` optional), as a fresh dict."""
    path = EVENTS_DIR / (name if name.endswith(".json") else f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8"))
