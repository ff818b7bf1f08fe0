"""The outermost ASGI layer: one log line per request, and closing a connection on demand.

A handler that must "drop" the connection calls :func:`drop_connection`: the socket is closed
with no status line written (the client sees the server disconnect without a response), and
whatever the handler returns afterwards is discarded. This needs the server's transport, which
uvicorn's per-request ``send`` carries; under another server a drop is refused loudly.

Log lines carry method, path, status and duration, never headers or bodies (so never a key).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

_SCOPE_KEY = "rotator.standin.connection"


class _Connection:
    """The per-request handle that can close the client's socket."""

    def __init__(self, raw_send: Send) -> None:
        self._raw_send = raw_send
        self.dropped = False

    async def drop(self) -> None:
        owner: Any = getattr(self._raw_send, "__self__", None)
        transport = getattr(owner, "transport", None)
        if not isinstance(transport, asyncio.BaseTransport):
            raise TypeError("this ASGI server does not let the stand-in drop a connection")
        self.dropped = True
        transport.close()
        # Let the server notice the loss before the handler returns, so it sends no 500.
        for _ in range(3):
            await asyncio.sleep(0)


async def drop_connection(request: Request) -> None:
    """Close the client's connection now, without any answer."""
    connection = request.scope.get(_SCOPE_KEY)
    if not isinstance(connection, _Connection):
        raise TypeError("the stand-in app must be wrapped in StandinASGI to drop connections")
    await connection.drop()


class StandinASGI:
    """Wraps the app: request log lines and the connection handle for drops."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = _Connection(send)
        scope[_SCOPE_KEY] = connection
        status: int | None = None
        started = time.perf_counter()

        async def guarded_send(message: Message) -> None:
            nonlocal status
            if connection.dropped:
                return
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        finally:
            log.info(
                "standin.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                dropped=connection.dropped,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
