"""Half a year of operation on a simulated clock: the schedule holds whatever operators do.

The real daemon (:class:`rotator.daemon.runner.Daemon`: planner, engine, SQLite state store,
revoke loop, reload, HTTP API app, metrics) runs on :class:`tests.support.simtime.SimLoop`, whose
clock jumps to its next timer, with in-memory backends (the fake Admin API, memory Vault and AWS
stores). Two instances share the state database and a lease (the elector seam). A seeded random
history interleaves, for ``DAYS`` simulated days: CLI, HTTP and emergency rotations, CLI
recoveries, backend outages (minutes and hours), a workspace refusing activation for a day,
clean restarts and kills, SIGHUP reloads that add, remove and re-schedule targets, wall-clock
steps forwards and backwards, and leadership moving between the instances.

After every event (and every simulated hour for the cheap checks) the soak checks, from its own
computation of the plan and its own view of the world:

- no key is older than ``max_age`` plus one fire's slack unless an alert (``rotation_failed``,
  ``rotation_stuck``, ``rotation_overdue``) was raised for the target since its last rotation;
- every job fires within a bound of its planned instant, and no planned fire starts two runs;
- a failed attempt is retried by the daemon when its backoff ends (within the re-plan bound);
- ``rotator status``, ``/api/v1/targets`` and ``/metrics`` agree with the computed plan;
- every old key is revoked within its grace (plus the revoke loop's bound) once nothing blocks;
- I1, I2, I3, I5, I6 hold on the world (I4, no plaintext in the database or the log, at the end).

``ROTATOR_SOAK_SEED`` and ``ROTATOR_SOAK_DAYS`` change the history; the seed is printed with every
failure. The summary line (``-s``) gives days, events by kind, rotations, alerts and wall time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from structlog.testing import capture_logs

from rotator.config import Config, Policy, Target, load_config
from rotator.contracts import Destination, TargetState
from rotator.daemon.control import Health
from rotator.daemon.leader import Elector, Timing
from rotator.daemon.notify import Notifier
from rotator.daemon.runner import Daemon, Timings
from rotator.daemon.scheduler import Fire, Jobs, jitter_offset
from rotator.daemon.serving import SwappableApp
from rotator.engine.context import Deps
from rotator.engine.engine import Engine
from rotator.engine.rotation import RotationResult
from rotator.engine.steps import Outcome
from rotator.secret import fingerprint_of
from rotator.state import SqlStateStore
from rotator_dev.memory import MemoryDestination, MemoryStore
from tests.support.engine_fakes import (
    FIELD,
    OTHER_FIELDS,
    RAM_DIR,
    USER,
    FakeIssuer,
    FakeVerifier,
    TargetSpec,
    config_data,
)
from tests.support.simtime import InlinePool, SimClock, SimJobs, SimLoop

SEED = int(os.environ.get("ROTATOR_SOAK_SEED", "20261206"))
DAYS = int(os.environ.get("ROTATOR_SOAK_DAYS", "180"))
START = datetime.fromisoformat("2026-01-05T00:00:00+00:00")
TOKEN = "soak-admin-token"
HOUR = 3600.0

TIMINGS = Timings(
    stop_timeout=600.0,
    cancel_wait=5.0,
    tasks_wait=5.0,
    revoke_every=3 * HOUR,
    heartbeat=6 * HOUR,
    metrics_every=6 * HOUR,
    on_demand_interval=60.0,
    retry_floor=60.0,
    replan_every=2 * HOUR,
    readiness_every=6 * HOUR,
)
"""Production's bounds where they are promises (retry floor, on-demand interval); the periodic
loops slower, so half a year of them fits in seconds (each pass is still real SQLite work)."""
LEASE = Timing(lease_duration=2 * HOUR, renew_deadline=HOUR, retry_period=HOUR)
TICK = 3 * HOUR
"""How often the cheap checks run (each reads the state database once)."""
SLACK = timedelta(seconds=TIMINGS.replan_every + TIMINGS.revoke_every + 2 * TICK)
"""How late a fire, a retry or a revocation may be judged: the re-plan and revoke periods (clock
steps and other processes' changes are seen then) plus two check ticks."""

SCHEDULES: dict[str, dict[str, str]] = {
    "daily": {"schedule": "every 1d", "max_age": "2d", "grace": "2h"},
    "weekly": {"schedule": "every 7d", "max_age": "8d", "grace": "6h"},
    "weekly-drain": {"schedule": "every 7d", "max_age": "8d", "grace": "2h", "drain": "true"},
    "cron-monday": {"schedule": "0 3 * * 1", "max_age": "9d", "grace": "1h"},
    "cron-monthly": {"schedule": "0 4 1 * *", "max_age": "32d", "grace": "12h"},
    "monthly": {"schedule": "every 30d", "max_age": "35d", "grace": "1d"},
    "max-age-only": {"schedule": "every 365d", "max_age": "14d", "grace": "1h"},
}
"""The policies of the soak's targets (``max-age-only``: the compliance ceiling drives)."""
INITIAL = [
    ("daily", ("vault", "aws")),
    ("weekly", ("vault", "aws")),
    ("weekly", ("aws",)),
    ("weekly", ("vault",)),
    ("weekly-drain", ("vault", "aws")),
    ("cron-monday", ("vault", "aws")),
    ("cron-monday", ("vault",)),
    ("cron-monday", ("aws",)),
    ("cron-monthly", ("vault", "aws")),
    ("cron-monthly", ("vault",)),
    ("cron-monthly", ("aws",)),
    ("cron-monthly", ("vault", "aws")),
    ("cron-monthly", ("aws",)),
    ("monthly", ("vault", "aws")),
    ("monthly", ("vault",)),
    ("monthly", ("aws",)),
    ("monthly", ("vault", "aws")),
    ("max-age-only", ("vault", "aws")),
    ("max-age-only", ("aws",)),
    ("max-age-only", ("vault",)),
    ("max-age-only", ("vault", "aws")),
]
FINE = {Outcome.PROMOTED, Outcome.ROTATED}
ALERTING = {"rotation_failed", "rotation_stuck", "rotation_overdue"}
NOTIFIED = (*sorted(ALERTING), "old_key_in_use", "rotation_succeeded")


class Killed(BaseException):
    """The simulated SIGKILL: raised at the next journal step of a killed instance."""


@dataclass
class Lease:
    """The one lease two instances contend for (what PostgreSQL's lock or a Kubernetes Lease
    is in production)."""

    holder: str | None = None
    expires: float = 0.0


class LeaseElector(Elector):
    """The elector seam: leads while it holds the shared :class:`Lease`."""

    kind = "sim"

    def __init__(self, name: str, lease: Lease, health: Health, clock: SimClock) -> None:
        super().__init__(health=health, timing=LEASE, clock=clock)
        self.name = name
        self.lease = lease
        self.killed = False

    async def acquire(self) -> bool:
        now = self.clock.monotonic()
        if self.lease.holder in (None, self.name) or self.lease.expires <= now:
            self.lease.holder, self.lease.expires = self.name, now + LEASE.lease_duration
            self._leading = True
        return self._leading

    async def _renew(self) -> None:
        await self.ensure()
        self.lease.expires = self.clock.monotonic() + LEASE.lease_duration

    async def ensure(self) -> None:
        if self.killed:
            raise Killed
        if self._leading and self.lease.holder != self.name:
            raise self._lost("the lease is held by another instance")

    async def release(self) -> None:
        if self.lease.holder == self.name and not self.killed:
            self.lease.holder = None
        self._leading = False
        self._release_done()


@dataclass
class Attempt:
    """One call of ``Engine.rotate`` and what it left."""

    target: str
    origin: str  # schedule | http | cli
    started: datetime
    ended: datetime | None = None
    outcome: Outcome | None = None
    fire: datetime | None = None  # the planned instant of the fire that started it
    state_after: TargetState | None = None


class RecordingEngine(Engine):
    """The real engine, telling the soak of every rotation attempt it makes."""

    def __init__(self, cfg: Config, deps: Deps, soak: Soak, origin: str) -> None:
        super().__init__(cfg, deps)
        self.soak = soak
        self.origin = origin

    async def rotate(
        self, name: str, *, emergency: bool = False, rotation_id: str | None = None
    ) -> RotationResult:
        origin = self.origin
        if origin == "daemon":
            origin = "http" if rotation_id in self.soak.http_ids else "schedule"
        attempt = Attempt(name, origin, self.soak.clock.now())
        if origin == "schedule":
            attempt.fire = self.soak.last_fire.get(name)
        self.soak.attempts.append(attempt)
        result = await super().rotate(name, emergency=emergency, rotation_id=rotation_id)
        attempt.ended, attempt.outcome = self.soak.clock.now(), result.outcome
        attempt.state_after = await self.deps.store.get_target(name)
        return result


@dataclass
class Instance:
    """One ``rotator run`` process of the soak."""

    name: str
    daemon: Daemon
    elector: LeaseElector
    task: asyncio.Task[int]


@dataclass
class Outage:
    what: str
    start: datetime
    end: datetime


@dataclass
class Soak:
    """The simulated world, its two instances and the checks."""

    loop: SimLoop
    clock: SimClock
    tmp: Path
    rng: random.Random
    issuer: FakeIssuer = field(init=False)
    verifier: FakeVerifier = field(init=False)
    stores: dict[str, MemoryStore] = field(init=False)
    targets: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    lease: Lease = field(default_factory=Lease)
    instances: dict[str, Instance] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    fires: list[tuple[str, datetime, datetime, str]] = field(default_factory=list)
    last_fire: dict[str, datetime] = field(default_factory=dict)
    http_ids: set[str] = field(default_factory=set)
    notes: list[tuple[datetime, str, str]] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    led_since: datetime | None = None
    disruptions: list[datetime] = field(default_factory=list)
    """When leadership may have paused: restarts, kills, handovers, reloads, clock steps."""
    events: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    checks: int = 0
    serial: int = 0

    def __post_init__(self) -> None:
        self.observer: SqlStateStore | None = None
        self.status_engine: RecordingEngine | None = None
        self.cfg: Config | None = None
        self.issuer = FakeIssuer(self.clock)  # type: ignore[arg-type]
        self.verifier = FakeVerifier(self.issuer)
        self.stores = {"vault": MemoryStore(pending=False), "aws": MemoryStore(pending=True)}
        self.db = self.tmp / "state.db"
        self.state_url = f"sqlite:///{self.db}"
        self.config_path = self.tmp / "rotator.yaml"

    # -- configuration ---------------------------------------------------------------------

    def add_target(self, kind: str, backends: tuple[str, ...]) -> str:
        self.serial += 1
        name = f"{kind}-{self.serial}"
        self.targets[name] = (kind, backends)
        key = self.issuer.add_existing(name=f"legacy-{name}")
        for backend in backends:
            self.stores[backend].write(f"mistral/{name}", {**OTHER_FIELDS, FIELD: key.plaintext})
        return name

    def write_config(self) -> Config:
        specs, options = [], {}
        for name, (kind, backends) in self.targets.items():
            specs.append(TargetSpec(name, backends))  # type: ignore[arg-type]
            policy = SCHEDULES[kind]
            options[name] = {
                "adopt_existing": True,
                **{k: (v == "true" if v in {"true", "false"} else v) for k, v in policy.items()},
            }
        data = config_data(
            specs,
            state_url=self.state_url,
            policy={"jitter": "30m", "key_expiration": None, "max_grace": "2d"},
            target_options=options,
        )
        data["server"] = {"listen": "127.0.0.1:0", "admin_token": TOKEN}
        data["notifications"] = {
            "webhooks": [{"url": "https://alerts.invalid/hook", "events": list(NOTIFIED)}]
        }
        self.config_path.write_text(yaml.safe_dump(data))
        self.cfg = load_config(self.config_path)
        return self.cfg

    # -- wiring ----------------------------------------------------------------------------

    def destinations(self, target: Target) -> list[Destination]:
        _, backends = self.targets[target.name]
        return [
            MemoryDestination(
                self.stores[b], path=f"mistral/{target.name}", field=FIELD, name=f"{b}-main"
            )
            for b in backends
        ]

    async def engine(
        self, cfg: Config, origin: str, elector: LeaseElector | None = None, daemon: Any = None
    ) -> RecordingEngine:
        store = SqlStateStore(self.state_url, clock=self.clock, pool=InlinePool())
        await store.migrate()

        async def before_step() -> None:
            if elector is not None:
                await elector.ensure()

        async def on_alert(alert: Any) -> None:
            if daemon is not None:
                await daemon.alert(alert)
            elif alert.event in ALERTING:
                self.notes.append((self.clock.now(), alert.event, alert.target))

        deps = Deps(
            store=store,
            issuer=self.issuer,
            verifier=self.verifier,
            clock=self.clock,
            user_id=USER,
            destinations=self.destinations,
            on_alert=on_alert,
            before_step=before_step,
        )
        return RecordingEngine(cfg, deps, self, origin)

    def _notifier(self, cfg: Config) -> Notifier:
        def record(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content)
            self.notes.append((self.clock.now(), body["event"], body["target"]))
            return httpx.Response(200)

        return Notifier(
            cfg.notifications.webhooks,
            clock=self.clock,
            transport=httpx.MockTransport(record),
            source=cfg.source,
        )

    def _jobs(self, instance: str) -> Callable[[Fire], Jobs]:
        def on_fire(target: str, planned: datetime, fired: datetime) -> None:
            self.fires.append((target, planned, fired, instance))
            self.last_fire[target] = planned

        return lambda fire: SimJobs(fire, self.clock, on_fire)

    def start(self, name: str) -> Instance:
        cfg = load_config(self.config_path)
        holder: dict[str, Any] = {}

        def elector_factory(_cfg: Config, health: Health) -> Elector:
            holder["elector"] = LeaseElector(name, self.lease, health, self.clock)
            return holder["elector"]

        daemon = Daemon(
            cfg,
            config_path=self.config_path,
            clock=self.clock,
            timings=TIMINGS,
            systemd=None,
            engine_factory=lambda c: self.engine(c, "daemon", holder["elector"], holder["daemon"]),
            elector_factory=elector_factory,
            jobs_factory=self._jobs(name),
            notifier_factory=self._notifier,
            server_factory=NoSocket,
        )
        holder["daemon"] = daemon
        task = asyncio.get_running_loop().create_task(daemon.run(handle_signals=False))
        instance = Instance(name, daemon, None, task)  # type: ignore[arg-type]
        self.instances[name] = instance
        return instance

    async def settle(self, seconds: float = 120.0) -> None:
        """Let the simulated world run ``seconds``."""
        await asyncio.sleep(seconds)
        for instance in self.instances.values():
            if instance.elector is None:
                instance.elector = instance.daemon.elector  # type: ignore[assignment]

    def leader(self) -> Instance | None:
        for instance in self.instances.values():
            d = instance.daemon
            if d.elector is not None and d.elector.is_leader and d._revoker is not None:
                return instance
        return None

    async def stop(self, name: str, *, kill: bool) -> None:
        instance = self.instances.pop(name)
        if kill:
            instance.daemon.elector.killed = True  # type: ignore[union-attr]
            instance.daemon.request_stop("SIGKILL")
            instance.daemon.request_stop("SIGKILL")
        else:
            instance.daemon.request_stop("SIGTERM")
        await asyncio.wait({instance.task}, timeout=TIMINGS.stop_timeout * 2)
        assert instance.task.done(), f"{name} did not stop"

    async def restart_exited(self) -> None:
        """An instance that exited (lost leadership: exit 1) is restarted by its supervisor."""
        for name, instance in list(self.instances.items()):
            if instance.task.done():
                self.events["exited_restarted"] += 1
                self.disruptions.append(self.clock.now())
                del self.instances[name]
                self.start(name)

    async def api(self, method: str, path: str) -> httpx.Response:
        leader = self.leader() or next(iter(self.instances.values()))
        assert leader.daemon.http is not None
        transport = httpx.ASGITransport(app=leader.daemon.http.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rotator") as client:
            return await client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})

    async def cli_engine(self) -> RecordingEngine:
        assert self.cfg is not None
        return await self.engine(self.cfg, "cli")

    def down(self, what: str) -> bool:
        now = self.clock.now()
        return any(o.what == what and o.start <= now < o.end for o in self.outages)

    def was_down(self, whats: set[str], since: datetime) -> bool:
        now = self.clock.now()
        return any(o.what in whats and o.end > since and o.start < now for o in self.outages)

    def apply_outages(self) -> None:
        for backend, store in self.stores.items():
            store.down = self.down(backend)
        self.issuer.failing = {"create", "delete", "list"} if self.down("mistral") else set()
        self.verifier.failing = self.down("activation")

    def violation(self, text: str) -> None:
        self.violations.append(f"{self.clock.now().isoformat()} {text}")


class NoSocket:
    """The daemon's HTTP server in the soak: the same ASGI app, reached without a socket (a
    uvicorn server ticks ten times a second, a million ticks a simulated day)."""

    def __init__(self, app: SwappableApp) -> None:
        self.app = app

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", 0)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


# -- the plan, computed independently -----------------------------------------------------------


def expected_fire(name: str, policy: Policy, st: TargetState) -> datetime:
    """When the next attempt of ``name`` should fire, from the documented rules alone."""
    since = st.last_rotated_at or st.first_seen_at
    assert since is not None
    ceiling = since + policy.max_age
    scheduled = policy.schedule.next_fire(since)
    if scheduled >= ceiling:
        fire = ceiling
    else:
        fire = min(scheduled + jitter_offset(name, scheduled, policy.jitter), ceiling)
    if st.backoff_until is not None:  # a failed attempt is retried when its backoff ends
        fire = st.backoff_until if st.consecutive_failures else max(fire, st.backoff_until)
    return fire


# -- checks ------------------------------------------------------------------------------------


async def read_state(soak: Soak) -> tuple[dict[str, TargetState], set[str]]:
    """What the state database says now (read by the soak's own connection)."""
    if soak.observer is None:
        soak.observer = SqlStateStore(soak.state_url, clock=soak.clock, pool=InlinePool())
        await soak.observer.migrate()
    states = {s.target: s for s in await soak.observer.list_targets()}
    open_targets = {r.target for r in await soak.observer.open_rotations()}
    return states, open_targets


def leader_up_since(soak: Soak, since: datetime) -> bool:
    return soak.led_since is not None and soak.led_since <= since


async def hourly_checks(soak: Soak, cfg: Config) -> None:
    """The promises over time: age, retries, revocations, and what consumers see."""
    soak.checks += 1
    now = soak.clock.now()
    states, open_targets = await read_state(soak)
    for target in cfg.targets:
        name, policy = target.name, target.policy
        st = states.get(name)
        if st is None or st.first_seen_at is None:
            continue
        since = st.last_rotated_at or st.first_seen_at
        slack = SLACK + policy.jitter + timedelta(seconds=TIMINGS.retry_floor)
        if now - since > policy.max_age + slack:
            alerted = any(t == name and at >= since and e in ALERTING for at, e, t in soak.notes)
            if not alerted:
                soak.violation(f"{name}: key {now - since} old, max_age {policy.max_age}, no alert")
        if (
            st.consecutive_failures
            and st.backoff_until is not None
            and now > st.backoff_until + SLACK
            and leader_up_since(soak, st.backoff_until)
        ):
            retried = any(
                a.target == name and a.started >= st.backoff_until - timedelta(seconds=1)
                for a in soak.attempts
            )
            if not retried:
                soak.violation(f"{name}: backoff ended {st.backoff_until}, never retried")
        _, backends = soak.targets[name]
        blocked = backends_of(backends) | {"mistral", "activation"}
        for key in st.retiring:
            bound = policy.max_grace if policy.drain else policy.grace
            due = key.revoke_due_at + (bound - policy.grace if policy.drain else timedelta(0))
            if (
                now > due + SLACK
                and name not in open_targets
                and leader_up_since(soak, key.revoke_due_at)
                and not soak.was_down(blocked, key.revoke_due_at)
            ):
                soak.violation(f"{name}: old key {key.key_id} due {key.revoke_due_at}, not revoked")
    world_checks(soak, cfg, states, open_targets)


def backends_of(backends: tuple[str, ...]) -> set[str]:
    return set(backends)


def world_checks(
    soak: Soak, cfg: Config, states: dict[str, TargetState], open_targets: set[str]
) -> None:
    """I1, I2, I3, I5, I6 on the world as consumers and the Admin API see it."""
    live: dict[str, list[Any]] = {}
    for key in soak.issuer.keys.values():
        if not key.deleted and key.name.startswith("rotator-"):
            live.setdefault(key.name.rsplit("-", 2)[0], []).append(key)
    for target in cfg.targets:
        name = target.name
        _, backends = soak.targets[name]
        served: dict[str, str | None] = {}
        for backend in backends:
            data = soak.stores[backend].consumer_read(f"mistral/{name}")
            value = data.get(FIELD) if data else None
            served[backend] = value
            if value is None or not soak.issuer.valid(value):
                soak.violation(f"I1 {name}: {backend} serves no working key")
            if data is not None and any(data.get(k) != v for k, v in OTHER_FIELDS.items()):
                soak.violation(f"I6 {name}: {backend} lost its other fields")
        if name in open_targets:
            continue
        if len({fingerprint_of(v) if v else None for v in served.values()}) > 1:
            soak.violation(f"I2 {name}: destinations disagree with no rotation open")
        if "aws" in backends and soak.stores["aws"].entry(f"mistral/{name}").pending:
            soak.violation(f"I5 {name}: AWSPENDING left with no rotation open")
        st = states.get(name)
        retiring = {k.key_id for k in st.retiring} if st else set()
        values = set(served.values())
        for key in live.get(f"rotator-{name}", []):
            if key.plaintext not in values and key.key_id not in retiring:
                soak.violation(f"I3 {name}: key {key.key_id} is neither served nor retiring")


def one_key_per_rotation(soak: Soak) -> None:
    """I5: no rotation created more than one key (a key's name is unique to its rotation)."""
    names = Counter(k.name for k in soak.issuer.keys.values())
    for key_name, count in names.items():
        if count > 1 and key_name.startswith("rotator-"):
            soak.violation(f"I5 {key_name}: {count} keys for one rotation")


async def agreement_checks(soak: Soak, cfg: Config) -> None:
    """``rotator status``, ``/api/v1/targets`` and ``/metrics`` against the computed plan."""
    leader = soak.leader()
    if leader is None or leader.daemon._tasks or leader.daemon.engine is None:
        return
    if leader.daemon.cfg is not cfg and [t.name for t in leader.daemon.cfg.targets] != [
        t.name for t in cfg.targets
    ]:
        return
    now = soak.clock.now()
    states, open_targets = await read_state(soak)
    expected = {
        t.name: expected_fire(t.name, t.policy, states[t.name])
        for t in cfg.targets
        if t.name in states and states[t.name].first_seen_at is not None
    }
    if soak.status_engine is None or soak.status_engine.cfg is not cfg:
        if soak.status_engine is not None:
            await soak.status_engine.close()
        soak.status_engine = await soak.cli_engine()  # ``rotator status``, kept between checks
    status = {row.target: row for row in await soak.status_engine.status()}
    api = {row["target"]: row for row in (await soak.api("GET", "/api/v1/targets")).json()}
    metrics = (await soak.api("GET", "/metrics")).text
    for name, fire in expected.items():
        if name in open_targets:
            continue
        if status[name].next_due_at != fire:
            soak.violation(f"status {name}: next {status[name].next_due_at}, plan {fire}")
        shown = datetime.fromisoformat(api[name]["next_due_at"])
        floor_ok = fire <= now and now <= shown <= now + timedelta(seconds=TIMINGS.retry_floor)
        if shown != fire and not floor_ok:
            soak.violation(f"api {name}: next {shown}, plan {fire}")
        planned = leader.daemon.jobs.planned(name)
        if planned is not None and planned != shown and not (planned <= now and shown <= now):
            soak.violation(f"jobs {name}: job at {planned}, api says {shown}")
        failures = metric(metrics, "rotator_rotation_consecutive_failures", name)
        if failures is not None and failures != states[name].consecutive_failures:
            soak.violation(
                f"metrics {name}: {failures} failures, state {states[name].consecutive_failures}"
            )
        last = metric(metrics, "rotator_key_last_rotation_timestamp_seconds", name)
        st_last = states[name].last_rotated_at
        fresh = timedelta(seconds=TIMINGS.metrics_every)  # refreshed at least this often
        if (
            last is not None
            and st_last is not None
            and abs(last - st_last.timestamp()) > 1
            and now - st_last > fresh
        ):
            soak.violation(f"metrics {name}: last rotation {last}, state {st_last}")


def metric(text: str, family: str, target: str) -> float | None:
    found = re.search(
        rf'^{family}\{{[^}}]*target="{re.escape(target)}"[^}}]*\}} (\S+)$', text, re.MULTILINE
    )
    return float(found.group(1)) if found else None


def retry_checks(soak: Soak) -> None:
    """After every failed attempt the daemon tries again when the backoff ends: at once for its
    own failures (it plans the retry when the run ends), within ``replan_every`` for the CLI's;
    never later, and never not at all (unless leadership was disrupted meanwhile)."""
    by_target: dict[str, list[Attempt]] = {}
    for attempt in soak.attempts:
        by_target.setdefault(attempt.target, []).append(attempt)
    end = soak.clock.now()
    for target, attempts in by_target.items():
        for failed, following in zip(attempts, [*attempts[1:], None], strict=True):
            st = failed.state_after
            if failed.outcome in FINE or failed.outcome is None or st is None:
                continue
            if failed.outcome is Outcome.SKIPPED or st.backoff_until is None:
                continue
            own = failed.origin in {"schedule", "http"}
            bound = st.backoff_until + timedelta(seconds=1 if own else TIMINGS.replan_every + 1)
            if target in soak.removed or any(
                failed.started - timedelta(hours=2) <= d <= bound for d in soak.disruptions
            ):
                continue
            started = following.started if following is not None else None
            if (started is None and end > bound) or (started is not None and started > bound):
                soak.violation(
                    f"retry {target}: {failed.origin} attempt failed at {failed.ended}, backoff"
                    f" to {st.backoff_until}, next attempt {started}"
                )


def fire_checks(soak: Soak) -> None:
    """Each fire within the bound of its plan; no planned fire started two runs."""
    for target, planned, fired, _ in soak.fires:
        if fired < planned or (fired - planned > SLACK and leader_up_since(soak, planned)):
            soak.violation(f"fire {target}: planned {planned}, fired {fired}")
    seen: Counter[tuple[str, datetime]] = Counter(
        (a.target, a.fire) for a in soak.attempts if a.origin == "schedule" and a.fire is not None
    )
    for (target, planned), count in seen.items():
        if count > 1:
            soak.violation(f"fire {target}: the fire planned at {planned} started {count} runs")


# -- the history ------------------------------------------------------------------------------


EVENT_HOURS = 9
"""The mean time between two events of the history."""
DISRUPTIVE = {
    "restart_clean",
    "restart_kill",
    "reload",
    "leader_change",
    "ntp_step_forward",
    "vm_resume",
    "clock_back",
}
EVENTS = {
    "cli_rotate": 6,
    "http_rotate": 5,
    "emergency": 2,
    "cli_recover": 2,
    "outage_short": 5,
    "outage_long": 3,
    "mistral_outage": 2,
    "activation_refused": 1,
    "restart_clean": 2,
    "restart_kill": 3,
    "reload": 3,
    "ntp_step_forward": 1,
    "vm_resume": 1,
    "clock_back": 1,
    "leader_change": 2,
}


async def event(soak: Soak, kind: str) -> None:
    rng, now = soak.rng, soak.clock.now()
    names = sorted(soak.targets)
    soak.events[kind] += 1
    if kind in DISRUPTIVE:
        soak.disruptions.append(now)
    if kind in {"cli_rotate", "emergency"} and rng.random() < 0.5:
        cli = await soak.cli_engine()
        try:
            await cli.rotate(rng.choice(names), emergency=kind == "emergency")
        finally:
            await cli.close()
    elif kind in {"http_rotate", "emergency", "cli_rotate"}:
        flag = "true" if kind == "emergency" else "false"
        answer = await soak.api(
            "POST", f"/api/v1/targets/{rng.choice(names)}/rotate?emergency={flag}"
        )
        if answer.status_code == 202:
            soak.http_ids.add(answer.json()["rotation_id"])
    elif kind == "cli_recover":
        cli = await soak.cli_engine()
        try:
            await cli.recover()
        finally:
            await cli.close()
    elif kind in {"outage_short", "outage_long", "mistral_outage", "activation_refused"}:
        what = {"mistral_outage": "mistral", "activation_refused": "activation"}.get(
            kind, rng.choice(["vault", "aws"])
        )
        hours = {"outage_short": rng.uniform(0.05, 0.3), "outage_long": rng.uniform(2, 8)}.get(
            kind, 24.0 if kind == "activation_refused" else rng.uniform(0.5, 4)
        )
        soak.outages.append(Outage(what, now, now + timedelta(hours=hours)))
    elif kind in {"restart_clean", "restart_kill"}:
        name = rng.choice(sorted(soak.instances))
        await soak.stop(name, kill=kind == "restart_kill")
        soak.start(name)
    elif kind == "reload":
        change = rng.choice(["add", "remove", "reschedule"])
        if change == "add" or len(soak.targets) <= 20:
            soak.add_target(rng.choice(sorted(SCHEDULES)), rng.choice([("vault", "aws"), ("aws",)]))
        elif change == "remove":
            gone = rng.choice(names)
            del soak.targets[gone]
            soak.removed.add(gone)
        else:
            name = rng.choice(names)
            soak.targets[name] = (rng.choice(sorted(SCHEDULES)), soak.targets[name][1])
        soak.write_config()
        for instance in soak.instances.values():
            instance.daemon.request_reload()
    elif kind == "ntp_step_forward":
        soak.clock.step(rng.uniform(600, 6 * HOUR))
    elif kind == "vm_resume":
        soak.clock.step(rng.uniform(6 * HOUR, 30 * HOUR))
    elif kind == "clock_back":
        soak.clock.step(-rng.uniform(60, HOUR))
    elif kind == "leader_change":
        leader = soak.leader()
        others = [n for n in soak.instances if leader is None or n != leader.name]
        if others:
            soak.lease.holder = others[0]
            soak.lease.expires = soak.clock.monotonic() + LEASE.lease_duration


async def history(soak: Soak) -> None:
    soak.write_config()
    soak.start("a")
    soak.start("b")
    await soak.settle(60)
    end = soak.clock.now() + timedelta(days=DAYS)
    kinds, weights = zip(*EVENTS.items(), strict=True)
    next_event = soak.clock.now() + timedelta(hours=soak.rng.expovariate(1 / EVENT_HOURS))
    while soak.clock.now() < end:
        soak.apply_outages()
        await soak.restart_exited()
        await soak.settle(TICK)
        soak.apply_outages()
        leading = soak.leader() is not None
        if leading and soak.led_since is None:
            soak.led_since = soak.clock.now()
        elif not leading:
            soak.led_since = None
        assert soak.cfg is not None
        await hourly_checks(soak, soak.cfg)
        if soak.clock.now() >= next_event:
            await event(soak, soak.rng.choices(kinds, weights)[0])
            soak.led_since = None if soak.leader() is None else soak.led_since
            await soak.settle(TIMINGS.replan_every + 60)  # what the CLI did is planned by then
            await agreement_checks(soak, soak.cfg)
            next_event = soak.clock.now() + timedelta(hours=soak.rng.expovariate(1 / EVENT_HOURS))
        if len(soak.violations) > 20:
            break
    soak.outages.clear()
    soak.apply_outages()
    await soak.settle(3 * 24 * HOUR)  # everything pending ends: backoffs, graces, drains
    fire_checks(soak)
    retry_checks(soak)
    one_key_per_rotation(soak)
    assert soak.cfg is not None
    states, open_targets = await read_state(soak)
    world_checks(soak, soak.cfg, states, open_targets)
    for name in sorted(soak.instances):
        await soak.stop(name, kill=False)
    if soak.observer is not None:
        await soak.observer.close()
    if soak.status_engine is not None:
        await soak.status_engine.close()


@pytest.mark.timeout(600)
def test_the_schedule_holds_through_half_a_year_of_operations(tmp_path: Path) -> None:
    """The soak (see the module docstring): no violation of the schedule's promises or of
    I1-I6 over ``DAYS`` simulated days of seeded random operations."""
    folder = tmp_path
    if RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="rotator-soak-", dir=RAM_DIR))
    loop = SimLoop()
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="soak")
    loop.set_default_executor(pool)
    clock = SimClock(loop, START)
    soak = Soak(loop, clock, folder, random.Random(SEED))
    for kind, backends in INITIAL:
        soak.add_target(kind, backends)
    started, cpu = time.monotonic(), time.process_time()
    try:
        with capture_logs() as logs:
            loop.run_until_complete(history(soak))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        pool.shutdown(wait=True)
    wall, cpu = time.monotonic() - started, time.process_time() - cpu
    log_text = json.dumps(logs, default=str)
    plaintexts = [k.plaintext for k in soak.issuer.keys.values()]
    raw = soak.db.read_bytes()
    if folder != tmp_path:
        shutil.rmtree(folder, ignore_errors=True)
    for plaintext in plaintexts:
        if plaintext.encode() in raw or plaintext in log_text:
            soak.violation("I4: a plaintext key in the state database or the log")
            break
    outcomes = Counter(str(a.outcome) for a in soak.attempts)
    alerts = Counter(e for _, e, _ in soak.notes)
    summary = (
        f"seed {SEED}: {DAYS} simulated days, {len(soak.targets)} targets at the end"
        f" ({len(soak.removed)} removed), events {dict(sorted(soak.events.items()))},"
        f" attempts {dict(sorted(outcomes.items()))}, fires {len(soak.fires)},"
        f" alerts {dict(sorted(alerts.items()))}, hourly checks {soak.checks},"
        f" violations {len(soak.violations)}, wall {wall:.1f}s (CPU {cpu:.1f}s)"
    )
    print(summary)
    assert not soak.violations, summary + "\n" + "\n".join(soak.violations[:20])
    assert outcomes["promoted"] + outcomes["rotated"] > 20 * DAYS / 10
