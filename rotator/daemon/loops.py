"""The daemon's health and metrics loops: heartbeat, readiness probe, gauges, overdue notices.

:class:`Loops` feeds :class:`~rotator.daemon.control.Health` (``/livez``, ``/readyz``, the
systemd watchdog) and the state-derived gauges of :class:`~rotator.daemon.metrics.Metrics`, and
sends ``rotation_overdue`` once per episode. None of them ever stops the daemon.
"""

from __future__ import annotations

import asyncio

import structlog

from rotator.daemon.audit_head import AuditHeadPublisher
from rotator.daemon.planner import Planner
from rotator.daemon.shared import Shared, wait_event
from rotator.engine.engine import TargetStatus
from rotator.logs import scrub

log = structlog.get_logger(__name__)


class Loops:
    """The heartbeat, the readiness probe and the metrics refresh, as background tasks."""

    def __init__(self, shared: Shared, planner: Planner) -> None:
        self._shared = shared
        self._planner = planner
        self._tasks: list[asyncio.Task[None]] = []
        self._overdue: set[str] = set()

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The loops started, for the shutdown to cancel."""
        return list(self._tasks)

    def start_heartbeat(self) -> None:
        """The heartbeat, from the start (before the HTTP server listens)."""
        self._tasks.append(asyncio.create_task(self._heartbeat()))

    def start_probes(self) -> None:
        """The metrics refresh and the readiness probe, once the jobs run."""
        self._tasks.append(asyncio.create_task(self._metrics_loop()))
        self._tasks.append(asyncio.create_task(self._readiness_loop()))

    async def _heartbeat(self) -> None:
        """Beat every ``heartbeat`` seconds (and twice per systemd watchdog period); ping the
        watchdog only while live (a wedged loop or a stale lease gets the service restarted)."""
        shared = self._shared
        interval = shared.timings.heartbeat
        if shared.systemd.watchdog_interval is not None:
            interval = min(interval, shared.systemd.watchdog_interval)
        while True:
            shared.health.beat()
            live, why = shared.health.live()
            if live:
                shared.systemd.watchdog()
            else:
                log.warning("not_live", reason=why)
            await asyncio.sleep(interval)

    async def _readiness_loop(self) -> None:
        """Every ``readiness_every`` seconds, record in the health whether the state store can be
        read and written and the scheduler runs (``/readyz`` reads that, never the store)."""
        shared = self._shared
        problems = shared.health.problems
        unusable = "the state store cannot be read and written"
        while True:
            probe = asyncio.ensure_future(shared.current_engine().probe_store())
            if not (await asyncio.wait({probe}, timeout=shared.timings.readiness_every))[0]:
                problems["store"] = unusable  # a store that takes this long is not usable now
                await asyncio.wait({probe})
            error = probe.exception()
            if error is None:
                problems.pop("store", None)
            else:
                if "store" not in problems:
                    detail = scrub(str(error)) or type(error).__name__
                    log.warning("state_store_unusable", error=detail)
                problems["store"] = unusable
            if self._planner.jobs.running:
                problems.pop("scheduler", None)
            else:
                problems["scheduler"] = "the scheduler is not running"
            await asyncio.sleep(shared.timings.readiness_every)

    async def _metrics_loop(self) -> None:
        shared = self._shared
        audit_head = AuditHeadPublisher(shared.metrics, shared.clock)
        while True:
            try:
                await self._refresh_metrics(audit_head)
            except Exception as exc:  # noqa: BLE001 - metrics never stop the daemon
                log.warning("metrics_refresh_failed", error=scrub(str(exc)))
            await wait_event(shared.metrics_wake, shared.timings.metrics_every, clear=True)

    async def _refresh_metrics(self, audit_head: AuditHeadPublisher) -> None:
        """One refresh of the gauges; its per-target rows are freed on return, not held by the
        loop while it waits (a status row and a state per target: 5 MB for 10 000 targets)."""
        shared = self._shared
        rows, states = await self._planner.status()
        shared.metrics.refresh(shared.cfg, rows, states, now=shared.clock.now())
        self._notify_overdue(rows)
        await audit_head.publish(shared.current_engine())

    def _notify_overdue(self, rows: list[TargetStatus]) -> None:
        """``rotation_overdue`` once per episode: a key rotator rotated is older than max_age
        (the leader only, so several replicas do not all send it)."""
        if not self._shared.leading():
            return
        for row in rows:
            overdue = row.last_rotated_at is not None and not row.compliant
            if overdue and row.target not in self._overdue:
                self._overdue.add(row.target)
                self._shared.notifier.notify(
                    "rotation_overdue",
                    row.target,
                    message=f"key {row.key_id} is older than max_age ({row.reason})",
                )
            elif not overdue:
                self._overdue.discard(row.target)


__all__ = ["Loops"]
