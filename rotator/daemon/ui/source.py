"""What the status page reads, and the protocol of whatever serves it (the daemon's feed).

A page is built from one :class:`Snapshot` (the overview: one status read of the state store,
never a query per target) or one :class:`TargetHistory` (a target's page: its last rotations
with their journals and its audit entries). Both carry ids, fingerprints, timestamps and
scrubbed error text only: nothing here can hold a key, a token or a URL with a password.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from rotator.config import Config
from rotator.contracts import AuditEvent, JournalEntry, Rotation, TargetState
from rotator.engine.engine import TargetStatus


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    """The last configuration reload (SIGHUP): when it ended, whether it applied, and its
    one-line message (the error of a reload that kept the previous configuration)."""

    at: datetime
    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class DaemonFacts:
    """The daemon panel: who is serving this page and in what shape."""

    version: str
    leading: bool
    election: str
    """``none``, ``postgres`` or ``kubernetes``."""
    identity: str | None
    """This instance's name in the election (None without one)."""
    leader: str | None
    """The leader's identity when the election tells it (None: unknown, or this instance)."""
    config_source: str
    config_loaded_at: datetime | None
    store: str
    """The state store, described without credentials (see :func:`describe_store`)."""
    started_at: datetime | None
    uptime: timedelta
    ready: bool
    ready_reason: str
    last_reload: ReloadRecord | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the overview shows, read at ``now``: the status rows (``next_due_at`` as this
    daemon plans it), the stored states by target name, the configuration in force (policies)
    and each target's destination names, in configuration order."""

    now: datetime
    cfg: Config
    rows: Sequence[TargetStatus]
    states: Mapping[str, TargetState]
    destinations: Mapping[str, tuple[str, ...]]
    daemon: DaemonFacts


@dataclass(frozen=True, slots=True)
class RotationRecord:
    """One rotation with its journal, steps in order."""

    rotation: Rotation
    steps: Sequence[JournalEntry] = ()


@dataclass(frozen=True, slots=True)
class TargetHistory:
    """A target's page: the overview's facts plus its last rotations (newest first) and its
    audit entries (newest first)."""

    snapshot: Snapshot
    target: str
    rotations: Sequence[RotationRecord] = ()
    audit: Sequence[AuditEvent] = field(default_factory=tuple)


class StatusSource(Protocol):
    """What the status page asks of the daemon. Reads only; may raise when the state store
    cannot answer (the page then answers 503)."""

    async def snapshot(self) -> Snapshot:
        """The overview's facts: one status read of the state store."""
        ...

    async def history(self, target: str, *, rotations: int, audit: int) -> TargetHistory | None:
        """``target``'s page (its last ``rotations`` rotations, ``audit`` audit entries), or
        None if it is not configured."""
        ...


def describe_store(url: str) -> str:
    """The state store as the page shows it: the backend and where, never a user, a password or
    a query string (``SQLite /var/lib/rotator/state.db``, ``PostgreSQL db.example:5432/rotator``).
    """
    scheme, _, rest = url.partition("://")
    backend = scheme.split("+", 1)[0].lower()
    if backend == "sqlite":
        path = rest.split("?", 1)[0][1:]  # sqlite:///relative.db, sqlite:////absolute.db
        return f"SQLite {path}" if path else "SQLite (in memory)"
    if backend in {"postgresql", "postgres"}:
        where = rest.rpartition("@")[2].split("?", 1)[0]
        return f"PostgreSQL {where}"
    return backend or "unknown"


__all__ = [
    "DaemonFacts",
    "ReloadRecord",
    "RotationRecord",
    "Snapshot",
    "StatusSource",
    "TargetHistory",
    "describe_store",
]
