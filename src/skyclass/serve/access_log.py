"""One log line per HTTP request (method, path, status, milliseconds), as ASGI middleware.

``skyclass serve`` wraps the app in it unless ``-q``; the Lambda handler does not (API Gateway and
CloudWatch log requests there). Logged to ``skyclass.serve.access`` at INFO.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("skyclass.serve.access")

Scope = dict[str, Any]
Message = dict[str, Any]


class AccessLog:
    """ASGI middleware: ``POST /classify 200 12.3 ms`` once the response is complete."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            ms = (time.perf_counter() - started) * 1000
            path = scope.get("path", "").encode("unicode_escape").decode("ascii")
            method = scope.get("method", "-")
            log.info("%s %s %s %.1f ms", method, path, status or "-", ms)
