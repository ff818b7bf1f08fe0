"""The planner: the one place the daemon's jobs are placed and its runs start and end.

:class:`Planner` owns the jobs (:mod:`rotator.daemon.scheduler`), the runs in flight, the
on-demand requests and each target's retry floor. It computes every target's next fire from the
state store (:func:`rotator.engine.due.plan_fire`) after every run, whatever way the run ended
(success, failure, not due, skipped, an exception), and every ``replan_every`` seconds, so
rotations, failures and recoveries done by another process (the CLI) move the daemon's jobs as
well. A failed run leaves its backoff in the store (the engine records every failed attempt); a
target still due right after a run waits ``retry_floor`` seconds, so nothing spins.

Each run, scheduled or on demand, is a task of the planner's own (never an APScheduler coroutine
job, which ``shutdown`` would cancel), started by :meth:`Planner._launch` and ended by
:meth:`Planner._run_then_replan`, the only way out of a run: no path leaves a target unplanned.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

import structlog

from rotator.contracts import TargetState
from rotator.daemon.control import RateLimitedError, RotationInFlightError
from rotator.daemon.scheduler import Fire, FirePlan, Jobs, plan_fire
from rotator.daemon.shared import Shared, wait_event
from rotator.engine.engine import Engine, TargetStatus
from rotator.engine.rotation import RotationResult
from rotator.engine.steps import Outcome
from rotator.errors import LeadershipLost
from rotator.logs import scrub
from rotator.render import iso

log = structlog.get_logger(__name__)

EARLY_FIRE_S = 1.0
"""How far ahead of its plan a scheduled fire waits instead of being dropped as not due."""

_FAILED = frozenset({Outcome.ROLLED_BACK, Outcome.STUCK})
_PROMOTED = frozenset({Outcome.ROTATED, Outcome.PROMOTED})
_KEEP_REQUESTS = 1000
"""How many on-demand rotation ids the daemon remembers before they reach the store."""


@dataclass
class _Request:
    """A rotation the daemon started, until the state store knows it (or if it never does)."""

    target: str
    state: str = "queued"
    result: RotationResult | None = None


class Planner:
    """The daemon's jobs and runs (see the module docstring); ``jobs_factory`` builds the jobs
    from the planner's fire callback."""

    def __init__(self, shared: Shared, jobs_factory: Callable[[Fire], Jobs]) -> None:
        self._shared = shared
        self.jobs: Jobs = jobs_factory(self._fire)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # queued or running, by target
        self._running: set[asyncio.Task[None]] = set()  # past the reload gate
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._last_on_demand: dict[str, float] = {}
        self._floor: dict[str, datetime] = {}
        self._ran: set[str] = set()  # targets whose run ended since the planner last looked
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self.in_flight: Mapping[str, asyncio.Task[None]] = MappingProxyType(self._tasks)
        """The runs queued or running, by target (read-only)."""
        self.floor: Mapping[str, datetime] = MappingProxyType(self._floor)
        """Per target, the earliest its next run may start (read-only)."""

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The planner's loop, None until started."""
        return self._loop

    def start(self) -> None:
        """Start re-planning every ``replan_every`` seconds and after every run."""
        self._loop = asyncio.create_task(self._planner_loop())

    async def wait_runs_or_stop(self) -> None:
        """Wait until no rotation runs (those queued behind the reload gate wait for it)."""
        shared = self._shared
        stop = asyncio.create_task(shared.stop.wait())
        try:
            while (running := set(self._running)) and not shared.stop.is_set():
                await asyncio.wait(running | {stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    # -- on demand -------------------------------------------------------------------------------

    def request_rotation(self, target: str, *, emergency: bool) -> str:
        """Start a rotation of a configured ``target``; its rotation id (see
        :meth:`rotator.daemon.control.DaemonControl.request_rotation` for what it raises)."""
        shared = self._shared
        if shared.stop.is_set():
            raise PermissionError("the daemon is shutting down")
        engine, elector = shared.engine, shared.elector
        if engine is None or elector is None or not elector.is_leader:
            raise PermissionError("this instance is not the leader")
        if target in self._tasks or (target in engine.contexts and engine.busy(target)):
            raise RotationInFlightError(target)
        now = shared.clock.monotonic()
        last = self._last_on_demand.get(target)
        interval = shared.timings.on_demand_interval
        if not emergency and last is not None and now - last < interval:
            raise RateLimitedError(interval - (now - last))
        self._last_on_demand[target] = now
        rotation_id = str(uuid.uuid4())
        self._launch(target, rotation_id, emergency=emergency, origin="api")
        return rotation_id

    async def rotation_view(self, rotation_id: str) -> dict[str, object] | None:
        """See :meth:`rotator.daemon.control.DaemonControl.rotation_view`: from the store, else
        from what this daemon remembers of the rotations it started."""
        engine = self._shared.current_engine()
        rotation = await engine.get_rotation(rotation_id)
        if rotation is not None:
            steps = await engine.journal(rotation_id)
            return {
                "rotation_id": rotation.rotation_id,
                "target": rotation.target,
                "state": rotation.state,
                "outcome": rotation.outcome,
                "steps": [{"step": s.step, "at": iso(s.at)} for s in steps],
                "error": rotation.error,
                "started_at": iso(rotation.started_at),
                "finished_at": iso(rotation.finished_at),
            }
        request = self._requests.get(rotation_id)
        if request is None:
            return None
        state, outcome, error = request.state, None, None
        if request.result is not None:  # over, and never started in the store
            state, outcome = "rolled_back", str(request.result.outcome)
            error = request.result.error
        return {
            "rotation_id": rotation_id,
            "target": request.target,
            "state": state,
            "outcome": outcome,
            "steps": [],
            "error": error,
            "started_at": None,
            "finished_at": None,
        }

    async def status(self) -> tuple[list[TargetStatus], list[TargetState]]:
        """Status rows whose ``next_due_at`` is when this daemon will fire, and the states."""
        engine = self._shared.current_engine()
        states = await engine.list_targets()
        rows = await engine.status(states)
        by_name = {s.target: s for s in states}
        planned = [  # the engine's plan, and this daemon's floor where it has one
            dataclasses.replace(
                row, next_due_at=self._plan_of(engine, row.target, by_name.get(row.target)).fire_at
            )
            if row.target in self._floor
            else row
            for row in rows
        ]
        return planned, states

    # -- planning --------------------------------------------------------------------------------

    async def plan_all(self) -> None:
        """Register every target (its first-seen anchor) and place every job afresh."""
        engine = self._shared.current_engine()
        self.jobs.clear()
        for target in self._shared.cfg.targets:
            await engine.register_target(target.name)
        await self._replan(set())

    async def _replan(self, ran: set[str]) -> None:
        """The one place jobs are placed: every target's next fire computed from state (one
        read of the store), its job moved where the plan changed. A target in ``ran`` whose run
        just ended and that is still due gets ``retry_floor`` first, so nothing spins; a target
        whose run is in flight is planned when that run ends."""
        shared = self._shared
        engine = shared.current_engine()
        if not shared.leading():
            return
        states = {s.target: s for s in await engine.list_targets()}
        if engine is not shared.engine or not shared.leading():
            return  # a reload or a loss of leadership happened meanwhile: theirs to plan
        now = shared.clock.now()
        refresh = bool(ran)  # a run ended, or a job moved: the gauges follow
        for name in engine.contexts:
            if name in self._tasks:
                continue
            plan = self._plan_of(engine, name, states.get(name))
            if name in ran and plan.fire_at <= now:
                self._floor[name] = now + timedelta(seconds=shared.timings.retry_floor)
                plan = self._plan_of(engine, name, states.get(name))
            if self.jobs.planned(name) != plan.fire_at:
                self.jobs.plan(plan)
                refresh = True
                log.info("rotation_planned", **plan.as_log())
        for name in set(self.jobs.targets()) - set(engine.contexts):
            self.jobs.drop(name)
        self.jobs.wakeup()
        if refresh:
            shared.metrics_wake.set()

    async def _planner_loop(self) -> None:
        """Re-plan after every run (woken by it) and every ``replan_every`` seconds."""
        shared = self._shared
        while not shared.stop.is_set():
            await shared.gate.wait()
            if shared.stop.is_set():
                return
            self._wake.clear()  # a wake-up from here on is seen by the wait below
            ran, self._ran = self._ran, set()
            try:
                await self._replan(ran)
            except Exception:
                self._ran |= ran
                log.exception("rotation_planning_failed", target=None)
            await wait_event(self._wake, shared.timings.replan_every)

    def _plan_of(self, engine: Engine, name: str, state: TargetState | None) -> FirePlan:
        policy = engine.context(name).target.policy
        return plan_fire(
            name, policy, state, now=self._shared.clock.now(), not_before=self._floor.get(name)
        )

    # -- runs ------------------------------------------------------------------------------------

    async def _fire(self, name: str) -> None:
        """The APScheduler job: hand the run to a task of the planner's own and return."""
        if not self._shared.leading() or not self._shared.gate.is_set():
            return  # re-planned when leadership is taken or the reload ends
        if name in self._tasks:
            log.info("rotation_fire_skipped", target=name, reason="a rotation is in flight")
            return
        self._launch(name, str(uuid.uuid4()), emergency=False, origin="schedule")

    def _launch(self, name: str, rotation_id: str, *, emergency: bool, origin: str) -> None:
        request = _Request(target=name)
        self._requests[rotation_id] = request
        while len(self._requests) > _KEEP_REQUESTS:
            self._requests.popitem(last=False)
        self._tasks[name] = asyncio.create_task(
            self._run_then_replan(name, rotation_id, request, emergency=emergency, origin=origin),
            name=f"rotate {name}",
        )

    async def _run_then_replan(
        self, name: str, rotation_id: str, request: _Request, *, emergency: bool, origin: str
    ) -> None:
        """One run of ``name``, then, whatever way it ended, the planner re-plans the target
        from state (the only way out of a run: no path can leave a target unplanned)."""
        try:
            await self._rotation(name, rotation_id, request, emergency=emergency, origin=origin)
        finally:
            self._ran.add(name)
            self._wake.set()  # the planner then wakes the metrics refresh
            if request.result is None or request.result.outcome in _PROMOTED:
                self._shared.revoke_wake.set()  # old keys got their deadlines

    async def _rotation(
        self, name: str, rotation_id: str, request: _Request, *, emergency: bool, origin: str
    ) -> None:
        """One run of ``name`` (the caller re-plans it afterwards)."""
        shared = self._shared
        started = shared.clock.monotonic()
        current = asyncio.current_task()
        try:
            await shared.gate.wait()
            if current is not None:
                self._running.add(current)
            if shared.stop.is_set():
                request.result = _not_run(name, "the daemon stopped before the rotation started")
                return
            engine = shared.current_engine()
            if name not in engine.contexts:
                request.result = _not_run(name, "the target left the configuration")
                return
            if origin == "schedule" and not await self._still_due(engine, name):
                request.result = _not_run(name, "not due any more")
                return
            assert shared.elector is not None
            await shared.elector.ensure()
            request.state = "running"
            result = await engine.rotate(name, emergency=emergency, rotation_id=rotation_id)
            request.result = result
            level = log.info if result.outcome not in _FAILED else log.warning
            seconds = round(shared.clock.monotonic() - started, 3)
            level("rotation_result", origin=origin, seconds=seconds, **loggable(result))
            journal = (
                await engine.journal(result.rotation_id)
                if result.rotation_id and result.outcome in _FAILED
                else []
            )
            shared.metrics.observe_rotation(result, seconds, journal=journal)
            if result.outcome in _PROMOTED:
                shared.notifier.notify(
                    "rotation_succeeded",
                    name,
                    rotation_id=result.rotation_id,
                    message=f"new key {result.new_key_id} served everywhere",
                )
        except LeadershipLost as exc:
            request.result = _not_run(name, "this instance lost leadership")
            shared.lose(exc)
        except asyncio.CancelledError:
            request.result = _not_run(name, "interrupted; recovery finishes it at the next start")
            raise
        except Exception as exc:
            log.exception("rotation_crashed", target=name, rotation_id=rotation_id)
            request.result = RotationResult(
                name, None, Outcome.ROLLED_BACK, error=scrub(f"{type(exc).__name__}: {exc}")
            )
            self._floor[name] = shared.clock.now() + timedelta(seconds=shared.timings.retry_floor)
        finally:
            if current is not None:
                self._running.discard(current)
            if self._tasks.get(name) is current:
                del self._tasks[name]

    async def _still_due(self, engine: Engine, name: str) -> bool:
        """A scheduled fire re-checks state (another process may have rotated meanwhile).

        A fire up to :data:`EARLY_FIRE_S` ahead of the plan (a job placed before the last
        rotation, a timer slightly early) waits out the rest: a rotation never starts before
        its planned instant. Further ahead, it is not due (the planner places it again)."""
        plan = self._plan_of(engine, name, await engine.get_target(name))
        ahead = (plan.fire_at - self._shared.clock.now()).total_seconds()
        if ahead > EARLY_FIRE_S:
            log.info("rotation_not_due", **plan.as_log())
            return False
        if ahead > 0:
            await asyncio.sleep(ahead)
        return True


def _not_run(target: str, why: str) -> RotationResult:
    return RotationResult(target, None, Outcome.SKIPPED, error=why)


def loggable(result: RotationResult) -> dict[str, object]:
    """A rotation result's fields for a log line, the empty ones left out."""
    return {k: v for k, v in result.as_dict().items() if v not in (None, [], ())}


__all__ = ["Planner", "loggable"]
