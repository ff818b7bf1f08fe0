"""``leader.election: none``: no election, this instance always leads.

For one instance (SQLite state), or a Deployment with ``strategy: Recreate``.
"""

from __future__ import annotations

from rotator.daemon.leader.base import Elector
from rotator.errors import LeadershipLost


class SoleElector(Elector):
    """No election: this instance always leads (one instance; SQLite state)."""

    kind = "none"

    async def acquire(self) -> bool:
        self._leading = True
        return True

    async def ensure(self) -> None:
        if not self._leading:
            raise LeadershipLost("none: released")

    async def release(self) -> None:
        self._release_done()

    def _valid_for(self) -> float | None:
        return None  # no lease to go stale


__all__ = ["SoleElector"]
