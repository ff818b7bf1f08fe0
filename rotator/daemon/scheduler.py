"""The jobs that fire each target's next rotation.

Nothing here remembers time on its own: :func:`rotator.engine.due.plan_fire` derives a target's
next fire from the state store's facts (last rotation, first sighting, failure backoff), so a
restart re-creates the same plan and never postpones a rotation. :class:`RotationJobs` holds one
planned instant per target, re-placed from the plan at every start, after every run and
periodically (see :mod:`rotator.daemon.planner`).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import structlog

from rotator.engine.due import FirePlan, jitter_offset, plan_fire

log = structlog.get_logger(__name__)

MAX_TIMER_S = 3600.0
"""The longest the timer sleeps before it looks at the wall clock again, even unasked."""


Fire = Callable[[str], Awaitable[None]]


class Jobs(Protocol):
    """One planned fire per target, what :class:`rotator.daemon.planner.Planner` places.

    :class:`RotationJobs` is the daemon's; a simulation may supply one driven by its own clock.
    A job fires once at its instant (late rather than never, once however late), then is gone.
    """

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def plan(self, plan: FirePlan) -> None: ...

    def planned(self, target: str) -> datetime | None: ...

    def targets(self) -> list[str]: ...

    def drop(self, target: str) -> None: ...

    def clear(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def wakeup(self) -> None: ...

    def shutdown(self) -> None: ...


class RotationJobs:
    """One planned instant per target, fired on the running event loop.

    The semantics APScheduler's in-memory date jobs had here (``misfire_grace_time=None``,
    ``coalesce``, ``max_instances=1``: late rather than never, once however late), without
    a job object, a trigger and a job store entry per target (560 bytes, by tracemalloc): a
    dict of instants, a heap of them (an entry that a later plan or a drop made stale is
    skipped when it comes up) and one timer, armed on the event loop's monotonic clock for
    the wall-clock wait to the earliest instant (at most
    :data:`MAX_TIMER_S`) and re-armed by :meth:`wakeup`.

    ``fire`` runs as a task of its own when a job is due; it should hand the work on and return
    (:meth:`shutdown` cancels fires still running). ``now`` is the wall clock (UTC).
    """

    def __init__(
        self, fire: Fire, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._fire = fire
        self._now = now
        self._at: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: datetime | None = None
        self._running = False
        self._paused = False
        self._firing: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start on the running event loop (call from a coroutine)."""
        self._running = True
        self.wakeup()

    def plan(self, plan: FirePlan) -> None:
        """(Re)place the target's job at ``plan.fire_at``. Idempotent."""
        at = plan.fire_at.astimezone(UTC)
        if self._at.get(plan.target) == at:
            return
        self._at[plan.target] = at
        heapq.heappush(self._heap, (at, plan.target))
        if len(self._heap) > 2 * len(self._at) + 64:  # mostly stale: rebuild
            self._heap = [(when, target) for target, when in self._at.items()]
            heapq.heapify(self._heap)
        if self._timer_at is None or at < self._timer_at:
            self._arm()

    def planned(self, target: str) -> datetime | None:
        """When the target's job fires next, or None without a job."""
        return self._at.get(target)

    def targets(self) -> list[str]:
        return sorted(self._at)

    def drop(self, target: str) -> None:
        self._at.pop(target, None)

    def clear(self) -> None:
        self._at.clear()
        self._heap.clear()

    def pause(self) -> None:
        """Stop firing jobs (SIGTERM, reload); jobs stay planned."""
        self._paused = True
        self._disarm()

    def resume(self) -> None:
        self._paused = False
        self.wakeup()

    def wakeup(self) -> None:
        """Look at the wall clock again now: a job whose instant passed while the timer slept
        on the monotonic clock (a suspended VM, an NTP step forward) fires at once."""
        self._disarm()
        if not self._running or self._paused:
            return
        now = self._now()
        heap, planned = self._heap, self._at
        while heap and heap[0][0] <= now:
            at, target = heapq.heappop(heap)
            if planned.get(target) == at:
                del planned[target]
                task = asyncio.get_running_loop().create_task(
                    self._fire_one(target), name=f"fire {target}"
                )
                self._firing.add(task)
                task.add_done_callback(self._firing.discard)
        self._arm(now)

    def shutdown(self) -> None:
        """Stop without waiting (await your own rotations first); fires still running are
        cancelled."""
        self._running = False
        self._disarm()
        for task in list(self._firing):
            task.cancel()

    def _arm(self, now: datetime | None = None) -> None:
        """One timer for the earliest live job (stale heap entries dropped on the way)."""
        self._disarm()
        if not self._running or self._paused:
            return
        heap, planned = self._heap, self._at
        while heap and planned.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            return
        at = heap[0][0]
        wait = (at - (now or self._now())).total_seconds()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(min(max(0.0, wait), MAX_TIMER_S), self.wakeup)
        self._timer_at = at

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None

    async def _fire_one(self, target: str) -> None:
        try:
            await self._fire(target)
        except Exception:
            log.exception("rotation_fire_failed", target=target)


__all__ = ["MAX_TIMER_S", "Fire", "FirePlan", "Jobs", "RotationJobs", "jitter_offset", "plan_fire"]
