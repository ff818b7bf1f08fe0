"""The call and transaction budget of one steady-state rotation (issue 14), on the real servers.

A Vault + AWS target (OpenBao dev server, moto, the Mistral stand-in) is rotated twice: the
first rotation adopts its seeded key, the second is the steady state (a managed key replaced by
the next). During each, every backend call is counted per operation (the ``on_call`` hook
``build_engine`` gives every backend, as the daemon's metrics count them), every
state-store call through a proxy of the ``StateStore`` protocol, and every hop onto the blocking
pool. Both tables are printed; the budget is asserted on the steady state, with grace 0 (the old
key revoked at once) and with a grace: AWS <= 8, Vault <= 4, Mistral <= 4 calls and <= 8 durable
(writing) transactions. docs/overview.md#what-each-call-is-for says why each call remains.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from rotator.app.wiring import build_engine
from rotator.contracts import StateStore
from rotator.engine.engine import Engine
from rotator.engine.steps import Outcome
from rotator.pool import BlockingPool
from tests.support.crash_seam import CallLog, CrashingProxy
from tests.support.invariants import InvariantChecker
from tests.support.journal_writes import READS, is_write
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

CALL_BUDGET = {"aws": 8, "vault": 4, "mistral": 4}
WRITE_BUDGET = 8


@dataclass
class Tally:
    """What one rotation cost, per backend and operation."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    store: Counter[str] = field(default_factory=Counter)
    hops: int = 0

    def backend(self, name: str) -> int:
        return sum(n for (backend, _), n in self.calls.items() if backend == name)

    @property
    def writes(self) -> int:
        return sum(n for m, n in self.store.items() if is_write(m))

    @property
    def reads(self) -> int:
        return sum(n for m, n in self.store.items() if m in READS)

    def table(self, title: str) -> str:
        def kind(method: str) -> str:
            return "read" if method in READS else "write" if is_write(method) else "lock"

        rows = [title, "| backend | operation | calls |", "| --- | --- | --- |"]
        rows += [f"| {b} | {op} | {n} |" for (b, op), n in sorted(self.calls.items())]
        rows += [f"| **{b}** | total | {self.backend(b)} |" for b in sorted(CALL_BUDGET)]
        rows += [f"| state | {m} ({kind(m)}) | {n} |" for m, n in sorted(self.store.items())]
        rows += [
            f"| **state** | writes (durable transactions) | {self.writes} |",
            f"| **state** | reads | {self.reads} |",
            f"| pool | hops onto the blocking pool | {self.hops} |",
        ]
        return "\n".join(rows)


class Counting:
    """Counts an engine's backend calls (the ``on_call`` hook every backend is built with),
    state-store calls (a proxy of the ``StateStore`` protocol) and pool hops,
    into the :class:`Tally` of :meth:`rotation` while one is open."""

    def __init__(self) -> None:
        self.tally: Tally | None = None

    def on_call(self, backend: str, operation: str, status: str, seconds: float) -> None:
        if self.tally is not None:
            self.tally.calls[backend, operation] += 1

    @contextmanager
    def rotation(self, engine: Engine) -> Iterator[Tally]:
        tally = self.tally = Tally()
        pool = engine.deps.pool
        assert isinstance(pool, BlockingPool)
        run_blocking, store = pool.run_blocking, engine.deps.store

        async def hop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            tally.hops += 1
            return await run_blocking(fn, *args, **kwargs)

        log = CallLog()
        pool.run_blocking = hop  # type: ignore[method-assign]
        engine.deps.store = cast("StateStore", CrashingProxy(store, "store", log))
        try:
            yield tally
        finally:
            self.tally = None
            pool.run_blocking = run_blocking  # type: ignore[method-assign]
            engine.deps.store = store
            tally.store.update({k.partition(".")[2]: n for k, n in log.calls.items()})


async def two_rotations(
    stack: Stack, state_url: str, grace: str, between: Callable[[Engine], Awaitable[object]]
) -> tuple[Tally, Tally, Outcome]:
    """A seeded Vault + AWS target rotated twice: its adoption, then (after ``between``) the
    steady-state rotation; the tally of each and the second's outcome."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    counting = Counting()
    cfg = stack.config(state_url=state_url, policy={"grace": grace})
    engine = await build_engine(cfg, on_call=counting.on_call)
    try:
        with counting.rotation(engine) as first:
            adoption = await engine.rotate(spec.name)
        assert adoption.outcome in {Outcome.ROTATED, Outcome.PROMOTED}, adoption.error
        await between(engine)
        with counting.rotation(engine) as steady:
            result = await engine.rotate(spec.name)
    finally:
        await engine.close()
    assert result.error is None, result.error
    return first, steady, result.outcome


def report(first: Tally, steady: Tally, grace: str) -> str:
    return "\n\n".join(
        [
            steady.table(f"steady-state Vault + AWS rotation, grace {grace}"),
            first.table(
                f"(for comparison) the first rotation, adopting the seeded key, grace {grace}"
            ),
        ]
    )


def assert_budget(tally: Tally) -> None:
    for backend, most in CALL_BUDGET.items():
        assert tally.backend(backend) <= most, f"{backend}: {tally.backend(backend)} > {most}"
    assert tally.writes <= WRITE_BUDGET, f"{tally.writes} durable transactions > {WRITE_BUDGET}"


async def nothing(engine: Engine) -> None:
    del engine


async def test_steady_state_rotation_with_grace_0_stays_within_budget(
    stack: Stack, state_url: str, checker: InvariantChecker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Create, verify, stage, read back, promote, prove and revoke the old key at once: at most
    16 calls (AWS 8, Vault 4, Mistral 4) and 8 durable transactions."""
    first, steady, outcome = await two_rotations(stack, state_url, "0s", nothing)
    with capsys.disabled():
        print("\n" + report(first, steady, "0"))
    assert outcome is Outcome.ROTATED
    assert steady.calls["mistral", "delete_key"] == 1, "the old key is revoked at once"
    assert_budget(steady)
    assert checker.check() == []


async def test_steady_state_rotation_with_a_grace_stays_within_budget(
    stack: Stack, state_url: str, checker: InvariantChecker, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a grace the old key is only scheduled: no revocation calls in the rotation."""

    async def revoke_adopted(engine: Engine) -> None:
        # The adopted key retires with the grace: revoke it now, so the rotation measured is the
        # steady state (one managed key replaced by the next).
        await engine.deps.clock.sleep(1.1)
        assert [r.outcome for r in await engine.revoke_due()] == ["revoked"]

    first, steady, outcome = await two_rotations(stack, state_url, "1s", revoke_adopted)
    with capsys.disabled():
        print("\n" + report(first, steady, "1s"))
    assert outcome is Outcome.PROMOTED
    assert steady.calls["mistral", "delete_key"] == 0
    assert_budget(steady)
    assert checker.check() == []
