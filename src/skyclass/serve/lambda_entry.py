"""The Lambda entry point: ``skyclass.serve.lambda_entry.classify_image`` (serverless.yml).

It is :data:`skyclass.serve.handler.classify_image` when that module can start. When it cannot (a
dependency missing from the interpreter that runs it, e.g. serverless-offline on a Python without
mangum, or a setting that does not parse), every request gets a 502 JSON that names the reason,
instead of a Lambda timeout (a 504 after 15 s) that names nothing. The reason is logged once too.
Only the standard library is imported before the handler module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def unavailable_handler(reason: str) -> Handler:
    """A handler that answers every event with 502 ``{"error", "code": "handler_unavailable"}``."""
    body = json.dumps(
        {"error": f"the handler could not start: {reason}", "code": "handler_unavailable"}
    )

    def classify_image(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {
            "statusCode": 502,
            "headers": {"content-type": "application/json", "access-control-allow-origin": "*"},
            "body": body,
            "isBase64Encoded": False,
        }

    return classify_image


def load_handler() -> Handler:
    """The real handler, or :func:`unavailable_handler` with the reason it could not start."""
    try:
        from skyclass.serve.handler import classify_image
    except Exception as exc:  # shown to the client and logged, never a timeout
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ModuleNotFoundError):
            reason += " (the Python that runs the handler lacks skyclass's serve dependencies)"
        log.exception("skyclass handler could not start")
        return unavailable_handler(reason)
    return classify_image


classify_image = load_handler()
