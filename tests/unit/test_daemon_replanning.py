"""The daemon keeps every target planned whatever happens between its own runs.

Regression tests for "a routine CLI rotation silently ended a target's schedule": a scheduled fire
that found the target not due any more returned without re-planning it, so the target was never
rotated again. Each test runs a real :class:`Daemon` (see ``test_daemon_runner``) and acts on the
state database from another engine, as the CLI in another process does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rotator.clock import SystemClock
from rotator.config import Config
from rotator.engine.due import plan_fire
from rotator.engine.steps import Outcome
from rotator_dev.standin import StandinHandle
from tests.unit.test_daemon_runner import FAST, Running, World, eventually, store_of


@pytest.fixture(name="world")
async def _world(standin: StandinHandle, tmp_path: Path) -> World:
    return World(standin, tmp_path)


async def _last_rotated(world: World, name: str) -> datetime | None:
    store = await store_of(world)
    try:
        state = await store.get_target(name)
        return state.last_rotated_at if state else None
    finally:
        await store.close()


async def _cli_rotate(world: World, cfg: Config, name: str) -> Outcome:
    """``rotator rotate NAME`` as another process would run it: its own engine and store."""
    engine = await world.engine(cfg)
    try:
        return (await engine.rotate(name)).outcome
    finally:
        await engine.close()


async def _planned_from_state(world: World, cfg: Config, name: str) -> datetime:
    store = await store_of(world)
    try:
        state = await store.get_target(name)
    finally:
        await store.close()
    return plan_fire(name, cfg.target(name).policy, state, now=SystemClock().now()).fire_at


async def test_a_cli_rotation_before_a_scheduled_fire_keeps_the_schedule(world: World) -> None:
    """A CLI rotation makes the daemon's planned fire find the target not due; the daemon then
    plans the next fire from the CLI's rotation and rotates the target there by itself (before
    the fix the target was never planned again: its job was gone for good)."""
    name = world.add_target()
    cfg = world.write_config(policy={"schedule": "every 4s", "jitter": "0s", "grace": "0s"})
    run = Running(world.daemon(cfg))
    daemon = await run.ready()
    try:
        await asyncio.sleep(1.5)  # the CLI rotation lands > 1 s after the planned fire's anchor
        assert await _cli_rotate(world, cfg, name) in {Outcome.PROMOTED, Outcome.ROTATED}
        by_cli = await _last_rotated(world, name)
        assert by_cli is not None
        with capture_logs() as logs:
            await eventually(
                lambda: any(e["event"] == "rotation_not_due" for e in logs), "the stale fire", 15
            )
            not_due = [e for e in logs if e["event"] == "rotation_not_due"]
            assert not_due[0]["target"] == name
            await eventually(lambda: daemon.jobs.planned(name) is not None, "re-planned", 5)
        assert daemon.jobs.planned(name) == by_cli + timedelta(seconds=4)

        async def rotated_by_daemon() -> bool:
            last = await _last_rotated(world, name)
            return last is not None and last > by_cli

        for _ in range(400):
            if await rotated_by_daemon():
                break
            await asyncio.sleep(0.025)
        assert await rotated_by_daemon(), "the daemon never rotated the target again"
    finally:
        assert await run.stop() == 0


async def test_a_failed_run_is_planned_at_its_backoff(world: World) -> None:
    """A run that fails before a rotation starts is counted by the engine (the same bookkeeping
    as the CLI's) and the daemon plans the retry at the stored backoff, ``failure_backoff``."""
    name = world.add_target()
    cfg = world.write_config(policy={"failure_backoff": "30s", "jitter": "0s"})
    run = Running(world.daemon(cfg))
    daemon = await run.ready()
    try:
        world.memory.down = True
        daemon.request_rotation(name, emergency=False)
        await eventually(lambda: name not in daemon._tasks, "the run ended")
        store = await store_of(world)
        state = await store.get_target(name)
        await store.close()
        assert state is not None
        assert state.consecutive_failures == 1
        assert state.backoff_until is not None
        backoff = state.backoff_until
        assert timedelta(seconds=25) < backoff - SystemClock().now() <= timedelta(seconds=30)
        await eventually(lambda: daemon.jobs.planned(name) == backoff, "planned at the backoff")
        rows = await daemon.status()
        assert (rows[0].state, rows[0].next_due_at) == ("failing", backoff)
    finally:
        world.memory.down = False
        assert await run.stop() == 0


async def test_a_run_that_raises_is_still_replanned(world: World) -> None:
    """A scheduled run that dies of an unexpected exception (a bug, not a backend error) leaves
    the target, still due, planned ``retry_floor`` later, not unplanned."""
    name = world.add_target()
    cfg = world.write_config(policy={"schedule": "every 1s", "jitter": "0s"})
    world.read_error = RuntimeError("a bug in a destination")
    with capture_logs() as logs:
        run = Running(world.daemon(cfg))
        daemon = await run.ready()
        try:
            await eventually(
                lambda: any(e["event"] == "rotation_crashed" for e in logs), "the crashed run", 15
            )
            await eventually(lambda: name not in daemon._tasks, "the run ended")
            await eventually(lambda: daemon.jobs.planned(name) == daemon._floor.get(name), "floor")
            planned = daemon.jobs.planned(name)
            assert planned is not None
            assert planned - SystemClock().now() > timedelta(seconds=FAST.retry_floor - 5)
        finally:
            world.read_error = None
            assert await run.stop() == 0


async def test_what_the_cli_does_moves_the_daemons_jobs(world: World) -> None:
    """Without any run of its own, the daemon re-reads the plan from state every
    ``replan_every`` seconds: a failure recorded by a CLI rotation moves its job to the backoff,
    and the CLI's later success moves it back to the schedule."""
    name = world.add_target()
    cfg = world.write_config(policy={"failure_backoff": "2m", "jitter": "0s"})
    timings = dataclasses.replace(FAST, replan_every=0.2)
    run = Running(world.daemon(cfg, timings=timings))
    daemon = await run.ready()
    try:
        scheduled = daemon.jobs.planned(name)
        world.memory.down = True
        assert await _cli_rotate(world, cfg, name) == Outcome.ROLLED_BACK
        world.memory.down = False
        backoff = await _planned_from_state(world, cfg, name)
        assert scheduled is not None
        assert backoff < scheduled
        await eventually(lambda: daemon.jobs.planned(name) == backoff, "moved to the backoff")
        assert await _cli_rotate(world, cfg, name) in {Outcome.PROMOTED, Outcome.ROTATED}
        after = await _planned_from_state(world, cfg, name)
        assert after > backoff
        await eventually(lambda: daemon.jobs.planned(name) == after, "moved to the schedule")
    finally:
        world.memory.down = False
        assert await run.stop() == 0
