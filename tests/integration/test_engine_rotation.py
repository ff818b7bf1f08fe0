"""The engine against the real stand-in, OpenBao and moto: whole rotations, as operators do."""

from __future__ import annotations

import pytest

from rotator.app.wiring import build_engine
from rotator.engine.steps import Outcome
from tests.support.invariants import InvariantChecker
from tests.support.stack import BACKEND_SETS, Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backends", sorted(BACKEND_SETS))
async def test_first_rotation_adopts_and_second_revokes_after_grace(
    stack: Stack, state_url: str, checker: InvariantChecker, backends: str
) -> None:
    """A seeded target is adopted, rotated (old key kept for the grace), then revoked when due."""
    spec = stack.add_target(BACKEND_SETS[backends])
    legacy = stack.seed(spec)
    engine = await build_engine(stack.config(state_url=state_url, policy={"grace": "1s"}))
    try:
        first = await engine.rotate(spec.name)
        assert first.outcome is Outcome.PROMOTED, first.error
        assert checker.check() == []
        assert stack.standin.control.key(legacy).deleted is False
        await engine.deps.clock.sleep(1.1)
        revoked = await engine.revoke_due()
        assert [(r.key_id, r.outcome) for r in revoked] == [(legacy, "revoked")]
        assert stack.standin.control.key(legacy).deleted is True
        second = await engine.rotate(spec.name, emergency=True)
        assert second.outcome is Outcome.ROTATED
        assert second.revoked_key_ids == (first.new_key_id,)
    finally:
        await engine.close()
    assert checker.check() == []


async def test_verification_failure_rolls_back_and_changes_nothing(
    stack: Stack, state_url: str, checker: InvariantChecker
) -> None:
    """Billing inactive: the new key never verifies, so it is deleted and nothing is written."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    before = dict(stack.consumer_reads(spec))
    stack.standin.control.set_billing_active(False)
    engine = await build_engine(
        stack.config(state_url=state_url, policy={"activation_timeout": "1s"})
    )
    try:
        result = await engine.rotate(spec.name)
    finally:
        await engine.close()
        stack.standin.control.set_billing_active(True)
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.error is not None
    assert "payment_required" in result.error
    assert stack.standin.control.key(result.new_key_id or "").deleted
    assert dict(stack.consumer_reads(spec)) == before
    assert checker.check() == []
