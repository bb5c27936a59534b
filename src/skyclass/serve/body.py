"""Reading a request's image: raw body or one multipart file, bounded in size and in time.

A body over the limit is a 413, answered after reading (and dropping) what the client still sends,
up to four times the limit, so that ordinary HTTP clients (urllib, requests, httpx) read the 413
instead of a connection reset; a body that stalls is a 408 once ``timeout_s`` has passed; a client
that goes away mid-upload is one log line.
"""

from __future__ import annotations

import logging

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from skyclass.core.errors import EmptyImage

log = logging.getLogger(__name__)

#: Raw bodies taken as an image (the bytes decide the format; these only say "an image").
RAW_IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "application/octet-stream",
)
#: Other names clients give those formats: taken too, and left out of the schema.
_ALIASES = ("image/jpg", "image/pjpeg", "image/x-png", "image/x-bmp", "image/x-ms-bmp", "image/tif")
MULTIPART = "multipart/form-data"
_MAX_FORM_FILES = 16
_MAX_FORM_FIELDS = 64
#: A body over the limit is read (and dropped) up to this many times the limit before the 413.
_DRAIN_FACTOR = 4


class RequestError(Exception):
    """A request the API cannot take (its shape, not its image): a 4xx with a code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def _too_large(size: int, limit: int, at_least: bool = False) -> RequestError:
    more = "over " if at_least else ""
    return RequestError(
        413,
        "body_too_large",
        f"the request body is {more}{size:,} bytes; the limit is {limit:,}",
        {"connection": "close"},
    )


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    try:
        length = int(declared)
    except ValueError:
        raise RequestError(400, "bad_request", "Content-Length is not a number") from None
    if length < 0:
        raise RequestError(400, "bad_request", "Content-Length is negative")
    return length


async def _read(request: Request, limit: int) -> bytes:
    """The body; over ``limit``, the rest is read and dropped (up to ``_DRAIN_FACTOR`` times the
    limit) before the 413, so the client is reading when the answer comes."""
    declared = _declared_length(request)
    if declared is not None and declared > _DRAIN_FACTOR * limit:
        raise _too_large(declared, limit)  # too much to drain: answer now, and close
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _DRAIN_FACTOR * limit:
            break
        if size <= limit:
            chunks.append(chunk)
        elif chunks:
            chunks.clear()  # over the limit: drop what was kept, keep reading
    if declared is not None and declared > limit:
        raise _too_large(declared, limit)
    if size > limit:
        raise _too_large(size, limit, at_least=True)
    return b"".join(chunks)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body: 413 over ``limit`` bytes, 408 when it takes longer than ``timeout_s``."""
    try:
        with anyio.fail_after(timeout_s):
            return await _read(request, limit)
    except TimeoutError:
        log.info("request body stalled: no complete body within %s s", timeout_s)
        raise RequestError(
            408,
            "body_timeout",
            f"the request body did not arrive within {timeout_s:g} s",
            {"connection": "close"},
        ) from None
    except ClientDisconnect:
        log.info("client went away during the upload")
        raise RequestError(400, "client_disconnected", "the client went away") from None


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


async def image_bytes(request: Request, limit: int, timeout_s: float) -> bytes:
    """The image of a request: the one file of a multipart form, or a raw ``image/*`` body."""
    content_type = request.headers.get("content-type", "")
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == MULTIPART:
        return await _file_from_multipart(request, await read_body(request, limit, timeout_s))
    if mime in RAW_IMAGE_TYPES or mime in _ALIASES or not mime:
        return await read_body(request, limit, timeout_s)
    raise RequestError(
        415,
        "unsupported_media_type",
        f"Content-Type {mime!r} is not accepted; send {MULTIPART} or one of "
        + ", ".join(RAW_IMAGE_TYPES),
    )
