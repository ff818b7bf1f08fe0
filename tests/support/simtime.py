"""Simulated time for a whole daemon: an asyncio loop whose clock jumps to its next timer.

:class:`SimLoop` is a real selector event loop (sockets, threads and callbacks work as usual)
whose ``time()`` is virtual: whenever nothing is ready and no worker thread is busy (an executor
call, or a daemon thread started meanwhile), it moves its clock straight to the next timer instead
of sleeping. Months of a daemon's timers (schedules,
revoke deadlines, elector renewals, backoffs) then pass in seconds, while work handed to threads
(the SQLite state store) runs for real: the loop waits for it without moving the clock.

:class:`SimClock` is the :class:`rotator.clock.Clock` to inject alongside: ``monotonic()`` is the
loop's clock, ``now()`` is a wall clock on top of it that can be stepped forwards or backwards
(an NTP step, a resumed VM) while the monotonic clock runs on, as on a real machine.

:class:`SimJobs` is :class:`rotator.daemon.scheduler.RotationJobs` with APScheduler's semantics
(one date job per target; fires once, late rather than never; one timer armed from the wall
clock on the monotonic clock, re-armed by ``wakeup()``) but reading the injected clock, which
APScheduler cannot (it reads ``datetime.now``).
"""

from __future__ import annotations

import asyncio
import selectors
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from rotator.daemon.scheduler import Fire, FirePlan
from rotator.pool import BlockingPool

T = TypeVar("T")


class SimulationStalledError(RuntimeError):
    """Nothing is scheduled, ready or running: the simulation would wait forever."""


class _SimSelector(selectors.DefaultSelector):
    """A selector that, when told to wait, advances the loop's virtual clock instead (unless
    a worker thread is busy: then it waits for real, and the clock stays)."""

    loop: SimLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return super().select(0)
        if self.loop.busy():
            return super().select(min(timeout, 0.05) if timeout is not None else 0.05)
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise SimulationStalledError("the simulated loop has nothing left to do")
        self.loop.advance(timeout)
        return super().select(0)


class SimLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring)."""

    def __init__(self) -> None:
        selector = _SimSelector()
        selector.loop = self
        self._virtual = 0.0
        self.busy_threads = 0
        self._threads_before = set(threading.enumerate())
        super().__init__(selector)

    def busy(self) -> bool:
        """Whether real work is under way off the loop: an executor call, or a thread of its
        own (``rotator.pool.in_own_thread``) started since the loop was made."""
        if self.busy_threads:
            return True
        return any(
            t.daemon and t.is_alive() and t not in self._threads_before
            for t in threading.enumerate()
        )

    def time(self) -> float:
        return self._virtual

    def advance(self, seconds: float) -> None:
        self._virtual += max(0.0, seconds)

    def run_in_executor(
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.busy_threads += 1

        def done(_: asyncio.Future[T]) -> None:
            self.busy_threads -= 1

        future.add_done_callback(done)
        return future


class InlinePool(BlockingPool):
    """A :class:`rotator.pool.BlockingPool` that runs each call at once on the loop's thread:
    the simulated clock stands still while it runs, no thread hop costs a context switch, and
    the interleaving of transactions is decided by the seed alone."""

    def __init__(self) -> None:
        super().__init__(1, name="sim-inline")  # its executor never starts a thread

    async def run_blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)


class SimClock:
    """Wall and monotonic time of a :class:`SimLoop` (see the module docstring)."""

    def __init__(self, loop: SimLoop, start: datetime) -> None:
        self.loop = loop
        self.start = start
        self.offset = timedelta(0)
        """Steps of the wall clock so far (NTP, a resumed VM)."""

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.loop.time()) + self.offset

    def monotonic(self) -> float:
        return self.loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def step(self, seconds: float) -> None:
        """Move the wall clock alone (positive: forwards)."""
        self.offset += timedelta(seconds=seconds)


class SimJobs:
    """APScheduler's date jobs on a :class:`SimClock` (see the module docstring).

    ``on_fire(target, planned_at, fired_at)`` is told of every fire before it is handed to
    the daemon."""

    def __init__(
        self, fire: Fire, clock: SimClock, on_fire: Callable[[str, datetime, datetime], None]
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._on_fire = on_fire
        self._jobs: dict[str, datetime] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._paused = False
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        self._running = True
        self.wakeup()

    def plan(self, plan: FirePlan) -> None:
        self._jobs[plan.target] = plan.fire_at.astimezone(UTC)
        self.wakeup()

    def planned(self, target: str) -> datetime | None:
        return self._jobs.get(target)

    def targets(self) -> list[str]:
        return sorted(self._jobs)

    def drop(self, target: str) -> None:
        self._jobs.pop(target, None)

    def clear(self) -> None:
        self._jobs.clear()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self.wakeup()

    def shutdown(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def wakeup(self) -> None:
        """Fire what is due by the wall clock, then arm one timer for the earliest job."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._running or self._paused:
            return
        now = self._clock.now()
        for target, at in sorted(self._jobs.items(), key=lambda item: item[1]):
            if at <= now:
                del self._jobs[target]
                self._on_fire(target, at, now)
                task = asyncio.get_running_loop().create_task(self._fire(target))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        if self._jobs:
            wait = (min(self._jobs.values()) - now).total_seconds()
            self._timer = asyncio.get_running_loop().call_later(max(0.0, wait), self.wakeup)


__all__ = ["InlinePool", "SimClock", "SimJobs", "SimLoop", "SimulationStalledError"]
