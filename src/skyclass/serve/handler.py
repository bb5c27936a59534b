"""The Lambda handler: ``skyclass.serve.handler.classify_image``, Mangum over the very same app.

It answers API Gateway REST (payload v1) and HTTP API (payload v2) events, with bodies
base64-encoded (binary media types on, as deployed) or not. Settings come from the environment
(see :mod:`skyclass.serve.settings`): the bundled model by default, ``SKYCLASS_MODELS`` for several,
``MODEL_S3_URI`` (+ ``MODEL_SHA256``) for one from S3. ``SKYCLASS_BASE_PATH`` strips a custom-domain
base path (``/v1``) from incoming paths. A setting that cannot be used answers every request with a
500 JSON that names it.

Building the app here at import is cheap (no model is read); each model loads on its first request
and stays loaded for the life of the container.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, cast

from mangum import Mangum

from skyclass.serve.app import create_app
from skyclass.serve.registry import ModelRegistry
from skyclass.serve.settings import ServeSettings

log = logging.getLogger(__name__)


#: Keys of an API Gateway (v1 or v2) or function-URL event: any of them makes an event HTTP-shaped.
_HTTP_KEYS = ("httpMethod", "requestContext", "rawPath", "routeKey", "path", "headers", "body")


def _origin(event: dict[str, Any]) -> str | None:
    """The request's Origin, from ``headers`` or (REST API) ``multiValueHeaders``."""
    for key in ("headers", "multiValueHeaders"):
        headers = event.get(key)
        if not isinstance(headers, dict):
            continue
        for name, value in headers.items():
            if str(name).lower() == "origin":
                value = value[0] if isinstance(value, list) and value else value
                return value if isinstance(value, str) else None
    return None


def error_response(
    event: Any, status: int, code: str, message: str, origins: tuple[str, ...] = ("*",)
) -> dict[str, Any]:
    """An API Gateway answer ``{"error", "code"}`` with CORS for the event's Origin."""
    headers = {"content-type": "application/json"}
    origin = _origin(event) if isinstance(event, dict) else None
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


class LambdaAdapter(Mangum):
    """Mangum, answering what it cannot map: a bad base64 body or an HTTP-shaped event it cannot
    read is a 400 JSON (with CORS); a non-HTTP event (a warmer, EventBridge, S3, ``{}``) is
    ignored with one log line."""

    def __init__(self, app: Any, settings: ServeSettings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.settings = settings

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        if not isinstance(event, dict) or not any(k in event for k in _HTTP_KEYS):
            kind = sorted(event)[:5] if isinstance(event, dict) else type(event).__name__
            log.info("ignored a non-HTTP event (keys: %s)", kind)
            return {"ignored": "not an HTTP event"}
        body = event.get("body")
        if event.get("isBase64Encoded") and body:
            try:
                base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError, TypeError):
                return self._error(event, 400, "bad_base64", "the body is not valid base64")
        try:
            return super().__call__(event, context)
        except Exception as exc:  # Mangum could not map the event (an int body, headers: null...)
            log.warning("an HTTP event that cannot be read: %s: %s", type(exc).__name__, exc)
            return self._error(event, 400, "bad_event", "the event is not a request we can read")

    def _error(self, event: dict[str, Any], status: int, code: str, message: str) -> dict[str, Any]:
        return error_response(event, status, code, message, self.settings.cors_origins)


class SettingsFailure:
    """The handler when the environment holds a setting we cannot use: every request gets a
    500 JSON naming the setting (with CORS), instead of an import error and no answer at all."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        log.error("not serving: %s", self.reason)
        message = f"the server is misconfigured: {self.reason}"
        return error_response(event, 500, "bad_setting", message)


def build_handler(
    settings: ServeSettings | None = None, registry: ModelRegistry | None = None
) -> LambdaAdapter | SettingsFailure:
    """A Lambda handler over a fresh app (tests build their own; Lambda uses ``classify_image``).

    Settings from the environment that cannot be used give a :class:`SettingsFailure`.
    """
    try:
        settings = settings or ServeSettings.from_env()
        registry = registry or ModelRegistry.from_settings(settings)
    except ValueError as exc:  # SettingsError, or a default model that is not among the models
        log.error("bad setting: %s", exc)
        return SettingsFailure(str(exc))
    return LambdaAdapter(
        create_app(registry, settings),
        settings,
        lifespan="off",
        api_gateway_base_path=settings.base_path,
    )


classify_image = build_handler()
registry: ModelRegistry | None = (
    cast(Any, classify_image.app).state.registry
    if isinstance(classify_image, LambdaAdapter)
    else None
)
