"""Vault/OpenBao authentication: token, AppRole or Kubernetes, renewal and one re-login on 403.

:class:`VaultSession` owns one store's token. Before each call it logs in if it has no token,
renews a renewable token once two thirds of its TTL have passed (or logs in again when renewal
fails or the token cannot be renewed and the method can log in again), and when a call is refused
with 403 it logs in again once and retries that call. A static token cannot log in again: its 403
is final. The Kubernetes JWT file is read at every login, so a projected token that the kubelet
rotated is picked up. Sessions are shared by the destinations of a store and are thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import structlog

from rotator.clock import Clock
from rotator.destinations.vault.api import TokenLease, VaultApi
from rotator.destinations.vault.schema import AppRoleAuth, KubernetesAuth, TokenAuth
from rotator.errors import AuthError, PermanentError
from rotator.secret import Secret

T = TypeVar("T")

log = structlog.get_logger(__name__)

RENEW_AFTER = 2 / 3
"""Renew (or log in again) once this fraction of a token's TTL has passed."""


class VaultCredentials(Protocol):
    """One way to obtain a Vault token."""

    @property
    def method(self) -> str:
        """``token``, ``approle`` or ``kubernetes`` (for logs and ``rotator check``)."""
        ...

    @property
    def can_relogin(self) -> bool:
        """Whether :meth:`login` can produce a new token (false for a static token)."""
        ...

    def login(self, api: VaultApi) -> TokenLease:
        """Authenticate ``api`` (it uses the new token afterwards) and return the lease."""
        ...


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A token given in the configuration; ``lookup-self`` proves it and reads its TTL."""

    token: Secret
    method: str = "token"
    can_relogin: bool = False

    def login(self, api: VaultApi) -> TokenLease:
        api.use_token(self.token)
        return api.lookup_self()


@dataclass(frozen=True, slots=True)
class AppRoleLogin:
    """AppRole: ``role_id`` + ``secret_id`` at ``auth/<mount>/login``."""

    role_id: str
    secret_id: Secret
    mount: str = "approle"
    method: str = "approle"
    can_relogin: bool = True

    def login(self, api: VaultApi) -> TokenLease:
        token, lease = api.login_approle(
            role_id=self.role_id, secret_id=self.secret_id, mount=self.mount
        )
        api.use_token(token)
        return lease


@dataclass(frozen=True, slots=True)
class KubernetesLogin:
    """Kubernetes: the service-account JWT read from ``jwt_path`` at each login."""

    role: str
    jwt_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    mount: str = "kubernetes"
    method: str = "kubernetes"
    can_relogin: bool = True

    def login(self, api: VaultApi) -> TokenLease:
        try:
            jwt = Path(self.jwt_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PermanentError(
                "vault",
                "login",
                f"cannot read the service-account token {self.jwt_path}: "
                f"{exc.strerror or type(exc).__name__}",
            ) from None
        if not jwt:
            raise PermanentError(
                "vault", "login", f"the service-account token {self.jwt_path} is empty"
            )
        token, lease = api.login_kubernetes(role=self.role, jwt=Secret(jwt), mount=self.mount)
        api.use_token(token)
        return lease


class VaultSession:
    """One store's authenticated :class:`VaultApi`; see the module docstring for the rules."""

    def __init__(self, api: VaultApi, credentials: VaultCredentials, clock: Clock) -> None:
        self.api = api
        self.credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._logged_in = False
        self._lease = TokenLease(ttl=0, renewable=False)
        self._since = 0.0

    def call(self, fn: Callable[[VaultApi], T]) -> T:
        """``fn(api)`` with a fresh token; on 403 log in again once (if possible) and retry."""
        self.ensure_login()
        try:
            return fn(self.api)
        except AuthError as exc:
            if exc.status != 403 or not self.credentials.can_relogin:
                raise
            log.info("vault_relogin", method=self.credentials.method, reason="403")
            with self._lock:
                self._login()
        return fn(self.api)

    def ensure_login(self) -> None:
        """Log in, renew or log in again as the token's age requires. Raises like a call."""
        with self._lock:
            if not self._logged_in:
                self._login()
                return
            ttl = self._lease.ttl
            if ttl <= 0 or self._clock.monotonic() - self._since < ttl * RENEW_AFTER:
                return
            if self._lease.renewable:
                try:
                    self._set(self.api.renew_self())
                    log.debug("vault_token_renewed", ttl=self._lease.ttl)
                except (AuthError, PermanentError):
                    if not self.credentials.can_relogin:
                        raise
                    self._login()
                return
            if self.credentials.can_relogin:
                self._login()
            else:
                # A static token that cannot be renewed: nothing to do until it expires.
                self._lease = TokenLease(ttl=0, renewable=False)

    def _login(self) -> None:
        self._set(self.credentials.login(self.api))
        self._logged_in = True
        log.debug("vault_login", method=self.credentials.method, ttl=self._lease.ttl)

    def _set(self, lease: TokenLease) -> None:
        self._lease = lease
        self._since = self._clock.monotonic()


def credentials_for(auth: TokenAuth | AppRoleAuth | KubernetesAuth) -> VaultCredentials:
    """The credentials a store's ``auth`` settings describe."""
    if isinstance(auth, TokenAuth):
        return StaticToken(auth.token)
    if isinstance(auth, AppRoleAuth):
        return AppRoleLogin(role_id=auth.role_id, secret_id=auth.secret_id, mount=auth.mount)
    return KubernetesLogin(role=auth.role, jwt_path=str(auth.jwt_path), mount=auth.mount)
