"""``rotator run``: rotations on schedule and on demand, due revocations, a safe shutdown.

:class:`Daemon` is the lifecycle: it composes the daemon's parts around one context they share
(:class:`~rotator.daemon.shared.Shared`: the configuration, engine and elector in force, the
clock, timings, health and metrics), starts and stops them, handles the signals, and implements
:class:`~rotator.daemon.control.DaemonControl` for the HTTP API. The parts, one job each:

- :mod:`rotator.daemon.planner`: the jobs and the runs; every run, whatever way it ends, goes
  back through the planner, which re-plans its target from the state store;
- :mod:`rotator.daemon.takeover`: on gaining leadership, recovery, then every target planned;
- :mod:`rotator.daemon.revoker`: the revoke-due loop;
- :mod:`rotator.daemon.reloader`: SIGHUP, a new configuration applied between rotations;
- :mod:`rotator.daemon.loops`: the heartbeat, the readiness probe, the gauges, overdue notices.

Start: the configuration is loaded (credentials read) by the caller; the engine is built (state
store migrated); the HTTP server (health, metrics, API) listens; the heartbeat and the scheduler
start; systemd hears ``READY=1``. The instance then contends for leadership (a standby serves
health and metrics only). On gaining it, it registers every target (its first-seen anchor),
recovers interrupted rotations, plans one job per target (:mod:`rotator.daemon.scheduler`) and
starts the revoke-due loop (every ``revoke_every`` seconds and at each grace deadline).

SIGHUP reloads the configuration (:mod:`rotator.daemon.reloader`).
SIGTERM/SIGINT: scheduling pauses, the API stops taking rotations, in-flight rotations get up to
``stop_timeout`` seconds to reach their end (every step is journaled and resumable, so one cut
short is finished by recovery at the next start), then everything stops and the exit status is 0.
A second signal stops at once. Losing leadership stops at once with exit status 1.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import structlog
from starlette.applications import Starlette

from rotator.app.wiring import build_engine
from rotator.clock import Clock, SystemClock
from rotator.config import Config
from rotator.daemon.control import Health, UnknownTargetError
from rotator.daemon.http import build_app
from rotator.daemon.leader import Elector, build_elector
from rotator.daemon.loops import Loops
from rotator.daemon.notify import Notifier
from rotator.daemon.planner import Planner
from rotator.daemon.reloader import Reloader
from rotator.daemon.revoker import Revoker
from rotator.daemon.scheduler import Fire, Jobs, RotationJobs
from rotator.daemon.serving import Server, SwappableApp, http_server
from rotator.daemon.shared import Shared, Timings
from rotator.daemon.systemd import SystemdNotifier
from rotator.daemon.takeover import Takeover
from rotator.daemon.ui.access import is_loopback_host
from rotator.daemon.ui.app import StatusPage, served
from rotator.daemon.ui.feed import DaemonFeed
from rotator.engine.context import Alert
from rotator.engine.engine import Engine, TargetStatus
from rotator.errors import exit_status
from rotator.logs import scrub

log = structlog.get_logger(__name__)

EngineFactory = Callable[[Config], Awaitable[Engine]]
ElectorFactory = Callable[[Config, Health], Elector]


class Daemon:
    """The daemon of one configuration file (see the module docstring for its behaviour).

    ``engine_factory``, ``elector_factory``, ``jobs_factory``, ``notifier_factory`` and
    ``server_factory`` replace how the parts are built (tests, simulations)."""

    def __init__(
        self,
        cfg: Config,
        *,
        config_path: str | Path | None = None,
        clock: Clock | None = None,
        timings: Timings | None = None,
        systemd: SystemdNotifier | None = None,
        engine_factory: EngineFactory | None = None,
        elector_factory: ElectorFactory | None = None,
        jobs_factory: Callable[[Fire], Jobs] | None = None,
        notifier_factory: Callable[[Config], Notifier] | None = None,
        server_factory: Callable[[SwappableApp], Server] | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.timings = timings or Timings()
        self.systemd = systemd or SystemdNotifier.from_env()
        notifiers = notifier_factory or (lambda c: Notifier.from_config(c, clock=self.clock))
        shared = self.shared = Shared(
            cfg=cfg,
            notifier=notifiers(cfg),
            clock=self.clock,
            timings=self.timings,
            systemd=self.systemd,
            lose=self._lose,
        )
        self.health, self.metrics = shared.health, shared.metrics
        self.planner = Planner(shared, jobs_factory or RotationJobs)
        self.jobs = self.planner.jobs
        self.revoker = Revoker(shared)
        self.takeover = Takeover(shared, self.planner, self.revoker)
        self.loops = Loops(shared, self.planner)
        self._engine_factory = engine_factory or self._build_engine
        self.reloader = Reloader(
            shared,
            self.planner,
            config_path=config_path,
            engine_factory=self._engine_factory,
            notifier_factory=notifiers,
            on_config=self._serve_config,
        )
        self._server_factory = server_factory or (
            lambda app: http_server(self.cfg, app, on_rejected=self.metrics.observe_rejected)
        )
        self._elector_factory = elector_factory or build_elector
        self.started_at: datetime | None = None
        """When the HTTP server started listening (the status page's uptime)."""
        self.status_page = StatusPage(
            DaemonFeed(shared, self.planner, self.reloader, lambda: self.started_at)
        )
        self.http: Server | None = None
        self._leader_task: asyncio.Task[None] | None = None
        self._abandon = asyncio.Event()  # a second signal, or leadership lost: stop at once
        self._exit_code = 0
        # The lifecycle's own view of the shared events and the planner's runs (tests read them).
        self._stop, self._gate = shared.stop, shared.gate
        self._tasks, self._floor = self.planner.in_flight, self.planner.floor

    @property
    def cfg(self) -> Config:
        """The configuration in force (a reload replaces it)."""
        return self.shared.cfg

    @property
    def engine(self) -> Engine | None:
        """The engine in force, None before the start and after the stop."""
        return self.shared.engine

    @property
    def elector(self) -> Elector | None:
        return self.shared.elector

    @property
    def notifier(self) -> Notifier:
        return self.shared.notifier

    @property
    def _revoker(self) -> asyncio.Task[None] | None:
        """The revoke-due loop, started once this instance took over as the leader."""
        return self.revoker.task

    # -- DaemonControl ---------------------------------------------------------------------------

    def target_names(self) -> list[str]:
        return [t.name for t in self.cfg.targets]

    async def status(self) -> list[TargetStatus]:
        """``status --json`` rows whose ``next_due_at`` is when this daemon will fire (jitter and
        backoff included), the same on a standby."""
        rows, _ = await self.planner.status()
        return rows

    def request_rotation(self, target: str, *, emergency: bool) -> str:
        if target not in self.target_names():
            raise UnknownTargetError(target)
        return self.planner.request_rotation(target, emergency=emergency)

    async def rotation_view(self, rotation_id: str) -> dict[str, object] | None:
        return await self.planner.rotation_view(rotation_id)

    async def alert(self, alert: Alert) -> None:
        """The engine's alert hook: the current configuration's webhooks hear about it."""
        await self.shared.notifier(alert)

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (exit status 0) or a loss of leadership (1).

        Raises ``ConfigError`` or a backend error if the daemon cannot start (no READY=1 then;
        ``daemon_stopped`` logs the status ``rotator run`` exits with: 2 for a ``ConfigError``,
        such as a port in use or a state file that is not a database, 1 for anything else, such
        as a state store that cannot be reached).
        """
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self._run()
        except Exception as exc:
            self._exit_code = exit_status(exc)  # what ``rotator run`` will exit with
            raise
        finally:
            await self._shutdown()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        return self._exit_code

    def request_stop(self, why: str = "requested") -> None:
        """SIGTERM/SIGINT: stop taking work and shut down; a second call stops at once."""
        if self._stop.is_set():
            log.warning("shutdown_forced", signal=why)
            self._abandon.set()
            return
        log.info("shutdown_requested", signal=why, in_flight=sorted(self._tasks))
        self._stop.set()
        self.health.ready, self.health.reason = False, "shutting down"
        self.jobs.pause()
        self.systemd.stopping(self.shared.status_line(len(self._tasks)))
        self._gate.set()  # whatever waits for a reload to end sees the shutdown instead
        self.shared.revoke_wake.set()

    def request_reload(self) -> None:
        """SIGHUP: reload the configuration file (see :mod:`rotator.daemon.reloader`)."""
        self.reloader.request()

    async def _run(self) -> None:
        self.systemd.status("starting")
        elector = self.shared.elector = self._elector_factory(self.cfg, self.health)
        self.shared.engine = await self._engine_factory(self.cfg)
        self.loops.start_heartbeat()
        self.http = self._server_factory(SwappableApp(self._app(self.cfg)))
        await self.http.start()
        self.started_at = self.clock.now()
        self.jobs.start()
        self.loops.start_probes()
        self._leader_task = asyncio.create_task(elector.run(on_change=self.takeover.on_change))
        self.health.ready, self.health.reason = True, "ok"
        host, port = self.http.address
        log.info("daemon_started", targets=len(self.cfg.targets), host=host, port=port)
        self._log_ui(self.cfg)
        self.systemd.ready(self.shared.status_line(len(self._tasks)))
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({stop, self._leader_task}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if self._leader_task.done() and not self._leader_task.cancelled():
            error = self._leader_task.exception()
            self._lose(error or RuntimeError("the leader election ended"))

    def _lose(self, error: BaseException) -> None:
        """Leadership is gone (or its election failed): stop at once, exit status 1."""
        if self._exit_code == 0:
            log.error("leadership_lost_exiting", error=scrub(str(error)) or type(error).__name__)
        self._exit_code = 1
        self._abandon.set()
        self.request_stop("leadership lost")

    async def _shutdown(self) -> None:
        """Drain (bounded), then stop every part that was started. Idempotent."""
        self._stop.set()
        self._gate.set()
        self.jobs.pause()
        self.shared.revoke_wake.set()
        leftover = await self._drain(self.timings.stop_timeout)
        if leftover:
            log.warning("shutdown_cut_short", targets=sorted(self._tasks))
            for task in leftover:
                task.cancel()
            await asyncio.wait(leftover, timeout=self.timings.cancel_wait)
        self.jobs.shutdown()
        background = (self._leader_task, self.reloader.task, *self.loops.tasks, self.planner.task)
        others = [t for t in background if t]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=self.timings.tasks_wait)
        if self.elector is not None:
            await self.elector.release()
        if self.http is not None:
            await self.http.stop()
        if self.shared.engine is not None:
            await self.shared.engine.close()
            self.shared.engine = None
        await self.shared.notifier.aclose()
        log.info("daemon_stopped", exit_code=self._exit_code)
        self.systemd.close()

    def _in_flight(self) -> set[asyncio.Task[None]]:
        """The work a stop waits for: the runs, the takeover, the revoke-due loop."""
        tasks = set(self._tasks.values())
        parts = (self.takeover.task, self.revoker.task)
        tasks |= {t for t in parts if t is not None and not t.done()}
        return tasks

    async def _drain(self, timeout: float) -> set[asyncio.Task[None]]:
        """Wait up to ``timeout`` seconds for in-flight work, or until told to abandon it; returns
        what is still running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        abandon = asyncio.create_task(self._abandon.wait())
        try:
            while (pending := self._in_flight()) and not self._abandon.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait(
                    pending | {abandon}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            abandon.cancel()
        return self._in_flight()

    # -- building the parts ----------------------------------------------------------------------

    async def _build_engine(self, cfg: Config) -> Engine:
        return await build_engine(
            cfg,
            clock=self.clock,
            on_alert=self.alert,
            on_call=self.metrics.observe_call,
            before_step=self.shared.ensure_leading,
        )

    def _app(self, cfg: Config) -> Starlette:
        server = cfg.server
        ui = (
            self.status_page.app(
                admin_token=server.admin_token,
                loopback=is_loopback_host(server.host),
                on_rejected=self.metrics.observe_rejected,
            )
            if server.ui
            else None
        )
        return build_app(
            self,
            admin_token=server.admin_token,
            registry=self.metrics.registry,
            on_rejected=self.metrics.observe_rejected,
            ui=ui,
        )

    def _serve_config(self, cfg: Config) -> None:
        """A reloaded configuration: the API and the status page take its token."""
        if self.http is not None:
            self.http.app.app = self._app(cfg)
            self._log_ui(cfg)

    @staticmethod
    def _log_ui(cfg: Config) -> None:
        """One line: whether the status page is served, and if not why."""
        server = cfg.server
        why = served(enabled=server.ui, admin_token=server.admin_token, listen_host=server.host)
        if why is None:
            log.info("ui_serving", path="/ui/", login=server.admin_token is not None)
        elif server.ui:
            log.warning("ui_not_served", reason=why)


async def run_daemon(cfg: Config, *, config_path: str | Path | None) -> int:
    """``rotator run``: the daemon on the running loop with signal handling; its exit status."""
    return await Daemon(cfg, config_path=config_path).run()


__all__ = ["Daemon", "EngineFactory", "Timings", "run_daemon"]
