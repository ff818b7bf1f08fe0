"""Recovery from every journaled state: a rotation killed at each journal write boundary, or
right after a destination's stage or promotion (between a side effect and the write recording
it), is rolled back (nothing was served yet) or promoted (something was) by a new engine
(docs/overview.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import pytest

from rotator.contracts import StateStore
from rotator.engine.engine import Engine
from rotator.engine.steps import Outcome
from tests.support.engine_fakes import (
    BOTH,
    OTHER_FIELDS,
    Backend,
    Crash,
    EngineWorld,
    FakeKey,
    StepHookStore,
    Worlds,
    gone,
    run_until_crash,
)

BACKEND_SETS: dict[str, tuple[Backend, ...]] = {"both": BOTH, "vault": ("vault",), "aws": ("aws",)}
WRITE_COUNTS = {"both": 5, "vault": 5, "aws": 5}
"""Writes of an adopting rotation with a grace: adopt_key, planned, [created … staging:*],
[staged:* … promoting:*], [promoted:* … done] with the promotion recorded."""
EMERGENCY_WRITES = 7
"""An emergency revokes at once: the promotion recorded, the revocation, the rotation closed."""
When = Literal["before", "after"]


def _cases() -> list[tuple[str, int, When, bool]]:
    cases: list[tuple[str, int, When, bool]] = []
    for backends, count in WRITE_COUNTS.items():
        for k in range(1, count + 1):
            cases += [(backends, k, "before", False), (backends, k, "after", False)]
    cases += [("both", k, "after", True) for k in range(1, EMERGENCY_WRITES + 1)]
    return cases


_REFERENCE: dict[tuple[tuple[Backend, ...], bool], list[list[str]]] = {}


async def _reference_writes(
    worlds: Worlds, backends: tuple[Backend, ...], *, emergency: bool = False
) -> list[list[str]]:
    """The journal writes of an uninterrupted rotation (each write's step names), in order."""
    if (backends, emergency) not in _REFERENCE:
        _REFERENCE[backends, emergency] = await _run_reference(worlds, backends, emergency)
    return _REFERENCE[backends, emergency]


async def _run_reference(
    worlds: Worlds, backends: tuple[Backend, ...], emergency: bool
) -> list[list[str]]:
    world = worlds(backends, options={"adopt_existing": True})
    world.seed("t1")
    proxy: list[StepHookStore] = []

    def wrap(store: StateStore) -> StateStore:
        proxy.append(StepHookStore(store))
        return proxy[0].as_store()

    engine = await world.engine(wrap=wrap)
    result = await engine.rotate("t1", emergency=emergency)
    assert result.outcome is (Outcome.ROTATED if emergency else Outcome.PROMOTED)
    return proxy[0].writes


async def _crashed_rotation(
    world: EngineWorld, k: int, when: When, *, emergency: bool = False
) -> Crash:
    engine = await world.engine(wrap=lambda s: StepHookStore.crashing_at(s, k, when).as_store())
    crash = await run_until_crash(engine.rotate("t1", emergency=emergency))
    assert crash is not None, f"the rotation has fewer than {k} journal writes"
    return crash


async def _crashed_after(world: EngineWorld, backend: Backend, method: str) -> Crash:
    """A rotation killed right after ``backend``'s ``method`` (stage or promote) returned,
    before the journal write that records it."""

    def crash(done: Backend, called: str) -> None:
        if (done, called) == (backend, method):
            raise Crash(f"crash after {backend} {method}")

    world.after_call = crash
    try:
        engine = await world.engine()
        crashed = await run_until_crash(engine.rotate("t1"))
    finally:
        world.after_call = None
    assert crashed is not None, f"no {backend} {method} in the rotation"
    return crashed


def _new_key(world: EngineWorld) -> FakeKey | None:
    created = world.issuer.named("rotator-t1-")
    assert len(created) <= 1, "one attempt created more than one key (I5)"
    return created[0] if created else None


def _assert_rolled_back(world: EngineWorld, legacy: FakeKey) -> None:
    new = _new_key(world)
    assert new is None or gone(new)
    assert set(world.served("t1").values()) == {legacy.plaintext}
    assert not gone(legacy)
    if "aws" in world.targets["t1"].backends:
        assert world.pending("t1") is None


async def _assert_promoted(
    world: EngineWorld, engine: Engine, legacy: FakeKey, *, emergency: bool
) -> None:
    new = _new_key(world)
    assert new is not None
    assert not gone(new)
    assert set(world.served("t1").values()) == {new.plaintext}
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert state.current is not None
    assert state.current.key_id == new.key_id
    if emergency:
        assert gone(legacy)
        assert state.retiring == ()
    else:
        assert not gone(legacy)
        assert [r.key_id for r in state.retiring] == [legacy.key_id]
    if "aws" in world.targets["t1"].backends:
        assert world.pending("t1") is None


@pytest.mark.parametrize(
    ("backends", "k", "when", "emergency"),
    _cases(),
    ids=[f"{b}-{k}-{w}{'-emergency' if e else ''}" for b, k, w, e in _cases()],
)
async def test_crash_at_each_journal_step_is_recovered(
    worlds: Worlds, backends: str, k: int, when: When, emergency: bool
) -> None:
    """A rotation killed before/after its k-th journal write ends, after a new engine recovers
    it, rolled back if no consumer could have seen the new key and promoted otherwise."""
    writes = await _reference_writes(worlds, BACKEND_SETS[backends], emergency=emergency)
    assert len(writes) == (EMERGENCY_WRITES if emergency else WRITE_COUNTS[backends])
    first_promotion = next(
        i for i, w in enumerate(writes, 1) if any(s.startswith("promoting:") for s in w)
    )
    world = worlds(BACKEND_SETS[backends], options={"adopt_existing": True})
    legacy = world.seed("t1")
    await _crashed_rotation(world, k, when, emergency=emergency)
    await _recovered(world, legacy, served=k > first_promotion, emergency=emergency)


@pytest.mark.parametrize(
    ("backends", "backend", "method"),
    [
        ("both", "vault", "stage"),
        ("both", "aws", "stage"),
        ("both", "aws", "promote"),
        ("both", "vault", "promote"),
        ("aws", "aws", "stage"),
        ("aws", "aws", "promote"),
        ("vault", "vault", "promote"),
    ],
)
async def test_crash_between_a_side_effect_and_its_journal_write_is_recovered(
    worlds: Worlds, backends: str, backend: Backend, method: str
) -> None:
    """A rotation killed right after a destination staged or promoted (before the write that
    records it: AWS promoted while Vault is not, for one) is recovered the same way."""
    world = worlds(BACKEND_SETS[backends], options={"adopt_existing": True})
    legacy = world.seed("t1")
    await _crashed_after(world, backend, method)
    await _recovered(world, legacy, served=method == "promote", emergency=False)


async def _recovered(world: EngineWorld, legacy: FakeKey, *, served: bool, emergency: bool) -> None:
    """Recovery of the crashed rotation ends as the rule says: promoted if the new key was
    served somewhere (``served``), rolled back if not; other fields kept."""
    new = _new_key(world)
    served_new = new is not None and new.plaintext in world.served("t1").values()
    assert served_new == served, "the journal boundary model is off"
    fresh = await world.engine()
    # Killed before its first write or after its last, no rotation is open: nothing to recover.
    still_open = len(await fresh.deps.store.open_rotations("t1"))
    results, orphans = await fresh.recover()

    assert orphans == []
    assert len(results) == still_open <= 1
    assert await fresh.deps.store.open_rotations() == []
    if served_new:
        assert [r.outcome for r in results] in ([], [Outcome.PROMOTED], [Outcome.ROTATED])
        await _assert_promoted(world, fresh, legacy, emergency=emergency)
    else:  # killed before the rotation was opened, nothing to undo; else it is rolled back
        assert [r.outcome for r in results] == [Outcome.ROLLED_BACK] * still_open
        _assert_rolled_back(world, legacy)
    for data in world.data("t1").values():
        assert data is not None
        assert {k: data[k] for k in OTHER_FIELDS} == OTHER_FIELDS


@pytest.mark.parametrize(("k", "when"), [(2, "after"), (3, "before"), (4, "after"), (5, "before")])
async def test_a_recovered_target_rotates_again(worlds: Worlds, k: int, when: When) -> None:
    """After recovery (rolled back or promoted) the next rotation runs cleanly: no leftover
    pending version, lock or open rotation stands in its way."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    await _crashed_rotation(world, k, when)
    engine = await world.engine()
    await engine.recover()
    again = await engine.rotate("t1")
    assert again.outcome is Outcome.PROMOTED, again.error
    assert set(world.served("t1").values()) == {world.issuer.keys[again.new_key_id or ""].plaintext}


async def test_crash_inside_create_deletes_the_key_found_by_name(worlds: Worlds) -> None:
    """A key created but never answered (the process died mid-call) is found by its unique
    name and deleted by recovery: its plaintext is lost."""
    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")

    def die(_key: FakeKey) -> None:
        raise Crash("died while the create was in flight")

    world.issuer.after_create = die
    engine = await world.engine()
    assert await run_until_crash(engine.rotate("t1")) is not None
    world.issuer.after_create = None
    created = _new_key(world)
    assert created is not None
    assert not gone(created)
    rotation = (await engine.deps.store.open_rotations("t1"))[0]
    assert rotation.new_key_id is None

    results, _ = await (await world.engine()).recover()
    assert [r.outcome for r in results] == [Outcome.ROLLED_BACK]
    assert gone(created)
    _assert_rolled_back(world, legacy)


async def test_crash_during_roll_back_is_finished_by_recovery(worlds: Worlds) -> None:
    """A roll back interrupted after it was journaled (new key not yet deleted) is completed."""
    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")
    world.verifier.failing = True

    def crash(_n: int, step: str) -> None:
        if step == "rolling_back":
            raise Crash(step)

    engine = await world.engine(wrap=lambda s: StepHookStore(s, after=crash).as_store())
    assert await run_until_crash(engine.rotate("t1")) is not None
    created = _new_key(world)
    assert created is not None
    assert not gone(created)
    world.verifier.failing = False

    results, _ = await (await world.engine()).recover()
    assert [r.outcome for r in results] == [Outcome.ROLLED_BACK]
    _assert_rolled_back(world, legacy)


async def test_unreadable_destination_keeps_the_rotation_stuck_until_it_answers(
    worlds: Worlds,
) -> None:
    """Recovery never guesses: with a destination down after a crash mid-promotion it leaves
    the rotation stuck (both keys valid) and finishes it once the destination answers."""
    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")
    await _crashed_after(world, "aws", "promote")  # aws promoted, vault not yet
    world.stores["vault"].down = True
    world.stores["aws"].down = True
    engine = await world.engine()
    results, _ = await engine.recover()
    assert [r.outcome for r in results] == [Outcome.STUCK]
    assert "rotation_stuck" in world.alert_events()
    new = _new_key(world)
    assert new is not None
    assert not gone(new)
    assert not gone(legacy)
    assert [s.state for s in await engine.status()] == ["stuck"]

    world.stores["vault"].down = False
    world.stores["aws"].down = False
    results, _ = await engine.recover()
    assert [r.outcome for r in results] == [Outcome.PROMOTED]
    await _assert_promoted(world, engine, legacy, emergency=False)


async def test_orphan_keys_are_reported_and_deleted_only_when_swept(worlds: Worlds) -> None:
    """A key carrying the target's prefix that no state accounts for is an orphan: reported by
    recover, deleted only with sweep_orphans; other keys are never touched."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    stray = world.issuer.add_existing(name="rotator-t1-20260101T000000Z-deadbeef")
    other = world.issuer.add_existing(name="someone-elses-key")
    engine = await world.engine()
    first = await engine.rotate("t1")
    assert first.outcome is Outcome.PROMOTED

    _, orphans = await engine.recover()
    assert [(o.key_id, o.deleted) for o in orphans] == [(stray.key_id, False)]
    assert not gone(stray)
    _, orphans = await engine.recover(sweep_orphans=True)
    assert [(o.key_id, o.deleted) for o in orphans] == [(stray.key_id, True)]
    assert gone(stray)
    assert not gone(other)
    assert not gone(world.issuer.keys[first.new_key_id or ""])
    _, orphans = await engine.recover()
    assert orphans == []


async def test_a_stuck_rotation_is_retried_after_the_short_stuck_backoff(worlds: Worlds) -> None:
    """A rotation left stuck (both keys valid, destinations split) is carried forward again
    after ``stuck_backoff`` (5 min by default, doubling per consecutive failure up to
    ``failure_backoff``), not after the 1 h failure backoff."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    await _crashed_after(world, "aws", "promote")  # aws promoted, vault not yet
    world.stores["vault"].down = True
    world.stores["aws"].down = True
    engine = await world.engine()
    waits = []
    for _ in range(6):
        results, _ = await engine.recover()
        assert [r.outcome for r in results] == [Outcome.STUCK]
        state = await engine.deps.store.get_target("t1")
        assert state is not None
        assert state.backoff_until is not None
        waits.append(state.backoff_until - world.clock.now())
        world.clock.advance(1)
    assert waits == [timedelta(minutes=m) for m in (5, 10, 20, 40, 60, 60)]


async def test_undoing_an_interrupted_rotation_is_no_failure(worlds: Worlds) -> None:
    """Recovery that only cleans up after a crash (rolls an interrupted rotation back) does not
    count a failure: the count stays, no ``rotation_failed`` alert, a 1 min pause that never
    shortens a failure backoff already running."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    world.verifier.failing = True
    engine = await world.engine()
    assert (await engine.rotate("t1")).outcome is Outcome.ROLLED_BACK
    failed = await engine.deps.store.get_target("t1")
    assert failed is not None
    assert failed.consecutive_failures == 1
    assert failed.backoff_until == world.clock.now() + timedelta(hours=1)
    world.verifier.failing = False
    world.alerts.clear()

    await _crashed_rotation(world, 2, "after")  # killed before any promotion
    results, _ = await (await world.engine()).recover()
    assert [r.outcome for r in results] == [Outcome.ROLLED_BACK]
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert state.consecutive_failures == 1  # not counted
    assert state.backoff_until == failed.backoff_until  # not shortened, not doubled
    assert "rotation_failed" not in world.alert_events()

    world.clock.advance(2 * 3600)  # past the backoff: a crash now only pauses a minute
    await _crashed_rotation(world, 2, "after")
    await (await world.engine()).recover()
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert state.consecutive_failures == 1
    assert state.backoff_until == world.clock.now() + timedelta(minutes=1)
