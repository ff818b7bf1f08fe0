"""When each target's next rotation fires, and the APScheduler jobs that fire them.

Nothing here remembers time on its own: :func:`plan_fire` derives a target's next fire from the
state store's facts (last rotation, first sighting, failure backoff), so a restart re-creates the
same plan and never postpones a rotation (OPS.md "Scheduling"). :class:`RotationJobs` holds one
in-memory APScheduler job per target at its planned instant, re-created from the plan at every
start and after every run.

Jitter is drawn from a hash of the target and its due time rather than from a random source:
it spreads targets that share a schedule like a random delay would, but a restarted daemon draws
the same delay again, so a restart cannot move a planned fire later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from rotator.config import Policy
from rotator.contracts import TargetState
from rotator.engine.due import next_due_at

JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
"""Run late rather than skip (APScheduler's default grace is 1 s), once, never twice at once."""


@dataclass(frozen=True, slots=True)
class FirePlan:
    """When a target's job fires and why.

    ``due_at`` is the due time computed from state (schedule or compliance ceiling);
    ``fire_at`` adds the jitter or waits out a failure backoff. Either may be in the past: the
    job then runs at once (a missed fire, the daemon was down).
    """

    target: str
    due_at: datetime
    fire_at: datetime
    reason: str  # schedule | max_age | backoff

    def as_log(self) -> dict[str, str]:
        return {
            "target": self.target,
            "due_at": self.due_at.isoformat(),
            "fire_at": self.fire_at.isoformat(),
            "reason": self.reason,
        }


def jitter_offset(target: str, due_at: datetime, jitter: timedelta) -> timedelta:
    """A delay in ``[0, jitter)`` that looks random across targets and due times but is the same
    for the same (target, due time): deterministic, so a restart draws it again unchanged."""
    if jitter <= timedelta(0):
        return timedelta(0)
    seed = f"{target}|{due_at.astimezone(UTC).isoformat()}".encode()
    fraction = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") / 2**64
    micros = int(jitter / timedelta(microseconds=1) * fraction)
    return timedelta(microseconds=micros)


def plan_fire(
    target: str,
    policy: Policy,
    state: TargetState | None,
    *,
    now: datetime,
    not_before: datetime | None = None,
) -> FirePlan:
    """The next fire of ``target`` from its stored ``state`` (None: never heard of).

    - due = the schedule's next fire after the last rotation, or the compliance ceiling (last
      rotation + ``max_age``) if that is earlier; a target never rotated is due at the schedule's
      next fire after ``first_seen_at`` (``now`` when the store has no row yet);
    - a fire from the schedule is delayed by :func:`jitter_offset`, but never past the ceiling;
      the ceiling itself gets no jitter;
    - after failures, the attempt is retried when the store's ``backoff_until`` ends (earlier
      than the due time if need be), and never before it nor ``not_before`` (the daemon's own
      floor when a failure could not be recorded): backoff wins over the due time.
    """
    last = state.last_rotated_at if state is not None else None
    anchor = state.first_seen_at if state is not None and state.first_seen_at else now
    due = next_due_at(policy, last_rotated_at=last, anchor=anchor)
    ceiling = last + policy.max_age if last is not None else None
    if ceiling is not None and due >= ceiling:
        fire, reason = due, "max_age"
    else:
        fire, reason = due + jitter_offset(target, due, policy.jitter), "schedule"
        if ceiling is not None:
            fire = min(fire, ceiling)
    if (
        state is not None
        and state.consecutive_failures
        and state.backoff_until is not None
        and state.backoff_until < fire
    ):
        # A failed (rolled back or stuck) attempt is retried when its backoff ends, not at the
        # next scheduled fire, which may be days away (cert-manager: 1 h → 32 h).
        fire, reason = state.backoff_until, "retry"
    floors = [t for t in (state.backoff_until if state else None, not_before) if t is not None]
    if floors and max(floors) > fire:
        fire, reason = max(floors), "backoff"
    return FirePlan(target=target, due_at=due, fire_at=fire, reason=reason)


class RotationJobs:
    """One APScheduler date job per target (job id = target name), in memory.

    ``fire`` is awaited on the event loop when a job is due; it should hand the work to a task
    of its own and return (``AsyncIOScheduler.shutdown`` cancels running coroutine jobs).
    """

    def __init__(self, fire: Callable[[str], Awaitable[None]]) -> None:
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

    def shutdown(self) -> None:
        """Stop the scheduler without waiting (await your own rotations first)."""
        if self.running:
            self._scheduler.shutdown(wait=False)
