"""Taking over as the leader: recover, plan every target, then start the leader's loops.

The leader elector tells :meth:`Takeover.on_change` whenever leadership changes hands. On
gaining it, the daemon recovers interrupted rotations, registers and plans every target
(:meth:`rotator.daemon.planner.Planner.plan_all`), and starts the planner's loop and the
revoke-due loop. A loss of leadership is the elector's and the lifecycle's business: the daemon
stops at once (:attr:`rotator.daemon.shared.Shared.lose`).
"""

from __future__ import annotations

import asyncio

import structlog

from rotator.daemon.planner import Planner, loggable
from rotator.daemon.revoker import Revoker
from rotator.daemon.shared import Shared
from rotator.errors import LeadershipLost

log = structlog.get_logger(__name__)


class Takeover:
    """What the daemon does on gaining leadership (see the module docstring), once."""

    def __init__(self, shared: Shared, planner: Planner, revoker: Revoker) -> None:
        self._shared = shared
        self._planner = planner
        self._revoker = revoker
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The takeover, None until leadership is first gained."""
        return self._task

    def on_change(self, leading: bool) -> None:
        """The elector's callback: leadership gained (``leading``) or lost."""
        shared = self._shared
        shared.metrics.set_leader(leading)
        if leading and self._task is None and not shared.stop.is_set():
            self._task = asyncio.create_task(self._take_over())
            shared.took_over = True
        shared.systemd.status(shared.status_line(len(self._planner.in_flight)))

    async def _take_over(self) -> None:
        """As the new leader: recover interrupted rotations, plan every target, revoke due keys.
        Retried every ``retry_floor`` seconds while the state store fails."""
        shared = self._shared
        while not shared.stop.is_set():
            await shared.gate.wait()
            try:
                async with shared.engine_lock:
                    if shared.stop.is_set():
                        return
                    results, orphans = await shared.current_engine().recover()
                    for result in results:
                        log.info("rotation_recovered", **loggable(result))
                    if orphans:
                        log.warning("orphan_keys", keys=[o.as_dict() for o in orphans])
                    await self._planner.plan_all()
                break
            except LeadershipLost as exc:
                shared.lose(exc)
                return
            except Exception:
                log.exception("takeover_failed")
                shared.health.problems["takeover"] = "the leader could not recover and plan targets"
                await shared.pause(shared.timings.retry_floor)
        shared.health.problems.pop("takeover", None)
        if not shared.stop.is_set():
            self._revoker.start()
            self._planner.start()
            shared.metrics_wake.set()
            shared.systemd.status(shared.status_line(len(self._planner.in_flight)))


__all__ = ["Takeover"]
