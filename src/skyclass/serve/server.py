"""uvicorn, configured so that idle, slow and stalled connections cannot hold the server.

keep-alive timeout     an idle kept-alive connection is closed (``SKYCLASS_KEEP_ALIVE``, 5 s)
header timeout         a connection whose request headers are not complete in time, including
                       one that sends nothing or a byte at a time (slowloris), is closed
                       (``SKYCLASS_HEADER_TIMEOUT``, 10 s)
body timeout           in the app: a body that stalls is a 408 (``SKYCLASS_BODY_TIMEOUT``)
connection limit       past ``SKYCLASS_MAX_CONNECTIONS`` connections, uvicorn answers 503
header size            h11's limit on an incomplete request head (16 KiB)
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from skyclass.serve.settings import ServeSettings

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers."""

    header_timeout: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection: no complete request head in %g s", self.header_timeout)
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head has arrived (or the peer is gone)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's head has the same deadline

    def send_400_response(self, msg: str) -> None:
        """Malformed framing (a bad Content-Length or chunk size, a head over 16 KiB): the 400
        is JSON like every other error, with CORS for any origin, instead of uvicorn's text."""
        body = json.dumps({"error": "malformed HTTP request", "code": "bad_http"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"access-control-allow-origin", b"*"),
            (b"connection", b"close"),
        ]
        log.info("malformed HTTP request: %s", msg)
        try:
            for event in (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # a response was already under way: just close
            pass
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded_protocol(header_timeout: float) -> type[GuardedH11]:
    """:class:`GuardedH11` with its header deadline set (uvicorn builds one per connection)."""
    return type("GuardedH11", (GuardedH11,), {"header_timeout": float(header_timeout)})


def uvicorn_config(app: Any, settings: ServeSettings) -> uvicorn.Config:
    """The uvicorn configuration ``skyclass serve`` runs ``app`` under."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(settings.header_timeout_s),
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        log_level="warning",
        access_log=False,
    )
