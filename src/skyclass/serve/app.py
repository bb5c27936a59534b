"""The ASGI app: the same object runs under uvicorn (``skyclass serve``) and in Lambda (Mangum).

    POST /classify            the default model      multipart/form-data (a file in any one field)
    POST /classify/{model}    a model by name        or a raw image body (image/*, octet-stream)
    GET  /health              models loaded / failed (503 when the default model failed)
    GET  /models              the models served
    GET  /                    a web page: drop an image, see the probabilities
    GET  /openapi.json        the schema (request bodies and answers described)

Every error is JSON ``{"error": "...", "code": "..."}`` with CORS headers: bad input is a 4xx that
says what was wrong, a model that cannot load is a 503, anything unexpected a 500 without internals.
Nothing a request names (a model name, a field, a file name) is ever opened as a path or a URL.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skyclass import __version__
from skyclass.core.decode_memory import HEAVY_DECODE_BYTES, decode_cost
from skyclass.core.errors import EmptyImage, ImageError, ModelUnavailable
from skyclass.core.explain import CannotExplain
from skyclass.serve.body import RequestError, image_bytes
from skyclass.serve.registry import ModelRegistry, UnknownModel, public_reason
from skyclass.serve.schemas import (
    CLASSIFY_BODY,
    ERRORS,
    ClassifyOut,
    HealthOut,
    ModelInfoOut,
    ModelsOut,
    ModelStateOut,
)
from skyclass.serve.settings import ALL_CLASSES_UP_TO, ServeSettings

log = logging.getLogger(__name__)

LABELS_LISTED_UP_TO = 20


# ---- errors --------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


class _CatchUnexpected:
    """Turn an unhandled exception into a 500 JSON inside the CORS middleware (so it has CORS)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def guarded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = _error(500, "internal_error", "internal error; it has been logged")
            await response(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    # Our own errors carry their HTTP status and code: one handler renders them all.
    async def known_error(request: Request, exc: Exception) -> JSONResponse:
        response = _error(exc.status, exc.code, str(exc))  # type: ignore[attr-defined]
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    for kind in (ImageError, RequestError, UnknownModel, ModelUnavailable, CannotExplain):
        app.add_exception_handler(kind, known_error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "bad request"
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        response = _error(exc.status_code, codes.get(exc.status_code, "http_error"), message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "invalid request: " + "; ".join(parts))


@dataclass(frozen=True)
class _Options:
    """Query options of /classify beyond top_k."""

    reject: bool | None = Query(
        None,
        description="judge the photo's scope (default: SKYCLASS_REJECT_OUT_OF_SCOPE, on); "
        "false gives the raw answer, as before scopes existed",
    )
    explain: bool = Query(
        False, description="add a class activation map overlay (PNG, base64) to the answer"
    )


def _scope_state(registry: ModelRegistry, name: str) -> str | None:
    """'on (METHOD)' or 'off: WHY' for a loaded model; None before it is loaded."""
    if not registry.is_loaded(name):
        return None
    predictor = registry.get(name)
    if predictor.scope is not None:
        return f"on ({predictor.scope.method})"
    return f"off: {public_reason(predictor.scope_error or 'no scope')}"


# ---- the routes (module-level; what they serve comes from request.app.state) ---------------------


async def _classify(
    request: Request, model: str | None, top_k: int | None, options: _Options
) -> dict[str, Any]:
    state = request.app.state
    registry: ModelRegistry = state.registry
    settings: ServeSettings = state.settings
    registry.require(model)  # an unknown model is a 404 before the body is read
    data = await image_bytes(request, settings.max_body_bytes, settings.body_timeout_s)
    if not data:
        raise EmptyImage("the request body is empty; send an image")
    predictor = await run_in_threadpool(registry.get, model)
    n = len(predictor.labels)
    k = top_k or (n if n <= ALL_CLASSES_UP_TO else settings.top_k)
    reject = settings.reject_out_of_scope if options.reject is None else options.reject
    run = functools.partial(
        predictor.predict, data, min(k, n), reject=reject, explain=options.explain
    )
    config = predictor.bundle.preprocess
    side = max(config.size)
    # Over the decode budget: a 413 now, before waiting for a prediction slot.
    cost = decode_cost(data, (side, side) if config.draft else None, predictor.limits)
    if cost > HEAVY_DECODE_BYTES:  # heavy: one of settings.max_heavy_decodes, then a slot
        async with state.heavy:
            prediction = await anyio.to_thread.run_sync(run, limiter=state.limiter)
    else:
        prediction = await anyio.to_thread.run_sync(run, limiter=state.limiter)
    return prediction.to_dict()


_TOP_K = Query(None, ge=1, le=1000, description="how many classes to return")


async def classify_default(
    request: Request, top_k: int | None = _TOP_K, options: _Options = Depends()
) -> Any:
    return await _classify(request, None, top_k, options)


async def classify_named(
    request: Request, model: str, top_k: int | None = _TOP_K, options: _Options = Depends()
) -> Any:
    return await _classify(request, model, top_k, options)


def health(request: Request) -> JSONResponse:
    registry: ModelRegistry = request.app.state.registry
    states = registry.status()
    failed = [s for s in states if s.state == "failed"]
    status = "ok"
    if failed:
        status = "unavailable" if any(s.default for s in failed) else "degraded"
    models = [
        ModelStateOut(
            name=s.name,
            default=s.default,
            state=s.state,
            error=s.error,
            load_seconds=s.load_seconds,
            scope=_scope_state(registry, s.name),
        )
        for s in states
    ]
    body = HealthOut(status=status, version=__version__, models=models)
    return JSONResponse(body.model_dump(), status_code=503 if status == "unavailable" else 200)


def models(request: Request) -> ModelsOut:
    registry: ModelRegistry = request.app.state.registry
    out = []
    for state in registry.status():
        bundle = registry.bundle(state.name)
        info = ModelInfoOut(
            name=state.name, default=state.default, state=state.state, error=state.error
        )
        if bundle is not None:
            variant = (
                registry.get(state.name).variant
                if registry.is_loaded(state.name)
                else registry.variant or bundle.default_variant
            )
            info.classes = bundle.num_classes
            if bundle.num_classes <= LABELS_LISTED_UP_TO:
                info.labels = list(bundle.labels)
            info.version = bundle.version
            info.variant = variant
            info.sha256 = bundle.files[variant].sha256 if variant in bundle.files else None
        if registry.is_loaded(state.name):
            info.scope = _scope_state(registry, state.name)
            info.explain = registry.get(state.name).can_explain
        out.append(info)
    return ModelsOut(default=registry.default_name, models=out)


def index(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.page)


def _add_routes(app: FastAPI) -> None:
    """The routes; ``/classify/`` is served as ``/classify`` (never a redirect to the Host header),
    and HEAD is answered where GET is (neither in the schema)."""
    doc: dict[str, Any] = {
        "response_model": ClassifyOut,
        "response_model_exclude_unset": True,
        "responses": ERRORS,
        "openapi_extra": CLASSIFY_BODY,
    }
    hidden: dict[str, Any] = {"include_in_schema": False}
    post, get, head = ["POST"], ["GET"], ["HEAD"]
    default_doc: dict[str, Any] = {"summary": "Classify an image with the default model", **doc}
    app.add_api_route("/classify", classify_default, methods=post, **default_doc)
    app.add_api_route("/classify/", classify_default, methods=post, **hidden)
    named_doc: dict[str, Any] = {"summary": "Classify an image with a named model", **doc}
    app.add_api_route("/classify/{model}", classify_named, methods=post, **named_doc)
    app.add_api_route("/classify/{model}/", classify_named, methods=post, **hidden)
    health_doc: dict[str, Any] = {
        "response_model": HealthOut,
        "responses": {503: {"model": HealthOut, "description": "the default model failed"}},
    }
    app.add_api_route("/health", health, methods=get, **health_doc)
    app.add_api_route("/models", models, methods=get, response_model=ModelsOut)
    app.add_api_route("/", index, methods=get, **hidden)
    for path, endpoint in (("/health", health), ("/models", models), ("/", index)):
        app.add_api_route(path, endpoint, methods=head, **hidden)


# ---- the app -------------------------------------------------------------------------------------


def _resolve(
    source: ServeSettings | ModelRegistry, settings: ServeSettings | None
) -> tuple[ModelRegistry, ServeSettings]:
    if isinstance(source, ModelRegistry):
        limits = source.limits
        return source, settings or ServeSettings(
            max_body_bytes=limits.max_bytes,
            max_pixels=limits.max_pixels,
            max_decode_bytes=limits.max_decode_bytes,
        )
    return ModelRegistry.from_settings(source), source


def create_app(
    source: ServeSettings | ModelRegistry, settings: ServeSettings | None = None
) -> FastAPI:
    """The API over a registry (built from settings when settings are given instead).

    ``settings`` gives CORS origins, limits, timeouts and top-k when ``source`` is a registry.
    """
    registry, settings = _resolve(source, settings)
    app = FastAPI(
        title="skyclass",
        version=__version__,
        description="Image classification with ONNX Runtime: POST an image, get the probabilities.",
    )
    app.router.redirect_slashes = False
    app.state.registry = registry
    app.state.settings = settings
    page = resources.files("skyclass.serve").joinpath("static/index.html")
    app.state.page = page.read_text("utf-8")
    # At most settings.concurrency predictions run at once; of those, at most
    # settings.max_heavy_decodes heavy images (taken first, so they never hold every slot).
    app.state.limiter = anyio.CapacityLimiter(settings.concurrency)
    app.state.heavy = anyio.CapacityLimiter(settings.max_heavy_decodes)
    _install_error_handlers(app)
    app.add_middleware(_CatchUnexpected)
    # Added last, so outermost: every response gets CORS headers, errors included.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
        allow_headers=["*"],
        max_age=600,
    )
    _add_routes(app)
    return app
