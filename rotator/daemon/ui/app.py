"""The status page's ASGI app, mounted at ``/ui`` by :func:`rotator.daemon.http.build_app`.

=======  ========================  =========================================================
method   path (under ``/ui``)      answers
=======  ========================  =========================================================
GET      ``/``                     the overview (``?q=`` name contains, ``?state=`` a state
                                   or ``attention``)
GET      ``/targets/{name}``       a target's page; 404 for a target not configured
GET      ``/login``                the login form (a page served without a token: to ``/``)
POST     ``/login``                303 to the page asked for, with the session cookie; 401
                                   wrong token, 403 stale form, 429 too many attempts
POST     ``/logout``               303 to the login form; the session is forgotten
GET      ``/ui.css``, ``/ui.js``   the page's own stylesheet and script
=======  ========================  =========================================================

Access (:class:`StatusPage`): with an admin token, everything but the login form and the two
assets needs a session (else 303 to the login form); without one, the page exists only on a
loopback listener and answers only requests from a loopback address whose ``Host`` is a
loopback name (403 otherwise: a DNS-rebinding page cannot read it). Every answer carries
``Cache-Control: no-store`` and the headers of :data:`SECURITY_HEADERS`. Pages are read-only:
the only forms are the login and the logout, both CSRF-checked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

import structlog
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rotator.daemon.http import LogSampler, loggable_path
from rotator.daemon.ui import pages, view
from rotator.daemon.ui.access import (
    CSRF_COOKIE,
    CSRF_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    LoginLimiter,
    Session,
    Sessions,
    is_loopback_host,
    token_equals,
)
from rotator.daemon.ui.assets import CSS, JS
from rotator.daemon.ui.source import StatusSource
from rotator.secret import Secret

log = structlog.get_logger(__name__)

SECURITY_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
"""Sent with every answer under ``/ui``."""
HISTORY_ROTATIONS = 5
"""Rotations a target's page shows, each with its journal."""
HISTORY_AUDIT = 50
"""Audit entries a target's page reads (its revoked keys come from these)."""
MAX_FORM = 4096
"""Bytes of a login or logout form read at most (413 beyond)."""
PUBLIC = frozenset({"/login", "/ui.css", "/ui.js"})
"""Paths under ``/ui`` readable without a session: nothing in them comes from the daemon."""
_NEXT = re.compile(r"^(targets/[a-z0-9-]{1,100})?$")
_STATUS_REJECTION = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}

OnRejected = Callable[[str], None]


def _ignore(_: str) -> None:
    return None


class StatusPage:
    """The status page's lasting parts, kept across the apps a reload rebuilds: the source of
    its facts, the sessions logged out and the login limiter.

    ``clock`` (Unix seconds) and ``monotonic`` are the session and limiter clocks (tests move
    them); ``key`` replaces the per-process session key."""

    def __init__(
        self,
        source: StatusSource,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        key: bytes | None = None,
    ) -> None:
        self.source = source
        self.limiter = LoginLimiter(monotonic=monotonic)
        self._clock = clock
        self._key = key
        self._forgotten: dict[str, int] = {}
        self.samplers = {"login": LogSampler(), "refused": LogSampler()}
        """Log sampling of refused logins and refused clients (a flood logs a few lines)."""

    def app(
        self,
        *,
        admin_token: Secret | None,
        loopback: bool,
        on_rejected: OnRejected = _ignore,
    ) -> ASGIApp | None:
        """The app to mount at ``/ui``, or None when the page must not be served: no admin
        token and a listener that is not loopback-only."""
        if admin_token is None and not loopback:
            return None
        sessions = (
            Sessions(admin_token, clock=self._clock, key=self._key, forgotten=self._forgotten)
            if admin_token is not None
            else None
        )
        return _UiApp(self, admin_token, sessions, on_rejected)


def served(*, enabled: bool, admin_token: Secret | None, listen_host: str) -> str | None:
    """Why the status page is not served for these settings (a log line), or None if it is."""
    if not enabled:
        return "server.ui is false"
    if admin_token is None and not is_loopback_host(listen_host):
        return "no server.admin_token and server.listen is not a loopback address"
    return None


class _UiApp:
    """Headers, access and errors around the page's routes (see the module docstring)."""

    def __init__(
        self,
        page: StatusPage,
        token: Secret | None,
        sessions: Sessions | None,
        on_rejected: OnRejected,
    ) -> None:
        self.page = page
        self.token = token
        self.sessions = sessions
        self.on_rejected = on_rejected
        self.router = Router(
            routes=[
                Route("/", self.overview, methods=["GET"]),
                Route("/targets/{name}", self.target, methods=["GET"]),
                Route("/login", self.login, methods=["GET", "POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/ui.css", _asset(CSS, "text/css; charset=utf-8"), methods=["GET"]),
                Route("/ui.js", _asset(JS, "text/javascript; charset=utf-8"), methods=["GET"]),
            ]
        )

    @property
    def routes(self) -> list[Route]:
        """The page's routes (the docs test lists them)."""
        return [r for r in self.router.routes if isinstance(r, Route)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        request = Request(scope)
        path = _route_path(scope)
        refusal = self._refusal(request, path)
        if refusal is not None:
            await refusal(scope, receive, secured)
            return
        try:
            await self.router(scope, receive, secured)
        except HTTPException as exc:
            self.on_rejected(_STATUS_REJECTION.get(exc.status_code, "other"))
            titles = {404: "Not found", 405: "Method not allowed"}
            title = titles.get(exc.status_code, "Request refused")
            answer = _page(pages.message(title, title + ".", root=_root(path)), exc.status_code)
            for name, value in (exc.headers or {}).items():
                answer.headers[name] = value  # Allow, on a 405
            await answer(scope, receive, secured)

    def _refusal(self, request: Request, path: str) -> Response | None:
        """The answer to a request that may not reach the routes, or None."""
        if self.sessions is None:
            client = request.client.host if request.client else ""
            host = request.headers.get("host", "")
            if is_loopback_host(client) and is_loopback_host(host):
                return None
            self.on_rejected("other")
            self._log("refused", "ui_refused", request, reason="not loopback")
            detail = "Without an admin token the status page answers loopback clients only."
            return _page(pages.message("Forbidden", detail, root=_root(path)), 403)
        if path in PUBLIC or self._session(request) is not None:
            return None
        next_path = path.lstrip("/") if request.method in {"GET", "HEAD"} else ""
        if not _NEXT.match(next_path):
            next_path = ""
        return RedirectResponse(_root(path) + pages.login_target(next_path), status_code=303)

    def _session(self, request: Request) -> Session | None:
        if self.sessions is None:
            return None
        return self.sessions.check(request.cookies.get(SESSION_COOKIE))

    def _logout_token(self, request: Request) -> str | None:
        session = self._session(request)
        if self.sessions is None or session is None:
            return None
        return self.sessions.logout_token(session)

    def _log(self, sampler: str, event: str, request: Request, **fields: object) -> None:
        held = self.page.samplers[sampler].admit()
        if held is None:
            return
        log.warning(
            event,
            path=loggable_path(request.url.path),
            client=request.client.host if request.client else None,
            **fields,
            **({"suppressed": held} if held else {}),
        )

    # -- pages -----------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        return await _guarded("overview", self._overview(request))

    async def _overview(self, request: Request) -> Response:
        snapshot = await self.page.source.snapshot()
        every = view.ordered(view.rows(snapshot))
        query = view.clean_query(request.query_params.get("q"))
        state = view.clean_state(request.query_params.get("state"))
        shown = view.filtered(every, query=query, state=state)
        html = pages.overview(
            snapshot, every, shown, query=query, state=state, logout=self._logout_token(request)
        )
        return _page(html)

    async def target(self, request: Request) -> Response:
        return await _guarded("target", self._target(request))

    async def _target(self, request: Request) -> Response:
        name = request.path_params["name"]
        history = await self.page.source.history(
            name, rotations=HISTORY_ROTATIONS, audit=HISTORY_AUDIT
        )
        found = view.rows(history.snapshot, only=name) if history else []
        if history is None or not found:
            self.on_rejected("not_found")
            return _page(pages.message("Not found", "No such target.", root="../"), 404)
        html = pages.target(history, found[0], logout=self._logout_token(request))
        return _page(html)

    # -- login and logout ------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if self.sessions is None or self.token is None:
            return RedirectResponse("./", status_code=303)
        if request.method == "POST":
            return await self._login(request, self.sessions, self.token)
        next_path = request.query_params.get("next", "")
        note = ""
        if request.cookies.get(SESSION_COOKIE) and self._session(request) is None:
            note = "Your session has ended; sign in again."
        if self._session(request) is not None:
            return RedirectResponse("./" + _safe_next(next_path), status_code=303)
        return self._login_form(request, self.sessions, _safe_next(next_path), note)

    def _login_form(
        self, request: Request, sessions: Sessions, next_path: str, note: str, status: int = 200
    ) -> Response:
        csrf = sessions.login_token()
        answer = _page(pages.login(csrf, next_path, note), status)
        _set_cookie(answer, request, CSRF_COOKIE, csrf, max_age=CSRF_SECONDS)
        return answer

    async def _login(self, request: Request, sessions: Sessions, token: Secret) -> Response:
        client = request.client.host if request.client else "unknown"
        wait = self.page.limiter.admit(client)
        if wait > 0:
            seconds = max(1, round(wait + 0.5))
            self._log("login", "ui_login_limited", request, retry_after=seconds)
            detail = f"Too many sign-in attempts from your address; try again in {seconds} s."
            answer = _page(pages.message("Too many attempts", detail), 429)
            answer.headers["Retry-After"] = str(seconds)
            return answer
        form = await _form(request)
        if form is None:
            return _page(pages.message("Refused", "The form could not be read."), 400)
        next_path = _safe_next(form.get("next", ""))
        if request.headers.get("sec-fetch-site") == "cross-site" or not sessions.login_token_ok(
            request.cookies.get(CSRF_COOKIE), form.get("csrf")
        ):
            note = "The form had expired or came from another site; sign in again."
            return self._login_form(request, sessions, next_path, note, 403)
        if not token_equals(form.get("token", ""), token):
            self.on_rejected("unauthorized")
            self._log("login", "ui_login_failed", request)
            return self._login_form(request, sessions, next_path, "Wrong token.", 401)
        cookie, _ = sessions.issue()
        log.info("ui_login", client=client)
        done = RedirectResponse("./" + next_path, status_code=303)
        _set_cookie(done, request, SESSION_COOKIE, cookie, max_age=SESSION_SECONDS)
        _set_cookie(done, request, CSRF_COOKIE, "", max_age=0)
        return done

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        if self.sessions is None or session is None:
            return RedirectResponse("./", status_code=303)
        form = await _form(request)
        if (
            form is None
            or request.headers.get("sec-fetch-site") == "cross-site"
            or not self.sessions.logout_token_ok(session, form.get("csrf"))
        ):
            return _page(pages.message("Refused", "The logout form was not sent from here."), 403)
        self.sessions.forget(session)
        log.info("ui_logout", client=request.client.host if request.client else None)
        answer = RedirectResponse("login", status_code=303)
        _set_cookie(answer, request, SESSION_COOKIE, "", max_age=0)
        return answer


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status)


def _route_path(scope: Scope) -> str:
    """The request's path below the mount (``/``, ``/targets/x``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def _root(path: str) -> str:
    """The relative way back to ``/ui/`` from ``path`` (a path under ``/ui``)."""
    return "../" * max(0, path.count("/") - 1)


def _safe_next(value: str) -> str:
    """Where a login may send the browser: the overview or a target's page, nothing else."""
    return value if _NEXT.match(value) else ""


async def _guarded(route: str, answer: Awaitable[Response]) -> Response:
    """An unexpected failure (the state store cannot answer) becomes a logged 503 page; the
    exception's text is never shown."""
    try:
        return await answer
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - the page answers; the daemon goes on
        log.warning("ui_failed", route=route, error_type=type(exc).__name__)
        root = "../" if route == "target" else ""
        detail = "The daemon could not read its state; try again later."
        return _page(pages.message("Unavailable", detail, root=root), 503)


async def _form(request: Request) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body of at most :data:`MAX_FORM` bytes, each
    field's first value; None for another type, a bigger body or bad UTF-8."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items()}


def _secure(request: Request) -> bool:
    """Whether the browser reached the page over TLS: served as https, or through a proxy that
    says so with ``X-Forwarded-Proto: https`` (trusted from anyone: it can only make the cookie
    stricter)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _set_cookie(answer: Response, request: Request, name: str, value: str, *, max_age: int) -> None:
    """``HttpOnly``, ``SameSite=Strict``, ``Path=/``, ``Secure`` over TLS."""
    answer.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def _asset(body: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(_: Request) -> Response:
        return Response(body, media_type=media_type)

    return serve


__all__ = ["HISTORY_AUDIT", "HISTORY_ROTATIONS", "SECURITY_HEADERS", "StatusPage", "served"]
