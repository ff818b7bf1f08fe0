"""A hypothesis state machine drives the engine against the real stand-in, OpenBao and moto.

Each example seeds three targets (Vault only, AWS only, both) with a pre-rotator key, then
interleaves rotations (normal and emergency), rotations killed at a random journal write or right
after a destination's stage or promotion (the engine is then thrown away and a new one built on
the same configuration and state database, as a restarted process would be), recoveries, clock
jumps (the engine's clock and the stand-in's move together), revoke-due runs and consumer reads.
After every step the independent checker must find no violation of I1-I6 (I3 only when no
rotation is open).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import httpx
import hvac
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from rotator.app.wiring import build_engine
from rotator.clock import FakeClock
from rotator.config import Config
from rotator.engine.context import TargetContext
from rotator.engine.engine import Engine
from rotator.engine.steps import Outcome
from rotator.state import SqlStateStore
from tests.support.engine_fakes import Crash, StepHookStore, crashing_after
from tests.support.harness import MotoEnv, OpenBaoEnv
from tests.support.invariants import InvariantChecker
from tests.support.stack import BACKEND_SETS, FIELD, Stack

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

pytestmark = pytest.mark.integration

T = TypeVar("T")

MAX_EXAMPLES = 25
STEPS = 12
JOURNAL_WRITES = 7
"""The most journal writes of an uninterrupted rotation (an emergency adopting a key: the
adoption, the rotation opened, staging announced, promotion announced, the promotion recorded,
the revocation, the close); a crash point past a rotation's end lets it finish."""
JUMPS = [60, 1800, 3660, 6 * 3600, 86400]
"""Clock jumps in seconds: inside and past the 1 h grace, past the in-flight window, a day."""
POLICY = {"grace": "1h", "max_grace": "2d", "activation_timeout": "10s"}
FINE = {Outcome.PROMOTED, Outcome.ROTATED}
When = Literal["before", "after"]
SideEffect = Literal["stage", "promote"]
CrashPoint = tuple[int, When] | tuple[SideEffect, int]
WHENS: list[When] = ["before", "after"]
SIDE_EFFECTS: list[SideEffect] = ["stage", "promote"]
CRASH_POINTS: st.SearchStrategy[CrashPoint | None] = st.one_of(
    st.none(),
    st.tuples(st.integers(1, JOURNAL_WRITES), st.sampled_from(WHENS)),
    st.tuples(st.sampled_from(SIDE_EFFECTS), st.integers(1, 2)),
)
"""No crash; the journal write (1-based) the process dies before or after; or the destination
stage or promotion (1-based, in the rotation) it dies right after."""
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class _OnceMoto:
    """The session's moto, whose admin client is made once (the checker reads after every
    step; a new boto3 client costs more than the read)."""

    def __init__(self, env: MotoEnv) -> None:
        self._env = env
        self._admin = env.admin_client()

    def admin_client(self) -> SecretsManagerClient:
        return self._admin

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


class _OnceOpenBao:
    """The session's OpenBao, whose root client is made once."""

    def __init__(self, env: OpenBaoEnv) -> None:
        self._env = env
        self._root = env.root()

    def root(self) -> hvac.Client:
        return self._root

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


class QuickStack(Stack):
    """The test world with its admin and consumer clients made once per test."""

    http: httpx.Client

    def key_works(self, plaintext: str) -> bool:
        answer = self.http.get("/v1/models", headers={"Authorization": f"Bearer {plaintext}"})
        return answer.status_code == 200


@dataclass
class Session:
    """What the examples of one run share: one event loop, one clock that only moves forward,
    the admin clients, and the engine's backends (HTTP and SDK clients hold no rotation state;
    making them costs more than a rotation)."""

    base: Stack
    workdir: Path
    http: httpx.Client
    loop: asyncio.AbstractEventLoop = dataclasses.field(default_factory=asyncio.new_event_loop)
    clock: FakeClock = dataclasses.field(default_factory=FakeClock)
    backends: Engine | None = None
    examples: int = 0
    steps: int = 0
    crashes: int = 0
    checks: int = 0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def stack(self) -> QuickStack:
        world = QuickStack(
            standin=self.base.standin,
            openbao=cast("OpenBaoEnv", _OnceOpenBao(self.base.openbao)),
            moto=cast("MotoEnv", _OnceMoto(self.base.moto)),
            workdir=self.workdir,
        )
        world.http = self.http
        return world

    async def engine(self, cfg: Config) -> Engine:
        """A new engine process on ``cfg``'s state database (the backends made once)."""
        if self.backends is None:
            self.backends = await build_engine(cfg, clock=self.clock)
        store = SqlStateStore(cfg.state.url, clock=self.clock, pool=self.backends.deps.pool)
        await store.migrate()
        return Engine(cfg, dataclasses.replace(self.backends.deps, store=store))

    def close(self) -> None:
        try:
            if self.backends is not None:
                self.run(self.backends.close())
        finally:
            self.loop.close()


class EngineMachine(RuleBasedStateMachine):
    """One example: a fresh world of three seeded targets and one engine process at a time."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        session.examples += 1
        self.session = session
        self.clock = session.clock
        control = session.base.standin.control
        control.reset()
        control.set_now(self.clock.now(), frozen=True)  # both clocks move only together now
        self.stack = session.stack()
        self.names = []
        for backends in ("vault", "aws", "both"):
            spec = self.stack.add_target(BACKEND_SETS[backends])
            self.stack.seed(spec)
            self.names.append(spec.name)
        directory = session.workdir / f"example-{session.examples}"
        directory.mkdir()
        state_url = f"sqlite:///{directory / 'state.db'}"
        self.cfg = self.stack.config(state_url=state_url, policy=POLICY)
        self.checker = InvariantChecker(self.stack, state_url)
        self.engine = session.run(session.engine(self.cfg))

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.session.run(work)

    def restart(self) -> None:
        """The process died: its engine, with every rotation's working memory, is gone; a new
        engine starts on the same configuration and state database."""
        self.run(self.engine.deps.store.close())
        self.engine = self.run(self.session.engine(self.cfg))

    def open_rotations(self) -> int:
        return len(self.run(self.engine.deps.store.open_rotations()))

    def teardown(self) -> None:
        self.run(self.engine.deps.store.close())

    # -- rules ---------------------------------------------------------------------------------

    @rule(index=st.integers(0, 2), emergency=st.booleans(), crash=CRASH_POINTS)
    def rotate(self, index: int, emergency: bool, crash: CrashPoint | None) -> None:
        """Rotate a target; with a crash point, the process dies at that journal write, or
        right after that stage or promotion."""
        self.session.steps += 1
        name = self.names[index]
        store, ctx = self.engine.deps.store, self.engine.contexts[name]
        match crash:
            case (int(k), "before" | "after" as when):
                self.engine.deps.store = StepHookStore.crashing_at(store, k, when).as_store()
            case ("stage" | "promote" as method, int(k)):
                dests = crashing_after(ctx.destinations, method, k)
                self.engine.contexts[name] = TargetContext(ctx.target, dests)
        was_open = self.open_rotations() > 0
        try:
            result = self.run(self.engine.rotate(name, emergency=emergency))
        except Crash:
            self.session.crashes += 1
            self.engine.deps.store = store
            self.restart()
            return
        self.engine.deps.store, self.engine.contexts[name] = store, ctx
        allowed = FINE | ({Outcome.SKIPPED} if was_open else set())
        assert result.outcome in allowed, result

    @rule()
    def recover(self) -> None:
        self.session.steps += 1
        results, orphans = self.run(self.engine.recover())
        assert orphans == []
        assert all(r.outcome in FINE | {Outcome.ROLLED_BACK} for r in results), results
        assert self.open_rotations() == 0

    @rule(seconds=st.sampled_from(JUMPS))
    def clock_jump(self, seconds: int) -> None:
        self.session.steps += 1
        self.clock.advance(seconds)
        moved = self.stack.standin.control.advance(seconds)
        assert abs(moved - self.clock.now()) < timedelta(seconds=1)

    @rule()
    def revoke_due(self) -> None:
        self.session.steps += 1
        for result in self.run(self.engine.revoke_due()):
            assert result.outcome in {"revoked", "already_gone", "refused", "deferred"}

    @rule()
    def consumers_read(self) -> None:
        self.session.steps += 1
        for spec in self.stack.targets:
            for dest, data in self.stack.consumer_reads(spec):
                assert data is not None, dest
                assert self.stack.key_works(data[FIELD]), f"{dest} serves a dead key"

    # -- after every step ----------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        self.session.checks += 1
        quiet = self.open_rotations() == 0
        assert self.checker.check(after_recovery=quiet) == []


@pytest.mark.timeout(300)  # about a minute on an idle machine; CI runners are shared
def test_engine_state_machine_keeps_the_invariants(stack: Stack, tmp_path: Path) -> None:
    """Rotations, crashes at random journal steps, recoveries, clock jumps, revoke-due and
    consumer reads in any order never violate I1-I6."""
    started = time.monotonic()
    with httpx.Client(base_url=stack.standin.url, timeout=10) as http:
        now = stack.standin.control.now().replace(microsecond=0)
        session = Session(base=stack, workdir=tmp_path, http=http, clock=FakeClock(now))

        class Machine(EngineMachine):
            def __init__(self) -> None:
                super().__init__(session)

        try:
            run_state_machine_as_test(Machine, settings=SETTINGS)
        finally:
            session.close()
    print(
        f"engine state machine: {session.examples} examples, {session.steps} steps, "
        f"{session.crashes} crashes, {session.checks} invariant checks, 0 violations, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert session.examples >= MAX_EXAMPLES
    assert session.crashes > 0
