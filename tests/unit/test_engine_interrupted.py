"""An interruption undone by recovery is not a backend failure: short pause, no failure alert."""

from __future__ import annotations

import pytest
import structlog

from rotator.contracts import StateStore
from rotator.engine.rotation import INTERRUPTED_BACKOFF
from rotator.engine.steps import Outcome
from tests.support.engine_fakes import BOTH, StepHookStore, Worlds, gone, run_until_crash


async def test_recovered_interruption_pauses_briefly_and_alerts_nobody(worlds: Worlds) -> None:
    """A rotation killed before promotion is rolled back by recovery with a one-minute backoff
    (not the hour-long failure backoff) and no `rotation_failed` alert."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    crashing = await world.engine(
        wrap=lambda s: StepHookStore.crashing_at(s, 4, "after").as_store()
    )
    assert await run_until_crash(crashing.rotate("t1")) is not None
    fresh = await world.engine()
    results, _ = await fresh.recover()
    assert [r.outcome for r in results] == [Outcome.ROLLED_BACK]
    state = await fresh.deps.store.get_target("t1")
    assert state is not None
    assert state.backoff_until == world.clock.now() + INTERRUPTED_BACKOFF
    assert "rotation_failed" not in world.alert_events()


async def test_a_lost_leadership_stops_the_rotation_at_a_journaled_point(worlds: Worlds) -> None:
    """`before_step` raising (the daemon lost its lease) stops the rotation before the next
    step's side effect: nothing more is written, and recovery finishes the job."""
    from rotator.errors import LeadershipLost

    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")
    engine = await world.engine()
    calls = 0

    async def lose_after_two() -> None:  # before the third write: announcing the promotions
        nonlocal calls
        calls += 1
        if calls > 2:
            raise LeadershipLost("lease lost")

    engine.deps.before_step = lose_after_two
    with pytest.raises(LeadershipLost):
        await engine.rotate("t1")
    assert set(world.served("t1").values()) == {legacy.plaintext}
    fresh = await world.engine()
    results, _ = await fresh.recover()
    assert [r.outcome for r in results] == [Outcome.ROLLED_BACK]
    assert set(world.served("t1").values()) == {legacy.plaintext}
    assert all(gone(k) for k in world.issuer.named("rotator-t1-"))


async def test_one_targets_unexpected_error_does_not_sink_the_others(worlds: Worlds) -> None:
    """rotate_many: a target whose store write fails unexpectedly gets its own `stuck` row
    (its rotation is left open for recover); the other target still rotates."""
    world = worlds(BOTH, BOTH, options={"adopt_existing": True})
    world.seed("t1")
    world.seed("t2")

    def boom(n: int, step: str) -> None:
        # The engine binds the target in the rotation task's context.
        if step == "staged" and structlog.contextvars.get_contextvars().get("target") == "t1":
            raise ValueError("unexpected store failure")

    def failing_for_t1(store: StateStore) -> StateStore:
        return StepHookStore(store, before=boom).as_store()

    engine = await world.engine(wrap=failing_for_t1)
    results = await engine.rotate_many(["t1", "t2"])
    assert [r.target for r in results] == ["t1", "t2"]
    assert results[0].outcome is Outcome.STUCK
    assert results[0].error is not None
    assert "run rotator recover" in results[0].error
    assert results[1].outcome is Outcome.PROMOTED
