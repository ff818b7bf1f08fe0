"""What the daemon's parts share: :class:`Timings`, and :class:`Shared`, the one context object
they are handed.

:class:`~rotator.daemon.runner.Daemon` composes the parts (:mod:`~rotator.daemon.planner`,
:mod:`~rotator.daemon.revoker`, :mod:`~rotator.daemon.reloader`, :mod:`~rotator.daemon.loops`,
:mod:`~rotator.daemon.takeover`); each keeps its own state private and reads what it needs of
the others' here. Every field of :class:`Shared` names its one writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from rotator.clock import Clock
from rotator.config import Config
from rotator.daemon.control import Health
from rotator.daemon.leader import Elector
from rotator.daemon.metrics import Metrics
from rotator.daemon.notify import Notifier
from rotator.daemon.systemd import SystemdNotifier
from rotator.engine.engine import Engine


@dataclass(frozen=True, slots=True)
class Timings:
    """The daemon's periods and bounds, in seconds (tests shorten them)."""

    stop_timeout: float = 60.0
    """SIGTERM: how long in-flight rotations get to finish."""
    cancel_wait: float = 5.0
    """SIGTERM: how long rotations still running after ``stop_timeout`` get to unwind, cancelled."""
    tasks_wait: float = 5.0
    """SIGTERM: how long the background tasks (election, reload, loops) get to stop, cancelled."""
    revoke_every: float = 30.0
    """A revoke-due pass runs at least this often, and at each grace deadline."""
    heartbeat: float = 2.0
    """The event-loop heartbeat feeding ``/livez`` and the systemd watchdog."""
    metrics_every: float = 15.0
    """State-derived gauges are refreshed this often, and after each rotation."""
    on_demand_interval: float = 60.0
    """Per target, the least time between two on-demand rotations (emergencies exempt)."""
    retry_floor: float = 60.0
    """A target still due right after a run waits at least this long."""
    replan_every: float = 60.0
    """Every target's plan is re-read from state at least this often (and after every run), so
    what another process did (a CLI rotation, failure or recovery) moves the daemon's jobs."""
    readiness_every: float = 5.0
    """The state store is probed (read and a rolled-back write) this often, for ``/readyz``."""

    def stop_bound(self, release: float) -> float:
        """The longest a daemon told to stop waits before it exits, in seconds, given the
        leader release's own bound (:func:`rotator.daemon.leader.release_bound`): what a stop
        timeout (systemd, Docker, Kubernetes) must exceed."""
        return self.stop_timeout + self.cancel_wait + self.tasks_wait + release


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False)
class Shared:
    """The daemon's current configuration, engine and leadership, its fixed tools, and the
    events that pace its parts. A part reads any field; only the named writer assigns one."""

    cfg: Config
    """The configuration in force. Writer: the reloader."""
    notifier: Notifier
    """The current configuration's webhooks. Writer: the reloader."""
    clock: Clock
    timings: Timings
    systemd: SystemdNotifier
    lose: Callable[[BaseException], None]
    """Leadership is gone (or its election failed): the daemon stops at once, exit status 1."""
    health: Health = field(default_factory=Health)
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    """The current engine, None before the start and after the stop. Writers: the daemon's
    lifecycle (start, stop) and the reloader (under :attr:`engine_lock`)."""
    elector: Elector | None = None
    """The leader elector, from the start on. Writer: the daemon's lifecycle."""
    took_over: bool = False
    """This instance began acting as the leader. Writer: the takeover."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    """Set from the first stop request (or a failed start) on. Writer: the daemon's lifecycle."""
    gate: asyncio.Event = field(default_factory=_set_event)
    """Set: rotations (and revoke passes, the takeover) may start; cleared while a reload waits
    for the running rotations and swaps the engine. Writers: the reloader, and the lifecycle on
    a stop (whatever waits for a reload to end then sees the stop instead)."""
    engine_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by whatever must not see the engine swapped under it (takeover, revoke pass)."""
    revoke_wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by any part to run a revoke-due pass now; the revoker waits on it."""
    metrics_wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by any part to refresh the state-derived gauges now; the metrics loop waits on it."""

    def current_engine(self) -> Engine:
        """The current engine; raises ``RuntimeError`` before the start and after the stop."""
        if self.engine is None:
            raise RuntimeError("the daemon is not started")
        return self.engine

    def leading(self) -> bool:
        """Acting as the leader: not stopping, elected, and the takeover begun."""
        return (
            not self.stop.is_set()
            and self.elector is not None
            and self.elector.is_leader
            and self.took_over
        )

    async def ensure_leading(self) -> None:
        """Before every journaled step: still the leader? (raises ``LeadershipLost`` if not)."""
        if self.elector is not None:
            await self.elector.ensure()

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once on shutdown."""
        await wait_event(self.stop, seconds)

    def status_line(self, rotating: int) -> str:
        """What systemd shows for the daemon, given how many rotations are in flight."""
        if self.stop.is_set():
            return f"stopping: {rotating} rotation(s) in flight"
        if self.elector is None or not self.elector.is_leader:
            return f"standby: {len(self.cfg.targets)} target(s); serving health and metrics"
        return f"leading: {len(self.cfg.targets)} target(s), {rotating} rotating"


async def wait_event(event: asyncio.Event, seconds: float, *, clear: bool = False) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True if it was set. ``clear`` clears it
    first (a wake-up flag: only a set after this call counts).

    Built on ``asyncio.wait``, not ``wait_for``: on Python 3.11 ``wait_for`` can swallow a
    cancellation that races with the event, and a loop built on it would never stop."""
    if clear:
        event.clear()
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return bool(done)


__all__ = ["Shared", "Timings", "wait_event"]
