"""Grace, revocation, drain and adoption on in-memory backends: an old key is revoked only after
its persisted deadline, never while served, and only if rotator created or adopted it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest

from rotator.contracts import ManagedKey, StateStore, TargetState
from rotator.engine.engine import Engine
from rotator.engine.steps import Outcome
from rotator.errors import PermanentError
from rotator.secret import fingerprint_of
from tests.support.engine_fakes import (
    BOTH,
    START,
    EngineWorld,
    FakeKey,
    Worlds,
    gone,
    new_plaintext,
)

ADOPT = {"adopt_existing": True}


async def _rotated(world: EngineWorld, *, emergency: bool = False) -> tuple[Engine, FakeKey]:
    """An engine that just rotated t1 (seeded and adopted first); returns it and the new key."""
    engine = await world.engine()
    result = await engine.rotate("t1", emergency=emergency)
    assert result.outcome in {Outcome.PROMOTED, Outcome.ROTATED}, result.error
    return engine, world.issuer.keys[result.new_key_id or ""]


async def test_grace_deadline_is_recorded_and_revocation_waits_for_it(worlds: Worlds) -> None:
    """The old key gets a persisted deadline = promotion + grace; revoke_due does nothing before
    it (even in a new engine) and revokes right after."""
    world = worlds(BOTH, policy={"grace": "1h"}, options=ADOPT)
    legacy = world.seed("t1")
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.PROMOTED
    assert result.revoke_due_at == START + timedelta(hours=1)
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert [(r.key_id, r.revoke_due_at) for r in state.retiring] == [
        (legacy.key_id, START + timedelta(hours=1))
    ]
    assert (await engine.status())[0].revoke_due_at == START + timedelta(hours=1)

    world.clock.advance(3599)
    restarted = await world.engine()
    assert await restarted.revoke_due() == []
    assert not gone(legacy)
    world.clock.advance(1)
    revoked = await restarted.revoke_due()
    assert [(r.key_id, r.outcome) for r in revoked] == [(legacy.key_id, "revoked")]
    assert gone(legacy)
    assert await restarted.revoke_due() == []
    state = await restarted.deps.store.get_target("t1")
    assert state is not None
    assert state.retiring == ()


@pytest.mark.parametrize(("emergency", "grace"), [(True, "1h"), (False, "0s")])
async def test_emergency_or_zero_grace_revokes_at_once(
    worlds: Worlds, emergency: bool, grace: str
) -> None:
    """An emergency rotation, or a grace of 0, revokes the old key as soon as every destination
    serves the verified new key: outcome ``rotated``."""
    world = worlds(BOTH, policy={"grace": grace}, options=ADOPT)
    legacy = world.seed("t1")
    engine = await world.engine()
    result = await engine.rotate("t1", emergency=emergency)
    assert result.outcome is Outcome.ROTATED
    assert result.revoked_key_ids == (legacy.key_id,)
    assert result.revoke_due_at is None
    assert gone(legacy)
    new = world.issuer.keys[result.new_key_id or ""]
    assert set(world.served("t1").values()) == {new.plaintext}
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert state.retiring == ()


async def test_a_key_still_served_is_never_revoked(worlds: Worlds) -> None:
    """If a destination serves the old key again when its deadline passes, revocation is
    refused with an alert, and happens once nothing serves it any more."""
    world = worlds(BOTH, options=ADOPT)
    legacy = world.seed("t1")
    _, new = await _rotated(world)
    world.write("t1", legacy.plaintext, backends=["vault"])  # someone restored the old value
    world.clock.advance(7200)
    engine = await world.engine()
    refused = await engine.revoke_due()
    assert [(r.key_id, r.outcome) for r in refused] == [(legacy.key_id, "refused")]
    assert "still serves" in refused[0].detail
    assert not gone(legacy)
    assert world.alert_events() == ["revocation_refused"]

    world.write("t1", new.plaintext, backends=["vault"])
    assert [r.outcome for r in await engine.revoke_due()] == ["revoked"]
    assert gone(legacy)


async def test_a_restored_old_key_gets_a_fresh_grace_from_the_next_rotation(
    worlds: Worlds,
) -> None:
    """An old key served again (a restored previous value) past its deadline is replaced by the
    next rotation like the current key: revoked only a full grace after that promotion, since
    consumers may have read it while it was restored."""
    world = worlds(BOTH, policy={"grace": "1h"}, options=ADOPT)
    legacy = world.seed("t1")
    _, first = await _rotated(world)
    world.write("t1", legacy.plaintext)  # the operator restored the previous value everywhere
    world.clock.advance(7200)
    engine = await world.engine()
    assert [r.outcome for r in await engine.revoke_due()] == ["refused"]

    result = await engine.rotate("t1")
    assert result.outcome is Outcome.PROMOTED
    promoted_at = world.clock.now()
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert {(r.key_id, r.revoke_due_at) for r in state.retiring} == {
        (legacy.key_id, promoted_at + timedelta(hours=1)),
        (first.key_id, promoted_at + timedelta(hours=1)),
    }
    assert await engine.revoke_due() == []
    assert not gone(legacy)
    world.clock.advance(3600)
    revoked = {(r.key_id, r.outcome) for r in await engine.revoke_due()}
    assert revoked == {(legacy.key_id, "revoked"), (first.key_id, "revoked")}


async def test_a_restored_managed_key_is_told_by_its_fingerprint_and_gets_a_fresh_grace(
    worlds: Worlds,
) -> None:
    """A key rotator itself created, retired and then restored into one destination is found by
    its fingerprint (no workspace listing needed) and revoked a full grace after the next
    promotion, not at once."""
    world = worlds(BOTH, policy={"grace": "1h"}, options=ADOPT)
    world.seed("t1")
    engine, first = await _rotated(world)
    second = await engine.rotate("t1")
    assert second.outcome is Outcome.PROMOTED
    world.clock.advance(7200)
    world.write("t1", first.plaintext, backends=["aws"])  # AWSPREVIOUS moved back to current
    third = await engine.rotate("t1")
    assert third.outcome is Outcome.PROMOTED
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    due = {r.key_id: r.revoke_due_at for r in state.retiring}
    assert due[first.key_id] == world.clock.now() + timedelta(hours=1)
    fingerprints = {r.key_id: r.fingerprint for r in state.retiring}
    assert fingerprints[first.key_id] == fingerprint_of(first.plaintext)
    assert first.key_id not in {r.key_id for r in await engine.revoke_due()}
    assert not gone(first)


async def test_revocation_waits_until_every_destination_serves_the_current_key(
    worlds: Worlds,
) -> None:
    """A destination serving neither key (someone wrote a third value) blocks revocation too:
    the old key goes only when every destination serves the target's current key."""
    world = worlds(BOTH, options=ADOPT)
    legacy = world.seed("t1")
    _, new = await _rotated(world)
    stranger = world.issuer.add_existing(name="hand-made")
    world.write("t1", stranger.plaintext, backends=["aws"])
    world.clock.advance(7200)
    engine = await world.engine()
    refused = await engine.revoke_due()
    assert [r.outcome for r in refused] == ["refused"]
    assert not gone(legacy)
    world.write("t1", new.plaintext, backends=["aws"])
    assert [r.outcome for r in await engine.revoke_due()] == ["revoked"]
    assert not gone(stranger)


async def test_revocation_of_a_key_already_gone_is_recorded(worlds: Worlds) -> None:
    """An old key deleted by hand meanwhile is reported ``already_gone`` and forgotten."""
    world = worlds(BOTH, options=ADOPT)
    legacy = world.seed("t1")
    engine, _ = await _rotated(world)
    legacy.deleted = True
    world.clock.advance(7200)
    assert [r.outcome for r in await engine.revoke_due()] == ["already_gone"]
    assert await engine.revoke_due() == []


async def test_adopt_existing_adopts_the_one_matching_key(worlds: Worlds) -> None:
    """``adopt_existing``: the single workspace key whose hidden_key matches what every
    destination serves is adopted, replaced, and revoked after the grace."""
    world = worlds(BOTH, options=ADOPT)
    legacy = world.seed("t1")
    world.issuer.add_existing(name="unrelated")
    engine, _ = await _rotated(world)
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert [r.key_id for r in state.retiring] == [legacy.key_id]
    world.clock.advance(3600)
    assert [(r.key_id, r.outcome) for r in await engine.revoke_due()] == [
        (legacy.key_id, "revoked")
    ]
    assert [k.name for k in world.issuer.live()] == [
        "unrelated",
        world.issuer.named("rotator-t1-")[0].name,
    ]


def _lookalike(plaintext: str) -> str:
    """Another key with the same hidden_key (first 4 and last 4 characters)."""
    while True:
        other = plaintext[:4] + new_plaintext()[4:28] + plaintext[-4:]
        if other != plaintext:
            return other


@pytest.mark.parametrize("matches", [0, 2])
async def test_adopt_existing_refuses_unless_exactly_one_key_matches(
    worlds: Worlds, matches: int
) -> None:
    """With no key, or two keys, in the workspace matching the served hidden_key, adoption is
    refused with an alert: the rotation proceeds but nothing is ever revoked for it."""
    world = worlds(BOTH, options=ADOPT)
    served = new_plaintext()
    existing: list[FakeKey] = []
    if matches == 0:  # the served key lives in another workspace
        existing.append(
            world.issuer.add_existing(
                name="elsewhere",
                plaintext=served,
                workspace_id="7e1c3b58-7a59-4b8e-9a4c-1d2e3f405162",
            )
        )
    else:
        existing.append(world.issuer.add_existing(name="first", plaintext=served))
        existing.append(world.issuer.add_existing(name="twin", plaintext=_lookalike(served)))
    world.write("t1", served)
    engine = await world.engine()
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.ROTATED  # nothing to retire
    assert world.alert_events() == ["adoption_refused"]
    assert f"{matches} keys" in world.alerts[0].message
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert state.retiring == ()
    assert state.adopted_key_id is None
    world.clock.advance(30 * 86400)
    assert await engine.revoke_due() == []
    second = await engine.rotate("t1", emergency=True)
    assert second.revoked_key_ids == (result.new_key_id,)
    assert not any(k.deleted for k in existing)


async def test_without_adopt_existing_a_pre_existing_key_is_never_revoked(
    worlds: Worlds,
) -> None:
    """A target that does not adopt leaves the key it found alone, even after an emergency."""
    world = worlds(BOTH)
    legacy = world.seed("t1")
    engine = await world.engine()
    result = await engine.rotate("t1", emergency=True)
    assert result.outcome is Outcome.ROTATED
    assert result.revoked_key_ids == ()
    world.clock.advance(86400)
    assert await engine.revoke_due() == []
    assert not gone(legacy)


async def test_adopt_by_id_replaces_and_revokes_that_key(worlds: Worlds) -> None:
    """``adopt TARGET --key-id ID`` declares a workspace key served; the next rotation retires
    it and revoke_due deletes it after the grace."""
    world = worlds(BOTH)
    legacy = world.seed("t1")
    engine = await world.engine()
    state = await engine.adopt("t1", legacy.key_id)
    assert state.adopted_key_id == legacy.key_id
    result = await engine.rotate("t1")
    assert result.outcome is Outcome.PROMOTED
    world.clock.advance(3600)
    assert [(r.key_id, r.outcome) for r in await engine.revoke_due()] == [
        (legacy.key_id, "revoked")
    ]


@pytest.mark.parametrize("where", ["unknown", "other workspace", "deleted"])
async def test_adopt_refuses_a_key_not_in_the_workspace(worlds: Worlds, where: str) -> None:
    """Adopting an id that is not a live key of the target's workspace is refused and changes
    nothing."""
    world = worlds(BOTH)
    world.seed("t1")
    if where == "unknown":
        key_id = "6f4e0f0e-1111-4222-8333-944455556666"
    elif where == "other workspace":
        key_id = world.issuer.add_existing(
            name="x", workspace_id="7e1c3b58-7a59-4b8e-9a4c-1d2e3f405162"
        ).key_id
    else:
        removed = world.issuer.add_existing(name="gone")
        removed.deleted = True
        key_id = removed.key_id
    engine = await world.engine()
    with pytest.raises(PermanentError, match=key_id):
        await engine.adopt("t1", key_id)
    assert await engine.deps.store.get_target("t1") is None


async def test_drain_defers_a_key_used_today_until_max_grace_then_revokes_with_an_alert(
    worlds: Worlds,
) -> None:
    """Drain mode: past the grace, an old key the Admin API shows used today is kept (checked
    again hourly) until max_grace, then revoked with an alert."""
    world = worlds(BOTH, policy={"drain": True, "grace": "1h", "max_grace": "2d"}, options=ADOPT)
    legacy = world.seed("t1")
    engine, _ = await _rotated(world)
    world.clock.advance(3600)
    for _hour in range(47):
        legacy.last_used = world.clock.now().date()
        results = await engine.revoke_due()
        assert [r.outcome for r in results] == ["deferred"], world.clock.now()
        assert not gone(legacy)
        state = await engine.deps.store.get_target("t1")
        assert state is not None
        assert state.retiring[0].revoke_due_at == min(
            world.clock.now() + timedelta(hours=1), START + timedelta(days=2)
        )
        assert await engine.revoke_due() == []  # not due again before the recheck
        world.clock.advance(3600)
    assert world.clock.now() == START + timedelta(days=2)
    legacy.last_used = world.clock.now().date()
    results = await engine.revoke_due()
    assert [r.outcome for r in results] == ["revoked"]
    assert gone(legacy)
    assert world.alert_events() == ["old_key_in_use_at_max_grace"]


async def test_drain_with_at_max_grace_alert_keeps_a_busy_key_and_alerts_daily(
    worlds: Worlds,
) -> None:
    """`at_max_grace: alert`: a key still used at max_grace is kept and alerted about (checked
    again daily), and revoked at the first check that finds it unused."""
    policy = {"drain": True, "grace": "1h", "max_grace": "2h", "at_max_grace": "alert"}
    world = worlds(BOTH, policy=policy, options=ADOPT)
    legacy = world.seed("t1")
    engine, _ = await _rotated(world)
    world.clock.advance(2 * 3600)  # at max_grace
    legacy.last_used = world.clock.now().date()
    results = await engine.revoke_due()
    assert [r.outcome for r in results] == ["deferred"]
    assert not gone(legacy)
    assert world.alert_events() == ["old_key_in_use_at_max_grace"]
    state = await engine.deps.store.get_target("t1")
    assert state is not None
    assert state.retiring[0].revoke_due_at == world.clock.now() + timedelta(days=1)
    world.clock.advance(86400)
    legacy.last_used = world.clock.now().date() - timedelta(days=1)  # quiet today
    results = await engine.revoke_due()
    assert [r.outcome for r in results] == ["revoked"]
    assert gone(legacy)


async def test_drain_revokes_a_key_not_used_today_at_the_grace(worlds: Worlds) -> None:
    """Drain mode: an old key last used on an earlier UTC day goes at the plain grace."""
    world = worlds(BOTH, policy={"drain": True, "grace": "1h", "max_grace": "2d"}, options=ADOPT)
    legacy = world.seed("t1")
    engine, _ = await _rotated(world)
    legacy.last_used = (START - timedelta(days=1)).date()
    world.clock.advance(3600)
    assert [r.outcome for r in await engine.revoke_due()] == ["revoked"]
    assert world.alerts == []


async def test_revocation_waits_quietly_while_a_rotation_of_the_target_is_in_flight(
    worlds: Worlds,
) -> None:
    """A due key whose target is mid-promotion (a rotation open, its destinations disagreeing for
    the moment) is deferred without an alert, and revoked once that rotation has ended."""
    world = worlds(BOTH, options=ADOPT)
    legacy = world.seed("t1")
    engine, current = await _rotated(world)
    world.clock.advance(7200)
    store = engine.deps.store
    rotation = await store.start_rotation("t1", new_key_name="rotator-t1-next")
    next_key = world.issuer.add_existing(name="rotator-t1-next")
    world.write("t1", next_key.plaintext, backends=["aws"])  # promoted there, not yet in Vault
    deferred = await engine.revoke_due()
    assert [(r.key_id, r.outcome) for r in deferred] == [(legacy.key_id, "deferred")]
    assert world.alert_events() == []
    assert not gone(legacy)
    world.write("t1", current.plaintext, backends=["aws"])  # that rotation was undone
    await store.finish_rotation(rotation.rotation_id, state="rolled_back", outcome="rolled_back")
    assert [r.outcome for r in await engine.revoke_due()] == ["revoked"]
    assert gone(legacy)


async def test_revocation_waits_quietly_when_a_rotation_ends_while_it_reads(
    worlds: Worlds,
) -> None:
    """A rotation that ends between revoke-due's read of the state and its read of the
    destinations (they then serve a newer key than the state said) defers the due key without an
    alert; the next pass revokes it."""
    world = worlds(BOTH, options=ADOPT)
    legacy = world.seed("t1")
    await _rotated(world)
    world.clock.advance(7200)
    newest = world.issuer.add_existing(name="rotator-t1-newest")

    class RotatedAfterStateRead:
        """The state store, with another process's rotation ending right after a state read."""

        def __init__(self, inner: StateStore) -> None:
            self.inner = inner
            self.done = False

        async def get_target(self, target: str) -> TargetState | None:
            state = await self.inner.get_target(target)
            if not self.done:
                self.done = True
                world.write("t1", newest.plaintext)
                key = ManagedKey(newest.key_id, fingerprint_of(newest.plaintext), None, None)
                await self.inner.record_promotion("t1", key)
            return state

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    engine = await world.engine(wrap=lambda inner: cast("StateStore", RotatedAfterStateRead(inner)))
    deferred = await engine.revoke_due()
    assert [(r.key_id, r.outcome) for r in deferred] == [(legacy.key_id, "deferred")]
    assert world.alert_events() == []
    assert legacy.key_id in [r.key_id for r in await engine.revoke_due() if r.outcome == "revoked"]
