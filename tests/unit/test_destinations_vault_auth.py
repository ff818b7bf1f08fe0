"""Vault authentication rules (VaultSession) against a fake of the narrow Vault seam."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.clock import FakeClock
from rotator.destinations.vault.api import VaultApi
from rotator.destinations.vault.auth import (
    AppRoleLogin,
    KubernetesLogin,
    StaticToken,
    VaultSession,
)
from rotator.errors import AuthError, PermanentError, TransientError
from rotator.secret import Secret
from tests.support.fake_vault import FakeVaultApi


def read(api: VaultApi) -> object:
    return api.read_version("secret", "mistral/x")


def approle() -> AppRoleLogin:
    return AppRoleLogin(role_id="role", secret_id=Secret("secret-id-value"))


def test_first_call_logs_in_once() -> None:
    """The first call logs in; later calls reuse the token."""
    api = FakeVaultApi()
    session = VaultSession(api, approle(), FakeClock())
    session.call(read)
    session.call(read)
    assert api.logins == ["approle"]


def test_renewable_token_is_renewed_after_two_thirds_of_its_ttl() -> None:
    """Renewal happens once 2/3 of the TTL passed, not before, and restarts the count."""
    api = FakeVaultApi(ttl=300, renewable=True)
    clock = FakeClock()
    session = VaultSession(api, approle(), clock)
    session.call(read)
    clock.advance(199)
    session.call(read)
    assert api.renewals == 0
    clock.advance(2)
    session.call(read)
    assert api.renewals == 1
    clock.advance(150)
    session.call(read)
    assert api.renewals == 1
    assert api.logins == ["approle"]


def test_failed_renewal_logs_in_again() -> None:
    """If renew-self is refused, a method that can log in does so instead."""
    api = FakeVaultApi(ttl=300, renewable=True)
    clock = FakeClock()
    session = VaultSession(api, approle(), clock)
    session.call(read)
    api.fail_next("renew_self", AuthError("vault", "renew-self", "denied", status=403))
    clock.advance(250)
    session.call(read)
    assert api.logins == ["approle", "approle"]


def test_non_renewable_token_logs_in_again_when_due() -> None:
    """A non-renewable token from AppRole is replaced by a new login after 2/3 of its TTL."""
    api = FakeVaultApi(ttl=60, renewable=False)
    clock = FakeClock()
    session = VaultSession(api, approle(), clock)
    session.call(read)
    clock.advance(41)
    session.call(read)
    assert api.logins == ["approle", "approle"]
    assert api.renewals == 0


def test_403_logs_in_again_once_and_retries() -> None:
    """A revoked token: the 403 triggers one login and the call is retried and succeeds."""
    api = FakeVaultApi()
    session = VaultSession(api, approle(), FakeClock())
    session.call(read)
    api.revoke_all()
    session.call(read)
    assert api.logins == ["approle", "approle"]


def test_second_403_after_relogin_is_raised() -> None:
    """If the retried call is refused too, the AuthError is raised (no login loop)."""
    api = FakeVaultApi()
    session = VaultSession(api, approle(), FakeClock())
    session.call(read)
    denied = AuthError("vault", "read", "permission denied", status=403)
    api.fail_next("read_version", denied)
    api.fail_next("read_version", denied)
    with pytest.raises(AuthError):
        session.call(read)
    assert api.logins == ["approle", "approle"]


def test_static_token_403_is_final() -> None:
    """A static token cannot log in again: its 403 is raised at once."""
    api = FakeVaultApi(valid_tokens={"s.static"})
    session = VaultSession(api, StaticToken(Secret("s.static")), FakeClock())
    session.call(read)
    api.revoke_all()
    with pytest.raises(AuthError):
        session.call(read)
    assert api.logins == []


def test_transient_errors_do_not_trigger_a_login() -> None:
    """Only a 403 leads to a new login; an outage is raised as it is."""
    api = FakeVaultApi()
    session = VaultSession(api, approle(), FakeClock())
    session.call(read)
    api.fail_next("read_version", TransientError("vault", "read", "server unreachable"))
    with pytest.raises(TransientError):
        session.call(read)
    assert api.logins == ["approle"]


def test_kubernetes_jwt_is_read_again_at_each_login(tmp_path: Path) -> None:
    """The service-account JWT file is re-read at every login (the kubelet rotates it)."""
    jwt = tmp_path / "token"
    jwt.write_text("jwt-one\n")
    api = FakeVaultApi()
    session = VaultSession(api, KubernetesLogin(role="rotator", jwt_path=str(jwt)), FakeClock())
    session.call(read)
    jwt.write_text("jwt-two\n")
    api.revoke_all()
    session.call(read)
    assert api.jwts == ["jwt-one", "jwt-two"]


def test_missing_kubernetes_jwt_is_a_permanent_error(tmp_path: Path) -> None:
    """An unreadable JWT file is a PermanentError naming the file, not a crash."""
    missing = tmp_path / "absent"
    session = VaultSession(
        FakeVaultApi(), KubernetesLogin(role="rotator", jwt_path=str(missing)), FakeClock()
    )
    with pytest.raises(PermanentError, match=str(missing)):
        session.call(read)
