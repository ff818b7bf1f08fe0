"""The daemon's side of the status page: :class:`DaemonFeed` answers
:class:`~rotator.daemon.ui.source.StatusSource` from the daemon's parts.

The overview costs one status read (the planner's: the targets' states and the open
rotations, two queries whatever the number of targets); a target's page adds its last
rotations, their journals and its audit entries. Everything goes through the engine's public
reads, never its backends.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from rotator import __version__
from rotator.daemon.planner import Planner
from rotator.daemon.reloader import Reloader
from rotator.daemon.shared import Shared
from rotator.daemon.ui.source import (
    DaemonFacts,
    RotationRecord,
    Snapshot,
    TargetHistory,
    describe_store,
)


class DaemonFeed:
    """The status page's facts, read from a running daemon's parts. ``started_at`` gives when
    the daemon started (None before it did)."""

    def __init__(
        self,
        shared: Shared,
        planner: Planner,
        reloader: Reloader,
        started_at: Callable[[], datetime | None],
    ) -> None:
        self._shared = shared
        self._planner = planner
        self._reloader = reloader
        self._started_at = started_at

    async def snapshot(self) -> Snapshot:
        shared = self._shared
        engine = shared.current_engine()
        cfg = shared.cfg
        rows, states = await self._planner.status()
        return Snapshot(
            now=shared.clock.now(),
            cfg=cfg,
            rows=rows,
            states={s.target: s for s in states},
            destinations={
                name: tuple(d.name for d in ctx.destinations)
                for name, ctx in engine.contexts.items()
            },
            daemon=self.facts(),
        )

    async def history(self, target: str, *, rotations: int, audit: int) -> TargetHistory | None:
        engine = self._shared.current_engine()
        if target not in engine.contexts:
            return None
        snapshot = await self.snapshot()
        records = [
            RotationRecord(r, tuple(await engine.journal(r.rotation_id)))
            for r in await engine.rotations(target, limit=rotations)
        ]
        events = await engine.audit_events(target, limit=audit)
        return TargetHistory(snapshot, target, tuple(records), tuple(events))

    def facts(self) -> DaemonFacts:
        """The daemon panel, from memory (no I/O)."""
        shared = self._shared
        health = shared.health
        elector = shared.elector
        ready, why = health.readiness()
        return DaemonFacts(
            version=__version__,
            leading=shared.leading(),
            election=elector.kind if elector is not None else "none",
            identity=elector.identity if elector is not None else None,
            leader=elector.holder if elector is not None and not shared.leading() else None,
            config_source=shared.cfg.source,
            config_loaded_at=self._reloader.loaded_at,
            store=describe_store(shared.cfg.state.url),
            started_at=self._started_at(),
            uptime=timedelta(seconds=max(0.0, health.monotonic() - health.started)),
            ready=ready,
            ready_reason=why,
            last_reload=self._reloader.last,
        )


__all__ = ["DaemonFeed"]
