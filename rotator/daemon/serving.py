"""Serving the daemon's ASGI app with uvicorn inside the daemon's own event loop.

The daemon owns the process signals (SIGTERM drains rotations before anything stops), so uvicorn
must not install its handlers; and the listening socket is bound here first, so a port in use is
one clear error before anything starts and ``listen: 127.0.0.1:0`` reports the port it got.

Slow and idle clients cannot hold the server (:class:`ServerLimits`, enforced by
:class:`GuardedH11Protocol`, the h11 protocol class uvicorn is given through its ``http=``
setting): a request must arrive whole within ``header_timeout`` of its first byte, a connection
without a request in progress is closed after ``idle_timeout``, and at most ``max_connections``
are open. A connection beyond the cap closes the oldest one still waiting for its request (so a
health probe gets through slow clients) or, when every one is busy with a request, is answered
503 and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import h11
import structlog
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from rotator.config import Config
from rotator.errors import ConfigError

log = structlog.get_logger(__name__)

STOP_TIMEOUT = 5
"""Seconds open connections get to finish once the server is told to stop."""

_BUSY = b'{"error":"too many connections; try again later"}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"cache-control: no-store\r\nretry-after: 1\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY
)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """How long and how many clients the server waits for, in seconds and connections."""

    header_timeout: float = 10.0
    """A request (line, headers, body) must arrive within this long of its first byte."""
    idle_timeout: float = 5.0
    """A connection without a request in progress (new, or kept alive) is closed after this."""
    max_connections: int = 100
    """Open connections at most (see the module docstring for what happens beyond)."""


def _ignore(_: str) -> None:
    return None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and the cap of :class:`ServerLimits`.

    Subclasses made by :func:`guarded_protocol` carry the limits and the ``on_rejected`` hook
    (told ``slow``, ``evicted`` or ``overloaded``) as class attributes, since uvicorn builds one
    protocol per connection from the class alone.
    """

    limits: ClassVar[ServerLimits] = ServerLimits()
    hooks: ClassVar[tuple[Callable[[str], None], ...]] = (_ignore,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading = False
        self._opened = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened = self.loop.time()
        if self._open_count() > self.limits.max_connections and not self._make_room():
            self._reject("overloaded")
            transport.write(_REFUSAL)
            transport.close()
            return
        self._arm(self.limits.idle_timeout, None)

    def data_received(self, data: bytes) -> None:
        if not self._reading and self.conn.their_state is h11.IDLE:
            self._reading = True  # the first bytes of a request: it has header_timeout to arrive
            self._arm(self.limits.header_timeout, "slow")
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._reading = False  # the request is in; the app has it
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.limits.idle_timeout, None)  # kept alive: idle until the next request

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def waiting(self) -> bool:
        """True while open without a request in progress (new, half-sent, or kept alive)."""
        return (
            not self.transport.is_closing()
            and self.conn.their_state is h11.IDLE
            and self.conn.our_state is h11.IDLE
        )

    def _open_count(self) -> int:
        return sum(1 for c in self.connections if not c.transport.is_closing())

    def _make_room(self) -> bool:
        """Close the oldest other connection still waiting for its request; False if none is."""
        waiting = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedH11Protocol) and c.waiting()
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._opened)
        oldest._reject("evicted")
        oldest.transport.close()
        return True

    def _reject(self, reason: str) -> None:
        self.hooks[0](reason)

    def _arm(self, seconds: float, reason: str | None) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: str | None) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if reason is not None:
            self._reject(reason)
        self.transport.close()


def guarded_protocol(
    limits: ServerLimits, on_rejected: Callable[[str], None] = _ignore
) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` class enforcing ``limits``, telling ``on_rejected``."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"limits": limits, "hooks": (on_rejected,)},
    )


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

    def __init__(
        self,
        app: SwappableApp,
        sock: socket.socket,
        limits: ServerLimits | None = None,
        on_rejected: Callable[[str], None] = _ignore,
    ) -> None:
        self.app = app
        self._sock = sock
        limits = limits or ServerLimits()
        config = uvicorn.Config(
            app,
            http=guarded_protocol(limits, on_rejected),
            log_config=None,  # uvicorn's loggers go through rotator's logging chain
            access_log=False,  # request lines could carry headers; the API logs what matters
            lifespan="off",
            server_header=False,
            timeout_keep_alive=max(1, math.ceil(limits.idle_timeout)),
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


def http_server(
    cfg: Config, app: SwappableApp, on_rejected: Callable[[str], None] = _ignore
) -> HttpServer:
    """The daemon's server for ``cfg.server``: its socket bound now, so a port in use (or any
    address that cannot be listened on) is a ``ConfigError`` before anything starts."""
    server = cfg.server
    try:
        sock = bind(server.host, server.port)
    except OSError as exc:
        raise ConfigError(
            cfg.source,
            "server.listen",
            f"cannot listen on {server.listen}: {exc.strerror or type(exc).__name__}",
        ) from None
    limits = ServerLimits(
        header_timeout=server.header_timeout.total_seconds(),
        idle_timeout=server.idle_timeout.total_seconds(),
        max_connections=server.max_connections,
    )
    return HttpServer(app, sock, limits, on_rejected=on_rejected)
