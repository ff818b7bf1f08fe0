"""VaultDestination paths a real server cannot be made to hit on cue (fake Vault seam)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from rotator.clock import FakeClock
from rotator.contracts import OWNER
from rotator.destinations.vault.auth import StaticToken, VaultSession
from rotator.destinations.vault.destination import VaultDestination
from rotator.errors import AuthError, TransientError
from rotator.pool import BlockingPool
from rotator.secret import Secret
from tests.support.fake_vault import FakeVaultApi

OLD = "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"
NEW = "NewKeyBBBBBBBBBBBBBBBBBBBBBBBBBB"


@pytest.fixture
def pool() -> Iterator[BlockingPool]:
    with BlockingPool(max_workers=2) as pool:
        yield pool


def make(
    api: FakeVaultApi, pool: BlockingPool, *, create_missing: bool = False
) -> VaultDestination:
    api.valid_tokens.add("s.t")
    session = VaultSession(api, StaticToken(Secret("s.t")), FakeClock())
    return VaultDestination(
        session=session,
        pool=pool,
        store="v",
        mount="secret",
        path="mistral/x",
        field="api_key",
        create_missing=create_missing,
    )


async def test_retried_promote_completes_metadata_without_a_second_write(
    pool: BlockingPool,
) -> None:
    """If the process dies between the data write and the metadata stamp, promoting again
    stamps the metadata and writes no second version."""
    api = FakeVaultApi()
    api.versions["secret/mistral/x"] = [{"api_key": OLD, "other": "o"}]
    api.metadata["secret/mistral/x"] = {"team": "search"}
    dest = make(api, pool)
    base = await dest.read_current()
    staged = await dest.stage(Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k2", base=base)
    api.fail_next("write_custom_metadata", TransientError("vault", "write metadata", "down"))
    with pytest.raises(TransientError):
        await dest.promote(staged, Secret(NEW))
    assert len(api.versions["secret/mistral/x"]) == 2
    promoted = await dest.promote(staged, Secret(NEW))
    assert promoted.version == "2"
    assert len(api.versions["secret/mistral/x"]) == 2
    assert api.metadata["secret/mistral/x"] == {
        "team": "search",
        "managed-by": OWNER,
        "key_id": "k2",
        "rotation_id": staged.rotation_id,
        "fingerprint": Secret(NEW).fingerprint,
        "version": "2",
    }


async def test_roll_back_restores_the_previous_marks(pool: BlockingPool) -> None:
    """Rolling back restores the ownership marks of the previous key, pointing at the new
    version that holds it again; other metadata stays."""
    api = FakeVaultApi()
    api.versions["secret/mistral/x"] = [{"api_key": OLD}]
    previous = {"managed-by": OWNER, "key_id": "k1", "rotation_id": "r1", "fingerprint": "f"}
    api.metadata["secret/mistral/x"] = {**previous, "version": "1", "team": "search"}
    dest = make(api, pool)
    staged = await dest.stage(
        Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k2", base=await dest.read_current()
    )
    await dest.promote(staged, Secret(NEW))
    assert await dest.roll_back(staged) is True
    assert api.versions["secret/mistral/x"][-1] == {"api_key": OLD}
    assert api.metadata["secret/mistral/x"] == {**previous, "version": "3", "team": "search"}


async def test_stage_of_a_missing_secret_needs_create(pool: BlockingPool) -> None:
    """For a secret to be created, staging asks for 'create' (not 'update') on the data path."""
    api = FakeVaultApi(capabilities_granted=frozenset({"read", "update"}))
    dest = make(api, pool, create_missing=True)
    with pytest.raises(AuthError, match="lacks create on secret/data/mistral/x") as caught:
        await dest.stage(
            Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k", base=await dest.read_current()
        )
    assert "metadata" not in str(caught.value)
    assert api.versions == {}


async def test_check_access_names_each_missing_capability(pool: BlockingPool) -> None:
    """check_access fails 'write' with the capabilities lacking on each path, in one line."""
    api = FakeVaultApi(capabilities_granted=frozenset({"read"}))
    api.versions["secret/mistral/x"] = [{"api_key": OLD}]
    checks = {c.check: c for c in await make(api, pool).check_access()}
    assert checks["login"].ok
    assert checks["read"].ok
    assert not checks["write"].ok
    assert checks["write"].detail == (
        "the token lacks update on secret/data/mistral/x; update on secret/metadata/mistral/x"
    )
