"""The registry picks a destination backend by the store's type and shares store connections."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rotator.clock import FakeClock
from rotator.destinations.aws.destination import AwsDestination
from rotator.destinations.aws.schema import AwsDestination as AwsDestinationConfig
from rotator.destinations.aws.schema import AwsSecretsManagerStore
from rotator.destinations.registry import StoreConnections, build_destination
from rotator.destinations.vault.destination import VaultDestination
from rotator.destinations.vault.schema import AppRoleAuth, TokenAuth, VaultStore
from rotator.destinations.vault.schema import VaultDestination as VaultDestinationConfig
from rotator.errors import ConfigError, TransientError
from rotator.pool import BlockingPool
from rotator.secret import Secret


@pytest.fixture
def pool() -> Iterator[BlockingPool]:
    with BlockingPool(max_workers=1) as pool:
        yield pool


def vault_store() -> VaultStore:
    return VaultStore(
        type="vault",
        url="http://127.0.0.1:1",
        auth=AppRoleAuth(method="approle", role_id="r", secret_id=Secret("secret-id-value")),
    )


def test_vault_store_builds_a_vault_destination(pool: BlockingPool) -> None:
    """type: vault yields a VaultDestination named store:mount/path#field, without any call."""
    dest = build_destination(
        vault_store(),
        VaultDestinationConfig(store="vault-main", path="mistral/prod", field="api_key"),
        pool=pool,
        clock=FakeClock(),
    )
    assert isinstance(dest, VaultDestination)
    assert dest.name == "vault-main:secret/mistral/prod#api_key"
    assert dest.data_path == "secret/data/mistral/prod"


def test_aws_store_builds_an_aws_destination(pool: BlockingPool) -> None:
    """type: aws_secrets_manager yields an AwsDestination named store:secret_id#field."""
    dest = build_destination(
        AwsSecretsManagerStore(type="aws_secrets_manager", region="eu-west-1"),
        AwsDestinationConfig(store="aws-main", secret_id="mistral/prod", field="api_key"),
        pool=pool,
        clock=FakeClock(),
    )
    assert isinstance(dest, AwsDestination)
    assert dest.name == "aws-main:mistral/prod#api_key"


def test_destinations_of_one_store_share_its_connection() -> None:
    """A store connects once however many destinations use it; another store connects anew."""
    connections = StoreConnections()
    made: list[str] = []

    def connect(name: str) -> object:
        made.append(name)
        return object()

    first = connections.get("a", lambda: connect("a"))
    assert connections.get("a", lambda: connect("a")) is first
    assert connections.get("b", lambda: connect("b")) is not first
    assert made == ["a", "b"]


def test_unknown_store_type_is_a_config_error(pool: BlockingPool) -> None:
    """A store type with no backend is a ConfigError naming the store and the known types."""

    @dataclass
    class Odd:
        type: str = "gcp_secret_manager"

    @dataclass
    class OddDestination:
        store: str = "gcp-main"

    with pytest.raises(ConfigError, match=r"stores\.gcp-main\.type: .*known: aws_secrets_manager"):
        build_destination(Odd(), OddDestination(), pool=pool, clock=FakeClock())


def test_static_token_store_builds_without_network(pool: BlockingPool) -> None:
    """Building never logs in: a Vault store on a closed port builds fine."""
    store = VaultStore(
        type="vault", url="http://127.0.0.1:1", auth=TokenAuth(method="token", token=Secret("t"))
    )
    config = VaultDestinationConfig(store="v", path="p", field="f")
    assert isinstance(
        build_destination(store, config, pool=pool, clock=FakeClock()), VaultDestination
    )


async def test_the_on_call_given_to_build_destination_hears_the_stores_calls(
    pool: BlockingPool,
) -> None:
    """The metrics hook is injected at construction: a Vault store on a closed port reports its
    first call (proving its token) to the ``on_call`` its destination was built with, as
    transient."""
    calls: list[tuple[str, str, str]] = []
    store = VaultStore(
        type="vault",
        url="http://127.0.0.1:1",
        auth=TokenAuth(method="token", token=Secret("t")),
        timeout="2s",
    )
    dest = build_destination(
        store,
        VaultDestinationConfig(store="v", path="p", field="f"),
        pool=pool,
        clock=FakeClock(),
        on_call=lambda backend, operation, status, _s: calls.append((backend, operation, status)),
    )
    with pytest.raises(TransientError):
        await dest.read_current()
    assert calls == [("vault", "lookup-self", "transient")]  # the session proves its token first
