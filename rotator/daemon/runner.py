"""``rotator run``: rotations on schedule and on demand, due revocations, a safe shutdown.

:class:`Daemon` drives one :class:`~rotator.engine.engine.Engine` from an asyncio event loop and
implements :class:`~rotator.daemon.control.DaemonControl` for the HTTP API.

Start: the configuration is loaded (credentials read) by the caller; the engine is built (state
store migrated); the HTTP server (health, metrics, API) listens; the heartbeat and the scheduler
start; systemd hears ``READY=1``. The instance then contends for leadership (a standby serves
health and metrics only). On gaining it, it registers every target (its first-seen anchor),
recovers interrupted rotations, plans one job per target (:mod:`rotator.daemon.scheduler`) and
starts the revoke-due loop (every ``revoke_every`` seconds and at each grace deadline).

Each run, scheduled or on demand, is a task of the daemon's own (never an APScheduler coroutine
job, which ``shutdown`` would cancel). Jobs are placed in one place, the planner
(:meth:`Daemon._replan`): it computes every target's next fire from the state store
(:func:`rotator.engine.due.plan_fire`) after every run, whatever way the run ended (success,
failure, not due, skipped, an exception), and every ``replan_every`` seconds, so rotations,
failures and recoveries done by another process (the CLI) move the daemon's jobs as well. A failed
run leaves its backoff in the store (the engine records every failed attempt); a target still due
right after a run waits ``retry_floor`` seconds, so nothing spins.

SIGHUP reloads the configuration: an invalid one is logged on one line and the old one kept; a
valid one waits until no rotation runs, then replaces the engine, the API's token and every job
(``state``, ``leader`` and ``server`` changes other than its token need a restart and are
refused).
SIGTERM/SIGINT: scheduling pauses, the API stops taking rotations, in-flight rotations get up to
``stop_timeout`` seconds to reach their end (every step is journaled and resumable, so one cut
short is finished by recovery at the next start), then everything stops and the exit status is 0.
A second signal stops at once. Losing leadership stops at once with exit status 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from starlette.applications import Starlette

from rotator.app.wiring import build_engine, observe_destination_calls
from rotator.clock import Clock, SystemClock
from rotator.config import Config, load_config
from rotator.contracts import TargetState
from rotator.daemon.audit_head import AuditHeadPublisher
from rotator.daemon.control import (
    Health,
    RateLimitedError,
    RotationInFlightError,
    UnknownTargetError,
)
from rotator.daemon.http import build_app
from rotator.daemon.leader import Elector, build_elector
from rotator.daemon.metrics import Metrics
from rotator.daemon.notify import Notifier
from rotator.daemon.scheduler import Fire, FirePlan, Jobs, RotationJobs, plan_fire
from rotator.daemon.serving import HttpServer, Server, ServerLimits, SwappableApp, bind
from rotator.daemon.systemd import SystemdNotifier
from rotator.engine.context import Alert
from rotator.engine.engine import Engine, TargetStatus
from rotator.engine.rotation import RotationResult
from rotator.engine.steps import Outcome
from rotator.errors import ConfigError, LeadershipLost, RotatorError, exit_status
from rotator.logs import scrub
from rotator.render import iso

log = structlog.get_logger(__name__)

EngineFactory = Callable[[Config], Awaitable[Engine]]
ElectorFactory = Callable[[Config, Health], Elector]

_FAILED = frozenset({Outcome.ROLLED_BACK, Outcome.STUCK})
_PROMOTED = frozenset({Outcome.ROTATED, Outcome.PROMOTED})
_KEEP_REQUESTS = 1000
"""How many on-demand rotation ids the daemon remembers before they reach the store."""


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


@dataclass
class _Request:
    """A rotation the daemon started, until the state store knows it (or if it never does)."""

    target: str
    state: str = "queued"
    result: RotationResult | None = None


class Daemon:
    """The daemon of one configuration file (see the module docstring for its behaviour)."""

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
        self.cfg = cfg
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self.timings = timings or Timings()
        self.systemd = systemd or SystemdNotifier.from_env()
        self.health = Health()
        self.metrics = Metrics()
        self._notifier_factory = notifier_factory or (
            lambda c: Notifier.from_config(c, clock=self.clock)
        )
        self.notifier = self._notifier_factory(cfg)
        self.jobs: Jobs = (jobs_factory or RotationJobs)(self._fire)
        self.engine: Engine | None = None
        self.elector: Elector | None = None
        self.http: Server | None = None
        self._engine_factory = engine_factory or self._build_engine
        self._server_factory = server_factory or self._http_server
        self._elector_factory = elector_factory or build_elector
        self._tasks: dict[str, asyncio.Task[None]] = {}  # queued or running, by target
        self._running: set[asyncio.Task[None]] = set()  # past the reload gate
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._last_on_demand: dict[str, float] = {}
        self._floor: dict[str, datetime] = {}
        self._background: list[asyncio.Task[None]] = []
        self._leader_task: asyncio.Task[None] | None = None
        self._takeover: asyncio.Task[None] | None = None
        self._revoker: asyncio.Task[None] | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._engine_lock = asyncio.Lock()
        self._gate = asyncio.Event()  # set: rotations may start (cleared while reloading)
        self._gate.set()
        self._stop = asyncio.Event()  # set from the first stop request (or a failed start) on
        self._abandon = asyncio.Event()  # a second signal, or leadership lost: stop at once
        self._revoke_wake = asyncio.Event()
        self._metrics_wake = asyncio.Event()
        self._plan_wake = asyncio.Event()
        self._ran: set[str] = set()  # targets whose run ended since the planner last looked
        self._planner: asyncio.Task[None] | None = None
        self._overdue: set[str] = set()
        self._exit_code = 0

    # -- DaemonControl ---------------------------------------------------------------------------

    def target_names(self) -> list[str]:
        return [t.name for t in self.cfg.targets]

    async def status(self) -> list[TargetStatus]:
        """``status --json`` rows whose ``next_due_at`` is when this daemon will fire (jitter and
        backoff included), the same on a standby."""
        rows, _ = await self._status_and_states()
        return rows

    def request_rotation(self, target: str, *, emergency: bool) -> str:
        if target not in self.target_names():
            raise UnknownTargetError(target)
        if self._stop.is_set():
            raise PermissionError("the daemon is shutting down")
        if self.engine is None or self.elector is None or not self.elector.is_leader:
            raise PermissionError("this instance is not the leader")
        if target in self._tasks or (target in self.engine.contexts and self.engine.busy(target)):
            raise RotationInFlightError(target)
        now = self.clock.monotonic()
        last = self._last_on_demand.get(target)
        interval = self.timings.on_demand_interval
        if not emergency and last is not None and now - last < interval:
            raise RateLimitedError(interval - (now - last))
        self._last_on_demand[target] = now
        rotation_id = str(uuid.uuid4())
        self._launch(target, rotation_id, emergency=emergency, origin="api")
        return rotation_id

    async def rotation_view(self, rotation_id: str) -> dict[str, object] | None:
        engine = self._engine()
        rotation = await engine.get_rotation(rotation_id)
        if rotation is not None:
            steps = await engine.journal(rotation_id)
            return {
                "rotation_id": rotation.rotation_id,
                "target": rotation.target,
                "state": rotation.state,
                "outcome": rotation.outcome,
                "steps": [{"step": s.step, "at": iso(s.at)} for s in steps],
                "error": rotation.error,
                "started_at": iso(rotation.started_at),
                "finished_at": iso(rotation.finished_at),
            }
        request = self._requests.get(rotation_id)
        if request is None:
            return None
        state, outcome, error = request.state, None, None
        if request.result is not None:  # over, and never started in the store
            state, outcome = "rolled_back", str(request.result.outcome)
            error = request.result.error
        return {
            "rotation_id": rotation_id,
            "target": request.target,
            "state": state,
            "outcome": outcome,
            "steps": [],
            "error": error,
            "started_at": None,
            "finished_at": None,
        }

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
        stop_observing = observe_destination_calls(self.metrics.observe_call)
        try:
            await self._run()
        except Exception as exc:
            self._exit_code = exit_status(exc)  # what ``rotator run`` will exit with
            raise
        finally:
            await self._shutdown()
            stop_observing()
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
        self.systemd.stopping(f"stopping: {len(self._tasks)} rotation(s) in flight")
        self._gate.set()  # whatever waits for a reload to end sees the shutdown instead
        self._revoke_wake.set()

    def request_reload(self) -> None:
        """SIGHUP: reload the configuration file (see the module docstring)."""
        if self._stop.is_set():
            return
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return
        self._reload_task = asyncio.create_task(self._reload())

    async def _run(self) -> None:
        self.systemd.status("starting")
        self.elector = self._elector_factory(self.cfg, self.health)
        self.engine = await self._engine_factory(self.cfg)
        self._background.append(asyncio.create_task(self._heartbeat()))
        self.http = self._server_factory(SwappableApp(self._app(self.cfg)))
        await self.http.start()
        self.jobs.start()
        self._background.append(asyncio.create_task(self._metrics_loop()))
        self._background.append(asyncio.create_task(self._readiness_loop()))
        self._leader_task = asyncio.create_task(self.elector.run(on_change=self._on_leadership))
        self.health.ready, self.health.reason = True, "ok"
        host, port = self.http.address
        log.info("daemon_started", targets=len(self.cfg.targets), host=host, port=port)
        self.systemd.ready(self._status_line())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({stop, self._leader_task}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if self._leader_task.done() and not self._leader_task.cancelled():
            error = self._leader_task.exception()
            self._lose(error or RuntimeError("the leader election ended"))

    def _http_server(self, app: SwappableApp) -> Server:
        return HttpServer(
            app, self._bind(), _limits(self.cfg), on_rejected=self.metrics.observe_rejected
        )

    def _bind(self) -> socket.socket:
        server = self.cfg.server
        try:
            return bind(server.host, server.port)
        except OSError as exc:
            raise ConfigError(
                self.cfg.source,
                "server.listen",
                f"cannot listen on {server.listen}: {exc.strerror or type(exc).__name__}",
            ) from None

    def _app(self, cfg: Config) -> Starlette:
        return build_app(
            self,
            admin_token=cfg.server.admin_token,
            registry=self.metrics.registry,
            on_rejected=self.metrics.observe_rejected,
        )

    async def _build_engine(self, cfg: Config) -> Engine:
        return await build_engine(
            cfg,
            clock=self.clock,
            on_alert=self.alert,
            on_call=self.metrics.observe_call,
            before_step=self._ensure_leading,
        )

    async def _ensure_leading(self) -> None:
        """Before every journaled step: still the leader? (raises ``LeadershipLost`` if not)."""
        if self.elector is not None:
            await self.elector.ensure()

    async def alert(self, alert: Alert) -> None:
        """The engine's alert hook: the current configuration's webhooks hear about it."""
        await self.notifier(alert)

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the daemon is not started")
        return self.engine

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
        self._revoke_wake.set()
        leftover = await self._drain(self.timings.stop_timeout)
        if leftover:
            log.warning("shutdown_cut_short", targets=sorted(self._tasks))
            for task in leftover:
                task.cancel()
            await asyncio.wait(leftover, timeout=self.timings.cancel_wait)
        self.jobs.shutdown()
        others = [t for t in (self._leader_task, self._reload_task, *self._background) if t]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=self.timings.tasks_wait)
        if self.elector is not None:
            await self.elector.release()
        if self.http is not None:
            await self.http.stop()
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
        await self.notifier.aclose()
        log.info("daemon_stopped", exit_code=self._exit_code)
        self.systemd.close()

    def _in_flight(self) -> set[asyncio.Task[None]]:
        tasks = set(self._tasks.values())
        tasks |= {t for t in (self._takeover, self._revoker) if t is not None and not t.done()}
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

    # -- leadership ------------------------------------------------------------------------------

    def _on_leadership(self, leading: bool) -> None:
        self.metrics.set_leader(leading)
        if leading and self._takeover is None and not self._stop.is_set():
            self._takeover = asyncio.create_task(self._take_over())
        self.systemd.status(self._status_line())

    async def _take_over(self) -> None:
        """As the new leader: recover interrupted rotations, plan every target, revoke due keys.
        Retried every ``retry_floor`` seconds while the state store fails."""
        while not self._stop.is_set():
            await self._gate.wait()
            try:
                async with self._engine_lock:
                    if self._stop.is_set():
                        return
                    results, orphans = await self._engine().recover()
                    for result in results:
                        log.info("rotation_recovered", **_loggable(result))
                    if orphans:
                        log.warning("orphan_keys", keys=[o.as_dict() for o in orphans])
                    await self._plan_all()
                break
            except LeadershipLost as exc:
                self._lose(exc)
                return
            except Exception:
                log.exception("takeover_failed")
                self.health.problems["takeover"] = "the leader could not recover and plan targets"
                await self._pause(self.timings.retry_floor)
        self.health.problems.pop("takeover", None)
        if not self._stop.is_set():
            self._revoker = asyncio.create_task(self._revoke_loop())
            self._planner = asyncio.create_task(self._planner_loop())
            self._background.append(self._planner)
            self._metrics_wake.set()
            self.systemd.status(self._status_line())

    # -- scheduling ------------------------------------------------------------------------------

    def _leading(self) -> bool:
        return (
            not self._stop.is_set()
            and self.elector is not None
            and self.elector.is_leader
            and self._takeover is not None
        )

    async def _plan_all(self) -> None:
        """Register every target (its first-seen anchor) and place every job afresh."""
        engine = self._engine()
        self.jobs.clear()
        for target in self.cfg.targets:
            await engine.register_target(target.name)
        await self._replan(set())

    async def _replan(self, ran: set[str]) -> None:
        """The one place jobs are placed: every target's next fire computed from state (one
        read of the store), its job moved where the plan changed. A target in ``ran`` whose run
        just ended and that is still due gets ``retry_floor`` first, so nothing spins; a target
        whose run is in flight is planned when that run ends."""
        engine = self._engine()
        if not self._leading():
            return
        states = {s.target: s for s in await engine.list_targets()}
        if engine is not self.engine or not self._leading():
            return  # a reload or a loss of leadership happened meanwhile: theirs to plan
        now = self.clock.now()
        refresh = bool(ran)  # a run ended, or a job moved: the gauges follow
        for name in engine.contexts:
            if name in self._tasks:
                continue
            plan = self._plan_of(engine, name, states.get(name))
            if name in ran and plan.fire_at <= now:
                self._floor[name] = now + timedelta(seconds=self.timings.retry_floor)
                plan = self._plan_of(engine, name, states.get(name))
            if self.jobs.planned(name) != plan.fire_at:
                self.jobs.plan(plan)
                refresh = True
                log.info("rotation_planned", **plan.as_log())
        for name in set(self.jobs.targets()) - set(engine.contexts):
            self.jobs.drop(name)
        self.jobs.wakeup()
        if refresh:
            self._metrics_wake.set()

    async def _planner_loop(self) -> None:
        """Re-plan after every run (woken by it) and every ``replan_every`` seconds."""
        while not self._stop.is_set():
            await self._gate.wait()
            if self._stop.is_set():
                return
            self._plan_wake.clear()  # a wake-up from here on is seen by the wait below
            ran, self._ran = self._ran, set()
            try:
                await self._replan(ran)
            except Exception:
                self._ran |= ran
                log.exception("rotation_planning_failed", target=None)
            await _wait_event(self._plan_wake, self.timings.replan_every)

    def _plan_of(self, engine: Engine, name: str, state: TargetState | None) -> FirePlan:
        policy = engine.context(name).target.policy
        return plan_fire(
            name, policy, state, now=self.clock.now(), not_before=self._floor.get(name)
        )

    async def _fire(self, name: str) -> None:
        """The APScheduler job: hand the run to a task of the daemon's own and return."""
        if not self._leading() or not self._gate.is_set():
            return  # re-planned when leadership is taken or the reload ends
        if name in self._tasks:
            log.info("rotation_fire_skipped", target=name, reason="a rotation is in flight")
            return
        self._launch(name, str(uuid.uuid4()), emergency=False, origin="schedule")

    def _launch(self, name: str, rotation_id: str, *, emergency: bool, origin: str) -> None:
        request = _Request(target=name)
        self._requests[rotation_id] = request
        while len(self._requests) > _KEEP_REQUESTS:
            self._requests.popitem(last=False)
        self._tasks[name] = asyncio.create_task(
            self._run_then_replan(name, rotation_id, request, emergency=emergency, origin=origin),
            name=f"rotate {name}",
        )

    async def _run_then_replan(
        self, name: str, rotation_id: str, request: _Request, *, emergency: bool, origin: str
    ) -> None:
        """One run of ``name``, then, whatever way it ended, the planner re-plans the target
        from state (the only way out of a run: no path can leave a target unplanned)."""
        try:
            await self._rotation(name, rotation_id, request, emergency=emergency, origin=origin)
        finally:
            self._ran.add(name)
            self._plan_wake.set()  # the planner then wakes the metrics refresh
            if request.result is None or request.result.outcome in _PROMOTED:
                self._revoke_wake.set()  # old keys got their deadlines

    async def _rotation(
        self, name: str, rotation_id: str, request: _Request, *, emergency: bool, origin: str
    ) -> None:
        """One run of ``name`` (the caller re-plans it afterwards)."""
        started = self.clock.monotonic()
        current = asyncio.current_task()
        try:
            await self._gate.wait()
            if current is not None:
                self._running.add(current)
            if self._stop.is_set():
                request.result = _not_run(name, "the daemon stopped before the rotation started")
                return
            engine = self._engine()
            if name not in engine.contexts:
                request.result = _not_run(name, "the target left the configuration")
                return
            if origin == "schedule" and not await self._still_due(engine, name):
                request.result = _not_run(name, "not due any more")
                return
            assert self.elector is not None
            await self.elector.ensure()
            request.state = "running"
            result = await engine.rotate(name, emergency=emergency, rotation_id=rotation_id)
            request.result = result
            level = log.info if result.outcome not in _FAILED else log.warning
            seconds = round(self.clock.monotonic() - started, 3)
            level("rotation_result", origin=origin, seconds=seconds, **_loggable(result))
            journal = (
                await engine.journal(result.rotation_id)
                if result.rotation_id and result.outcome in _FAILED
                else []
            )
            self.metrics.observe_rotation(result, seconds, journal=journal)
            if result.outcome in _PROMOTED:
                self.notifier.notify(
                    "rotation_succeeded",
                    name,
                    rotation_id=result.rotation_id,
                    message=f"new key {result.new_key_id} served everywhere",
                )
        except LeadershipLost as exc:
            request.result = _not_run(name, "this instance lost leadership")
            self._lose(exc)
        except asyncio.CancelledError:
            request.result = _not_run(name, "interrupted; recovery finishes it at the next start")
            raise
        except Exception as exc:
            log.exception("rotation_crashed", target=name, rotation_id=rotation_id)
            request.result = RotationResult(
                name, None, Outcome.ROLLED_BACK, error=scrub(f"{type(exc).__name__}: {exc}")
            )
            self._floor[name] = self.clock.now() + timedelta(seconds=self.timings.retry_floor)
        finally:
            if current is not None:
                self._running.discard(current)
            if self._tasks.get(name) is current:
                del self._tasks[name]

    async def _still_due(self, engine: Engine, name: str) -> bool:
        """A scheduled fire re-checks state (another process may have rotated meanwhile)."""
        plan = self._plan_of(engine, name, await engine.get_target(name))
        if plan.fire_at <= self.clock.now() + timedelta(seconds=1):
            return True
        log.info("rotation_not_due", **plan.as_log())
        return False

    # -- revocation ------------------------------------------------------------------------------

    async def _revoke_loop(self) -> None:
        """Revoke due keys every ``revoke_every`` seconds, at each grace deadline and after each
        rotation; stops after the current pass on shutdown."""
        while not self._stop.is_set():
            await self._gate.wait()
            async with self._engine_lock:
                if self._stop.is_set():
                    return
                if self._gate.is_set():
                    await self._revoke_pass()
                delay = await self._next_revoke_delay()
            if self._stop.is_set():  # a stop's wake-up may have come during the pass: the
                return  # clear below would lose it and the drain would wait out ``delay``
            await _wait_event(self._revoke_wake, delay, clear=True)

    async def _revoke_pass(self) -> None:
        try:
            assert self.elector is not None
            await self.elector.ensure()
            for result in await self._engine().revoke_due():
                log.info("key_revocation", **result.as_dict())
            self._metrics_wake.set()
        except LeadershipLost as exc:
            self._lose(exc)
        except Exception:
            log.exception("revoke_due_failed")

    async def _next_revoke_delay(self) -> float:
        """Seconds to the earliest future grace deadline, at most ``revoke_every``."""
        every = self.timings.revoke_every
        try:
            states = await self._engine().list_targets()
        except RotatorError:
            return every
        now = self.clock.now()
        ahead = [k.revoke_due_at for s in states for k in s.retiring if k.revoke_due_at > now]
        if not ahead:
            return every
        return max(0.05, min(every, (min(ahead) - now).total_seconds()))

    # -- reload ----------------------------------------------------------------------------------

    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            await self._reload_once()
            if not self._reload_again or self._stop.is_set():
                return

    async def _reload_once(self) -> None:
        log.info("config_reload_requested", config=str(self.config_path or "$ROTATOR_CONFIG"))
        self.systemd.reloading()  # Type=notify-reload: RELOADING=1 now, READY=1 when done
        try:
            loaded = await self._load_for_reload()
            if loaded is not None:
                await self._apply(*loaded)
        finally:
            self.systemd.ready(self._status_line())

    async def _load_for_reload(self) -> tuple[Config, Notifier] | None:
        """The new configuration and its notifier, or None (logged) if it cannot be applied.

        Loaded as at start (``--strict-permissions`` included) on a thread of its own, for at
        most ``config.RELOAD_TIMEOUT_S``: a load stuck on a file that never ends is reported and
        abandoned, and the next SIGHUP loads afresh.
        """
        from rotator import config
        from rotator.pool import in_own_thread

        limit = config.RELOAD_TIMEOUT_S
        try:
            new = await in_own_thread(
                lambda: load_config(
                    self.config_path, strict_permissions=self.cfg.strict_permissions
                ),
                timeout=limit,
                name="config-reload",
            )
            changed = _restart_only_changes(self.cfg, new)
            if changed:
                _reload_failed(f"{', '.join(changed)} changed: restart rotator to apply")
                return None
            return new, self._notifier_factory(new)
        except ConfigError as exc:
            _reload_failed(str(exc))
            return None
        except TimeoutError:
            _reload_failed(
                f"{self.config_path}: not loaded within {limit:g} s (a file that blocks?)"
            )
            return None

    async def _apply(self, new: Config, notifier: Notifier) -> None:
        """Between rotations: a new engine, notifier and API for ``new``, and every job again."""
        self._gate.clear()
        self.jobs.pause()
        try:
            await self._wait_rotations_or_stop()
            if self._stop.is_set():
                return
            async with self._engine_lock:
                try:
                    engine = await self._engine_factory(new)
                except Exception as exc:  # noqa: BLE001 - any failure keeps the old engine
                    _reload_failed(f"{type(exc).__name__}: {exc}")
                    await notifier.aclose()
                    return
                old, self.engine, self.cfg = self.engine, engine, new
                old_notifier, self.notifier = self.notifier, notifier
                if self.http is not None:
                    self.http.app.app = self._app(new)
                if old is not None:
                    await old.close()
                await old_notifier.aclose()
            log.info("config_reloaded", targets=len(new.targets))
        finally:
            if not self._stop.is_set():
                await self._replan_after_reload()

    async def _wait_rotations_or_stop(self) -> None:
        """Wait until no rotation runs (those queued behind the reload wait for it instead)."""
        stop = asyncio.create_task(self._stop.wait())
        try:
            while (running := set(self._running)) and not self._stop.is_set():
                await asyncio.wait(running | {stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def _replan_after_reload(self) -> None:
        try:
            if self._leading():
                await self._plan_all()
        except Exception:
            log.exception("rotation_planning_failed", target=None)
        finally:
            self.jobs.resume()
            self._gate.set()
            self._revoke_wake.set()
            self._metrics_wake.set()

    # -- heartbeat, metrics, status --------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Beat every ``heartbeat`` seconds (and twice per systemd watchdog period); ping the
        watchdog only while live (a wedged loop or a stale lease gets the service restarted)."""
        interval = self.timings.heartbeat
        if self.systemd.watchdog_interval is not None:
            interval = min(interval, self.systemd.watchdog_interval)
        while True:
            self.health.beat()
            live, why = self.health.live()
            if live:
                self.systemd.watchdog()
            else:
                log.warning("not_live", reason=why)
            await asyncio.sleep(interval)

    async def _readiness_loop(self) -> None:
        """Every ``readiness_every`` seconds, record in :attr:`health` whether the state store can
        be read and written and the scheduler runs (``/readyz`` reads that, never the store)."""
        problems = self.health.problems
        unusable = "the state store cannot be read and written"
        while True:
            probe = asyncio.ensure_future(self._engine().probe_store())
            if not (await asyncio.wait({probe}, timeout=self.timings.readiness_every))[0]:
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
            if self.jobs.running:
                problems.pop("scheduler", None)
            else:
                problems["scheduler"] = "the scheduler is not running"
            await asyncio.sleep(self.timings.readiness_every)

    async def _metrics_loop(self) -> None:
        audit_head = AuditHeadPublisher(self.metrics, self.clock)
        while True:
            try:
                rows, states = await self._status_and_states()
                self.metrics.refresh(self.cfg, rows, states, now=self.clock.now())
                self._notify_overdue(rows)
                await audit_head.publish(self._engine())
            except Exception as exc:  # noqa: BLE001 - metrics never stop the daemon
                log.warning("metrics_refresh_failed", error=scrub(str(exc)))
            await _wait_event(self._metrics_wake, self.timings.metrics_every, clear=True)

    def _notify_overdue(self, rows: list[TargetStatus]) -> None:
        """``rotation_overdue`` once per episode: a key rotator rotated is older than max_age
        (the leader only, so several replicas do not all send it)."""
        if not self._leading():
            return
        for row in rows:
            overdue = row.last_rotated_at is not None and not row.compliant
            if overdue and row.target not in self._overdue:
                self._overdue.add(row.target)
                self.notifier.notify(
                    "rotation_overdue",
                    row.target,
                    message=f"key {row.key_id} is older than max_age ({row.reason})",
                )
            elif not overdue:
                self._overdue.discard(row.target)

    async def _status_and_states(self) -> tuple[list[TargetStatus], list[TargetState]]:
        engine = self._engine()
        states = await engine.list_targets()
        rows = await engine.status(states)
        by_name = {s.target: s for s in states}
        planned = [  # the engine's plan, and this daemon's floor where it has one
            dataclasses.replace(
                row, next_due_at=self._plan_of(engine, row.target, by_name.get(row.target)).fire_at
            )
            if row.target in self._floor
            else row
            for row in rows
        ]
        return planned, states

    def _status_line(self) -> str:
        if self._stop.is_set():
            return f"stopping: {len(self._tasks)} rotation(s) in flight"
        if self.elector is None or not self.elector.is_leader:
            return f"standby: {len(self.cfg.targets)} target(s); serving health and metrics"
        return f"leading: {len(self.cfg.targets)} target(s), {len(self._tasks)} rotating"

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on shutdown."""
        await _wait_event(self._stop, seconds)


async def _wait_event(event: asyncio.Event, seconds: float, *, clear: bool = False) -> bool:
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


def _reload_failed(error: str) -> None:
    """The one line a reload that changes nothing logs."""
    log.error("config_reload_failed", error=scrub(error), kept="previous configuration")


def _not_run(target: str, why: str) -> RotationResult:
    return RotationResult(target, None, Outcome.SKIPPED, error=why)


def _loggable(result: RotationResult) -> dict[str, object]:
    return {k: v for k, v in result.as_dict().items() if v not in (None, [], ())}


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    """The settings a reload cannot apply (they need a restart)."""
    changed = []
    if old.state != new.state:
        changed.append("state")
    if old.leader != new.leader:
        changed.append("leader")
    served = ("listen", "header_timeout", "idle_timeout", "max_connections")
    changed += [f"server.{s}" for s in served if getattr(old.server, s) != getattr(new.server, s)]
    return changed


def _limits(cfg: Config) -> ServerLimits:
    server = cfg.server
    return ServerLimits(
        header_timeout=server.header_timeout.total_seconds(),
        idle_timeout=server.idle_timeout.total_seconds(),
        max_connections=server.max_connections,
    )


async def run_daemon(cfg: Config, *, config_path: str | Path | None) -> int:
    """``rotator run``: the daemon on the running loop with signal handling; its exit status."""
    return await Daemon(cfg, config_path=config_path).run()


__all__ = ["Daemon", "EngineFactory", "Timings", "run_daemon"]
