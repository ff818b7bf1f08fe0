"""What the daemon's parts share: its health, and the control surface the HTTP API drives.

:class:`Health` is fed by the event loop's heartbeat and the leader elector, and read by
``/livez``, ``/readyz`` and the systemd watchdog. :class:`DaemonControl` is what the HTTP API may
ask of the daemon; the runner implements it. Neither ever carries a secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rotator.engine.engine import TargetStatus

HEARTBEAT_STALE = 30.0
"""Seconds without an event-loop heartbeat after which the process is not live."""


@dataclass
class Health:
    """Liveness and readiness facts, updated in place by the daemon's loops.

    Live = the event loop's heartbeat is fresh and, when leading, the lease was renewed in time
    (never the reachability of Mistral, Vault or AWS: an upstream outage must not restart us).
    Ready = the daemon started (configuration loaded) and nothing is in :attr:`problems`: the
    daemon's parts record there what keeps it from working (the state store not readable and
    writable, the scheduler not running or not planned, the leader unknown). A standby that
    knows another instance leads is ready.
    """

    monotonic: Callable[[], float] = time.monotonic
    started: float = field(default_factory=time.monotonic)
    last_heartbeat: float = field(default_factory=time.monotonic)
    ready: bool = False
    leading: bool = False
    lease_valid_until: float | None = None
    """Monotonic deadline of the current lease while leading; None without leader election."""
    reason: str = "starting"
    problems: dict[str, str] = field(default_factory=dict)
    """What keeps a started daemon from being ready, by part (``store``, ``scheduler``,
    ``leader``); a part clears its entry when it works again."""

    def readiness(self) -> tuple[bool, str]:
        """(ready, why) for ``/readyz``."""
        if not self.ready:
            return False, self.reason
        if self.problems:
            return False, "; ".join(self.problems[part] for part in sorted(self.problems))
        return True, "ok"

    def beat(self) -> None:
        self.last_heartbeat = self.monotonic()

    def live(self) -> tuple[bool, str]:
        """(live, why) for ``/livez`` and the systemd watchdog."""
        now = self.monotonic()
        if now - self.last_heartbeat > HEARTBEAT_STALE:
            return False, f"event loop heartbeat {now - self.last_heartbeat:.0f}s old"
        if self.leading and self.lease_valid_until is not None and now > self.lease_valid_until:
            return False, "leader lease expired without renewal"
        return True, "ok"


class UnknownTargetError(LookupError):
    """The HTTP API named a target that is not configured (404)."""


class RotationInFlightError(RuntimeError):
    """A rotation of this target is already running or queued (409)."""


class RateLimitedError(RuntimeError):
    """The target was rotated on demand too recently (429); ``retry_after`` in seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limited; retry after {retry_after:.0f}s")


class DaemonControl(Protocol):
    """What ``/api/v1`` may ask of the daemon (docs/http-api.md#the-on-demand-api)."""

    health: Health

    def target_names(self) -> list[str]:
        """The configured targets, in configuration order."""
        ...

    async def status(self) -> list[TargetStatus]:
        """Per-target status, as ``rotator status --json``."""
        ...

    def request_rotation(self, target: str, *, emergency: bool) -> str:
        """Start a rotation of ``target`` in the background and return its rotation id at once.

        Raises :class:`UnknownTargetError`, :class:`RotationInFlightError` (one running or
        queued), :class:`RateLimitedError`, or ``PermissionError`` on a standby (not leading).
        """
        ...

    async def rotation_view(self, rotation_id: str) -> dict[str, object] | None:
        """``{rotation_id, target, state, outcome, steps: [{step, at}], error, started_at,
        finished_at}`` for ``GET /api/v1/rotations/{id}``, or None if unknown."""
        ...
