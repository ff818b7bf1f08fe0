"""An interruption undone by recovery is not a backend failure: short pause, no failure alert."""

from __future__ import annotations

from rotator.engine.rotation import INTERRUPTED_BACKOFF
from rotator.engine.steps import Outcome
from tests.support.engine_fakes import BOTH, StepHookStore, Worlds, run_until_crash, worlds

__all__ = ["worlds"]


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
