"""Narrow fakes for engine unit tests: a key issuer, a verifier, a crashing store, one world.

:class:`FakeIssuer` and :class:`FakeVerifier` implement the ``KeyIssuer`` and ``KeyVerifier``
Protocols of :mod:`rotator.contracts` in memory (keys with ids, names, ``hidden_key``, deletion,
and a switch to fail each operation). :class:`StepHookStore` wraps a real state store and calls a
hook around every journal write — the seam where a test kills the "process" with
:class:`Crash` (a ``BaseException``, so no ``except Exception`` in the engine can swallow it) or
changes the world mid-rotation. :class:`EngineWorld` binds them to in-memory destinations
(:mod:`rotator_dev.memory`: ``vault`` stores behave like KV v2, ``aws`` ones have a
pending state) and a real SQLite state store, and builds engines on them as restarted processes
would.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import shutil
import string
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import pytest

from rotator.clock import FakeClock
from rotator.config import Config, Target, parse_config
from rotator.contracts import CurrentValue, Destination, PromotedValue, StagedValue, StateStore
from rotator.destinations._common import MANAGED_BY
from rotator.engine.context import Alert, Deps
from rotator.engine.engine import Engine
from rotator.errors import TransientError
from rotator.keys import ApiKey, CreatedKey, User, VerifyOutcome, VerifyResult, Workspace
from rotator.secret import Secret, fingerprint_of
from rotator.state import SqlStateStore
from rotator_dev.memory import MemoryDestination, MemoryStore
from tests.support.journal_writes import is_write, steps_of

WORKSPACE = "0b6c6a4e-5f2f-4a0e-9a55-3c1d7f0e9b11"
USER = "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce"
FIELD = "api_key"
OTHER_FIELDS = {"owner": "team-payments"}
"""A field seeded beside the key in every destination; it must survive every rotation (I6)."""
START = datetime.fromisoformat("2026-03-02T10:00:00+00:00")
RAM_DIR = Path("/dev/shm")
_ALPHABET = string.ascii_letters + string.digits

Operation = Literal["create", "delete", "list"]
Backend = Literal["vault", "aws"]


def new_plaintext() -> str:
    """A key shaped like Mistral's: 32 letters and digits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(32))


def hidden(plaintext: str) -> str:
    """The Admin API's ``hidden_key`` of a plaintext: first 4 + ``...`` + last 4."""
    return f"{plaintext[:4]}...{plaintext[-4:]}"


class HookedClock(FakeClock):
    """A :class:`FakeClock` that runs ``on_sleep`` hooks each time the engine sleeps (a retry
    backoff): the moment another actor can act between two attempts."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.on_sleep: list[Callable[[float], None]] = []

    async def sleep(self, seconds: float) -> None:
        for hook in list(self.on_sleep):
            hook(seconds)
        await super().sleep(seconds)


@dataclass
class FakeKey:
    """One key of the fake organization (the plaintext kept for the fake verifier only)."""

    key_id: str
    name: str
    plaintext: str = field(repr=False)
    workspace_id: str
    created_at: datetime
    requested_expiration: date | None
    expiration_date: date | None
    last_used: date | None = None
    deleted: bool = False

    def info(self) -> ApiKey:
        return ApiKey(
            key_id=self.key_id,
            name=self.name,
            hidden_key=hidden(self.plaintext),
            workspace_id=self.workspace_id,
            created_at=self.created_at,
            expiration_date=self.expiration_date,
            last_used=self.last_used,
            created_by=USER,
        )


def gone(key: FakeKey) -> bool:
    """Whether ``key`` was deleted (a call, so type checkers do not pin the flag in asserts)."""
    return key.deleted


class FakeIssuer:
    """An in-memory Admin API (see :class:`rotator.contracts.KeyIssuer`).

    ``failing`` names operations that raise ``TransientError`` without doing anything;
    ``max_expiration_days`` shortens granted expirations like an organization policy;
    ``create_gate``, when set, holds every create until it is set (a slow Admin API);
    ``after_create`` runs once a key exists, before the answer is returned (a crash there loses
    the plaintext, as a dropped connection would).
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.keys: dict[str, FakeKey] = {}
        self.failing: set[Operation] = set()
        self.max_expiration_days: int | None = None
        self.create_gate: asyncio.Event | None = None
        self.after_create: Callable[[FakeKey], None] | None = None
        self.creates = 0
        self.in_flight_creates = 0
        self.max_in_flight_creates = 0
        self._changed: asyncio.Condition | None = None

    # -- what tests do -----------------------------------------------------------------------

    def add_existing(
        self, *, name: str, plaintext: str | None = None, workspace_id: str = WORKSPACE
    ) -> FakeKey:
        """A key created outside rotator (by an operator, before rotator)."""
        key = FakeKey(
            key_id=str(uuid.uuid4()),
            name=name,
            plaintext=plaintext or new_plaintext(),
            workspace_id=workspace_id,
            created_at=self.clock.now(),
            requested_expiration=None,
            expiration_date=None,
        )
        self.keys[key.key_id] = key
        return key

    def live(self, prefix: str = "") -> list[FakeKey]:
        """Keys not deleted whose name starts with ``prefix``."""
        return [k for k in self.keys.values() if not k.deleted and k.name.startswith(prefix)]

    def named(self, prefix: str) -> list[FakeKey]:
        """Every key ever created whose name starts with ``prefix`` (deleted ones included)."""
        return [k for k in self.keys.values() if k.name.startswith(prefix)]

    def by_plaintext(self, plaintext: str) -> FakeKey | None:
        for key in self.keys.values():
            if key.plaintext == plaintext:
                return key
        return None

    def valid(self, plaintext: str) -> bool:
        """Whether ``GET /v1/models`` would accept the key."""
        key = self.by_plaintext(plaintext)
        return key is not None and not key.deleted

    async def until_in_flight(self, count: int) -> None:
        """Return once ``count`` creates are in flight at the same time."""
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.in_flight_creates >= count)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _in_flight(self, delta: int) -> None:
        self.in_flight_creates += delta
        self.max_in_flight_creates = max(self.max_in_flight_creates, self.in_flight_creates)
        changed = self._condition()
        async with changed:
            changed.notify_all()

    def _maybe_fail(self, operation: Operation) -> None:
        if operation in self.failing:
            raise TransientError("mistral", operation, "injected failure", status=503)

    # -- KeyIssuer ---------------------------------------------------------------------------

    async def list_keys(self, *, workspace_id: str | None = None) -> list[ApiKey]:
        self._maybe_fail("list")
        return [
            k.info()
            for k in self.keys.values()
            if not k.deleted and (workspace_id is None or k.workspace_id == workspace_id)
        ]

    async def create_key(
        self, *, workspace_id: str, user_id: str, name: str, expiration: date | None
    ) -> CreatedKey:
        self._maybe_fail("create")
        await self._in_flight(+1)
        try:
            if self.create_gate is not None:
                await self.create_gate.wait()
            granted = expiration
            if self.max_expiration_days is not None:
                ceiling = self.clock.now().date() + timedelta(days=self.max_expiration_days)
                granted = ceiling if granted is None else min(granted, ceiling)
            key = FakeKey(
                key_id=str(uuid.uuid4()),
                name=name,
                plaintext=new_plaintext(),
                workspace_id=workspace_id,
                created_at=self.clock.now(),
                requested_expiration=expiration,
                expiration_date=granted,
            )
            self.keys[key.key_id] = key
            self.creates += 1
            if self.after_create is not None:
                self.after_create(key)
            return CreatedKey(info=key.info(), secret=Secret(key.plaintext))
        finally:
            await self._in_flight(-1)

    async def delete_key(self, key_id: str) -> bool:
        self._maybe_fail("delete")
        key = self.keys.get(key_id)
        if key is None or key.deleted:
            return False
        key.deleted = True
        return True

    async def list_workspaces(self) -> list[Workspace]:
        return [Workspace(uuid=WORKSPACE, name="default", is_archived=False)]

    async def find_user(
        self, *, user_id: str | None = None, email: str | None = None
    ) -> User | None:
        return User(uuid=USER, email="ops@example.com", name="ops")

    async def spend_limit_reached(self) -> bool | None:
        return False


class FakeVerifier:
    """``GET /v1/models`` against a :class:`FakeIssuer` (see :class:`KeyVerifier`): a key
    works while it exists and is not deleted. ``failing`` makes every check UNAVAILABLE."""

    def __init__(self, issuer: FakeIssuer) -> None:
        self.issuer = issuer
        self.failing = False
        self.checks = 0

    async def check(self, secret: Secret) -> VerifyResult:
        self.checks += 1
        if self.failing:
            outcome, status = VerifyOutcome.UNAVAILABLE, 503
        elif self.issuer.valid(secret.reveal()):
            outcome, status = VerifyOutcome.OK, 200
        else:
            outcome, status = VerifyOutcome.UNAUTHORIZED, 401
        return VerifyResult(outcome, secret.fingerprint, status, attempts=1, elapsed=0.0)

    async def wait_active(self, secret: Secret, *, timeout: float) -> VerifyResult:
        return await self.check(secret)


class Crash(BaseException):
    """The simulated process died here. Nothing in the engine catches it (it is not an
    ``Exception``); the test then throws the engine away and builds a new one, as a restart
    would. (``finally`` blocks still run while it unwinds: they only release in-process locks.)"""


StepHook = Callable[[int, str], None]
"""Called with (1-based number of the journal write, one step name in it)."""


class StepHookStore:
    """A :class:`StateStore` proxy that calls hooks around every durable write.

    Every write counts (``append_steps`` and the other methods that journal steps, and those
    that write no step: :func:`tests.support.journal_writes.steps_of` names them). ``before``
    runs, once per step name of the write, before the write reaches the store (raising there
    means the write never happened), ``after`` once it is stored (raising there means it is
    durable but the side effect it announces never happened). Reads go straight to ``inner``.
    ``steps`` lists every step name written, ``writes`` the names of each write.
    """

    def __init__(
        self,
        inner: StateStore,
        *,
        before: StepHook | None = None,
        after: StepHook | None = None,
    ) -> None:
        self._inner = inner
        self.before = before
        self.after = after
        self.steps: list[str] = []
        self.writes: list[list[str]] = []

    @classmethod
    def crashing_at(
        cls, inner: StateStore, k: int, when: Literal["before", "after"]
    ) -> StepHookStore:
        """A proxy that raises :class:`Crash` at the ``k``-th write (before it is stored, or
        right after)."""

        def crash(n: int, step: str) -> None:
            if n == k:
                raise Crash(f"crash {when} journal write {n} ({step})")

        return cls(inner, **{when: crash})

    def as_store(self) -> StateStore:
        """This proxy typed as the Protocol it forwards (``__getattr__`` does the rest)."""
        return cast("StateStore", self)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not (inspect.iscoroutinefunction(attr) and is_write(name)):
            return attr

        async def hooked(*args: Any, **kwargs: Any) -> Any:
            names = steps_of(name, args, kwargs)
            self.writes.append(names)
            self.steps += names
            n = len(self.writes)
            for step in names:
                if self.before is not None:
                    self.before(n, step)
            result = await attr(*args, **kwargs)
            for step in names:
                if self.after is not None:
                    self.after(n, step)
            return result

        return hooked


class HookedDestination(MemoryDestination):
    """A memory destination that tells its world's ``after_call`` of each stage and promotion."""

    def __init__(self, store: MemoryStore, *, world: EngineWorld, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.world = world
        self.backend: Backend = "aws" if store.pending else "vault"

    async def stage(
        self, secret: Secret, *, rotation_id: str, key_id: str, base: CurrentValue
    ) -> StagedValue:
        staged = await super().stage(secret, rotation_id=rotation_id, key_id=key_id, base=base)
        self._after("stage")
        return staged

    async def promote(self, staged: StagedValue, secret: Secret) -> PromotedValue:
        promoted = await super().promote(staged, secret)
        self._after("promote")
        return promoted

    def _after(self, method: str) -> None:
        if self.world.after_call is not None:
            self.world.after_call(self.backend, method)


def crashing_after(
    destinations: Sequence[Destination], method: Literal["stage", "promote"], k: int
) -> tuple[Destination, ...]:
    """``destinations`` behind proxies that raise :class:`Crash` right after the ``k``-th
    ``method`` call among them returned: the side effect happened, the journal write that
    records it did not."""
    calls = [0]

    class Proxy:
        def __init__(self, inner: Destination) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            attr = getattr(self._inner, name)
            if name != method:
                return attr

            async def counted(*args: Any, **kwargs: Any) -> Any:
                result = await attr(*args, **kwargs)
                calls[0] += 1
                if calls[0] == k:
                    raise Crash(f"crash after {method} #{k}")
                return result

            return counted

    return tuple(cast("Destination", Proxy(d)) for d in destinations)


@dataclass(frozen=True)
class TargetSpec:
    """One target of an :class:`EngineWorld` and the paths of its destinations."""

    name: str
    backends: tuple[Backend, ...]

    @property
    def prefix(self) -> str:
        return f"rotator-{self.name}"

    @property
    def path(self) -> str:
        return f"mistral/{self.name}"


class EngineWorld:
    """Everything an engine touches, in memory (plus a real SQLite state file).

    The world outlives engines: :meth:`engine` builds a new one on the same issuer, destination
    stores and state file, as a restarted process would.
    """

    def __init__(
        self,
        tmp_path: Path,
        targets: Sequence[TargetSpec],
        *,
        policy: Mapping[str, object] | None = None,
        target_options: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        self.clock = HookedClock(START)
        self.issuer = FakeIssuer(self.clock)
        self.verifier = FakeVerifier(self.issuer)
        self.stores: dict[Backend, MemoryStore] = {
            "vault": MemoryStore(pending=False),
            "aws": MemoryStore(pending=True),
        }
        self.targets = {t.name: t for t in targets}
        self.db_path = tmp_path / "state.db"
        self.state_url = f"sqlite:///{self.db_path}"
        self.alerts: list[Alert] = []
        self.after_call: Callable[[Backend, str], None] | None = None
        """Called after each ``stage``/``promote`` of a destination succeeded, with its backend
        and the method: between a side effect and the journal write that records it (where a
        test crashes with :class:`Crash`, or tampers with the world)."""
        self.cfg = build_config(
            targets, state_url=self.state_url, policy=policy, target_options=target_options
        )
        self._stores_open: list[SqlStateStore] = []

    # -- engines -----------------------------------------------------------------------------

    async def new_store(self) -> SqlStateStore:
        """A fresh connection to the world's state file (migrated)."""
        store = SqlStateStore(self.state_url, clock=self.clock)
        await store.migrate()
        self._stores_open.append(store)
        return store

    async def engine(
        self,
        *,
        store: StateStore | None = None,
        cfg: Config | None = None,
        wrap: Callable[[StateStore], StateStore] | None = None,
    ) -> Engine:
        """A new engine on this world; ``wrap`` puts a proxy around its state store."""
        base: StateStore = store or await self.new_store()
        deps = Deps(
            store=wrap(base) if wrap else base,
            issuer=self.issuer,
            verifier=self.verifier,
            clock=self.clock,
            user_id=USER,
            destinations=self.destinations,
            on_alert=self._on_alert,
        )
        return Engine(cfg or self.cfg, deps)

    async def close(self) -> None:
        for store in self._stores_open:
            await store.close()
        self._stores_open.clear()

    async def _on_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def alert_events(self) -> list[str]:
        return [a.event for a in self.alerts]

    # -- destinations ------------------------------------------------------------------------

    def destinations(self, target: Target) -> list[Destination]:
        spec = self.targets[target.name]
        return [
            HookedDestination(
                self.stores[b], path=spec.path, field=FIELD, name=f"{b}-main", world=self
            )
            for b in spec.backends
        ]

    def seed(self, name: str, *, key_name: str | None = None) -> FakeKey:
        """A working key created by hand and written (with :data:`OTHER_FIELDS`) everywhere."""
        key = self.issuer.add_existing(name=key_name or f"legacy-{name}")
        self.write(name, key.plaintext)
        return key

    def write(self, name: str, plaintext: str, backends: Iterable[Backend] | None = None) -> None:
        """Someone else writes ``plaintext`` as the current value of the target's destinations."""
        spec = self.targets[name]
        for backend in backends or spec.backends:
            self.stores[backend].write(spec.path, {**OTHER_FIELDS, FIELD: plaintext})

    def deny_at(self, step: str, backend: Backend, name: str = "t1") -> StepHook:
        """A :class:`StepHookStore` hook that takes write permission on the target's ``backend``
        destination away once ``step`` is journaled (a policy change mid-rotation)."""

        def hook(_n: int, journaled: str) -> None:
            if journaled == step:
                self.stores[backend].denied.add(self.targets[name].path)

        return hook

    def mark_foreign(self, name: str, backend: Backend, owner: str = "external-secrets") -> None:
        self.stores[backend].set_marks(self.targets[name].path, {MANAGED_BY: owner})

    def served(self, name: str) -> dict[Backend, str | None]:
        """What a consumer reads from each destination of the target (the key field)."""
        spec = self.targets[name]
        out: dict[Backend, str | None] = {}
        for backend in spec.backends:
            data = self.stores[backend].consumer_read(spec.path)
            out[backend] = data.get(FIELD) if data else None
        return out

    def data(self, name: str) -> dict[Backend, dict[str, str] | None]:
        spec = self.targets[name]
        return {b: self.stores[b].consumer_read(spec.path) for b in spec.backends}

    def pending(self, name: str) -> str | None:
        """The AWSPENDING version of the target's ``aws`` destination, if any."""
        return self.stores["aws"].entry(self.targets[name].path).pending

    def snapshot(self, name: str) -> dict[str, object]:
        """Everything a rotation of ``name`` could change in the world, comparable with ``==``."""
        spec = self.targets[name]
        out: dict[str, object] = {
            "keys": sorted((k.key_id, k.deleted) for k in self.issuer.keys.values()),
        }
        for backend in spec.backends:
            store = self.stores[backend]
            entry = store.entry(spec.path)
            out[backend] = (
                store.version_count(spec.path),
                entry.current,
                entry.pending,
                dict(entry.marks),
            )
        return out

    def fingerprints_served(self, name: str) -> set[str | None]:
        return {fingerprint_of(v) if v else None for v in self.served(name).values()}


def build_config(
    targets: Sequence[TargetSpec],
    *,
    state_url: str,
    policy: Mapping[str, object] | None = None,
    target_options: Mapping[str, Mapping[str, object]] | None = None,
) -> Config:
    """A configuration of ``targets`` whose destinations name the ``vault-main`` and
    ``aws-main`` stores (the world maps them to memory stores)."""
    data = config_data(targets, state_url=state_url, policy=policy, target_options=target_options)
    return parse_config(data, source="unit")


def config_data(
    targets: Sequence[TargetSpec],
    *,
    state_url: str,
    policy: Mapping[str, object] | None = None,
    target_options: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, Any]:
    """The configuration document :func:`build_config` parses (to extend or write to a file)."""
    defaults: dict[str, object] = {
        "schedule": "every 30d",
        "max_age": "30d",
        "grace": "1h",
        "max_grace": "2d",
        "key_expiration": "45d",
        "activation_timeout": "10s",
        "jitter": "0s",
    }
    defaults.update(policy or {})
    rows = []
    for spec in targets:
        dests: list[dict[str, str]] = []
        if "vault" in spec.backends:
            dests.append({"store": "vault-main", "path": spec.path, "field": FIELD})
        if "aws" in spec.backends:
            dests.append({"store": "aws-main", "secret_id": spec.path, "field": FIELD})
        rows.append(
            {
                "name": spec.name,
                "workspace_id": WORKSPACE,
                "destinations": dests,
                **(target_options or {}).get(spec.name, {}),
            }
        )
    return {
        "mistral": {"admin_key": "sk-unit-test-admin", "user_id": USER},
        "state": {"url": state_url},
        "stores": {
            "vault-main": {
                "type": "vault",
                "url": "https://vault.invalid:8200",
                "auth": {"method": "token", "token": "unit-test-token"},
            },
            "aws-main": {"type": "aws_secrets_manager", "region": "eu-west-1"},
        },
        "defaults": defaults,
        "engine": {"concurrency": 4},
        "targets": rows,
    }


class Worlds:
    """Makes :class:`EngineWorld` objects for one test and closes their stores at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[EngineWorld] = []
        # A RAM-backed directory when the machine has one: the SQLite file is as real, only its
        # fsyncs are free (a rotation commits ~25 times), which keeps the unit tests fast.
        self._ram: Path | None = None
        if RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK):
            self._ram = Path(tempfile.mkdtemp(prefix="rotator-engine-", dir=RAM_DIR))

    def __call__(
        self,
        *backend_sets: tuple[Backend, ...],
        policy: Mapping[str, object] | None = None,
        options: Mapping[str, object] | None = None,
    ) -> EngineWorld:
        """A world with one target per backend set (``t1``, ``t2`` …), each given ``options``."""
        specs = [TargetSpec(f"t{i}", b) for i, b in enumerate(backend_sets or (BOTH,), 1)]
        path = (self._ram or self.tmp_path) / f"world{len(self.made) + 1}"
        path.mkdir()
        world = EngineWorld(
            path, specs, policy=policy, target_options={s.name: options or {} for s in specs}
        )
        self.made.append(world)
        return world

    async def close(self) -> None:
        for world in self.made:
            await world.close()
        if self._ram is not None:
            shutil.rmtree(self._ram, ignore_errors=True)


BOTH: tuple[Backend, ...] = ("vault", "aws")


@pytest.fixture
async def worlds(tmp_path: Path) -> AsyncIterator[Worlds]:
    """A factory of in-memory engine worlds, closed after the test."""
    made = Worlds(tmp_path)
    try:
        yield made
    finally:
        await made.close()


async def run_until_crash(coro: Awaitable[object]) -> Crash | None:
    """Await ``coro``; the :class:`Crash` it died of, or None if it finished."""
    try:
        await coro
    except Crash as crash:
        return crash
    return None


__all__ = [
    "BOTH",
    "START",
    "Crash",
    "EngineWorld",
    "FakeIssuer",
    "FakeKey",
    "FakeVerifier",
    "StepHookStore",
    "TargetSpec",
    "Worlds",
    "build_config",
    "config_data",
    "gone",
    "hidden",
    "new_plaintext",
    "run_until_crash",
    "worlds",
]
