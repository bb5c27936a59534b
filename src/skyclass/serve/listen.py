"""The listening socket and the uvicorn server behind ``skyclass serve``."""

from __future__ import annotations

import socket
from typing import Any


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A TCP socket listening on ``host:port`` (0: a free port) and its URL. Raises OSError."""
    if not 0 <= port <= 65535:
        raise OSError(f"port must be 0-65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets that say they are TCP, and
    # without it every kept-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise OSError(getattr(exc, "strerror", None) or str(exc)) from None
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"http://{shown}:{sock.getsockname()[1]}/"


def run(app: Any, sock: socket.socket, settings: Any) -> None:
    """Serve ``app`` on ``sock`` under uvicorn (the limits of ``settings``) until stopped."""
    import uvicorn

    from skyclass.serve.server import uvicorn_config

    uvicorn.Server(uvicorn_config(app, settings)).run(sockets=[sock])
