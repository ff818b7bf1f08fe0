"""``Engine.status``: the state of each target, when it is next due, whether it is compliant and
when its old key goes, all computed from the state store."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rotator.engine.engine import Engine, TargetStatus
from rotator.engine.steps import Outcome
from tests.support.engine_fakes import (
    BOTH,
    START,
    Crash,
    StepHookStore,
    Worlds,
    run_until_crash,
)

ADOPT = {"adopt_existing": True}
NEXT_MONDAY_3AM = datetime.fromisoformat("2026-03-09T03:00:00+00:00")  # START is a Monday 10:00


async def _status(engine: Engine) -> TargetStatus:
    rows = await engine.status()
    assert len(rows) == 1
    return rows[0]


async def test_never_rotated_target_is_idle_not_compliant_and_due_at_the_next_fire(
    worlds: Worlds,
) -> None:
    """Before any rotation: idle, no key, not compliant, due at the schedule's next fire."""
    world = worlds(BOTH, policy={"schedule": "0 3 * * 1", "max_age": "30d"})
    engine = await world.engine()
    row = await _status(engine)
    assert (row.state, row.key_id, row.last_rotated_at) == ("idle", None, None)
    assert row.next_due_at == NEXT_MONDAY_3AM
    assert row.compliant is False
    assert row.reason == "never rotated by rotator"
    assert row.revoke_due_at is None


@pytest.mark.parametrize(
    ("schedule", "max_age", "due"),
    [
        ("0 3 * * 1", "30d", NEXT_MONDAY_3AM),  # the cron fires first
        ("every 30d", "10d", START + timedelta(days=10)),  # the compliance ceiling comes first
        ("every 7d", "30d", START + timedelta(days=7)),
    ],
)
async def test_next_due_is_the_earlier_of_next_fire_and_last_rotation_plus_max_age(
    worlds: Worlds, schedule: str, max_age: str, due: datetime
) -> None:
    """next_due = min(schedule's next fire after the last rotation, last rotation + max_age)."""
    world = worlds(BOTH, policy={"schedule": schedule, "max_age": max_age}, options=ADOPT)
    world.seed("t1")
    engine = await world.engine()
    result = await engine.rotate("t1")
    world.clock.advance(60)
    row = await _status(engine)
    assert row.last_rotated_at == START
    assert row.key_id == result.new_key_id
    assert row.next_due_at == due
    assert row.compliant is True


async def test_status_follows_the_life_of_a_target(worlds: Worlds) -> None:
    """idle → rotating (an open rotation) → draining (old key pending) → idle → failing → stuck,
    with revoke_due_at and compliance at each point."""
    world = worlds(BOTH, policy={"grace": "1h", "max_age": "10d"}, options=ADOPT)
    world.seed("t1")

    def crash(_n: int, step: str) -> None:
        if step == "verified":
            raise Crash(step)

    crashing = await world.engine(wrap=lambda s: StepHookStore(s, after=crash).as_store())
    assert await run_until_crash(crashing.rotate("t1")) is not None
    engine = await world.engine()
    row = await _status(engine)
    assert row.state == "rotating"
    assert row.reason.endswith("at verified")

    await engine.recover()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.PROMOTED
    row = await _status(engine)
    assert (row.state, row.compliant) == ("draining", True)
    assert row.revoke_due_at == START + timedelta(hours=1)

    world.clock.advance(3600)
    await engine.revoke_due()
    row = await _status(engine)
    assert (row.state, row.revoke_due_at, row.reason) == ("idle", None, "")

    world.clock.advance(10 * 86400)
    row = await _status(engine)
    assert (row.state, row.compliant, row.reason) == ("idle", False, "older than max_age")

    world.verifier.failing = True
    assert (await engine.rotate("t1")).outcome is Outcome.ROLLED_BACK
    row = await _status(engine)
    assert (row.state, row.reason) == ("failing", "1 failed attempts")
    assert row.key_id == result.new_key_id  # the served key did not change
    world.verifier.failing = False

    stuck = await world.engine(
        wrap=lambda s: StepHookStore(s, after=world.deny_at("promoting", "vault")).as_store()
    )
    assert (await stuck.rotate("t1")).outcome is Outcome.STUCK
    row = await _status(engine)
    assert row.state == "stuck"
    assert "permission denied" in row.reason


async def test_status_as_dict_uses_utc_z_timestamps(worlds: Worlds) -> None:
    """The JSON form (``status --json``) carries docs/cli.md's fields with ``Z`` timestamps."""
    world = worlds(BOTH, policy={"schedule": "every 30d", "max_age": "10d"}, options=ADOPT)
    world.seed("t1")
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert (await _status(engine)).as_dict() == {
        "target": "t1",
        "state": "draining",
        "key_id": result.new_key_id,
        "last_rotated_at": "2026-03-02T10:00:00Z",
        "next_due_at": "2026-03-12T10:00:00Z",
        "revoke_due_at": "2026-03-02T11:00:00Z",
        "compliant": True,
        "reason": "1 old key pending revocation",
    }
