"""Serving the stand-in with uvicorn: in a background thread, or in the foreground for the CLI.

The listening socket is bound before uvicorn starts, so port 0 yields a real free port and
the URL returned by :meth:`StandinServer.start` is already accepting connections. uvicorn's
access log is off (the stand-in writes its own lines, without headers) and it installs no
logging configuration.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import FrameType, TracebackType

import uvicorn

from rotator_dev.standin.app import create_app
from rotator_dev.standin.asgi import StandinASGI
from rotator_dev.standin.records import DEFAULT_ADMIN_KEY
from rotator_dev.standin.state import StandinState

_START_TIMEOUT_SECONDS = 10.0
_GRACEFUL_SHUTDOWN_SECONDS = 3


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be explicit: asyncio disables Nagle only on sockets whose proto is TCP, and
    # without that every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _uvicorn(state: StandinState) -> uvicorn.Server:
    config = uvicorn.Config(
        StandinASGI(create_app(state)),
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )
    return uvicorn.Server(config)


class StandinServer:
    """A stand-in served by uvicorn in a daemon thread. Start once; stop is idempotent."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_key: str = DEFAULT_ADMIN_KEY,
        *,
        state: StandinState | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.admin_key = admin_key
        self.state = state or StandinState(admin_key)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The base URL (``http://host:port``) of both the Admin API and ``/v1/models``."""
        if self._url is None:
            raise RuntimeError("the stand-in is not started")
        return self._url

    def start(self) -> str:
        """Bind, serve in a background thread, and return the URL once it accepts connections.

        Raises ``OSError`` if the address cannot be bound, ``RuntimeError`` if uvicorn does not
        come up within 10 seconds.
        """
        if self._thread is not None:
            raise RuntimeError("the stand-in is already started")
        sock = _bind(self.host, self.port)
        server = _uvicorn(self.state)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="standin", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError("the stand-in did not start")
            time.sleep(0.01)
        self._server, self._thread, self._url = server, thread, _url(sock)
        return self._url

    def stop(self) -> None:
        """End hangs in progress, shut uvicorn down and wait for its thread."""
        if self._server is None or self._thread is None:
            return
        self.state.release_waiters()
        self._server.should_exit = True
        self._thread.join(timeout=_GRACEFUL_SHUTDOWN_SECONDS + 5)
        self._server = self._thread = None

    def __enter__(self) -> StandinServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Absorbs the signal uvicorn re-raises after its graceful shutdown."""


def run_standin(host: str, port: int, admin_key: str) -> None:
    """Serve a stand-in in the foreground until Ctrl-C or SIGTERM, then stop cleanly.

    Prints exactly one line, ``Mistral stand-in listening on http://HOST:PORT``, once the socket
    listens (with the real port when ``port`` is 0). Never prints a key. Raises ``OSError`` if
    the address cannot be bound. Call from the main thread to get signal handling.
    """
    sock = _bind(host, port)
    server = _uvicorn(StandinState(admin_key))
    print(f"Mistral stand-in listening on {_url(sock)}", flush=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
        if in_main
        else {}
    )
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
