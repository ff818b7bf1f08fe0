"""The revoke-due loop: replaced keys are revoked once their grace is over.

:class:`Revoker` runs a pass (:meth:`rotator.engine.engine.Engine.revoke_due`) every
``revoke_every`` seconds, at each grace deadline and whenever a part sets
:attr:`~rotator.daemon.shared.Shared.revoke_wake` (after a rotation, a reload, a stop). A pass
never overlaps a reload (the gate and the engine lock); a stop ends the loop after the current
pass.
"""

from __future__ import annotations

import asyncio

import structlog

from rotator.daemon.shared import Shared, wait_event
from rotator.errors import LeadershipLost, RotatorError

log = structlog.get_logger(__name__)


class Revoker:
    """The leader's revoke-due loop (see the module docstring), started once it took over."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The loop, None until started."""
        return self._task

    def start(self) -> None:
        self._task = asyncio.create_task(self._revoke_loop())

    async def _revoke_loop(self) -> None:
        """Revoke due keys every ``revoke_every`` seconds, at each grace deadline and after each
        rotation; stops after the current pass on shutdown."""
        shared = self._shared
        while not shared.stop.is_set():
            await shared.gate.wait()
            async with shared.engine_lock:
                if shared.stop.is_set():
                    return
                if shared.gate.is_set():
                    await self._revoke_pass()
                delay = await self._next_revoke_delay()
            if shared.stop.is_set():  # a stop's wake-up may have come during the pass: the
                return  # clear below would lose it and the drain would wait out ``delay``
            await wait_event(shared.revoke_wake, delay, clear=True)

    async def _revoke_pass(self) -> None:
        shared = self._shared
        try:
            assert shared.elector is not None
            await shared.elector.ensure()
            for result in await shared.current_engine().revoke_due():
                log.info("key_revocation", **result.as_dict())
            shared.metrics_wake.set()
        except LeadershipLost as exc:
            shared.lose(exc)
        except Exception:
            log.exception("revoke_due_failed")

    async def _next_revoke_delay(self) -> float:
        """Seconds to the earliest future grace deadline, at most ``revoke_every``."""
        every = self._shared.timings.revoke_every
        try:
            states = await self._shared.current_engine().list_targets()
        except RotatorError:
            return every
        now = self._shared.clock.now()
        ahead = [k.revoke_due_at for s in states for k in s.retiring if k.revoke_due_at > now]
        if not ahead:
            return every
        return max(0.05, min(every, (min(ahead) - now).total_seconds()))


__all__ = ["Revoker"]
