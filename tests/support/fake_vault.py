"""A fake of the narrow Vault seam (:class:`rotator.destinations.vault.api.VaultApi`).

It keeps a tiny KV v2 in memory and counts logins, so unit tests can drive authentication and
crash/retry paths that a real server cannot be made to hit on cue. Failures are injected per
method with :meth:`FakeVaultApi.fail_next`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rotator.destinations.vault.api import KvVersion, TokenLease
from rotator.errors import AuthError, ConflictError
from rotator.secret import Secret


@dataclass
class FakeVaultApi:
    """In-memory KV v2 + token bookkeeping behind the VaultApi protocol."""

    ttl: float = 0
    renewable: bool = False
    capabilities_granted: frozenset[str] = frozenset({"root"})
    valid_tokens: set[str] = field(default_factory=set)
    token: str | None = None
    logins: list[str] = field(default_factory=list)
    jwts: list[str] = field(default_factory=list)
    renewals: int = 0
    calls: list[str] = field(default_factory=list)
    versions: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: dict[str, list[Exception]] = field(default_factory=dict)

    def fail_next(self, method: str, error: Exception) -> None:
        """Make the next call of ``method`` raise ``error``."""
        self.failures.setdefault(method, []).append(error)

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        pending = self.failures.get(method)
        if pending:
            raise pending.pop(0)
        if method not in {"login", "use_token"} and self.token not in self.valid_tokens:
            raise AuthError("vault", method, "permission denied", status=403)

    def _mint(self, how: str) -> tuple[Secret, TokenLease]:
        token = f"s.{how}{len(self.logins)}"
        self.logins.append(how)
        self.valid_tokens.add(token)
        return Secret(token), TokenLease(ttl=self.ttl, renewable=self.renewable)

    # -- VaultApi --------------------------------------------------------------------------------

    def read_version(self, mount: str, path: str, version: int | None = None) -> KvVersion | None:
        self._enter("read_version")
        history = self.versions.get(f"{mount}/{path}")
        if not history:
            return None
        number = version or len(history)
        if not 1 <= number <= len(history):
            return None
        return KvVersion(
            version=number,
            data=dict(history[number - 1]),
            custom_metadata=dict(self.metadata.get(f"{mount}/{path}", {})),
        )

    def write(self, mount: str, path: str, data: Mapping[str, object], *, cas: int) -> int:
        self._enter("write")
        history = self.versions.setdefault(f"{mount}/{path}", [])
        if cas != len(history):
            raise ConflictError(f"check-and-set lost: {cas} != {len(history)}")
        history.append(dict(data))
        return len(history)

    def write_custom_metadata(self, mount: str, path: str, custom: Mapping[str, str]) -> None:
        self._enter("write_custom_metadata")
        self.metadata[f"{mount}/{path}"] = dict(custom)

    def capabilities(self, paths: Sequence[str]) -> dict[str, frozenset[str]]:
        self._enter("capabilities")
        return dict.fromkeys(paths, self.capabilities_granted)

    def use_token(self, token: Secret) -> None:
        self.token = token.reveal()

    def lookup_self(self) -> TokenLease:
        self._enter("lookup_self")
        return TokenLease(ttl=self.ttl, renewable=self.renewable)

    def renew_self(self) -> TokenLease:
        self._enter("renew_self")
        self.renewals += 1
        return TokenLease(ttl=self.ttl, renewable=self.renewable)

    def login_approle(
        self, *, role_id: str, secret_id: Secret, mount: str
    ) -> tuple[Secret, TokenLease]:
        self._enter("login")
        return self._mint("approle")

    def login_kubernetes(self, *, role: str, jwt: Secret, mount: str) -> tuple[Secret, TokenLease]:
        self._enter("login")
        self.jwts.append(jwt.reveal())
        return self._mint("kubernetes")

    def revoke_all(self) -> None:
        """Every token issued so far stops working (as after a revocation)."""
        self.valid_tokens.clear()
