"""Who may read the status page: signed session cookies, the login form's CSRF token, the
login rate limit, and the loopback rules of a page served without an admin token.

Sessions (docs/http-api.md#the-status-page): a login exchanges the admin token for a cookie
``v1.<expiry>.<session id>.<mac>``; the MAC is HMAC-SHA256 under a key derived from a random
key drawn once per process and from the admin token's hash, so every session ends when the
process restarts or the token changes (a reload with a new token), and no one can mint one
without both. A logout forgets its session id until the session would have expired. Every
comparison of a secret value is :func:`hmac.compare_digest` over equal-length digests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from rotator.secret import Secret

SESSION_COOKIE = "rotator_session"
CSRF_COOKIE = "rotator_login"
SESSION_SECONDS = 900
"""A session's lifetime (15 minutes from the login, not extended by use)."""
CSRF_SECONDS = 600
"""How long a login form may stay open before its token is refused."""
LOGIN_ATTEMPTS = 5
"""Login attempts a client address may make per :data:`LOGIN_WINDOW` seconds (then 429)."""
LOGIN_WINDOW = 60.0
TRACKED_CLIENTS = 4096
"""Client addresses the login limiter remembers at most (the least recently seen go first)."""
_PROCESS_KEY = secrets.token_bytes(32)
"""Drawn once per process: sessions do not outlive it."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def token_equals(given: str, token: Secret) -> bool:
    """Whether ``given`` is the admin token, in time independent of both (hashed first)."""
    return hmac.compare_digest(_digest(given), _digest(token.reveal()))


@dataclass(frozen=True, slots=True)
class Session:
    """A valid session: its id and its expiry (Unix seconds)."""

    sid: str
    expires: int


class Sessions:
    """Issues and checks session cookies and login-form tokens for one admin token.

    ``clock`` gives Unix seconds (tests move it). ``key`` replaces the per-process random key.
    """

    def __init__(
        self,
        token: Secret,
        *,
        clock: Callable[[], float] = time.time,
        key: bytes | None = None,
        forgotten: dict[str, int] | None = None,
    ) -> None:
        self._mac_key = hmac.new(
            key or _PROCESS_KEY, b"rotator-ui|" + _digest(token.reveal()), hashlib.sha256
        ).digest()
        self._clock = clock
        self._forgotten: dict[str, int] = {} if forgotten is None else forgotten
        """Session ids logged out, with their expiry (shared across app rebuilds)."""

    def _mac(self, *parts: str) -> str:
        return _b64(hmac.new(self._mac_key, "|".join(parts).encode(), hashlib.sha256).digest())

    def now(self) -> int:
        return int(self._clock())

    # -- sessions --------------------------------------------------------------------------

    def issue(self) -> tuple[str, Session]:
        """A new session: (cookie value, session)."""
        expires = self.now() + SESSION_SECONDS
        sid = _b64(secrets.token_bytes(18))
        body = f"v1.{expires}.{sid}"
        return f"{body}.{self._mac('session', body)}", Session(sid, expires)

    def check(self, cookie: str | None) -> Session | None:
        """The session a cookie value proves, or None (absent, malformed, forged, expired or
        logged out)."""
        if not cookie or len(cookie) > 200:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        body = ".".join(parts[:3])
        if not hmac.compare_digest(_digest(parts[3]), _digest(self._mac("session", body))):
            return None
        expires = int(parts[1])
        now = self.now()
        if expires <= now or expires > now + SESSION_SECONDS or parts[2] in self._forgotten:
            return None
        return Session(parts[2], expires)

    def forget(self, session: Session) -> None:
        """Log ``session`` out: its cookie is refused from now on, even if replayed."""
        now = self.now()
        for sid in [s for s, until in self._forgotten.items() if until <= now]:
            del self._forgotten[sid]
        self._forgotten[session.sid] = session.expires

    def logout_token(self, session: Session) -> str:
        """The value the logout form carries for ``session`` (its CSRF token)."""
        return self._mac("logout", session.sid)

    def logout_token_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(
            _digest(given), _digest(self.logout_token(session))
        )

    # -- the login form's CSRF token (double submit: cookie and field, both signed) -----------

    def login_token(self) -> str:
        expires = self.now() + CSRF_SECONDS
        body = f"{expires}.{_b64(secrets.token_bytes(12))}"
        return f"{body}.{self._mac('login', body)}"

    def login_token_ok(self, cookie: str | None, field: str | None) -> bool:
        """The form's token is the cookie's, was signed here and has not expired."""
        if not cookie or not field or len(field) > 200:
            return False
        if not hmac.compare_digest(_digest(cookie), _digest(field)):
            return False
        parts = field.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(_digest(parts[2]), _digest(self._mac("login", body))):
            return False
        return int(parts[0]) > self.now()


class LoginLimiter:
    """At most ``attempts`` login attempts per client address per ``window`` seconds.

    :meth:`admit` records an attempt and returns 0, or the seconds to wait (the attempt is then
    refused and not recorded). Remembers at most :data:`TRACKED_CLIENTS` addresses."""

    def __init__(
        self,
        attempts: int = LOGIN_ATTEMPTS,
        window: float = LOGIN_WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.window = window
        self._monotonic = monotonic
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def admit(self, client: str) -> float:
        now = self._monotonic()
        times = self._seen.pop(client, None) or deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        wait = 0.0
        if len(times) >= self.attempts:
            wait = self.window - (now - times[0])
        else:
            times.append(now)
        self._seen[client] = times
        while len(self._seen) > TRACKED_CLIENTS:
            self._seen.popitem(last=False)
        return wait


def is_loopback_host(host: str) -> bool:
    """Whether a listen or ``Host`` host names this machine only: ``localhost`` or an address
    in 127.0.0.0/8 or ``::1`` (brackets and a port allowed in a ``Host`` value)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name in {"localhost", "localhost."} or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


__all__ = [
    "CSRF_COOKIE",
    "CSRF_SECONDS",
    "LOGIN_ATTEMPTS",
    "LOGIN_WINDOW",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "LoginLimiter",
    "Session",
    "Sessions",
    "is_loopback_host",
    "token_equals",
]
