"""The Lambda handler: ``skyclass.serve.handler.classify_image``, Mangum over the very same app.

It answers API Gateway REST (payload v1) and HTTP API (payload v2) events, with bodies
base64-encoded (binary media types on, as deployed) or not. Settings come from the environment
(see :mod:`skyclass.serve.settings`): the bundled model by default, ``SKYCLASS_MODELS`` for several,
``MODEL_S3_URI`` (+ ``MODEL_SHA256``) for one from S3. ``SKYCLASS_BASE_PATH`` strips a custom-domain
base path (``/v1``) from incoming paths.

Building the app here at import is cheap (no model is read); each model loads on its first request
and stays loaded for the life of the container.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from typing import Any, cast

from fastapi import FastAPI
from mangum import Mangum

from skyclass.serve.app import create_app
from skyclass.serve.registry import ModelRegistry
from skyclass.serve.settings import ServeSettings

log = logging.getLogger(__name__)


class LambdaAdapter(Mangum):
    """Mangum, plus a clean 400 for a body that claims to be base64 and is not."""

    def __init__(self, app: Any, settings: ServeSettings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.settings = settings

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        body = event.get("body")
        if event.get("isBase64Encoded") and body:
            try:
                base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError, TypeError):
                return self._error(event, 400, "bad_base64", "the body is not valid base64")
        return super().__call__(event, context)

    def _error(self, event: dict[str, Any], status: int, code: str, message: str) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        request_headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        origin = request_headers.get("origin")
        origins = self.settings.cors_origins
        if origin and "*" in origins:
            headers["access-control-allow-origin"] = "*"
        elif origin and origin in origins:
            headers["access-control-allow-origin"] = origin
            headers["vary"] = "Origin"
        return {
            "statusCode": status,
            "headers": headers,
            "body": json.dumps({"error": message, "code": code}),
            "isBase64Encoded": False,
        }


def build_handler(
    settings: ServeSettings | None = None, registry: ModelRegistry | None = None
) -> LambdaAdapter:
    """A Lambda handler over a fresh app (tests build their own; Lambda uses ``classify_image``)."""
    settings = settings or ServeSettings.from_env()
    registry = registry or ModelRegistry.from_settings(settings)
    return LambdaAdapter(
        create_app(registry, settings),
        settings,
        lifespan="off",
        api_gateway_base_path=os.environ.get("SKYCLASS_BASE_PATH", "/"),
    )


classify_image = build_handler()
registry: ModelRegistry = cast(FastAPI, classify_image.app).state.registry
