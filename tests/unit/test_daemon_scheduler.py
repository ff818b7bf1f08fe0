"""Planning each target's next fire from state (due, jitter, backoff), and the APScheduler jobs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.clock import FakeClock
from rotator.config import Policy
from rotator.contracts import TargetState
from rotator.daemon.scheduler import JOB_DEFAULTS, FirePlan, RotationJobs, jitter_offset, plan_fire

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def policy(**fields: Any) -> Policy:
    base: dict[str, Any] = {
        "schedule": "every 30d",
        "max_age": "30d",
        "grace": "1h",
        "key_expiration": "45d",
        "jitter": "0s",
    }
    return Policy.model_validate({**base, **fields})


def state(
    *,
    last: datetime | None = None,
    first_seen: datetime | None = None,
    backoff_until: datetime | None = None,
    failures: int = 0,
) -> TargetState:
    return TargetState(
        target="t",
        current=None,
        retiring=(),
        adopted_key_id=None,
        last_rotated_at=last,
        consecutive_failures=failures,
        backoff_until=backoff_until,
        first_seen_at=first_seen,
    )


def test_never_rotated_is_due_a_schedule_period_after_first_seen() -> None:
    """A target never rotated fires at the schedule's next fire after it was first seen."""
    clock = FakeClock(START)
    plan = plan_fire("t", policy(schedule="every 20d"), state(first_seen=START), now=clock.now())
    assert plan == FirePlan("t", START + 20 * DAY, START + 20 * DAY, "schedule")


def test_never_rotated_is_due_at_max_age_after_first_seen_at_the_latest() -> None:
    """max_age holds for a key rotator never rotated too: counted from its first sighting (the
    key is at least that old), whatever the schedule says; the ceiling gets no jitter."""
    seen = state(first_seen=START)
    plan = plan_fire("t", policy(schedule="every 365d", jitter="1h"), seen, now=START)
    assert plan == FirePlan("t", START + 30 * DAY, START + 30 * DAY, "max_age")


def test_restarts_never_postpone_a_never_rotated_target() -> None:
    """Planning again later (a restart every day) gives the same fire, not a later one."""
    clock = FakeClock(START)
    seen = state(first_seen=START)
    first = plan_fire("t", policy(jitter="5m"), seen, now=clock.now())
    for _ in range(40):
        clock.advance(DAY.total_seconds())
        assert plan_fire("t", policy(jitter="5m"), seen, now=clock.now()) == first
    assert first.fire_at < clock.now()  # 40 days later: a missed fire, due at once


def test_unknown_target_is_anchored_now() -> None:
    """Without a stored row (not registered yet) the anchor is now."""
    plan = plan_fire("t", policy(), None, now=START)
    assert plan.due_at == START + 30 * DAY


def test_rotated_target_due_at_schedule_or_max_age_whichever_first() -> None:
    """Due = min(schedule's next fire after the last rotation, last rotation + max_age)."""
    last = START
    weekly = plan_fire("t", policy(schedule="every 7d"), state(last=last), now=START)
    assert (weekly.due_at, weekly.reason) == (last + 7 * DAY, "schedule")
    ceiling = plan_fire("t", policy(schedule="every 60d"), state(last=last), now=START)
    assert (ceiling.due_at, ceiling.fire_at, ceiling.reason) == (
        last + 30 * DAY,
        last + 30 * DAY,
        "max_age",
    )


def test_cron_schedule_fires_at_its_next_match() -> None:
    """A cron schedule (Mondays 03:00 UTC) is due at its next match after the last rotation."""
    last = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday
    plan = plan_fire("t", policy(schedule="0 3 * * 1"), state(last=last), now=last)
    assert plan.due_at == datetime(2026, 3, 9, 3, 0, tzinfo=UTC)


def test_missed_fire_is_due_in_the_past() -> None:
    """A daemon down past the due time plans a fire in the past: the job runs at start."""
    last = START - 31 * DAY
    plan = plan_fire("t", policy(), state(last=last), now=START)
    assert plan.fire_at == last + 30 * DAY < START


def test_jitter_is_bounded_deterministic_and_spreads_targets() -> None:
    """Jitter lies in [0, jitter), is the same for the same target and due time, and differs
    across targets sharing a schedule."""
    jitter = timedelta(minutes=5)
    offsets = [jitter_offset(f"t-{i}", START, jitter) for i in range(200)]
    assert all(timedelta(0) <= o < jitter for o in offsets)
    assert offsets == [jitter_offset(f"t-{i}", START, jitter) for i in range(200)]
    assert len(set(offsets)) > 190
    assert max(offsets) - min(offsets) > jitter / 2
    assert jitter_offset("t-0", START, timedelta(0)) == timedelta(0)


def test_jitter_delays_scheduled_fires_but_never_past_max_age() -> None:
    """A scheduled fire gets its jitter; a fire at the compliance ceiling gets none."""
    p = policy(schedule="every 7d", jitter="1h")
    plan = plan_fire("t-jitter", p, state(last=START), now=START)
    assert plan.fire_at == plan.due_at + jitter_offset("t-jitter", plan.due_at, timedelta(hours=1))
    assert plan.fire_at > plan.due_at
    near = policy(schedule="every 30d", max_age="30d", jitter="1h")
    # every 30d and max_age 30d coincide: the ceiling wins, no jitter past it
    assert plan_fire("t-jitter", near, state(last=START), now=START).fire_at == START + 30 * DAY


def test_backoff_after_failures_pushes_the_fire() -> None:
    """After a failure the next attempt waits for the stored backoff (it wins over due)."""
    last = START - 31 * DAY  # overdue
    backoff = START + timedelta(hours=2)
    plan = plan_fire("t", policy(), state(last=last, backoff_until=backoff, failures=2), now=START)
    assert (plan.fire_at, plan.reason) == (backoff, "backoff")
    expired = plan_fire(
        "t", policy(), state(last=last, backoff_until=START - DAY, failures=1), now=START
    )
    assert (expired.fire_at, expired.reason) == (last + 30 * DAY, "max_age")


def test_failed_attempt_is_retried_when_its_backoff_ends_not_at_the_next_fire() -> None:
    """A rotation that failed (e.g. an on-demand one, days before the schedule) is retried when
    its backoff ends, instead of waiting for the next scheduled fire."""
    last = START - DAY  # due again in 29 days
    backoff = START + timedelta(hours=1)
    plan = plan_fire("t", policy(), state(last=last, backoff_until=backoff, failures=1), now=START)
    assert (plan.fire_at, plan.reason) == (backoff, "retry")
    healthy = plan_fire("t", policy(), state(last=last), now=START)
    assert healthy.fire_at == last + 30 * DAY


def test_daemon_floor_applies_like_a_backoff() -> None:
    """The daemon's own not_before floor (a failure it could not record) delays the fire."""
    floor = START + timedelta(minutes=1)
    plan = plan_fire("t", policy(), state(last=START - 31 * DAY), now=START, not_before=floor)
    assert (plan.fire_at, plan.reason) == (floor, "backoff")


def test_job_defaults_run_late_once() -> None:
    """Jobs run late rather than skip, coalesce missed runs and never overlap."""
    assert JOB_DEFAULTS == {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}


async def test_past_fire_runs_at_once_and_replan_replaces_the_job() -> None:
    """A job planned in the past runs as soon as the scheduler starts; re-planning a target
    replaces its one job instead of adding another."""
    fired: list[str] = []
    done = asyncio.Event()

    async def fire(name: str) -> None:
        fired.append(name)
        done.set()

    jobs = RotationJobs(fire)
    now = datetime.now(UTC)
    jobs.start()
    try:
        jobs.plan(FirePlan("later", now, now + 365 * DAY, "schedule"))
        jobs.plan(FirePlan("later", now, now + 200 * DAY, "schedule"))
        assert jobs.targets() == ["later"]
        assert jobs.planned("later") == now + 200 * DAY
        jobs.plan(FirePlan("missed", now - DAY, now - DAY, "max_age"))
        await asyncio.wait_for(done.wait(), 10)
        assert fired == ["missed"]
        assert jobs.planned("missed") is None  # a date job is gone once it ran
        jobs.drop("later")
        assert jobs.targets() == []
    finally:
        jobs.shutdown()


async def test_paused_jobs_do_not_fire_until_resumed() -> None:
    """While paused (SIGTERM, reload) a due job waits; on resume it runs."""
    done = asyncio.Event()

    async def fire(_name: str) -> None:
        done.set()

    jobs = RotationJobs(fire)
    jobs.start()
    try:
        jobs.pause()
        now = datetime.now(UTC)
        jobs.plan(FirePlan("t", now - DAY, now - DAY, "max_age"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not done.is_set()
        assert jobs.planned("t") is not None
        jobs.resume()
        await asyncio.wait_for(done.wait(), 10)
    finally:
        jobs.shutdown()
