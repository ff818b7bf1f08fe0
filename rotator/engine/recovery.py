"""Recovery: finish or undo every interrupted rotation (``rotator recover``, and at start).

The rule (docs/overview.md#what-happens-when-something-fails): a rotation that never announced a
promotion is rolled back — its new key was never visible, and its plaintext is gone with the
crashed process. A rotation that may have promoted moves forward: every destination is read, and if
any serves the new key its plaintext is taken from there and the remaining destinations are
promoted. If none serves it, nothing became visible and the rotation is rolled back after all; if
some cannot be read, it stays ``stuck`` and is tried again later. Keys named with a target's prefix
that no rotation or state accounts for are orphans: reported, and deleted only when asked
(``--sweep-orphans``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import assert_never

import structlog

from rotator.contracts import Rotation
from rotator.engine.context import Deps, RotationState, TargetContext, gather_bases, served_key
from rotator.engine.rotation import RotationResult, RotationRun
from rotator.engine.steps import Outcome, Step
from rotator.errors import RotatorError
from rotator.keys import ApiKey, masked
from rotator.secret import Secret

log = structlog.get_logger(__name__)


async def recover_rotation(deps: Deps, ctx: TargetContext, rotation: Rotation) -> RotationResult:
    """Bring one open rotation to a terminal state (or to ``stuck``) by the rule above."""
    journal = await deps.store.journal(rotation.rotation_id)
    st = RotationState.from_journal(rotation, journal)
    run = RotationRun(deps, ctx, st)
    run.log.info("recovering_rotation", state=str(st.state))
    match st.state:
        case (
            Step.PLANNED
            | Step.CREATED
            | Step.VERIFIED
            | Step.STAGED
            | Step.READBACK_OK
            | Step.ROLLING_BACK
        ):
            return await run.roll_back(
                f"interrupted at {st.state}: undone by recovery", interrupted=True
            )
        case Step.PROMOTING | Step.STUCK:
            return await _forward(run)
        case Step.PROMOTED:
            return await run.finish_promoted()
        case Step.DONE:
            await deps.store.finish_rotation(
                st.rotation_id, state=Step.DONE, outcome=str(Outcome.PROMOTED)
            )
            return RotationResult(ctx.name, st.rotation_id, Outcome.PROMOTED, st.key_id)
        case Step.ROLLED_BACK:
            await deps.store.finish_rotation(
                st.rotation_id, state=Step.ROLLED_BACK, outcome=str(Outcome.ROLLED_BACK)
            )
            return RotationResult(ctx.name, st.rotation_id, Outcome.ROLLED_BACK, st.key_id)
        case _:
            assert_never(st.state)


async def _forward(run: RotationRun) -> RotationResult:
    served = await run.served_anywhere()
    if served is None:
        return await run.mark_stuck("some destinations cannot be read; will retry")
    if served is False:
        return await run.roll_back(
            "interrupted during promotion; the new key was served nowhere", interrupted=True
        )
    secret = await _find_plaintext(run)
    if secret is None:
        return await run.mark_stuck("the new key is served but could not be read back")
    run.st.secret = secret
    return await run.promote_and_finish()


async def _find_plaintext(run: RotationRun) -> Secret | None:
    """The new key's plaintext from a destination that holds it (current, else pending)."""
    for dest in run.ctx.destinations:
        try:
            current = await dest.read_current()
        except RotatorError:
            continue
        if current.secret is not None and served_key(current) == run.st.fingerprint:
            return current.secret
    for tag, staged in run.st.staged.items():
        holder = run.ctx.destination(tag)
        if holder is None or staged.version is None:
            continue
        try:
            value = await holder.read_back(staged.version)
        except RotatorError:
            continue
        if value is not None and value.fingerprint == run.st.fingerprint:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Orphan:
    """A key named like one of a target's rotations that no state or open rotation accounts for.

    ``deleted`` says whether it was deleted; ``why`` says what it is (a late key of a rotation
    that was rolled back, or unknown).
    """

    target: str
    key_id: str
    name: str
    deleted: bool
    why: str

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "key_id": self.key_id,
            "name": self.name,
            "deleted": self.deleted,
            "why": self.why,
        }


def own_name_pattern(prefix: str) -> re.Pattern[str]:
    """Exactly the names :func:`rotator.engine.rotation.key_name` makes for ``prefix`` (so a
    target never claims another target's keys, even when one prefix starts the other)."""
    return re.compile(re.escape(prefix) + r"-\d{8}T\d{6}Z-([0-9a-f]{8})")


async def find_orphans(
    deps: Deps, ctx: TargetContext, *, sweep: bool, listed: Sequence[ApiKey] | None = None
) -> list[Orphan]:
    """Keys named as this target's rotations name them that rotator does not account for.

    Known keys (current, retiring, adopted, an open rotation's) are skipped. A key whose name
    belongs to a rotation that was rolled back is a late result of an ambiguous create (the
    server created it after the lookup): it never reached a destination, so it is deleted. Any
    other is reported, and deleted only with ``sweep``. A key some destination serves is never
    deleted; if destinations cannot be read, nothing is deleted.

    ``listed`` is the workspace's keys when the caller listed them already (once for every
    target of the workspace); the state is read only for a target that has keys of its own.
    """
    pattern = own_name_pattern(ctx.target.key_name_prefix)
    if listed is None:
        listed = await deps.issuer.list_keys(workspace_id=ctx.target.workspace_id)
    named = [
        k
        for k in listed
        if k.workspace_id == ctx.target.workspace_id and pattern.fullmatch(k.name or "")
    ]
    if not named:
        return []
    known, open_names = await _accounted_for(deps, ctx)
    candidates = [key for key in named if key.key_id not in known and key.name not in open_names]
    if not candidates:
        return []
    rotations = {r.short_id: r for r in await deps.store.list_rotations(ctx.name, limit=100_000)}
    try:
        served = {masked(c.secret.reveal()) for c in (await gather_bases(ctx)).values() if c.secret}
    except RotatorError as exc:
        log.warning("orphan_check_skipped", target=ctx.name, error=str(exc))
        return [Orphan(ctx.name, k.key_id, k.name or "", False, "unchecked") for k in candidates]
    orphans = []
    for key in candidates:
        match = pattern.fullmatch(key.name or "")
        assert match is not None
        origin = rotations.get(match.group(1))
        late = (
            origin is not None
            and origin.outcome == "rolled_back"
            and origin.new_key_name == key.name
        )
        why = "late key of a rolled-back rotation" if late else "unknown"
        deleted = False
        if key.hidden_key in served:
            why = "served by a destination but unknown to the state; not deleted"
        elif late or sweep:
            await deps.issuer.delete_key(key.key_id)
            deleted = True
            await deps.store.append_audit(
                "key.orphan_deleted", target=ctx.name, facts={"key_id": key.key_id, "reason": why}
            )
        log.warning("orphan_key", target=ctx.name, key_id=key.key_id, deleted=deleted, why=why)
        orphans.append(Orphan(ctx.name, key.key_id, key.name or "", deleted, why))
    return orphans


async def _accounted_for(deps: Deps, ctx: TargetContext) -> tuple[set[str], set[str]]:
    """The key ids the state accounts for (current, retiring, adopted, an open rotation's new
    key) and the names of the keys open rotations are creating."""
    known: set[str] = set()
    state = await deps.store.get_target(ctx.name)
    if state is not None:
        if state.current is not None:
            known.add(state.current.key_id)
        known.update(r.key_id for r in state.retiring)
        if state.adopted_key_id:
            known.add(state.adopted_key_id)
    open_names: set[str] = set()
    for rotation in await deps.store.open_rotations(ctx.name):
        if rotation.new_key_id:
            known.add(rotation.new_key_id)
        if rotation.new_key_name:
            open_names.add(rotation.new_key_name)
    return known, open_names
