"""Orphans: a late key from an ambiguous create is cleaned up; targets never claim each other's."""

from __future__ import annotations

import asyncio

import pytest

from rotator.app.wiring import build_engine
from rotator.config import parse_config
from rotator.engine.steps import Outcome
from tests.support.invariants import InvariantChecker
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


async def test_late_key_of_an_ambiguous_create_is_deleted_by_recovery(
    stack: Stack, state_url: str, checker: InvariantChecker
) -> None:
    """Create outlives the client's timeout: rolled back, and the key it makes late is deleted."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    data = stack.config_dict(state_url=state_url)
    data["mistral"]["timeout"] = "1s"
    engine = await build_engine(parse_config(data, source="test"))
    try:
        stack.standin.control.hang("create_key", 2.0)  # completes the create after 2 s
        result = await engine.rotate(spec.name)
        assert result.outcome is Outcome.ROLLED_BACK
        assert result.error is not None
        assert "outcome unknown" in result.error
        await asyncio.sleep(2.5)  # the server finishes the create after the client gave up
        late = [
            k
            for k in stack.standin.control.key_facts()
            if k.name and k.name.startswith(f"{spec.prefix}-")
        ]
        assert len(late) == 1
        assert not late[0].deleted
        _, orphans = await engine.recover()
        assert [(o.key_id, o.deleted) for o in orphans] == [(late[0].key_id, True)]
        assert orphans[0].why == "late key of a rolled-back rotation"
        assert stack.standin.control.key(late[0].key_id).deleted
    finally:
        await engine.close()
    assert checker.check() == []


async def test_a_prefix_that_starts_another_targets_prefix_claims_nothing(
    stack: Stack, state_url: str
) -> None:
    """Targets `t` and `t-more` in one workspace: recover reports no orphan for either."""
    short = stack.add_target(("vault",))
    longer = stack.add_target(("vault",))
    data = stack.config_dict(state_url=state_url)
    data["targets"][0]["key_name_prefix"] = "rotator-x"
    data["targets"][1]["key_name_prefix"] = "rotator-x-more"
    for spec in (short, longer):
        stack.seed(spec)
    engine = await build_engine(parse_config(data, source="test"))
    try:
        results = await engine.rotate_many([short.name, longer.name])
        assert [r.outcome for r in results] == [Outcome.PROMOTED, Outcome.PROMOTED]
        recovered, orphans = await engine.recover(sweep_orphans=True)
        assert recovered == []
        assert orphans == []
    finally:
        await engine.close()
