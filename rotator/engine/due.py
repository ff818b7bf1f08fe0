"""When a target is due: computed from state, never remembered by a timer (cert-manager style).

Next due = the earlier of the schedule's next fire after the last rotation and the compliance
ceiling (last rotation + ``max_age``). A target rotator never rotated is due at the schedule's next
fire after ``anchor`` (when rotator first saw it), so restarts never postpone it. Failures push the
next attempt to the backoff deadline, but never later than the compliance ceiling allows.
"""

from __future__ import annotations

from datetime import datetime

from rotator.config import Policy


def next_due_at(policy: Policy, *, last_rotated_at: datetime | None, anchor: datetime) -> datetime:
    """The next time the target should rotate (may be in the past: overdue)."""
    if last_rotated_at is None:
        return policy.schedule.next_fire(anchor)
    return min(policy.schedule.next_fire(last_rotated_at), last_rotated_at + policy.max_age)


def compliant(policy: Policy, *, last_rotated_at: datetime | None, now: datetime) -> bool:
    """A key rotator rotated within ``max_age`` (False for a target never rotated)."""
    return last_rotated_at is not None and now - last_rotated_at <= policy.max_age
