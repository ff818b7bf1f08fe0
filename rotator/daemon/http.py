"""The daemon's HTTP server: health, metrics and the on-demand API (docs/http-api.md).

=======  ========================================  ===========  =================================
method   path                                      auth         answers
=======  ========================================  ===========  =================================
GET      ``/livez``                                none         200 / 503 ``{status, reason}``
GET      ``/readyz``                               none         200 / 503 ``{status, reason}``
GET      ``/metrics``                              none         Prometheus text (or OpenMetrics)
GET      ``/api/v1/targets``                       bearer       200 list as ``status --json``
POST     ``/api/v1/targets/{name}/rotate``         bearer       202 / 400 / 404 / 409 / 429 / 503
GET      ``/api/v1/rotations/{rotation_id}``       bearer       200 view / 404
GET      ``/ui/…``                                 session      the status page (HTML)
=======  ========================================  ===========  =================================

Without an admin token the ``/api/v1`` routes do not exist (404); the status page under ``/ui``
is :mod:`rotator.daemon.ui` (a session from a login with the admin token, or a loopback-only
listener without one). Every error of the JSON routes is one line ``{"error": "..."}``.
Answers carry ids and fingerprints, never a key; request input (a target name, a token) is
never echoed back. Uvicorn's access log should stay off: the few lines worth
keeping (rotation requests, refused credentials) are logged here without any header, a refused
request's path cut to 200 characters and its lines sampled (``on_rejected`` counts them all).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from rotator.daemon.control import (
    DaemonControl,
    RateLimitedError,
    RotationInFlightError,
    UnknownTargetError,
)
from rotator.secret import Secret

log = structlog.get_logger(__name__)

API_PREFIX = "/api/v1"
UI_PREFIX = "/ui"
NO_STORE = {"Cache-Control": "no-store"}
_ROTATION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")

Handler = Callable[[Request], Awaitable[Response]]
OnRejected = Callable[[str], None]
"""``on_rejected(reason)``: told of every request refused before a handler ran (the metrics
hook); ``reason`` is one of :data:`REJECTIONS`."""

REJECTIONS = (
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "other",
    "slow",
    "evicted",
    "overloaded",
)
"""Why a request was refused before any handler: 401, 404 (no such route), 405, another status;
or by the server (:mod:`rotator.daemon.serving`): not received within ``header_timeout``,
closed while waiting to make room for a new connection, answered 503 beyond the connection cap."""
_REJECTION_OF = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}

LOGGED_PATH = 200
"""Characters of a request's path a log line keeps (never its query string)."""
LOG_BURST = 10
"""Lines ``api_unauthorized`` may log per :data:`LOG_WINDOW` seconds; the rest are counted."""
LOG_WINDOW = 60.0


def loggable_path(path: str) -> str:
    """``path`` as a log line shows it: at most :data:`LOGGED_PATH` characters (then ``…``)."""
    return path if len(path) <= LOGGED_PATH else path[: LOGGED_PATH - 1] + "…"


class LogSampler:
    """At most ``burst`` lines per ``window`` seconds: :meth:`admit` says whether this one may be
    logged and, if so, how many were held back since the last one that was."""

    def __init__(
        self,
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.window = window
        self._monotonic = monotonic
        self._started = monotonic()
        self._logged = 0
        self._held = 0

    def admit(self) -> int | None:
        """None to hold this line back; else the count of lines held back before it."""
        now = self._monotonic()
        if now - self._started >= self.window:
            self._started, self._logged = now, 0
        if self._logged >= self.burst:
            self._held += 1
            return None
        self._logged += 1
        held, self._held = self._held, 0
        return held


def _ignore(_: str) -> None:
    return None


def _iso(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Json(JSONResponse):
    """One-line JSON; datetimes and dates (in a rotation view) as ISO 8601, UTC as ``Z``."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_iso
        ).encode("utf-8")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Json:
    """The one error shape: ``{"error": message}`` on one line, never cached."""
    return Json({"error": message}, status_code=status, headers={**NO_STORE, **(headers or {})})


def token_matches(header: str | None, token: Secret) -> bool:
    """True if ``header`` is ``Bearer <token>``. Constant time in the token and the guess: both are
    hashed to equal lengths before :func:`hmac.compare_digest`."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return False
    expected = hashlib.sha256(token.reveal().encode()).digest()
    offered = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(expected, offered)


class BearerAuth:
    """ASGI wrapper that lets a request through only with the admin token (401 otherwise, with
    ``WWW-Authenticate: Bearer``); it runs before routing, so unknown API paths answer 401 too."""

    def __init__(self, app: ASGIApp, token: Secret, on_rejected: OnRejected = _ignore) -> None:
        self.app = app
        self.token = token
        self.on_rejected = on_rejected
        self.sampler = LogSampler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization")
        if token_matches(header, self.token):
            await self.app(scope, receive, send)
            return
        challenge = 'Bearer realm="rotator"'
        if header:
            challenge += ', error="invalid_token"'
        self.on_rejected("unauthorized")
        held = self.sampler.admit()
        if held is not None:
            log.warning(
                "api_unauthorized",
                method=request.method[:16],
                path=loggable_path(request.url.path),
                client=request.client.host if request.client else None,
                presented=bool(header),
                **({"suppressed": held} if held else {}),
            )
        response = error(401, "missing or invalid bearer token", {"WWW-Authenticate": challenge})
        await response(scope, receive, send)


def _guarded(route: str, handler: Handler) -> Handler:
    """Turn an unexpected failure of ``handler`` into a logged 503 ``{"error"}`` line (the state
    store or the daemon is unavailable); the exception's text is never sent."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - the API answers; the daemon goes on
            log.warning("api_failed", route=route, error_type=type(exc).__name__)
            return error(503, "the daemon could not answer; try again later")

    return run


def _emergency(request: Request) -> bool | None:
    """``?emergency=`` as a boolean (absent = False); None if it is not a boolean."""
    value = request.query_params.get("emergency")
    if value is None:
        return False
    return {"true": True, "1": True, "false": False, "0": False}.get(value.lower())


def _api(control: DaemonControl) -> Router:
    async def targets(_: Request) -> Response:
        rows = await control.status()
        return Json([row.as_dict() for row in rows], headers=NO_STORE)

    async def rotate(request: Request) -> Response:
        name = request.path_params["name"]
        emergency = _emergency(request)
        if emergency is None:
            return error(400, "emergency must be true or false")
        try:
            rotation_id = control.request_rotation(name, emergency=emergency)
        except UnknownTargetError:
            return error(404, "unknown target")
        except RotationInFlightError:
            return error(409, "a rotation of this target is already in flight")
        except RateLimitedError as exc:
            retry_after = max(1, math.ceil(exc.retry_after))
            return error(
                429,
                f"rotated on demand too recently; retry after {retry_after}s",
                {"Retry-After": str(retry_after)},
            )
        except PermissionError:
            return error(503, "this instance is a standby; the leader rotates")
        log.info(
            "rotation_requested",
            target=name,
            rotation_id=rotation_id,
            emergency=emergency,
            client=request.client.host if request.client else None,
        )
        return Json(
            {"rotation_id": rotation_id},
            status_code=202,
            headers={**NO_STORE, "Location": f"{API_PREFIX}/rotations/{rotation_id}"},
        )

    async def rotation(request: Request) -> Response:
        rotation_id = request.path_params["rotation_id"]
        view = await control.rotation_view(rotation_id) if _ROTATION_ID.match(rotation_id) else None
        if view is None:
            return error(404, "unknown rotation")
        return Json(view, headers=NO_STORE)

    return Router(
        routes=[
            Route("/targets", _guarded("targets", targets), methods=["GET"]),
            Route("/targets/{name}/rotate", _guarded("rotate", rotate), methods=["POST"]),
            Route("/rotations/{rotation_id}", _guarded("rotation", rotation), methods=["GET"]),
        ]
    )


def build_app(
    control: DaemonControl,
    *,
    admin_token: Secret | None,
    registry: CollectorRegistry,
    on_rejected: OnRejected = _ignore,
    ui: ASGIApp | None = None,
) -> Starlette:
    """The daemon's ASGI app (serve it with uvicorn, ``access_log=False``, in the daemon's loop).

    ``/livez`` reads ``control.health.live()`` (heartbeat and lease, never upstream reachability),
    ``/readyz`` reads ``control.health.readiness()``, ``/metrics`` renders ``registry`` at
    scrape time.
    ``/api/v1`` exists only when ``admin_token`` is set. ``on_rejected`` hears of every request
    refused before a handler (401, 404 without a route, 405). ``ui``, when given, is mounted at
    ``/ui`` (the status page: :meth:`rotator.daemon.ui.app.StatusPage.app`).
    """

    async def livez(_: Request) -> Response:
        live, why = control.health.live()
        return Json(
            {"status": "ok" if live else "failing", "reason": why},
            status_code=200 if live else 503,
            headers=NO_STORE,
        )

    async def readyz(_: Request) -> Response:
        health = control.health
        ready, why = health.readiness()
        return Json(
            {
                "status": "ready" if ready else "not ready",
                "reason": why,
                "leading": health.leading,
            },
            status_code=200 if ready else 503,
            headers=NO_STORE,
        )

    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), headers={"Content-Type": content_type, **NO_STORE})

    routes: list[Route | Mount] = [
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if admin_token is not None:
        routes.append(Mount(API_PREFIX, app=BearerAuth(_api(control), admin_token, on_rejected)))
    if ui is not None:
        routes.append(Mount(UI_PREFIX, app=ui))

    async def http_error(_: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        on_rejected(_REJECTION_OF.get(status, "other"))
        messages = {404: "not found", 405: "method not allowed"}
        headers = exc.headers if isinstance(exc, HTTPException) and exc.headers else None
        return error(status, messages.get(status, "request refused"), dict(headers or {}))

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


__all__ = [
    "API_PREFIX",
    "REJECTIONS",
    "UI_PREFIX",
    "BearerAuth",
    "LogSampler",
    "build_app",
    "error",
    "loggable_path",
    "token_matches",
]
