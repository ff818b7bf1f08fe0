"""deploy/policies/rotator-vault-policy.hcl, loaded into a real OpenBao: enough, and needed."""

from __future__ import annotations

import uuid

import hvac
import pytest

from rotator.errors import AuthError
from rotator.secret import Secret
from tests.support.harness import OpenBaoEnv, VaultHarness

pytestmark = pytest.mark.integration

OLD = "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"
NEW = "NewKeyBBBBBBBBBBBBBBBBBBBBBBBBBB"


def test_contract_suite_token_holds_only_the_shipped_policy(openbao: OpenBaoEnv) -> None:
    """The token the contract suite runs under carries the rotator policy and nothing else."""
    info = hvac.Client(url=openbao.url, token=openbao.rotator_token).auth.token.lookup_self()
    assert info["data"]["policies"] == ["rotator"]


def test_policy_grants_exactly_what_rotator_checks(openbao: OpenBaoEnv) -> None:
    """On a managed path the policy grants create/read/update on data and update on metadata."""
    client = hvac.Client(url=openbao.url, token=openbao.rotator_token)
    answer = client.sys.get_capabilities(
        paths=["secret/data/mistral/x", "secret/metadata/mistral/x", "secret/data/other/x"]
    )
    assert sorted(answer["secret/data/mistral/x"]) == ["create", "read", "update"]
    assert answer["secret/metadata/mistral/x"] == ["update"]
    assert answer["secret/data/other/x"] == ["deny"]


async def test_without_the_policy_everything_is_denied(
    openbao: OpenBaoEnv, vault: VaultHarness
) -> None:
    """A token with only Vault's default policy can neither read nor stage: AuthError, and
    check_access reports it."""
    path = vault.new_path()
    vault.seed(path, {"api_key": OLD})
    dest = vault.destination_with_token(path, openbao.default_only_token)
    with pytest.raises(AuthError, match=f"secret/data/{path}"):
        await dest.read_current()
    checks = {c.check: c for c in await dest.check_access()}
    assert checks["login"].ok
    assert not checks["read"].ok


async def test_policy_does_not_reach_outside_its_prefix(
    openbao: OpenBaoEnv, vault: VaultHarness
) -> None:
    """Under the policy, a secret outside mistral/ is refused with an AuthError naming it."""
    path = f"other/{uuid.uuid4().hex[:12]}"
    vault.seed(path, {"api_key": OLD})
    dest = vault.destination_with_token(path, openbao.rotator_token)
    with pytest.raises(AuthError, match=f"secret/data/{path}"):
        await dest.read_current()


async def test_a_full_rotation_runs_under_the_policy(vault: VaultHarness) -> None:
    """Read, stage, promote (data + metadata), read back and roll back all pass under it."""
    path = vault.new_path()
    vault.seed(path, {"api_key": OLD, "other": "kept"})
    dest = vault.destination(path)
    base = await dest.read_current()
    staged = await dest.stage(Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k", base=base)
    promoted = await dest.promote(staged, Secret(NEW))
    assert await dest.read_back(promoted.version) == Secret(NEW)
    assert await dest.roll_back(staged) is True
    assert vault.consumer_read(path) == {"api_key": OLD, "other": "kept"}
