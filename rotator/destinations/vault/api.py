"""The narrow seam between rotator and hvac: only the Vault/OpenBao calls rotator makes.

:class:`VaultApi` lists them; :class:`HvacApi` implements them with an ``hvac.Client`` and
translates every hvac/requests failure into rotator's error tree, so nothing above this module
sees an SDK exception. Unit tests fake :class:`VaultApi`, never hvac.

Error mapping: connection failures, timeouts, 429 and 5xx (sealed, standby, overloaded) →
``TransientError``; 401/403 → ``AuthError`` naming the path and the capability the call needs;
a KV v2 check-and-set mismatch → ``ConflictError``; TLS failures and other 4xx →
``PermanentError``; anything else raised while calling or reading the answer (an unreadable
``ca_cert``, an answer without the fields read) → ``PermanentError``. Messages are scrubbed and
one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import hvac
import hvac.exceptions
import requests

from rotator.contracts import OnCall
from rotator.destinations._common import observed, unexpected_failure
from rotator.errors import (
    AuthError,
    BackendError,
    ConflictError,
    PermanentError,
    TransientError,
)
from rotator.logs import scrub
from rotator.secret import Secret

T = TypeVar("T")

BACKEND = "vault"


@dataclass(frozen=True, slots=True)
class KvVersion:
    """One KV v2 version as read: ``data`` is None when the version is deleted or destroyed."""

    version: int
    data: Mapping[str, object] | None = field(repr=False)
    custom_metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TokenLease:
    """What Vault says about the current token: ``ttl`` seconds left (0 = never expires)."""

    ttl: float
    renewable: bool


class VaultApi(Protocol):
    """The Vault/OpenBao calls rotator uses. Every method raises only rotator errors."""

    def read_version(self, mount: str, path: str, version: int | None = None) -> KvVersion | None:
        """A KV v2 version (the latest if ``version`` is None) with the secret's custom
        metadata; None if the path has no secret (or no such version)."""
        ...

    def write(self, mount: str, path: str, data: Mapping[str, object], *, cas: int) -> int:
        """Write ``data`` as a new version if the current version is ``cas`` (0 = create);
        returns the new version number. ``ConflictError`` on a CAS mismatch."""
        ...

    def write_custom_metadata(self, mount: str, path: str, custom: Mapping[str, str]) -> None:
        """Replace the secret's ``custom_metadata`` (other metadata settings untouched)."""
        ...

    def capabilities(self, paths: Sequence[str]) -> dict[str, frozenset[str]]:
        """``sys/capabilities-self``: the current token's capabilities on each path."""
        ...

    def use_token(self, token: Secret) -> None:
        """Send ``token`` with every later call."""
        ...

    def lookup_self(self) -> TokenLease:
        """``auth/token/lookup-self``: proves the token works and gives its TTL."""
        ...

    def renew_self(self) -> TokenLease:
        """``auth/token/renew-self``: extends the token's TTL."""
        ...

    def login_approle(
        self, *, role_id: str, secret_id: Secret, mount: str
    ) -> tuple[Secret, TokenLease]:
        """AppRole login; returns the client token and its lease (not yet in use)."""
        ...

    def login_kubernetes(self, *, role: str, jwt: Secret, mount: str) -> tuple[Secret, TokenLease]:
        """Kubernetes login with a service-account JWT; returns the token and its lease."""
        ...


def _needs(operation: str) -> str:
    return {
        "read": "'read'",
        "write": "'update' (or 'create' for a new secret)",
        "write metadata": "'update'",
        "capabilities": "'update' on sys/capabilities-self",
    }.get(operation, "a permission")


# Vault answers an unknown, expired or revoked token here with the same 403 as a missing grant.
_TOKEN_SELF = {
    "lookup-self": "read on auth/token/lookup-self",
    "renew-self": "update on auth/token/renew-self",
}


# hvac exception → (rotator error class, HTTP status) for the cases that need no inspection.
_BY_CLASS: tuple[tuple[type[Exception], type[BackendError], int | None], ...] = (
    (hvac.exceptions.RateLimitExceeded, TransientError, 429),
    (hvac.exceptions.InternalServerError, TransientError, 500),
    (hvac.exceptions.VaultNotInitialized, TransientError, 501),
    (hvac.exceptions.BadGateway, TransientError, 502),
    (hvac.exceptions.VaultDown, TransientError, 503),
    (hvac.exceptions.InvalidPath, PermanentError, 404),
    (hvac.exceptions.InvalidRequest, PermanentError, 400),
    (hvac.exceptions.VaultError, PermanentError, None),
    # requests: SSLError is a ConnectionError, so it must come first.
    (requests.exceptions.SSLError, PermanentError, None),
    (requests.exceptions.RequestException, TransientError, None),
)


def map_hvac_error(exc: Exception, operation: str, path: str) -> BackendError | ConflictError:
    """The rotator error for an hvac/requests exception raised by ``operation`` on ``path``."""
    where = f"{operation} {path}"
    detail = _detail(exc)
    if isinstance(exc, hvac.exceptions.Forbidden):
        if operation in _TOKEN_SELF:
            problem = f"token invalid or expired, or lacks {_TOKEN_SELF[operation]}"
        else:
            problem = f"permission denied: needs {_needs(operation)}"
        return AuthError(BACKEND, where, problem, status=403)
    if isinstance(exc, hvac.exceptions.Unauthorized):
        return AuthError(BACKEND, where, f"not authenticated: {detail}", status=401)
    if isinstance(exc, hvac.exceptions.InvalidRequest):
        if operation == "login":
            return AuthError(BACKEND, where, f"login refused: {detail}", status=400)
        if "check-and-set" in detail:
            return ConflictError(f"{BACKEND} {where}: check-and-set lost: {detail}")
    for cls, error, status in _BY_CLASS:
        if isinstance(exc, cls):
            return error(BACKEND, where, detail, status=status)
    return PermanentError(BACKEND, where, f"unexpected failure: {type(exc).__name__}")


def _detail(exc: Exception) -> str:
    if isinstance(exc, hvac.exceptions.VaultError):
        text = "; ".join(str(e) for e in (exc.errors or [])) or type(exc).__name__
        return " ".join(scrub(text).split())
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (check ca_cert / verify)"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "server unreachable"
    return f"request failed: {type(exc).__name__}"


class HvacApi:
    """:class:`VaultApi` over an ``hvac.Client`` (its URL, namespace, TLS and timeout); every call
    is reported to ``on_call`` (the metrics hook, :data:`rotator.contracts.OnCall`)."""

    def __init__(self, client: hvac.Client, *, on_call: OnCall | None = None) -> None:
        self._client = client
        self._on_call = on_call

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        namespace: str | None = None,
        ca_cert: str | None = None,
        verify: bool = True,
        timeout: float = 10.0,
        on_call: OnCall | None = None,
    ) -> HvacApi:
        """A client for ``url``; TLS is verified against ``ca_cert`` when given."""
        tls: bool | str = ca_cert if (verify and ca_cert) else verify
        client = hvac.Client(url=url, namespace=namespace, verify=tls, timeout=timeout)
        return cls(client, on_call=on_call)

    def _call(self, operation: str, path: str, fn: Callable[[], T]) -> T:
        """``fn()`` (the hvac call and the reading of its answer), every failure mapped."""
        with observed(BACKEND, operation, path, self._on_call):
            try:
                return fn()
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                raise map_hvac_error(exc, operation, path) from None
            except Exception as exc:  # noqa: BLE001 - the seam lets no SDK exception through
                raise unexpected_failure(BACKEND, operation, path, exc) from None

    def read_version(self, mount: str, path: str, version: int | None = None) -> KvVersion | None:
        kv = self._client.secrets.kv.v2

        def read() -> KvVersion | None:
            try:
                answer: dict[str, Any] = kv.read_secret_version(
                    path=path, version=version, mount_point=mount, raise_on_deleted_version=False
                )
            except hvac.exceptions.InvalidPath:
                return None
            body = answer.get("data") or {}
            meta = body.get("metadata") or {}
            return KvVersion(
                version=int(meta.get("version") or 0),
                data=body.get("data"),
                custom_metadata=_str_map(meta.get("custom_metadata")),
            )

        return self._call("read", f"{mount}/data/{path}", read)

    def write(self, mount: str, path: str, data: Mapping[str, object], *, cas: int) -> int:
        kv = self._client.secrets.kv.v2

        def write() -> int:
            answer: dict[str, Any] = kv.create_or_update_secret(
                path=path, secret=dict(data), cas=cas, mount_point=mount
            )
            return int(answer["data"]["version"])

        return self._call("write", f"{mount}/data/{path}", write)

    def write_custom_metadata(self, mount: str, path: str, custom: Mapping[str, str]) -> None:
        # hvac's update_metadata() would also reset delete_version_after; post only our field.
        url = f"/v1/{mount}/metadata/{path}"
        self._call(
            "write metadata",
            f"{mount}/metadata/{path}",
            lambda: self._client.adapter.post(url, json={"custom_metadata": dict(custom)}),
        )

    def capabilities(self, paths: Sequence[str]) -> dict[str, frozenset[str]]:
        def capabilities() -> dict[str, frozenset[str]]:
            answer: dict[str, Any] = self._client.sys.get_capabilities(paths=list(paths))
            data = answer.get("data") or answer
            return {p: frozenset(data.get(p) or ()) for p in paths}

        return self._call("capabilities", "sys/capabilities-self", capabilities)

    def use_token(self, token: Secret) -> None:
        self._client.token = token.reveal()

    def lookup_self(self) -> TokenLease:
        def lookup() -> TokenLease:
            answer: dict[str, Any] = self._client.auth.token.lookup_self()
            data = answer.get("data") or {}
            return TokenLease(
                ttl=float(data.get("ttl") or 0), renewable=bool(data.get("renewable"))
            )

        return self._call("lookup-self", "auth/token/lookup-self", lookup)

    def renew_self(self) -> TokenLease:
        return self._call(
            "renew-self",
            "auth/token/renew-self",
            lambda: _lease(self._client.auth.token.renew_self()),
        )

    def login_approle(
        self, *, role_id: str, secret_id: Secret, mount: str
    ) -> tuple[Secret, TokenLease]:
        return self._call(
            "login",
            f"auth/{mount}/login",
            lambda: _login(
                self._client.auth.approle.login(
                    role_id=role_id,
                    secret_id=secret_id.reveal(),
                    use_token=False,
                    mount_point=mount,
                )
            ),
        )

    def login_kubernetes(self, *, role: str, jwt: Secret, mount: str) -> tuple[Secret, TokenLease]:
        return self._call(
            "login",
            f"auth/{mount}/login",
            lambda: _login(
                self._client.auth.kubernetes.login(
                    role=role, jwt=jwt.reveal(), use_token=False, mount_point=mount
                )
            ),
        )


def _login(answer: Mapping[str, Any]) -> tuple[Secret, TokenLease]:
    """The client token and its lease from a login answer (``KeyError`` if it has none)."""
    return Secret(answer["auth"]["client_token"]), _lease(answer)


def _lease(answer: Mapping[str, Any]) -> TokenLease:
    auth = answer.get("auth") or {}
    return TokenLease(
        ttl=float(auth.get("lease_duration") or 0), renewable=bool(auth.get("renewable"))
    )


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}
