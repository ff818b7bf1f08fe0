"""The daemon in process: planning from state, on-demand rotations, reload, shutdown, backoff.

Each test runs a real :class:`Daemon` (real engine, SQLite state, the Mistral stand-in on
loopback, HTTP on a free loopback port) whose destinations are the in-memory reference
destination behind a gate: closing the gate holds a rotation in flight at its stage step, so
"in flight" is a state the test controls, not a race it hopes to win.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from structlog.testing import capture_logs

from rotator.clock import Clock, FakeClock, SystemClock
from rotator.config import Config, Target, load_config
from rotator.contracts import AccessCheck, CurrentValue, Destination, PromotedValue, StagedValue
from rotator.daemon.control import RateLimitedError, RotationInFlightError, UnknownTargetError
from rotator.daemon.leader import Elector, SoleElector, Timing
from rotator.daemon.runner import Daemon, Timings
from rotator.daemon.systemd import SystemdNotifier
from rotator.engine.context import Deps
from rotator.engine.engine import Engine
from rotator.mistral.factory import admin_client, verifier
from rotator.render import iso
from rotator.secret import Secret
from rotator.state import SqlStateStore
from rotator_dev.memory import MemoryDestination, MemoryStore
from rotator_dev.standin import StandinHandle

FIELD = "api_key"
TOKEN = "test-admin-token"
FAST = Timings(
    stop_timeout=20.0,
    revoke_every=0.2,
    heartbeat=0.05,
    metrics_every=0.2,
    on_demand_interval=60.0,
    retry_floor=60.0,
)


class GatedDestination:
    """The memory destination, whose ``stage`` waits until the world's ``gate`` is set and whose
    ``read_current`` waits until its ``read_gate`` is (counting the reads held there), or raises
    the world's ``read_error``."""

    def __init__(self, inner: MemoryDestination, world: World) -> None:
        self.inner = inner
        self.gate = world.gate
        self.world = world

    @property
    def name(self) -> str:
        return self.inner.name

    async def read_current(self) -> CurrentValue:
        if self.world.read_error is not None:
            raise self.world.read_error
        if not self.world.read_gate.is_set():
            self.world.reads_held += 1
            await self.world.read_gate.wait()
        return await self.inner.read_current()

    async def stage(self, *args: Any, **kwargs: Any) -> StagedValue:
        await self.gate.wait()
        return await self.inner.stage(*args, **kwargs)

    async def read_back(self, version: str) -> Secret | None:
        return await self.inner.read_back(version)

    async def promote(self, staged: StagedValue, secret: Secret) -> PromotedValue:
        return await self.inner.promote(staged, secret)

    async def roll_back(self, staged: StagedValue) -> bool:
        return await self.inner.roll_back(staged)

    async def check_access(self) -> list[AccessCheck]:
        return await self.inner.check_access()


class World:
    """The stand-in, one memory store, a state file and the configurations written for them."""

    def __init__(self, standin: StandinHandle, tmp_path: Path) -> None:
        self.standin = standin
        self.memory = MemoryStore(pending=False)
        self.gate = asyncio.Event()
        self.gate.set()
        self.read_gate = asyncio.Event()
        self.read_gate.set()
        self.reads_held = 0
        self.read_error: Exception | None = None  # raised by every read (a bug, not a backend)
        self.state_url = f"sqlite:///{tmp_path / 'state.db'}"
        self.config_path = tmp_path / "rotator.yaml"
        self.targets: list[str] = []

    def add_target(self) -> str:
        """A target whose destination already serves a working key made by hand."""
        name = f"t{len(self.targets) + 1}"
        with httpx.Client(
            base_url=self.standin.url,
            headers={"Authorization": f"Bearer {self.standin.admin_key}"},
            timeout=10,
        ) as admin:
            answer = admin.post(
                "/v1/admin/api-keys",
                json={
                    "workspace_uuid": self.standin.workspace_id,
                    "user_id": self.standin.user_id,
                    "name": f"legacy-{name}",
                },
            )
            answer.raise_for_status()
        self.memory.write(f"mistral/{name}", {FIELD: answer.json()["key"], "owner": "team"})
        self.targets.append(name)
        return name

    def write_config(self, *, policy: dict[str, str] | None = None, **top: Any) -> Config:
        defaults = {
            "schedule": "every 30d",
            "max_age": "30d",
            "grace": "1h",
            "key_expiration": "45d",
            "activation_timeout": "10s",
            "jitter": "5m",
            **(policy or {}),
        }
        data: dict[str, Any] = {
            "mistral": {
                "admin_url": self.standin.url,
                "api_url": self.standin.url,
                "admin_key": self.standin.admin_key,
                "user_id": self.standin.user_id,
                "timeout": "5s",
            },
            "state": {"url": self.state_url},
            "server": {"listen": "127.0.0.1:0", "admin_token": TOKEN},
            "stores": {
                "vault": {
                    "type": "vault",
                    "url": "http://127.0.0.1:9",  # never called: destinations are in memory
                    "auth": {"method": "token", "token": "unused"},
                }
            },
            "defaults": defaults,
            "targets": [
                {
                    "name": name,
                    "workspace_id": self.standin.workspace_id,
                    "adopt_existing": True,
                    "destinations": [{"store": "vault", "path": f"mistral/{name}", "field": FIELD}],
                }
                for name in self.targets
            ],
            **top,
        }
        self.config_path.write_text(yaml.safe_dump(data))
        return load_config(self.config_path)

    def destinations(self, target: Target) -> Sequence[Destination]:
        inner = MemoryDestination(self.memory, path=f"mistral/{target.name}", field=FIELD)
        return [GatedDestination(inner, self)]

    async def engine(self, cfg: Config, clock: Clock | None = None) -> Engine:
        """An engine on the stand-in and the memory destinations (what build_engine wires)."""
        clock = clock or SystemClock()
        store = SqlStateStore(cfg.state.url, clock=clock)
        await store.migrate()
        admin = admin_client(cfg.mistral, clock=clock)
        assert cfg.mistral.user_id is not None
        deps = Deps(
            store=store,
            issuer=admin,
            verifier=verifier(cfg.mistral, admin=admin, clock=clock),
            clock=clock,
            user_id=cfg.mistral.user_id,
            destinations=self.destinations,
        )
        return Engine(cfg, deps)

    def daemon(
        self,
        cfg: Config,
        *,
        elector: Callable[[Config, Any], Elector] | None = None,
        clock: Clock | None = None,
        timings: Timings = FAST,
    ) -> Daemon:
        return Daemon(
            cfg,
            config_path=self.config_path,
            clock=clock,
            timings=timings,
            systemd=SystemdNotifier(None),
            engine_factory=self.engine,
            elector_factory=elector or sole,
        )


def sole(_cfg: Config, health: Any) -> Elector:
    return SoleElector(health=health, timing=Timing(retry_period=0.05))


class NeverLeads(SoleElector):
    """A standby forever: another instance holds leadership."""

    async def acquire(self) -> bool:
        return False


async def eventually(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Wait (polling the loop) until ``condition()`` holds; a guard against hangs, not timing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


class Running:
    """A daemon run as a task of the test's loop."""

    def __init__(self, daemon: Daemon, *, handle_signals: bool = False) -> None:
        self.daemon = daemon
        self.task = asyncio.create_task(daemon.run(handle_signals=handle_signals))

    async def ready(self, *, leading: bool = True) -> Daemon:
        """Wait until it is ready and, when ``leading``, leads with every target planned."""
        d = self.daemon

        def up() -> bool:
            if self.task.done():
                raise AssertionError(f"the daemon stopped: {self.task.result()}")
            if not d.health.ready or not leading:
                return d.health.ready
            planned = sorted(d.jobs.targets()) == sorted(d.target_names())
            return d.health.leading and planned and d._revoker is not None

        await eventually(up, "daemon ready")
        return d

    async def stop(self) -> int:
        if not self.task.done():
            self.daemon.request_stop("test")
        return await asyncio.wait_for(self.task, 60)


@pytest.fixture
async def world(standin: StandinHandle, tmp_path: Path) -> World:
    return World(standin, tmp_path)


async def store_of(world: World) -> SqlStateStore:
    store = SqlStateStore(world.state_url, clock=SystemClock())
    await store.migrate()
    return store


async def test_on_demand_rotation_answers_and_runs(world: World) -> None:
    """request_rotation: an id at once, 409 while queued or running, 404 unknown, the view from
    queued to done with its steps, then 429 within the interval unless an emergency."""
    name = world.add_target()
    run = Running(world.daemon(world.write_config()))
    daemon = await run.ready()
    try:
        world.gate.clear()
        rotation_id = daemon.request_rotation(name, emergency=False)
        with pytest.raises(RotationInFlightError):
            daemon.request_rotation(name, emergency=False)
        with pytest.raises(UnknownTargetError):
            daemon.request_rotation("nope", emergency=False)
        await eventually(lambda: daemon.engine is not None and daemon.engine.busy(name), "busy")
        view = await daemon.rotation_view(rotation_id)
        assert view is not None
        assert view["target"] == name
        assert view["state"] not in {"done", "rolled_back", "stuck"}
        with pytest.raises(RotationInFlightError):
            daemon.request_rotation(name, emergency=True)
        world.gate.set()
        await eventually(lambda: name not in daemon._tasks, "rotation finished")
        view = await daemon.rotation_view(rotation_id)
        assert view is not None
        assert (view["state"], view["outcome"], view["error"]) == ("done", "promoted", None)
        steps = view["steps"]
        assert isinstance(steps, list)
        assert steps[0]["step"] == "planned"
        assert "done" in [s["step"] for s in steps]
        with pytest.raises(RateLimitedError) as limited:
            daemon.request_rotation(name, emergency=False)
        assert 0 < limited.value.retry_after <= 60
        emergency_id = daemon.request_rotation(name, emergency=True)
        await eventually(lambda: name not in daemon._tasks, "emergency rotation finished")
        emergency = await daemon.rotation_view(emergency_id)
        assert emergency is not None
        assert emergency["outcome"] == "rotated"
        assert await daemon.rotation_view("00000000-0000-0000-0000-000000000000") is None
        assert (
            daemon.metrics.sample(
                "rotator_rotations_total", {"target": name, "outcome": "promoted"}
            )
            == 1.0
        )
    finally:
        assert await run.stop() == 0


async def test_the_audit_head_is_published_at_start_and_after_a_rotation(world: World) -> None:
    """The daemon publishes the audit trail's head once up (log line `audit_head` and metrics)
    and again right after a rotation appended rows, with the head the store records."""
    name = world.add_target()
    with capture_logs() as logs:
        run = Running(world.daemon(world.write_config()))
        daemon = await run.ready()
        try:
            await eventually(lambda: any(e["event"] == "audit_head" for e in logs), "published")
            daemon.request_rotation(name, emergency=False)
            await eventually(lambda: name not in daemon._tasks, "rotation finished")
            store = await store_of(world)
            head = await store.audit_head()
            await store.close()
            assert head.rows >= 3  # started, promoted, finished

            def published() -> bool:
                return {"event": "audit_head", "rows": head.rows, "head": head.head_hash} in [
                    {k: e.get(k) for k in ("event", "rows", "head")} for e in logs
                ]

            await eventually(published, "the new head published")
            assert daemon.metrics.sample("rotator_audit_rows") == float(head.rows)
            info = {"head": head.head_hash}
            assert daemon.metrics.sample("rotator_audit_head_info", info) == 1.0
        finally:
            assert await run.stop() == 0


async def test_http_api_is_served_in_the_daemon_loop(world: World) -> None:
    """The daemon serves /livez and the bearer-guarded API on its listen address."""
    name = world.add_target()
    run = Running(world.daemon(world.write_config()))
    daemon = await run.ready()
    try:
        assert daemon.http is not None
        host, port = daemon.http.address
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
            assert (await client.get("/livez")).status_code == 200
            assert (await client.get("/readyz")).json()["leading"] is True
            assert (await client.get("/api/v1/targets")).status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            rows = (await client.get("/api/v1/targets", headers=auth)).json()
            assert [r["target"] for r in rows] == [name]
            assert rows[0]["next_due_at"] == iso(daemon.jobs.planned(name))
    finally:
        assert await run.stop() == 0


async def test_standby_serves_but_does_not_rotate(world: World) -> None:
    """A standby is ready, plans nothing and refuses on-demand rotations."""
    name = world.add_target()
    daemon = world.daemon(
        world.write_config(),
        elector=lambda _c, health: NeverLeads(health=health, timing=Timing(retry_period=0.05)),
    )
    run = Running(daemon)
    await run.ready(leading=False)
    await eventually(lambda: daemon._leader_task is not None, "contending")
    for _ in range(20):
        await asyncio.sleep(0.01)  # several election rounds
    try:
        assert daemon.health.ready
        assert not daemon.health.leading
        assert daemon.jobs.targets() == []
        with pytest.raises(PermissionError):
            daemon.request_rotation(name, emergency=False)
        rows = await daemon.status()
        assert [r.target for r in rows] == [name]
    finally:
        assert await run.stop() == 0


async def test_restart_keeps_the_planned_fire(world: World) -> None:
    """A never-rotated target is planned from its first sighting (here at its max_age
    ceiling), and a restarted daemon plans exactly the same instant (a restart never postpones a
    rotation)."""
    name = world.add_target()
    cfg = world.write_config()
    first = Running(world.daemon(cfg))
    daemon = await first.ready()
    planned = daemon.jobs.planned(name)
    assert await first.stop() == 0
    store = await store_of(world)
    state = await store.get_target(name)
    await store.close()
    assert state is not None
    assert state.first_seen_at is not None
    due = state.first_seen_at + timedelta(days=30)
    assert planned == due  # every 30d meets max_age 30d: the ceiling, which gets no jitter
    await asyncio.sleep(0.05)  # the restart happens later in wall time
    second = Running(world.daemon(cfg))
    restarted = await second.ready()
    try:
        assert restarted.jobs.planned(name) == planned
    finally:
        assert await second.stop() == 0


async def test_missed_fire_runs_at_start_and_is_replanned(world: World) -> None:
    """A target last rotated 31 days ago (daemon down) rotates at start; its job is then
    re-planned from the new rotation."""
    name = world.add_target()
    cfg = world.write_config()
    past = FakeClock(SystemClock().now() - timedelta(days=31))
    old = await world.engine(cfg, clock=past)
    assert (await old.rotate(name)).new_key_id is not None
    await old.close()
    started = SystemClock().now()
    run = Running(world.daemon(cfg))
    daemon = await run.ready()
    try:
        store = await store_of(world)

        async def rotated_now() -> datetime | None:
            state = await store.get_target(name)
            last = state.last_rotated_at if state else None
            return last if last is not None and last >= started else None

        last: datetime | None = None
        for _ in range(1500):
            last = await rotated_now()
            if last is not None and name not in daemon._tasks:
                break
            await asyncio.sleep(0.02)
        assert last is not None, "the missed rotation did not run"
        # every 30d and max_age 30d coincide: due at the ceiling, no jitter
        await eventually(
            lambda: daemon.jobs.planned(name) == last + timedelta(days=30), "re-planned"
        )
        await store.close()
    finally:
        assert await run.stop() == 0


async def test_sighup_with_a_broken_config_keeps_the_old_one(world: World) -> None:
    """SIGHUP with an invalid file logs one error line and changes nothing; a valid one adds
    the new target's job; a changed state URL is refused (needs a restart)."""
    first = world.add_target()
    cfg = world.write_config()
    run = Running(world.daemon(cfg), handle_signals=True)
    daemon = await run.ready()
    engine = daemon.engine
    planned = daemon.jobs.planned(first)
    try:
        with capture_logs() as logs:
            world.config_path.write_text(world.config_path.read_text() + "bogus: 1\n")
            os.kill(os.getpid(), signal.SIGHUP)
            await eventually(
                lambda: any(e["event"] == "config_reload_failed" for e in logs), "reload failed"
            )
        failed = [e for e in logs if e["event"] == "config_reload_failed"]
        assert len(failed) == 1
        assert "bogus: unknown key" in failed[0]["error"]
        assert daemon.cfg is cfg
        assert daemon.engine is engine
        assert daemon.jobs.planned(first) == planned

        second = world.add_target()
        world.write_config()
        with capture_logs() as logs:
            os.kill(os.getpid(), signal.SIGHUP)
            await eventually(lambda: any(e["event"] == "config_reloaded" for e in logs), "reloaded")
            await eventually(lambda: daemon.jobs.planned(second) is not None, "new job")
        assert daemon.target_names() == [first, second]
        assert daemon.engine is not engine
        assert daemon.jobs.planned(first) == planned

        world.write_config(state={"url": f"{world.state_url}-other"})
        with capture_logs() as logs:
            os.kill(os.getpid(), signal.SIGHUP)
            await eventually(
                lambda: any(e["event"] == "config_reload_failed" for e in logs), "refused"
            )
        refused = next(e for e in logs if e["event"] == "config_reload_failed")
        assert refused["error"] == "state changed: restart rotator to apply"
        assert daemon.cfg.state.url == world.state_url
    finally:
        assert await run.stop() == 0


async def test_reload_waits_between_rotations(world: World) -> None:
    """A valid reload waits for the running rotation; a rotation asked for meanwhile waits for
    the reload and then runs on the new engine."""
    first, second = world.add_target(), world.add_target()
    run = Running(world.daemon(world.write_config()))
    daemon = await run.ready()
    old_engine = daemon.engine
    try:
        world.gate.clear()
        daemon.request_rotation(first, emergency=False)
        await eventually(lambda: old_engine is not None and old_engine.busy(first), "busy")
        world.write_config(policy={"grace": "2h"})
        daemon.request_reload()
        await eventually(lambda: not daemon._gate.is_set(), "reload waiting")
        queued = daemon.request_rotation(second, emergency=False)
        assert daemon.engine is old_engine  # not swapped under a running rotation
        world.gate.set()
        await eventually(lambda: daemon.engine is not old_engine, "reloaded")
        await eventually(lambda: not daemon._tasks, "both rotations over")
        view = await daemon.rotation_view(queued)
        assert view is not None
        assert (view["target"], view["state"], view["outcome"]) == (second, "done", "promoted")
        assert daemon.cfg.target(second).policy.grace == timedelta(hours=2)
    finally:
        world.gate.set()
        assert await run.stop() == 0


async def test_sigterm_waits_for_the_rotation_in_flight(world: World) -> None:
    """SIGTERM during a rotation: no new work is taken, the rotation runs to its end, run()
    returns 0, and no rotation is left open."""
    name = world.add_target()
    run = Running(world.daemon(world.write_config()), handle_signals=True)
    daemon = await run.ready()
    world.gate.clear()
    rotation_id = daemon.request_rotation(name, emergency=False)
    await eventually(lambda: daemon.engine is not None and daemon.engine.busy(name), "busy")
    os.kill(os.getpid(), signal.SIGTERM)
    await eventually(daemon._stop.is_set, "stopping")
    with pytest.raises(PermissionError):
        daemon.request_rotation(name, emergency=True)
    for _ in range(50):
        await asyncio.sleep(0)
    assert not run.task.done()  # held at the gate: the daemon waits for it
    world.gate.set()
    assert await asyncio.wait_for(run.task, 60) == 0
    store = await store_of(world)
    try:
        assert await store.open_rotations() == []
        rotation = await store.get_rotation(rotation_id)
        assert rotation is not None
        assert (rotation.state, rotation.outcome) == ("done", "promoted")
    finally:
        await store.close()


async def test_failed_scheduled_run_backs_off_from_state(world: World) -> None:
    """A scheduled run that fails before a rotation starts (destination down) still leaves a
    backoff in the store, and the target's job is re-planned at that backoff."""
    name = world.add_target()
    world.memory.down = True
    cfg = world.write_config(policy={"schedule": "every 1s", "jitter": "0s"})
    run = Running(world.daemon(cfg))
    daemon = await run.ready()
    store = await store_of(world)
    try:
        state = None
        for _ in range(1500):
            state = await store.get_target(name)
            if state is not None and state.consecutive_failures and name not in daemon._tasks:
                break
            await asyncio.sleep(0.02)
        assert state is not None
        assert state.consecutive_failures == 1
        assert state.backoff_until is not None
        assert state.backoff_until > SystemClock().now() + timedelta(minutes=50)
        backoff = state.backoff_until
        await eventually(lambda: daemon.jobs.planned(name) == backoff, "planned at the backoff")
        rows = await daemon.status()
        assert (rows[0].state, rows[0].next_due_at) == ("failing", backoff)
    finally:
        world.memory.down = False
        await store.close()
        assert await run.stop() == 0


async def test_revoke_loop_revokes_after_the_grace(world: World) -> None:
    """After a rotation with a 1 s grace, the revoke-due loop revokes the replaced key."""
    name = world.add_target()
    run = Running(world.daemon(world.write_config(policy={"grace": "1s"})))
    daemon = await run.ready()
    try:
        daemon.request_rotation(name, emergency=False)
        await eventually(lambda: name not in daemon._tasks, "rotation finished")
        store = await store_of(world)
        state = await store.get_target(name)
        assert state is not None
        assert len(state.retiring) == 1
        old_key = state.retiring[0].key_id
        for _ in range(1500):
            state = await store.get_target(name)
            if state is not None and not state.retiring:
                break
            await asyncio.sleep(0.02)
        await store.close()
        assert state is not None
        assert state.retiring == ()
        assert world.standin.control.key(old_key).deleted
    finally:
        assert await run.stop() == 0


async def test_a_stop_during_a_revoke_pass_ends_the_revoke_loop_at_once(world: World) -> None:
    """A stop requested while a revoke-due pass is running is not lost when the pass ends: the
    revoke loop returns by itself instead of sleeping until its next pass, so the drain never has
    to cut it short (cancel it)."""
    name = world.add_target()
    timings = dataclasses.replace(FAST, revoke_every=3600.0, stop_timeout=3.0)
    cfg = world.write_config(policy={"grace": "1s"})
    run = Running(world.daemon(cfg, timings=timings))
    daemon = await run.ready()
    daemon.request_rotation(name, emergency=False)
    await eventually(lambda: name not in daemon._tasks, "rotation finished")
    world.read_gate.clear()
    await eventually(lambda: world.reads_held > 0, "the revoke pass reads the destination")
    revoker = daemon._revoker
    assert revoker is not None
    daemon.request_stop("test")
    world.read_gate.set()
    assert await asyncio.wait_for(run.task, 60) == 0
    assert revoker.done()
    assert not revoker.cancelled()
