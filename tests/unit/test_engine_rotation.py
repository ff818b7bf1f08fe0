"""One rotation on in-memory backends: key names and expirations, roll back and stuck, backoff,
the dry run, foreign destinations and one rotation per target at a time."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest

from rotator.durations import format_duration
from rotator.engine.engine import Engine
from rotator.engine.steps import Outcome, dest_tag
from rotator.secret import fingerprint_of
from tests.support.engine_fakes import (
    BOTH,
    FIELD,
    START,
    EngineWorld,
    StepHookStore,
    Worlds,
    gone,
    run_until_crash,
)


async def _only_rotation_key(world: EngineWorld, engine: Engine) -> tuple[str, str]:
    """(rotation id, new key name) of the target's single rotation so far."""
    rotations = await engine.deps.store.list_rotations("t1")
    assert len(rotations) == 1
    assert rotations[0].new_key_name is not None
    return rotations[0].rotation_id, rotations[0].new_key_name


async def test_key_name_is_prefix_utc_stamp_and_short_rotation_id(worlds: Worlds) -> None:
    """The new key is named ``<prefix>-<UTC stamp>-<first 8 chars of the rotation id>``."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    world.clock.advance(3723)  # 11:02:03
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.PROMOTED
    rotation_id, name = await _only_rotation_key(world, engine)
    assert result.rotation_id == rotation_id
    assert re.fullmatch(r"rotator-t1-\d{8}T\d{6}Z-[0-9a-f]{8}", name)
    assert name == f"rotator-t1-20260302T110203Z-{rotation_id.replace('-', '')[:8]}"
    assert world.issuer.keys[result.new_key_id or ""].name == name


async def test_expiration_is_requested_from_policy_and_the_granted_date_read_back(
    worlds: Worlds,
) -> None:
    """The create asks for now + key_expiration; what is recorded is the (shorter) date Mistral
    granted, read from the answer."""
    world = worlds(BOTH, policy={"key_expiration": "45d"}, options={"adopt_existing": True})
    world.seed("t1")
    world.issuer.max_expiration_days = 40  # an organization policy caps expirations
    engine = await world.engine()
    result = await engine.rotate("t1")
    key = world.issuer.keys[result.new_key_id or ""]
    assert key.requested_expiration == (START + timedelta(days=45)).date()
    assert key.expiration_date == (START + timedelta(days=40)).date()
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert state.current is not None
    assert state.current.expiration == key.expiration_date
    journal = await engine.deps.store.journal(result.rotation_id or "")
    created = next(e for e in journal if e.step == "created")
    assert created.facts["expiration"] == key.expiration_date.isoformat()
    assert created.facts["requested_expiration"] == key.requested_expiration.isoformat()


async def test_no_key_expiration_requests_none(worlds: Worlds) -> None:
    """``key_expiration: null`` creates a key without an expiration date."""
    world = worlds(BOTH, policy={"key_expiration": None})
    world.seed("t1")
    engine = await world.engine()
    result = await engine.rotate("t1")
    key = world.issuer.keys[result.new_key_id or ""]
    assert key.requested_expiration is None
    assert key.expiration_date is None


async def test_first_rotation_into_empty_destinations_creates_their_first_version(
    worlds: Worlds,
) -> None:
    """A target whose destinations hold no value yet gets the key everywhere and retires
    nothing."""
    world = worlds(BOTH)
    world.stores["vault"].write("mistral/t1", {"owner": "team-payments"})
    world.stores["aws"].write("mistral/t1", {"owner": "team-payments"})
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.ROTATED, result.error
    plaintext = world.issuer.keys[result.new_key_id or ""].plaintext
    assert world.served("t1") == {"vault": plaintext, "aws": plaintext}
    assert world.data("t1")["vault"] == {"owner": "team-payments", "api_key": plaintext}


async def test_verification_failure_rolls_back_and_alerts(worlds: Worlds) -> None:
    """A new key that never verifies is deleted, nothing is written, and on_alert hears it."""
    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")
    before = world.snapshot("t1")
    world.verifier.failing = True
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.error is not None
    assert "unavailable" in result.error
    assert gone(world.issuer.keys[result.new_key_id or ""])
    assert not gone(legacy)
    after = world.snapshot("t1")
    assert after["vault"] == before["vault"]
    assert after["aws"] == before["aws"]
    assert world.alert_events() == ["rotation_failed"]
    assert world.alerts[0].rotation_id == result.rotation_id


async def test_read_back_failure_removes_the_pending_version(worlds: Worlds) -> None:
    """A failure after staging (the staged version reads back as something other than the
    verified key) removes our AWSPENDING and the new key; consumers never saw it."""
    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")

    def tamper(backend: str, method: str) -> None:
        if (backend, method) == ("aws", "stage"):
            pending = world.pending("t1")
            assert pending is not None
            entry = world.stores["aws"].entry(world.targets["t1"].path)
            entry.versions[pending].data[FIELD] = "not-the-verified-key"

    world.after_call = tamper
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.ROLLED_BACK
    assert world.pending("t1") is None
    assert set(world.served("t1").values()) == {legacy.plaintext}
    assert gone(world.issuer.keys[result.new_key_id or ""])


async def test_failed_promotion_after_the_first_is_stuck_then_finished(worlds: Worlds) -> None:
    """Once AWS serves the new key a Vault failure cannot roll back: the rotation is stuck,
    both keys stay valid, an alert is raised, and recovery later finishes it."""
    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")

    failing = await world.engine(
        wrap=lambda s: StepHookStore(s, after=world.deny_at("promoting", "vault")).as_store()
    )
    result = await failing.rotate("t1")
    assert result.outcome is Outcome.STUCK
    new = world.issuer.keys[result.new_key_id or ""]
    assert world.served("t1") == {"vault": legacy.plaintext, "aws": new.plaintext}
    assert not gone(new)
    assert not gone(legacy)
    assert world.alert_events() == ["rotation_stuck"]
    assert [s.state for s in await failing.status()] == ["stuck"]

    world.stores["vault"].denied.clear()
    results, _ = await (await world.engine()).recover()
    assert [r.outcome for r in results] == [Outcome.PROMOTED]
    assert set(world.served("t1").values()) == {new.plaintext}
    assert not gone(legacy)  # still inside its grace


async def test_transient_promotion_failures_are_retried(worlds: Worlds) -> None:
    """A destination down for a moment during promotion is retried, not skipped or stuck."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    vault = world.stores["vault"]
    waits: list[float] = []

    def outage(_n: int, step: str) -> None:
        if step.startswith("promoting:") and step.endswith(
            dest_tag("vault-main:mistral/t1#api_key")
        ):
            vault.down = True

    def back_up(seconds: float) -> None:
        waits.append(seconds)
        vault.down = False

    world.clock.on_sleep.append(back_up)
    engine = await world.engine(wrap=lambda s: StepHookStore(s, after=outage).as_store())
    result = await engine.rotate("t1")
    assert len(waits) == 1
    assert result.outcome is Outcome.PROMOTED, result.error
    assert set(world.served("t1").values()) == {
        world.issuer.keys[result.new_key_id or ""].plaintext
    }


async def test_failure_backoff_doubles_from_one_hour_to_a_32_hour_cap(worlds: Worlds) -> None:
    """Consecutive failed attempts back off 1 h, 2 h, 4 h … capped at 32 h; success clears it."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    world.verifier.failing = True
    engine = await world.engine()
    seen = []
    for attempt in range(1, 9):
        result = await engine.rotate("t1")
        assert result.outcome is Outcome.ROLLED_BACK
        state = await engine.deps.store.get_target("t1")
        assert state is not None
        assert state.backoff_until is not None
        assert state.consecutive_failures == attempt
        seen.append(state.backoff_until - world.clock.now())
        world.clock.advance(60)
    assert seen == [timedelta(hours=h) for h in (1, 2, 4, 8, 16, 32, 32, 32)]
    world.verifier.failing = False
    assert (await engine.rotate("t1")).outcome is Outcome.PROMOTED
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert (state.consecutive_failures, state.backoff_until) == (0, None)


async def test_dry_run_plans_without_changing_anything(worlds: Worlds) -> None:
    """``plan`` prints the exact steps and creates no key, writes no destination, and adds no
    rotation, journal or audit row."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    engine = await world.engine()
    first = await engine.rotate("t1")
    store = engine.deps.store
    before = (
        world.snapshot("t1"),
        world.issuer.creates,
        await store.list_rotations(),
        await store.list_targets(),
        len(await store.audit_events()),
    )
    world.clock.advance(86400)
    plan = await engine.plan("t1")
    after = (
        world.snapshot("t1"),
        world.issuer.creates,
        await store.list_rotations(),
        await store.list_targets(),
        len(await store.audit_events()),
    )
    assert after == before
    assert plan["outcome"] == "planned"
    assert plan["error"] is None
    details = plan["plan"]
    assert isinstance(details, dict)
    assert details["replaces"] == [first.new_key_id]
    assert details["create"] == {
        "workspace_id": engine.cfg.targets[0].workspace_id,
        "name": "rotator-t1-20260303T100000Z-xxxxxxxx",
        "expiration": "2026-04-17",
    }
    served = world.issuer.keys[first.new_key_id or ""]
    dests = details["destinations"]
    assert isinstance(dests, list)
    assert [d["serves_fingerprint"] for d in dests] == [fingerprint_of(served.plaintext)] * 2
    # durations as the configuration writes them, not timedelta's "1:00:00"
    policy = engine.cfg.targets[0].policy
    assert details["grace"] == format_duration(policy.grace)
    verify = str(details["verify"])
    assert verify.endswith(f"(up to {format_duration(policy.activation_timeout)})")
    assert ":" not in str(details["grace"]) + verify.rpartition("up to")[2]


async def test_foreign_destination_is_refused_before_any_key_is_created(worlds: Worlds) -> None:
    """A destination marked managed-by another tool stops the rotation before a key exists;
    the dry run reports the same refusal."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    world.mark_foreign("t1", "aws")
    before = world.snapshot("t1")
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.rotation_id is None
    assert result.error is not None
    assert "external-secrets" in result.error
    assert world.issuer.creates == 0
    assert world.snapshot("t1") == before
    assert await engine.deps.store.list_rotations() == []
    plan = await engine.plan("t1")
    assert "external-secrets" in str(plan["error"])


async def test_concurrent_rotations_of_one_target_in_one_engine_are_serialised(
    worlds: Worlds,
) -> None:
    """Two rotate calls at once: the second waits for the first (never two creates in flight),
    each rotation creates exactly one key, and the last one's key is served everywhere."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")
    world.issuer.create_gate = asyncio.Event()
    engine = await world.engine()
    both = asyncio.gather(engine.rotate("t1"), engine.rotate("t1"))
    await world.issuer.until_in_flight(1)
    for _ in range(50):  # let the second call run as far as it can
        await asyncio.sleep(0)
    assert world.issuer.in_flight_creates == 1
    world.issuer.create_gate.set()
    first, second = await both
    assert world.issuer.max_in_flight_creates == 1
    assert (first.outcome, second.outcome) == (Outcome.PROMOTED, Outcome.PROMOTED)
    assert first.new_key_id != second.new_key_id
    rotations = await engine.deps.store.list_rotations("t1")
    assert len(rotations) == 2
    for rotation in rotations:
        assert len([k for k in world.issuer.keys.values() if k.name == rotation.new_key_name]) == 1
    assert set(world.served("t1").values()) == {
        world.issuer.keys[second.new_key_id or ""].plaintext
    }


async def test_concurrent_rotation_from_a_second_engine_is_skipped(worlds: Worlds) -> None:
    """Another process (engine) asking to rotate a target whose rotation is in flight is told
    SKIPPED and touches nothing: the running rotation completes with the only new key."""
    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")
    world.issuer.create_gate = asyncio.Event()
    running = await world.engine()
    other = await world.engine()
    first = asyncio.ensure_future(running.rotate("t1"))
    await world.issuer.until_in_flight(1)
    second = asyncio.ensure_future(other.rotate("t1"))
    two_creates = asyncio.ensure_future(world.issuer.until_in_flight(2))
    await asyncio.wait([second, two_creates], return_when=asyncio.FIRST_COMPLETED)
    two_creates.cancel()
    world.issuer.create_gate.set()
    skipped, done = await second, await first
    assert world.issuer.max_in_flight_creates == 1
    assert skipped.outcome is Outcome.SKIPPED
    assert done.outcome is Outcome.PROMOTED, done.error
    assert world.issuer.creates == 1
    assert set(world.served("t1").values()) == {world.issuer.keys[done.new_key_id or ""].plaintext}
    assert not gone(legacy)


async def test_rotate_recovers_a_dead_rotation_at_once_but_never_a_live_one(
    worlds: Worlds,
) -> None:
    """An open rotation whose process died (its target lock went with it) is recovered by the
    next rotate at once; while another process holds the target's lock, rotate and recover
    skip it (pointing at the other process) and touch nothing."""
    world = worlds(BOTH, options={"adopt_existing": True})
    legacy = world.seed("t1")
    crashing = await world.engine(
        wrap=lambda s: StepHookStore.crashing_at(s, 3, "after").as_store()
    )
    assert await run_until_crash(crashing.rotate("t1")) is not None
    engine = await world.engine()
    other_process = await world.new_store()  # its own connection and lock file descriptor
    held = await other_process.try_lock_target("t1")
    assert held is not None
    try:
        skipped = await engine.rotate("t1")
        assert skipped.outcome is Outcome.SKIPPED
        assert skipped.error is not None
        assert "another rotator process" in skipped.error
        results, _ = await engine.recover()
        assert [r.outcome for r in results] == [Outcome.SKIPPED]
        assert world.issuer.creates == 1
    finally:
        await other_process.unlock_target(held)
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.PROMOTED, result.error
    assert world.issuer.creates == 2
    assert [k.deleted for k in world.issuer.named("rotator-t1-")].count(True) == 1
    assert set(world.served("t1").values()) == {
        world.issuer.keys[result.new_key_id or ""].plaintext
    }
    assert not gone(legacy)


async def test_rotate_recovers_a_stuck_rotation_at_once(worlds: Worlds) -> None:
    """A stuck rotation was given up by its process: the next rotate finishes it first."""
    world = worlds(BOTH, options={"adopt_existing": True})
    world.seed("t1")

    failing = await world.engine(
        wrap=lambda s: StepHookStore(s, after=world.deny_at("promoting", "vault")).as_store()
    )
    stuck = await failing.rotate("t1")
    assert stuck.outcome is Outcome.STUCK
    world.stores["vault"].denied.clear()
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.PROMOTED, result.error
    rotations = await engine.deps.store.list_rotations("t1")
    assert {(r.rotation_id, r.outcome) for r in rotations} == {
        (result.rotation_id, "promoted"),
        (stuck.rotation_id, "promoted"),
    }
    assert result.rotation_id != stuck.rotation_id


async def test_concurrency_bounds_rotations_across_targets(worlds: Worlds) -> None:
    """``rotate_many`` runs different targets side by side, at most ``concurrency`` at once."""
    world = worlds(BOTH, BOTH, BOTH, BOTH, BOTH, BOTH)
    for name in world.targets:
        world.seed(name)
    world.issuer.create_gate = asyncio.Event()
    engine = await world.engine()
    names = [f"t{i}" for i in range(1, 7)]
    task = asyncio.ensure_future(engine.rotate_many(names))
    await world.issuer.until_in_flight(4)
    for _ in range(50):
        await asyncio.sleep(0)
    assert world.issuer.in_flight_creates == 4  # engine.concurrency
    world.issuer.create_gate.set()
    results = await task
    assert [r.target for r in results] == names
    assert {r.outcome for r in results} == {Outcome.ROTATED}  # nothing adopted, nothing to retire


@pytest.mark.parametrize("backends", [("vault",), ("aws",), BOTH])
async def test_other_fields_survive_rotations(worlds: Worlds, backends: tuple[str, ...]) -> None:
    """Fields beside the key in a destination secret are preserved by every rotation (I6)."""
    world = worlds(backends, options={"adopt_existing": True})  # type: ignore[arg-type]
    world.seed("t1")
    engine = await world.engine()
    for emergency in (False, True, False):
        result = await engine.rotate("t1", emergency=emergency)
        assert result.outcome in {Outcome.PROMOTED, Outcome.ROTATED}
        plaintext = world.issuer.keys[result.new_key_id or ""].plaintext
        for data in world.data("t1").values():
            assert data == {"owner": "team-payments", "api_key": plaintext}
