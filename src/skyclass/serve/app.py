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

import logging
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import Any, Literal

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skyclass import __version__
from skyclass.core.errors import EmptyImage, ImageError, ModelUnavailable
from skyclass.core.explain import CannotExplain
from skyclass.serve.registry import ModelRegistry, UnknownModel, public_reason
from skyclass.serve.settings import ALL_CLASSES_UP_TO, ServeSettings

log = logging.getLogger(__name__)

#: Raw bodies taken as an image (the bytes decide the format; these only say "an image").
RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "application/octet-stream")
MULTIPART = "multipart/form-data"
LABELS_LISTED_UP_TO = 20
_MAX_FORM_FILES = 16
_MAX_FORM_FIELDS = 64


class RequestError(Exception):
    """A request the API cannot take (its shape, not its image): a 4xx with a code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# ---- response models (they document the API in /openapi.json) ----------------------------------


class ErrorOut(BaseModel):
    error: str = Field(description="what was wrong, for a person to read")
    code: str = Field(description="a stable machine-readable code, e.g. not_an_image")


class ModelRefOut(BaseModel):
    name: str
    version: str
    sha256: str
    variant: str


class ScopeOut(BaseModel):
    score: float = Field(description="higher = more like the model's training photos")
    threshold: float = Field(description="photos scoring below it are out of scope")
    method: str = Field(description="how the score is computed (msp, energy, mahalanobis, ...)")


class PeakOut(BaseModel):
    x: float = Field(ge=0, le=1, description="fraction of the width")
    y: float = Field(ge=0, le=1, description="fraction of the height")


class ExplanationOut(BaseModel):
    label: str = Field(description="the class whose activation map is shown")
    method: str = Field(description="cam: the head's weights over the last feature map")
    png_base64: str = Field(description="PNG of the map blended over the photo, base64")
    width: int
    height: int
    peak: PeakOut = Field(description="where the map is highest")


class ClassifyOut(BaseModel):
    label: str | None = Field(
        description="the most likely class; null when the photo is judged out of scope"
    )
    confidence: float = Field(ge=0, le=1)
    probabilities: dict[str, float] = Field(
        description="all classes for models with up to 10, else the top-k, best first"
    )
    model: ModelRefOut
    in_scope: bool | None = Field(
        None, description="present when the model has a scope and rejection is on"
    )
    top_guess: str | None = Field(None, description="the most likely class, even out of scope")
    scope: ScopeOut | None = None
    explanation: ExplanationOut | None = Field(None, description="with ?explain=true")


class ModelStateOut(BaseModel):
    name: str
    default: bool
    state: Literal["not_loaded", "loaded", "failed"]
    error: str | None = None
    load_seconds: float | None = None
    scope: str | None = Field(
        None, description="once loaded: 'on (METHOD)', or 'off: WHY' (served without a scope)"
    )


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    version: str
    models: list[ModelStateOut]


class ModelInfoOut(BaseModel):
    name: str
    default: bool
    state: Literal["not_loaded", "loaded", "failed"]
    classes: int | None = Field(None, description="number of classes (unknown until loaded for S3)")
    labels: list[str] | None = Field(None, description="the class names, for up to 20 classes")
    version: str | None = None
    sha256: str | None = None
    variant: str | None = None
    error: str | None = None
    scope: str | None = Field(None, description="once loaded: 'on (METHOD)' or 'off: WHY'")
    explain: bool | None = Field(None, description="once loaded: whether ?explain=true works")


class ModelsOut(BaseModel):
    default: str
    models: list[ModelInfoOut]


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "bad input: empty, not an image, damaged image, no file in the form, two files",
        404: "no model of that name",
        413: "body or image over the limits (6 MB, 40 MP by default)",
        415: "unsupported content type or image format",
        422: "invalid query parameter",
        500: "unexpected error (details are logged, not returned)",
        503: "the model could not be loaded",
    }.items()
}

_BINARY = {"type": "string", "format": "binary"}
_CLASSIFY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "an image: a multipart upload (any one field) or the raw bytes",
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"file": _BINARY},
                    "required": ["file"],
                }
            },
            **{mime: {"schema": _BINARY} for mime in RAW_IMAGE_TYPES},
        },
    }
}


# ---- body reading --------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, "bad_request", "Content-Length is not a number") from None
        if length > limit:
            raise _too_large(length, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, at_least=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> RequestError:
    more = "over " if at_least else ""
    return RequestError(
        413, "body_too_large", f"the request body is {more}{size:,} bytes; the limit is {limit:,}"
    )


async def _file_from_multipart(request: Request, body: bytes) -> bytes:
    """The one file of a multipart body (already read and size-checked)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS
        )
    except Exception as exc:  # MultiPartException / HTTPException(400) from the parser
        log.info("bad multipart body: %s", exc)
        raise RequestError(400, "bad_multipart", "the multipart body could not be parsed") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise RequestError(400, "no_file", "the form has no file; send the image as a file")
        if len(files) > 1:
            raise RequestError(400, "too_many_files", f"the form has {len(files)} files; send one")
        data = await files[0].read()
    finally:
        await form.close()
    if not data:
        raise EmptyImage("the uploaded file is empty (0 bytes)")
    return data


async def _image_bytes(request: Request, limit: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == MULTIPART:
        return await _file_from_multipart(request, await _read_body(request, limit))
    if mime in RAW_IMAGE_TYPES or not mime:
        return await _read_body(request, limit)
    raise RequestError(
        415,
        "unsupported_media_type",
        f"Content-Type {mime!r} is not accepted; send {MULTIPART} or one of "
        + ", ".join(RAW_IMAGE_TYPES),
    )


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
        return _error(exc.status, exc.code, str(exc))  # type: ignore[attr-defined]

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


# ---- the app -------------------------------------------------------------------------------------


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


def create_app(
    source: ServeSettings | ModelRegistry, settings: ServeSettings | None = None
) -> FastAPI:
    """The API over a registry (built from settings when settings are given instead).

    ``settings`` gives CORS origins, body limit and top-k when ``source`` is a registry.
    """
    if isinstance(source, ModelRegistry):
        registry = source
        settings = settings or ServeSettings(
            max_body_bytes=registry.limits.max_bytes, max_pixels=registry.limits.max_pixels
        )
    else:
        settings = source
        registry = ModelRegistry.from_settings(settings)
    page = resources.files("skyclass.serve").joinpath("static/index.html").read_text("utf-8")

    app = FastAPI(
        title="skyclass",
        version=__version__,
        description="Image classification with ONNX Runtime: POST an image, get the probabilities.",
    )
    app.state.registry = registry
    app.state.settings = settings
    _install_error_handlers(app)
    app.add_middleware(_CatchUnexpected)
    # Added last, so outermost: every response gets CORS headers, errors included.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        max_age=600,
    )

    # One limiter per app: at most settings.concurrency predictions run at once.
    limiter = anyio.CapacityLimiter(settings.concurrency)

    async def classify(
        request: Request, model: str | None, top_k: int | None, options: _Options
    ) -> dict[str, Any]:
        registry.require(model)  # an unknown model is a 404 before the body is read
        data = await _image_bytes(request, settings.max_body_bytes)
        if not data:
            raise EmptyImage("the request body is empty; send an image")
        predictor = await run_in_threadpool(registry.get, model)
        n = len(predictor.labels)
        k = top_k or (n if n <= ALL_CLASSES_UP_TO else settings.top_k)
        reject = settings.reject_out_of_scope if options.reject is None else options.reject
        prediction = await anyio.to_thread.run_sync(
            partial(predictor.predict, data, min(k, n), reject=reject, explain=options.explain),
            limiter=limiter,
        )
        return prediction.to_dict()

    classify_doc = {
        "response_model": ClassifyOut,
        "response_model_exclude_unset": True,
        "responses": _ERRORS,
        "openapi_extra": _CLASSIFY_BODY,
    }
    top_k_query = Query(None, ge=1, le=1000, description="how many classes to return")

    @app.post("/classify", summary="Classify an image with the default model", **classify_doc)
    async def classify_default(
        request: Request, top_k: int | None = top_k_query, options: _Options = Depends()
    ) -> Any:
        return await classify(request, None, top_k, options)

    @app.post("/classify/{model}", summary="Classify an image with a named model", **classify_doc)
    async def classify_named(
        request: Request,
        model: str,
        top_k: int | None = top_k_query,
        options: _Options = Depends(),
    ) -> Any:
        return await classify(request, model, top_k, options)

    @app.get(
        "/health",
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "the default model failed"}},
    )
    def health() -> JSONResponse:
        states = registry.status()
        failed = [s for s in states if s.state == "failed"]
        status = "ok"
        if failed:
            status = "unavailable" if any(s.default for s in failed) else "degraded"
        body = HealthOut(
            status=status,
            version=__version__,
            models=[
                ModelStateOut(
                    name=s.name,
                    default=s.default,
                    state=s.state,
                    error=s.error,
                    load_seconds=s.load_seconds,
                    scope=_scope_state(registry, s.name),
                )
                for s in states
            ],
        )
        return JSONResponse(body.model_dump(), status_code=503 if status == "unavailable" else 200)

    @app.get("/models", response_model=ModelsOut)
    def models() -> ModelsOut:
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

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app
