"""Serving the daemon's ASGI app with uvicorn inside the daemon's own event loop.

The daemon owns the process signals (SIGTERM drains rotations before anything stops), so uvicorn
must not install its handlers; and the listening socket is bound here first, so a port in use is
one clear error before anything starts and ``listen: 127.0.0.1:0`` reports the port it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Protocol

import structlog
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger(__name__)

STOP_TIMEOUT = 5
"""Seconds open connections get to finish once the server is told to stop."""


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SwappableApp:
    """An ASGI app whose target can be replaced while serving (a reload rebuilds the API with a
    new admin token without closing the listening socket)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def bind(listen_host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``listen_host:port`` (port 0 = any free port).

    Raises ``OSError`` (address in use, unknown host, permission) with the system's reason.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        listen_host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Server(Protocol):
    """What the daemon needs of its HTTP server: :class:`HttpServer`, or a simulation's."""

    app: SwappableApp

    @property
    def address(self) -> tuple[str, int]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class HttpServer:
    """uvicorn serving one app on one bound socket, as a task of the running loop."""

    def __init__(self, app: SwappableApp, sock: socket.socket) -> None:
        self.app = app
        self._sock = sock
        config = uvicorn.Config(
            app,
            log_config=None,  # uvicorn's loggers go through rotator's logging chain
            access_log=False,  # request lines could carry headers; the API logs what matters
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=STOP_TIMEOUT,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The host and port actually bound."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        """Start serving; returns once the server accepts connections."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        host, port = self.address
        log.info("http_serving", host=host, port=port)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (bounded), close the socket. Idempotent."""
        if self._task is not None and not self._task.done():
            self._server.should_exit = True
            try:
                await asyncio.wait_for(self._task, STOP_TIMEOUT * 2)
            except TimeoutError:
                log.warning("http_stop_timeout")
            except Exception:
                log.exception("http_server_failed")
        self._sock.close()
