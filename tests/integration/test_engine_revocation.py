"""Revocation against the real stand-in: a 404 that is not Mistral's is never taken as revoked."""

from __future__ import annotations

import pytest

from rotator.app.wiring import build_engine
from rotator.engine.steps import Outcome
from tests.support.invariants import InvariantChecker
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


async def test_delete_404_for_a_listed_key_is_refused_then_retried(
    stack: Stack, state_url: str, checker: InvariantChecker
) -> None:
    """A 404 on delete while the key is still listed (a proxy, a wrong prefix) is refused and
    kept for the next revoke-due, which revokes it for real."""
    spec = stack.add_target(("vault",))
    legacy = stack.seed(spec)
    engine = await build_engine(stack.config(state_url=state_url, policy={"grace": "1s"}))
    try:
        assert (await engine.rotate(spec.name)).outcome is Outcome.PROMOTED
        await engine.deps.clock.sleep(1.1)
        stack.standin.control.fail("delete_key", 404)
        refused = await engine.revoke_due()
        assert [(r.key_id, r.outcome) for r in refused] == [(legacy, "refused")]
        assert "still listed" in refused[0].detail
        assert not stack.standin.control.key(legacy).deleted
        revoked = await engine.revoke_due()
        assert [(r.key_id, r.outcome) for r in revoked] == [(legacy, "revoked")]
        assert stack.standin.control.key(legacy).deleted
    finally:
        await engine.close()
    assert checker.check() == []
