"""Vault/OpenBao auth on a real server: AppRole, re-login, renewal, TLS and namespaces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import hvac
import pytest
from structlog.testing import capture_logs

from rotator.clock import FakeClock, SystemClock
from rotator.destinations.registry import StoreConnections, build_destination
from rotator.destinations.vault.api import HvacApi
from rotator.destinations.vault.auth import AppRoleLogin, StaticToken, VaultSession
from rotator.destinations.vault.destination import VaultDestination
from rotator.destinations.vault.schema import AppRoleAuth, TokenAuth, VaultStore
from rotator.destinations.vault.schema import VaultDestination as VaultDestinationConfig
from rotator.errors import AuthError, PermanentError
from rotator.pool import BlockingPool
from rotator.secret import Secret
from tests.support.harness import OpenBaoEnv, VaultHarness
from tests.support.servers import ROOT_TOKEN, ServerProcess, openbao_ca, start_openbao

pytestmark = pytest.mark.integration

OLD = "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"
NEW = "NewKeyBBBBBBBBBBBBBBBBBBBBBBBBBB"


def destination(session: VaultSession, pool: BlockingPool, path: str) -> VaultDestination:
    return VaultDestination(
        session=session, pool=pool, store="bao", mount="secret", path=path, field="api_key"
    )


async def test_approle_login_rotates_through_the_registry(
    openbao: OpenBaoEnv, vault: VaultHarness, blocking_pool: BlockingPool
) -> None:
    """An AppRole store from config logs in against OpenBao and completes a rotation."""
    path = vault.new_path()
    vault.seed(path, {"api_key": OLD})
    store = VaultStore(
        type="vault",
        url=openbao.url,
        auth=AppRoleAuth(
            method="approle", role_id=openbao.role_id, secret_id=Secret(openbao.secret_id)
        ),
        timeout=timedelta(seconds=5),
    )
    dest = build_destination(
        store,
        VaultDestinationConfig(store="bao", path=path, field="api_key"),
        pool=blocking_pool,
        clock=SystemClock(),
        connections=StoreConnections(),
    )
    checks = {c.check: c for c in await dest.check_access()}
    assert checks["login"].ok
    assert "approle" in checks["login"].detail
    base = await dest.read_current()
    staged = await dest.stage(Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k", base=base)
    await dest.promote(staged, Secret(NEW))
    assert vault.consumer_read(path) == {"api_key": NEW}


async def test_wrong_approle_secret_id_is_an_auth_error(
    openbao: OpenBaoEnv, vault: VaultHarness, blocking_pool: BlockingPool
) -> None:
    """A refused AppRole login is a permanent AuthError without the secret_id in it."""
    bogus = str(uuid.uuid4())
    login = AppRoleLogin(role_id=openbao.role_id, secret_id=Secret(bogus))
    session = VaultSession(HvacApi.connect(openbao.url, timeout=5), login, SystemClock())
    with pytest.raises(AuthError) as caught:
        await destination(session, blocking_pool, vault.new_path()).read_current()
    assert bogus not in str(caught.value)


async def test_revoked_approle_token_logs_in_again_once(
    openbao: OpenBaoEnv, vault: VaultHarness, blocking_pool: BlockingPool
) -> None:
    """When the token is revoked behind rotator's back, the 403 triggers one new AppRole login
    and the call succeeds."""
    path = vault.new_path()
    vault.seed(path, {"api_key": OLD})
    client = hvac.Client(url=openbao.url, timeout=5)
    login = AppRoleLogin(role_id=openbao.role_id, secret_id=Secret(openbao.secret_id))
    dest = destination(VaultSession(HvacApi(client), login, SystemClock()), blocking_pool, path)
    await dest.read_current()
    first_token = client.token
    openbao.root().auth.token.revoke(first_token)
    with capture_logs() as logs:
        assert (await dest.read_current()).secret == Secret(OLD)
    assert [e["event"] for e in logs if e["event"] == "vault_relogin"] == ["vault_relogin"]
    assert client.token != first_token


async def test_revoked_static_token_is_final(
    openbao: OpenBaoEnv, vault: VaultHarness, blocking_pool: BlockingPool
) -> None:
    """A static token cannot log in again: once revoked, calls fail with AuthError."""
    root = openbao.root()
    token = root.auth.token.create(policies=["rotator"], no_default_policy=True)["auth"][
        "client_token"
    ]
    path = vault.new_path()
    vault.seed(path, {"api_key": OLD})
    dest = vault.destination_with_token(path, token)
    await dest.read_current()
    root.auth.token.revoke(token)
    with pytest.raises(AuthError):
        await dest.read_current()


async def test_unknown_token_is_reported_as_invalid_not_only_as_a_missing_permission(
    vault: VaultHarness,
) -> None:
    """OpenBao answers an unknown token with 403 "permission denied" on lookup-self, so the
    check's login line says the token is invalid or expired, or lacks read there."""
    dest = vault.destination_with_token(vault.new_path(), "s.UnknownTokenAAAAAAAAAAAAAAAA")
    checks = await dest.check_access()
    assert [(c.check, c.ok) for c in checks] == [("login", False)]
    assert checks[0].detail == (
        "token: vault lookup-self auth/token/lookup-self: token invalid or expired, or lacks"
        " read on auth/token/lookup-self (HTTP 403)"
    )


async def test_token_is_renewed_after_two_thirds_of_its_ttl(
    openbao: OpenBaoEnv, vault: VaultHarness, blocking_pool: BlockingPool
) -> None:
    """A renewable token is renewed (renew-self) once two thirds of its TTL have passed."""
    root = openbao.root()
    token = root.auth.token.create(
        policies=["rotator"], no_default_policy=True, ttl="1h", renewable=True
    )["auth"]["client_token"]
    clock = FakeClock()
    session = VaultSession(
        HvacApi.connect(openbao.url, timeout=5), StaticToken(Secret(token)), clock
    )
    path = vault.new_path()
    vault.seed(path, {"api_key": OLD})
    dest = destination(session, blocking_pool, path)
    with capture_logs() as logs:
        await dest.read_current()
        clock.advance(1000)
        await dest.read_current()
        clock.advance(1500)
        await dest.read_current()
    events = [e["event"] for e in logs if e["event"].startswith("vault_")]
    assert events == ["vault_login", "vault_token_renewed"]


@pytest.fixture(scope="module")
def tls_openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """A second OpenBao dev server speaking HTTPS with its own generated CA."""
    workdir = tmp_path_factory.mktemp("openbao-tls")
    server = start_openbao(workdir, tls=True)
    try:
        yield server, openbao_ca(workdir)
    finally:
        server.stop()


def tls_store(url: str, *, ca_cert: Path | None = None, verify: bool = True) -> VaultStore:
    return VaultStore(
        type="vault",
        url=url,
        auth=TokenAuth(method="token", token=Secret(ROOT_TOKEN)),
        ca_cert=ca_cert,
        verify=verify,
        timeout=timedelta(seconds=5),
    )


async def test_tls_with_the_ca_bundle_works_and_without_it_fails(
    tls_openbao: tuple[ServerProcess, Path], blocking_pool: BlockingPool
) -> None:
    """ca_cert makes TLS verification pass; without it the unknown CA is a permanent error."""
    server, ca = tls_openbao
    config = VaultDestinationConfig(store="tls", path="mistral/tls", field="api_key")

    def build(store: VaultStore) -> VaultDestination:
        dest = build_destination(
            store, config, pool=blocking_pool, clock=SystemClock(), connections=StoreConnections()
        )
        assert isinstance(dest, VaultDestination)
        return dest

    assert (await build(tls_store(server.url, ca_cert=ca)).read_current()).exists is False
    with pytest.raises(PermanentError, match="TLS verification failed"):
        await build(tls_store(server.url)).read_current()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
async def test_tls_verify_false_skips_verification(
    tls_openbao: tuple[ServerProcess, Path], blocking_pool: BlockingPool
) -> None:
    """verify: false connects to a server whose CA is unknown (for labs only)."""
    server, _ = tls_openbao
    dest = build_destination(
        tls_store(server.url, verify=False),
        VaultDestinationConfig(store="tls", path="mistral/tls", field="api_key"),
        pool=blocking_pool,
        clock=SystemClock(),
        connections=StoreConnections(),
    )
    assert (await dest.read_current()).exists is False


async def test_namespace_is_sent_with_every_call(
    openbao: OpenBaoEnv, blocking_pool: BlockingPool
) -> None:
    """With a namespace, reads and writes land in that namespace's KV mount, not the root's."""
    name = f"team{uuid.uuid4().hex[:8]}"
    root = openbao.root()
    root.adapter.post(f"/v1/sys/namespaces/{name}")
    scoped = hvac.Client(url=openbao.url, token=ROOT_TOKEN, namespace=name)
    scoped.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    scoped.secrets.kv.v2.create_or_update_secret(
        path="mistral/ns", secret={"api_key": OLD}, mount_point="secret"
    )
    store = VaultStore(
        type="vault",
        url=openbao.url,
        namespace=name,
        auth=TokenAuth(method="token", token=Secret(ROOT_TOKEN)),
        timeout=timedelta(seconds=5),
    )
    dest = build_destination(
        store,
        VaultDestinationConfig(store="ns", path="mistral/ns", field="api_key"),
        pool=blocking_pool,
        clock=SystemClock(),
        connections=StoreConnections(),
    )
    assert (await dest.read_current()).secret == Secret(OLD)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.read_secret_version(
            path="mistral/ns", mount_point="secret", raise_on_deleted_version=True
        )
