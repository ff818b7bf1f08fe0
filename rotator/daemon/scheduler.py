"""The APScheduler jobs that fire each target's next rotation.

Nothing here remembers time on its own: :func:`rotator.engine.due.plan_fire` derives a target's
next fire from the state store's facts (last rotation, first sighting, failure backoff), so a
restart re-creates the same plan and never postpones a rotation. :class:`RotationJobs` holds one
in-memory APScheduler job per target at its planned instant, re-placed from the plan at every
start, after every run and periodically (see :mod:`rotator.daemon.planner`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from rotator.engine.due import FirePlan, jitter_offset, plan_fire

JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
"""Run late rather than skip (APScheduler's default grace is 1 s), once, never twice at once."""


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
    """One APScheduler date job per target (job id = target name), in memory.

    ``fire`` is awaited on the event loop when a job is due; it should hand the work to a task
    of its own and return (``AsyncIOScheduler.shutdown`` cancels running coroutine jobs).
    """

    def __init__(self, fire: Fire) -> None:
        self._fire = fire
        self._scheduler = AsyncIOScheduler(timezone=UTC, job_defaults=dict(JOB_DEFAULTS))

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        """Start on the running event loop (call from a coroutine)."""
        self._scheduler.start()

    def plan(self, plan: FirePlan) -> None:
        """(Re)place the target's job at ``plan.fire_at``. Idempotent."""
        self._scheduler.add_job(
            self._fire,
            trigger=DateTrigger(run_date=plan.fire_at, timezone=UTC),
            args=(plan.target,),
            id=plan.target,
            name=f"rotate {plan.target}",
            replace_existing=True,
        )

    def planned(self, target: str) -> datetime | None:
        """When the target's job fires next, or None without a job."""
        job = self._scheduler.get_job(target)
        when: datetime | None = job.next_run_time if job is not None else None
        return when.astimezone(UTC) if when is not None else None

    def targets(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs())

    def drop(self, target: str) -> None:
        if self._scheduler.get_job(target) is not None:
            self._scheduler.remove_job(target)

    def clear(self) -> None:
        self._scheduler.remove_all_jobs()

    def pause(self) -> None:
        """Stop firing jobs (SIGTERM, reload); jobs stay planned."""
        if self.running:
            self._scheduler.pause()

    def resume(self) -> None:
        if self.running:
            self._scheduler.resume()

    def wakeup(self) -> None:
        """Look at the wall clock again now: a job whose instant passed while the timer slept
        on the monotonic clock (a suspended VM, an NTP step forward) fires at once."""
        if self.running:
            self._scheduler.wakeup()

    def shutdown(self) -> None:
        """Stop the scheduler without waiting (await your own rotations first)."""
        if self.running:
            self._scheduler.shutdown(wait=False)


__all__ = ["JOB_DEFAULTS", "Fire", "FirePlan", "Jobs", "RotationJobs", "jitter_offset", "plan_fire"]
