"""When a target is due and when its next attempt fires: computed from state, never remembered
by a timer (cert-manager style).

Next due = the earlier of the schedule's next fire after the last rotation and the compliance
ceiling (last rotation + ``max_age``). A target rotator never rotated counts from ``anchor`` (when
rotator first saw it) instead, so restarts never postpone it and ``max_age`` holds for it too.
:func:`plan_fire` adds the jitter and the failure backoff: what ``rotator status`` shows and what
``rotator run`` schedules, from the same facts.

Jitter is drawn from a hash of the target and its due time rather than from a random source:
it spreads targets that share a schedule like a random delay would, but a restarted daemon draws
the same delay again, so a restart cannot move a planned fire later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rotator.config import Policy
from rotator.contracts import TargetState


def next_due_at(policy: Policy, *, last_rotated_at: datetime | None, anchor: datetime) -> datetime:
    """The next time the target should rotate (may be in the past: overdue): the schedule's next
    fire after the last rotation (or after ``anchor`` for a target never rotated), and never
    later than :func:`ceiling`."""
    since = last_rotated_at or anchor
    return min(policy.schedule.next_fire(since), ceiling(policy, last_rotated_at, anchor))


def ceiling(policy: Policy, last_rotated_at: datetime | None, anchor: datetime) -> datetime:
    """The compliance ceiling: ``max_age`` after the last rotation, or after rotator first saw
    a target it never rotated (a key made before rotator is at least that old)."""
    return (last_rotated_at or anchor) + policy.max_age


def compliant(policy: Policy, *, last_rotated_at: datetime | None, now: datetime) -> bool:
    """A key rotator rotated within ``max_age`` (False for a target never rotated)."""
    return last_rotated_at is not None and now - last_rotated_at <= policy.max_age


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
      rotation + ``max_age``) if that is earlier; a target never rotated counts from
      ``first_seen_at`` (``now`` when the store has no row yet);
    - a fire from the schedule is delayed by :func:`jitter_offset`, but never past the ceiling;
      the ceiling itself gets no jitter;
    - after failures, the attempt is retried when the store's ``backoff_until`` ends (earlier
      than the due time if need be), and never before it nor ``not_before`` (the daemon's own
      floor when a failure could not be recorded): backoff wins over the due time.
    """
    last = state.last_rotated_at if state is not None else None
    anchor = state.first_seen_at if state is not None and state.first_seen_at else now
    due = next_due_at(policy, last_rotated_at=last, anchor=anchor)
    limit = ceiling(policy, last, anchor)
    if due >= limit:
        fire, reason = due, "max_age"
    else:
        fire, reason = due + jitter_offset(target, due, policy.jitter), "schedule"
        fire = min(fire, limit)
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
