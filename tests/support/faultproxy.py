"""A fault-injecting HTTP/1.1 reverse proxy for the fault matrix: OpenBao or moto behind it.

:class:`FaultProxy` listens on a free 127.0.0.1 port (its own event loop on a background thread)
and forwards every request, byte for byte (the ``Host`` header too, so AWS signatures still
match), to one upstream on loopback. A :class:`Rule` picks requests by method, path, headers
(such as ``X-Amz-Target: secretsmanager.PutSecretValue``) and body, lets the first ``skip``
matches through, and then applies its :class:`Fault` to the next ``count`` matches (``None``:
until removed):

- ``status``: answer ``status`` with a body shaped like the upstream's own errors (Vault's
  ``{"errors": [...]}``, AWS JSON 1.1's ``{"__type": ..., "Message": ...}``);
- ``hang``: hold the request unanswered for ``seconds`` (longer than any client timeout), until
  the client gives up, or until the rule is removed or the proxy stopped; then close;
- ``drop``: close the connection without an answer.

With ``after=True`` the request is forwarded first and the fault replaces the real answer: the
upstream acted, the client cannot know (an ambiguous failure). The proxy answers every request
with a ``Content-Length`` body and keeps client connections alive; each request goes upstream
on its own connection. Everything seen is recorded in :attr:`FaultProxy.seen`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

Flavour = Literal["vault", "aws"]

HOST = "127.0.0.1"
HANG_SECONDS = 30.0
"""How long a hang holds a request unless the client leaves first: longer than any test timeout
of a client, shorter than pytest's."""


class FaultKind(enum.StrEnum):
    STATUS = "status"
    HANG = "hang"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Match:
    """Which requests a rule applies to. Every given criterion must hold; regexes are searched
    (``re.search``) in the path with its query, a header's value, or the body decoded as UTF-8
    (every one of ``body``)."""

    method: str | None = None
    path: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: tuple[str, ...] = ()

    def matches(self, request: Request) -> bool:
        if self.method is not None and request.method != self.method.upper():
            return False
        if self.path is not None and not re.search(self.path, request.target):
            return False
        for name, pattern in self.headers.items():
            value = request.header(name)
            if value is None or not re.search(pattern, value):
                return False
        text = request.body.decode("utf-8", "replace")
        return all(re.search(pattern, text) for pattern in self.body)


@dataclass(frozen=True, slots=True)
class Fault:
    """What a rule does to a request it fires on (see the module docstring)."""

    kind: FaultKind
    status: int = 503
    seconds: float = HANG_SECONDS
    after: bool = False


@dataclass(slots=True, eq=False)
class Rule:
    """One armed fault (equal only to itself). ``fired`` counts the requests it changed,
    ``passed`` the matches it let through because of ``skip``."""

    match: Match
    fault: Fault
    count: int | None = 1
    skip: int = 0
    fired: int = 0
    passed: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set (on the proxy's loop) when the rule is removed: its hangs end."""

    @property
    def spent(self) -> bool:
        return self.count is not None and self.fired >= self.count


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the proxy read it (its head bytes are forwarded unchanged but for
    ``Connection``)."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the proxy received and what became of it (``forwarded`` or the fault kind)."""

    method: str
    target: str
    amz_target: str | None
    outcome: str


class ProxyError(RuntimeError):
    """The proxy could not start or was misused."""


class FaultProxy:
    """A reverse proxy to ``upstream`` (``http://127.0.0.1:PORT``) that injects faults.

    Thread-safe: rules are added and removed from any thread while the proxy serves on its
    own; rules naming different secrets let concurrent tests share one proxy. Use as a context
    manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, upstream: str, *, flavour: Flavour) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname not in (HOST, "localhost"):
            raise ProxyError(f"upstream must be http on loopback, not {upstream!r}")
        self.upstream = (parts.hostname or HOST, parts.port or 80)
        self.flavour: Flavour = flavour
        self.seen: list[Seen] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise ProxyError("the proxy is not started")
        return f"http://{HOST}:{self._port}"

    def start(self) -> FaultProxy:
        """Listen on a free loopback port; returns once connections are accepted."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.flavour}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise ProxyError(f"the proxy could not start: {failure[0]}")
        return self

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, HOST, 0)
        self._port = int(server.sockets[0].getsockname()[1])
        return server

    async def _shutdown(self) -> None:
        for rule in self.rules():
            rule.released.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Release every hang, close every connection and stop the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- rules -----------------------------------------------------------------------------------

    def add(self, match: Match, fault: Fault, *, count: int | None = 1, skip: int = 0) -> Rule:
        """Arm ``fault`` for the next ``count`` requests matching ``match`` after letting ``skip``
        of them through. Rules are tried in the order added; the first live match applies."""
        if count is not None and count < 1:
            raise ProxyError("count must be at least 1, or None for until cleared")
        rule = Rule(match, fault, count=count, skip=skip)
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail(
        self,
        match: Match,
        status: int,
        *,
        count: int | None = 1,
        skip: int = 0,
        after: bool = False,
    ) -> Rule:
        """Answer ``status`` with an error body shaped like the upstream's."""
        fault = Fault(FaultKind.STATUS, status=status, after=after)
        return self.add(match, fault, count=count, skip=skip)

    def hang(
        self,
        match: Match,
        *,
        count: int | None = 1,
        skip: int = 0,
        after: bool = False,
        seconds: float = HANG_SECONDS,
    ) -> Rule:
        """Hold matching requests unanswered (past the client's timeout), then close."""
        fault = Fault(FaultKind.HANG, seconds=seconds, after=after)
        return self.add(match, fault, count=count, skip=skip)

    def drop(
        self, match: Match, *, count: int | None = 1, skip: int = 0, after: bool = False
    ) -> Rule:
        """Close the connection of matching requests without an answer."""
        return self.add(match, Fault(FaultKind.DROP, after=after), count=count, skip=skip)

    def remove(self, *rules: Rule) -> None:
        """Disarm those of ``rules`` armed on this proxy (others are ignored) and release the
        requests their hangs hold."""
        with self._lock:
            mine = [r for r in self._rules if r in rules]
            self._rules = [r for r in self._rules if r not in rules]
        loop = self._loop
        for rule in mine:
            with contextlib.suppress(RuntimeError):  # the proxy stopped: nothing is held
                if loop is not None:
                    loop.call_soon_threadsafe(rule.released.set)

    def clear(self) -> None:
        """Disarm every rule and release the requests held by hangs."""
        self.remove(*self.rules())

    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def _take(self, request: Request) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.spent or not rule.match.matches(request):
                    continue
                if rule.passed < rule.skip:
                    rule.passed += 1
                    return None
                rule.fired += 1
                return rule
        return None

    # -- serving ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader, writer)
                if request is None:
                    return
                keep = await self._handle(request, reader, writer)
                if not keep or not request.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must be closed."""
        rule = self._take(request)
        outcome = "forwarded"
        if rule is not None:
            outcome = f"{rule.fault.kind}{' after' if rule.fault.after else ''}"
        amz_target = request.header("x-amz-target")
        self.seen.append(Seen(request.method, request.target, amz_target, outcome))
        if rule is None:
            writer.write(await self._forward(request))
            await writer.drain()
            return True
        fault = rule.fault
        if fault.after:  # the upstream acts; its answer is lost
            await self._forward(request)
        match fault.kind:
            case FaultKind.STATUS:
                writer.write(self._error_answer(request, fault.status))
                await writer.drain()
                return True
            case FaultKind.DROP:
                return False
            case FaultKind.HANG:
                await self._hold(reader, rule)
                return False

    async def _hold(self, reader: asyncio.StreamReader, rule: Rule) -> None:
        """Wait until the client leaves, the rule is removed, or its hang's seconds pass."""
        left = asyncio.ensure_future(reader.read(1))
        released = asyncio.ensure_future(rule.released.wait())
        try:
            await asyncio.wait(
                {left, released}, timeout=rule.fault.seconds, return_when="FIRST_COMPLETED"
            )
        finally:
            for task in (left, released):
                task.cancel()
            await asyncio.gather(left, released, return_exceptions=True)

    async def _forward(self, request: Request) -> bytes:
        """The upstream's answer to ``request``, re-framed with a ``Content-Length``; a 502 when
        the upstream cannot be reached."""
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            return _answer(502, "Bad Gateway", [("Content-Type", "text/plain")], b"upstream down")
        try:
            up_writer.write(_request_bytes(request))
            await up_writer.drain()
            raw = await up_reader.read()
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await up_writer.wait_closed()
        return _reframe(raw, head_only=request.method == "HEAD")

    def _error_answer(self, request: Request, status: int) -> bytes:
        reason = _REASONS.get(status, "Error")
        if self.flavour == "vault":
            message = _VAULT_ERRORS.get(status, f"{status} {reason}")
            body = json.dumps({"errors": [message]}).encode()
            return _answer(status, reason, [("Content-Type", "application/json")], body)
        operation = (request.header("x-amz-target") or "secretsmanager.Unknown").split(".")[-1]
        code, message = _aws_error(status, operation)
        body = json.dumps({"__type": code, "Message": message}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-RequestId", "5b1c7d2e-0f6a-4d7e-9c3b-faultproxy00"),
        ]
        return _answer(status, reason, headers, body)


# -- wire helpers ----------------------------------------------------------------------------------

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_VAULT_ERRORS = {
    401: "missing client token",
    403: "1 error occurred:\n\t* permission denied\n\n",
    429: 'request path "secret/": rate limit quota exceeded',
    500: "internal error",
    503: "Vault is sealed",
}


def _aws_error(status: int, operation: str) -> tuple[str, str]:
    if status == 401:
        return (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    if status == 403:
        message = (
            "User: arn:aws:iam::123456789012:user/rotator is not authorized to perform: "
            f"secretsmanager:{operation} because no identity-based policy allows the "
            f"secretsmanager:{operation} action"
        )
        return "AccessDeniedException", message
    if status == 429:
        return "ThrottlingException", "Rate exceeded"
    if status == 503:
        return "ServiceUnavailable", "The service is unavailable. Please try again later."
    if status >= 500:
        return "InternalServiceError", "An error occurred on the server side."
    return "InvalidRequestException", f"Request refused with HTTP {status}."


def _answer(status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Request | None:
    """The next request on a connection, or None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = tuple(_split_header(line) for line in lines[1:] if line)
    request = Request(method, target, version, headers, b"")
    if (request.header("expect") or "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if "chunked" in (request.header("transfer-encoding") or "").lower():
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(request.header("content-length") or 0))
    return Request(method, target, version, headers, body)


def _split_header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "expect", "content-length"}
)


def _request_bytes(request: Request) -> bytes:
    """The request for the upstream: same head (``Host`` included), one request per connection."""
    lines = [f"{request.method} {request.target} {request.version}"]
    lines += [f"{k}: {v}" for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
    lines += [f"Content-Length: {len(request.body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + request.body


def _reframe(raw: bytes, *, head_only: bool) -> bytes:
    """An upstream answer read to EOF, re-sent with a ``Content-Length`` (chunks decoded)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return _answer(502, "Bad Gateway", [("Content-Type", "text/plain")], b"bad upstream answer")
    lines = head.decode("latin-1").split("\r\n")
    headers = [_split_header(line) for line in lines[1:] if line]
    chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers)
    if chunked:
        body = _decode_chunks(body)
    kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    if head_only:
        length = next((v for k, v in headers if k.lower() == "content-length"), "0")
        kept.append(("Content-Length", length))
        return "\r\n".join([lines[0], *(f"{k}: {v}" for k, v in kept), "", ""]).encode("latin-1")
    kept.append(("Content-Length", str(len(body))))
    return "\r\n".join([lines[0], *(f"{k}: {v}" for k, v in kept), "", ""]).encode("latin-1") + body


def _decode_chunks(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


# -- matches for the backends rotator drives ------------------------------------------------------


def aws_call(action: str, secret_id: str | None = None, *, body: str | None = None) -> Match:
    """Secrets Manager's ``action`` (``PutSecretValue`` …), on ``secret_id`` if given, and with
    a body matching ``body`` if given."""
    patterns = [rf'"SecretId":\s*"{re.escape(secret_id)}"'] if secret_id is not None else []
    patterns += [body] if body is not None else []
    return Match(
        method="POST",
        headers={"x-amz-target": rf"^secretsmanager\.{action}$"},
        body=tuple(patterns),
    )


def vault_data(path: str, method: str | None = None) -> Match:
    """KV v2 data calls on ``secret/<path>`` (GET reads, POST/PUT writes)."""
    return Match(method=method, path=rf"^/v1/secret/data/{re.escape(path)}(\?|$)")


def vault_metadata(path: str, method: str | None = None) -> Match:
    """KV v2 metadata calls on ``secret/<path>``."""
    return Match(method=method, path=rf"^/v1/secret/metadata/{re.escape(path)}(\?|$)")
