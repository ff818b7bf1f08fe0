"""Check-and-set on a real OpenBao: a writer racing between rotator's read and write loses
nothing. The race is injected at the narrow seam (a write that lets the racer go first)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

import hvac
import pytest

from rotator.clock import SystemClock
from rotator.destinations.vault.api import HvacApi
from rotator.destinations.vault.auth import StaticToken, VaultSession
from rotator.destinations.vault.destination import VaultDestination
from rotator.errors import ConflictError
from rotator.pool import BlockingPool
from rotator.secret import Secret
from tests.support.harness import OpenBaoEnv, VaultHarness

pytestmark = pytest.mark.integration

OLD = "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"
NEW = "NewKeyBBBBBBBBBBBBBBBBBBBBBBBBBB"
RACER = "RacerCCCCCCCCCCCCCCCCCCCCCCCCCCC"


class RacingApi(HvacApi):
    """HvacApi whose next data write is preceded by someone else's write."""

    def __init__(self, client: hvac.Client, race: Callable[[], None]) -> None:
        super().__init__(client)
        self._race: Callable[[], None] | None = race

    def write(self, mount: str, path: str, data: Mapping[str, object], *, cas: int) -> int:
        if self._race is not None:
            race, self._race = self._race, None
            race()
        return super().write(mount, path, data, cas=cas)


async def test_writer_racing_the_promotion_write_is_not_clobbered(
    openbao: OpenBaoEnv, vault: VaultHarness, blocking_pool: BlockingPool
) -> None:
    """A write landing between the plan's read and promote's write (promote writes over the
    version the plan read, without reading it again) makes the CAS fail: ConflictError naming
    the other writer, and consumers keep the racer's value."""
    path = vault.new_path()
    vault.seed(path, {"api_key": OLD})
    client = hvac.Client(url=openbao.url, timeout=5)
    api = RacingApi(client, lambda: vault.seed(path, {"api_key": RACER}))
    dest = VaultDestination(
        session=VaultSession(api, StaticToken(Secret(openbao.rotator_token)), SystemClock()),
        pool=blocking_pool,
        store="bao",
        mount="secret",
        path=path,
        field="api_key",
    )
    base = await dest.read_current()
    staged = await dest.stage(Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k", base=base)
    with pytest.raises(ConflictError, match="someone else wrote it"):
        await dest.promote(staged, Secret(NEW))
    assert vault.consumer_read(path) == {"api_key": RACER}
