"""What the Admin API client and the verifier share: one observed send, transport-error mapping.

Every HTTP exchange with Mistral goes through :func:`send_observed`, the single place where a
backend call is timed, logged at debug (operation, status, duration: never a URL or a header)
and reported to an optional :data:`~rotator.contracts.OnCall` hook that the metrics layer plugs
into.
"""

from __future__ import annotations

import functools
import ssl
from types import TracebackType
from typing import Self

import httpx
import structlog

from rotator import __version__
from rotator.clock import Clock
from rotator.contracts import OnCall
from rotator.errors import BackendError, PermanentError, RequestNotSentError, TransientError

BACKEND = "mistral"
USER_AGENT = f"rotator/{__version__}"

log = structlog.get_logger(__name__)


def status_label(exc: httpx.HTTPError) -> str:
    """A low-cardinality label for a call that got no HTTP answer."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol_error"
    if isinstance(exc, httpx.NetworkError):
        return "network_error"
    return "error"


def transport_reason(exc: httpx.HTTPError) -> str:
    """One non-secret phrase for a call that got no HTTP answer (never the exception text)."""
    return {
        "timeout": "timed out",
        "connect_error": "could not connect",
        "protocol_error": "connection dropped",
        "network_error": "connection failed",
    }.get(status_label(exc), f"request failed ({type(exc).__name__})")


def transport_error(exc: httpx.HTTPError, operation: str) -> BackendError:
    """Map an httpx failure: network trouble is transient, anything else (a bad URL) is not.

    Failures to open the connection give :class:`RequestNotSentError`; timeouts and errors after the
    connection was open give a plain ``TransientError`` (the server may have acted on it).
    """
    reason = transport_reason(exc)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return RequestNotSentError(BACKEND, operation, reason)
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return TransientError(BACKEND, operation, reason)
    return PermanentError(BACKEND, operation, reason)


async def send_observed(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    operation: str,
    clock: Clock,
    on_call: OnCall | None,
) -> httpx.Response:
    """Send one request and account for it; httpx errors propagate unchanged."""
    started = clock.monotonic()
    status = "error"
    try:
        response = await client.send(request)
    except httpx.HTTPError as exc:
        status = status_label(exc)
        raise
    else:
        status = str(response.status_code)
        return response
    finally:
        seconds = clock.monotonic() - started
        log.debug("mistral.call", operation=operation, status=status, seconds=seconds)
        if on_call is not None:
            try:
                on_call(BACKEND, operation, status, seconds)
            except Exception:  # noqa: BLE001 - a broken metrics hook must not break a rotation
                log.warning("mistral.on_call_failed", operation=operation)


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), made
    once per process: loading the CA bundle costs about 0.4 s of start-up per client."""
    return httpx.create_ssl_context()


class HttpBackend:
    """Owns one ``httpx.AsyncClient`` for a Mistral base URL: async context manager, aclose,
    and :meth:`_send`, which accounts for every call.

    ``transport`` is the test seam (an ``httpx.MockTransport``). Redirects are not followed: a
    credential is never replayed to another address.
    """

    def __init__(
        self,
        *,
        base_url: str,
        timeout: float,
        user_agent: str,
        transport: httpx.AsyncBaseTransport | None,
        clock: Clock,
        on_call: OnCall | None,
    ) -> None:
        self._clock = clock
        self._on_call = on_call
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"user-agent": user_agent, "accept": "application/json"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            verify=default_tls(),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        await self._http.aclose()

    async def _send(self, request: httpx.Request, operation: str) -> httpx.Response:
        """:func:`send_observed` with this backend's clock and hook."""
        return await send_observed(
            self._http, request, operation=operation, clock=self._clock, on_call=self._on_call
        )
