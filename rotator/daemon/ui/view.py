"""The status page's view of a snapshot: one :class:`Row` per target, its state as the page
names it, the order, the filters and the summary line. Pure functions of a
:class:`~rotator.daemon.ui.source.Snapshot`; no I/O, no HTML.

The page's states extend ``rotator status``'s (idle, rotating, draining, stuck, failing) with
**overdue**: the served key is past its compliance ceiling (older than ``max_age``; a target
rotator never rotated: first seen more than ``max_age`` ago), or its next rotation is more than
:data:`LATE` late. One badge per target, the first that applies of: stuck, rotating, overdue,
failing, draining, idle (a rotation in flight is what fixes an overdue key; an overdue key is
worse news than a failed attempt on a fresh one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.config import Config
from rotator.contracts import RetiringKey, TargetState
from rotator.daemon.ui.source import Snapshot
from rotator.engine.engine import TargetStatus
from rotator.render import plural

STATES = ("stuck", "overdue", "failing", "rotating", "draining", "idle")
"""The page's states, most urgent first: the overview's sort order."""
ATTENTION = ("stuck", "overdue", "failing")
"""The states that need a human."""
LATE = timedelta(minutes=15)
"""A next rotation this far in the past (and none in flight) makes a target overdue."""
FILTER_ATTENTION = "attention"
"""The state filter that keeps every target needing a human."""
MAX_QUERY = 100
"""Characters of a name filter kept (target names are at most 100)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One target as the overview shows it."""

    name: str
    state: str
    reason: str
    key_id: str | None
    fingerprint: str | None
    last_rotated_at: datetime | None
    age: timedelta | None
    """Age of the served key: since its rotation, or since rotator first saw a target it never
    rotated (None when unknown)."""
    max_age: timedelta
    next_at: datetime
    retiring: tuple[RetiringKey, ...]
    failures: int
    last_outcome: str
    destinations: tuple[str, ...]

    @property
    def stores(self) -> tuple[str, ...]:
        """The stores the destinations live in (the part of each name before ``:``)."""
        return tuple(dict.fromkeys(d.partition(":")[0] for d in self.destinations))

    @property
    def needs_attention(self) -> bool:
        return self.state in ATTENTION


def span(delta: timedelta) -> str:
    """A duration as the page writes it, its two largest units: ``3d10h``, ``30d``, ``4h5m``,
    ``12m``, ``30s`` (negative durations as zero)."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{secs}s"


def page_state(
    status: TargetStatus, state: TargetState | None, max_age: timedelta, now: datetime
) -> tuple[str, str]:
    """(the page's state, why) for one target: see the module docstring for the rules."""
    if status.state in {"stuck", "rotating"}:
        return status.state, status.reason
    failing = ""
    if status.state == "failing":
        count = state.consecutive_failures if state else 0
        failing = f"{plural(count, 'failed attempt')} since the last success" if count else ""
    anchor = status.last_rotated_at or (state.first_seen_at if state else None)
    if anchor is not None and now - anchor > max_age:
        age = span(now - anchor)
        why = (
            f"key {age} old, max_age {span(max_age)}"
            if status.last_rotated_at
            else f"never rotated; first seen {age} ago, max_age {span(max_age)}"
        )
        return "overdue", _joined(why, failing)
    if now - status.next_due_at > LATE:
        why = f"next rotation {span(now - status.next_due_at)} late"
        return "overdue", _joined(why, failing)
    return status.state, failing or status.reason


def last_outcome(status: TargetStatus, state: TargetState | None) -> str:
    """What the last attempt came to, from the stored state: ``stuck``, ``failed`` (some
    attempt failed since the last success), ``ok`` or ``never rotated``."""
    if status.state == "stuck":
        return "stuck"
    if state is not None and state.consecutive_failures:
        return "failed"
    if status.last_rotated_at is not None:
        return "ok"
    return "never rotated"


def max_ages(cfg: Config) -> dict[str, timedelta]:
    """Each target's ``max_age``, computed once per configuration (the last one is kept)."""
    cached = _MAX_AGES.get("last")
    if cached is not None and cached[0] is cfg:
        return cached[1]
    found = {t.name: t.policy.max_age for t in cfg.targets}
    _MAX_AGES["last"] = (cfg, found)
    return found


_MAX_AGES: dict[str, tuple[Config, dict[str, timedelta]]] = {}


def rows(snapshot: Snapshot, only: str | None = None) -> list[Row]:
    """Every configured target's row, in configuration order (``only``: that target's)."""
    now = snapshot.now
    limits = max_ages(snapshot.cfg)
    out = []
    for status in snapshot.rows:
        if only is not None and status.target != only:
            continue
        max_age = limits.get(status.target)
        if max_age is None:  # configuration reloaded between the two reads
            continue
        stored = snapshot.states.get(status.target)
        state, reason = page_state(status, stored, max_age, now)
        anchor = status.last_rotated_at or (stored.first_seen_at if stored else None)
        current = stored.current if stored else None
        out.append(
            Row(
                name=status.target,
                state=state,
                reason=reason,
                key_id=status.key_id,
                fingerprint=current.fingerprint if current else None,
                last_rotated_at=status.last_rotated_at,
                age=now - anchor if anchor else None,
                max_age=max_age,
                next_at=status.next_due_at,
                retiring=stored.retiring if stored else (),
                failures=stored.consecutive_failures if stored else 0,
                last_outcome=last_outcome(status, stored),
                destinations=snapshot.destinations.get(status.target, ()),
            )
        )
    return out


def ordered(found: Iterable[Row]) -> list[Row]:
    """What needs a human first: by state (:data:`STATES` order), then the next rotation, then
    the name."""
    rank = {state: i for i, state in enumerate(STATES)}
    return sorted(found, key=lambda r: (rank[r.state], r.next_at, r.name))


def clean_query(text: str | None) -> str:
    """A name filter as kept: stripped, lower case, at most :data:`MAX_QUERY` characters."""
    return (text or "").strip().lower()[:MAX_QUERY]


def clean_state(text: str | None) -> str:
    """A state filter as kept: one of :data:`STATES` or :data:`FILTER_ATTENTION`, else none."""
    value = (text or "").strip().lower()
    return value if value in (*STATES, FILTER_ATTENTION) else ""


def filtered(found: Iterable[Row], *, query: str, state: str) -> list[Row]:
    """The rows whose name contains ``query`` and whose state is ``state`` (both optional;
    ``attention`` keeps every state of :data:`ATTENTION`)."""
    keep = []
    for row in found:
        if query and query not in row.name:
            continue
        if state == FILTER_ATTENTION and not row.needs_attention:
            continue
        if state and state not in (FILTER_ATTENTION, row.state):
            continue
        keep.append(row)
    return keep


def counts(found: Sequence[Row]) -> Counter[str]:
    return Counter(row.state for row in found)


def summary(found: Sequence[Row]) -> str:
    """The line on top: ``2 need attention: 1 stuck, 1 overdue``, or ``Nothing needs
    attention`` (every target, whatever the filters)."""
    tally = counts(found)
    urgent = [(s, tally[s]) for s in ATTENTION if tally[s]]
    total = sum(n for _, n in urgent)
    if not total:
        return "Nothing needs attention"
    verb = "needs" if total == 1 else "need"
    return f"{total} {verb} attention: " + ", ".join(f"{n} {s}" for s, n in urgent)


def breakdown(found: Sequence[Row]) -> str:
    """``6 targets: 1 rotating, 2 draining, 3 idle`` (the states that need no human)."""
    tally = counts(found)
    calm = [f"{tally[s]} {s}" for s in STATES if s not in ATTENTION and tally[s]]
    head = plural(len(found), "target")
    return f"{head}: {', '.join(calm)}" if calm else head


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


__all__ = [
    "ATTENTION",
    "FILTER_ATTENTION",
    "LATE",
    "STATES",
    "Row",
    "breakdown",
    "clean_query",
    "clean_state",
    "filtered",
    "last_outcome",
    "ordered",
    "page_state",
    "rows",
    "span",
    "summary",
]
