"""Grace and revocation (docs/overview.md): old keys are deleted only when nothing serves them.

A replaced key is a :class:`rotator.contracts.RetiringKey` with a persisted deadline. When it is
due, every destination of its target is read: the key is revoked only if no destination serves it
and every destination serves the target's current key (invariant I2). With ``drain``, a key that
the Admin API shows used today (``last_used`` is a UTC date) gets more time, up to ``max_grace``
after its replacement; at ``max_grace`` it is revoked anyway and an alert says it was still in use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from rotator.contracts import CurrentValue, RetiringKey
from rotator.engine.context import Alert, Deps, TargetContext, gather_bases, served_key
from rotator.errors import RotatorError
from rotator.keys import ApiKey, masked

log = structlog.get_logger(__name__)

IN_FLIGHT = "a rotation of this target is in flight; its destinations disagree until it ends"

DRAIN_RECHECK = timedelta(hours=1)
"""How long a draining key waits before its use is checked again."""
AFTER_MAX_GRACE_RECHECK = timedelta(days=1)
"""With ``at_max_grace: alert``: how often a key still in use past max_grace is checked (and
alerted about) again."""


@dataclass(frozen=True, slots=True)
class RevocationResult:
    """What ``revoke-due`` reports for one retiring key."""

    target: str
    key_id: str
    outcome: str  # revoked | already_gone | deferred | refused
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "target": self.target,
            "key_id": self.key_id,
            "outcome": self.outcome,
            "detail": self.detail,
        }


async def revoke_now(
    deps: Deps,
    ctx: TargetContext,
    keys: Sequence[RetiringKey],
    *,
    served: Mapping[str, CurrentValue] | None = None,
    current_fp: str | None = None,
) -> list[str]:
    """Revoke those of ``keys`` that may go now; returns the ids revoked (or already gone).

    ``served`` (with ``current_fp``, the target's current key): every destination as the
    rotation just read and proved it, which the decision then uses instead of reading them
    again; by default they and the target's state are read."""
    results = await _revoke(deps, ctx, keys, served=served, current_fp=current_fp)
    return [r.key_id for r in results if r.outcome in {"revoked", "already_gone"}]


async def revoke_due(deps: Deps, contexts: dict[str, TargetContext]) -> list[RevocationResult]:
    """Revoke every retiring key whose deadline passed (what ``revoke-due`` and the daemon do)."""
    due = await deps.store.revocations_due()
    by_target: dict[str, list[RetiringKey]] = {}
    for key in due:
        by_target.setdefault(key.target, []).append(key)
    results: list[RevocationResult] = []
    for target, target_keys in sorted(by_target.items()):
        keys = target_keys
        ctx = contexts.get(target)
        if ctx is None:
            results += [
                RevocationResult(
                    target, k.key_id, "refused", "target not in the configuration; not revoked"
                )
                for k in keys
            ]
            continue
        try:
            if ctx.target.policy.drain:
                keys, deferred = await _drain(deps, ctx, keys)
                results += deferred
            results += await _revoke(deps, ctx, keys)
        except RotatorError as exc:
            log.warning("revocation_deferred", target=target, error=str(exc))
            results += [RevocationResult(target, k.key_id, "deferred", str(exc)) for k in keys]
    return results


async def _revoke(
    deps: Deps,
    ctx: TargetContext,
    keys: Sequence[RetiringKey],
    *,
    served: Mapping[str, CurrentValue] | None = None,
    current_fp: str | None = None,
) -> list[RevocationResult]:
    if not keys:
        return []
    currents: Mapping[str, CurrentValue]
    if served is None:
        state = await deps.store.get_target(ctx.name)
        current_fp = state.current.fingerprint if state and state.current else None
        currents = await gather_bases(ctx)
    else:
        currents = served
    fingerprints = {served_key(c) for c in currents.values()}
    served_masks = {masked(c.secret.reveal()) for c in currents.values() if c.secret is not None}
    # The workspace listing (every key of it, page by page) is read only when a key's fingerprint
    # is unknown (an adopted key, matched by its masked form) or a delete answers 404: a managed
    # key is told apart by its fingerprint, and a fleet sharing a workspace must not list it all
    # once per revocation.
    listed = await _listed(deps, ctx) if any(k.fingerprint is None for k in keys) else None
    results = []
    for key in keys:
        result = await _revoke_one(
            deps,
            ctx,
            key,
            current_fp=current_fp,
            served=fingerprints,
            served_masks=served_masks,
            listed=listed,
        )
        results.append(result)
    return results


async def _revoke_one(
    deps: Deps,
    ctx: TargetContext,
    key: RetiringKey,
    *,
    current_fp: str | None,
    served: set[str | None],
    served_masks: set[str],
    listed: dict[str, ApiKey] | None,
) -> RevocationResult:
    info = listed.get(key.key_id) if listed is not None else None
    still_served = (key.fingerprint is not None and key.fingerprint in served) or (
        key.fingerprint is None and info is not None and info.hidden_key in served_masks
    )
    if still_served:
        return await _refuse(deps, ctx, key, "a destination still serves this key")
    if current_fp is None or served != {current_fp}:
        if await _rotation_moved(deps, ctx.name, current_fp):
            # A rotation of this target is promoting (here or in another process), or ended
            # since the state was read: for a moment its destinations disagree with what was
            # read. Nothing for an operator to check: try again later.
            log.info("revocation_deferred", target=ctx.name, key_id=key.key_id, reason=IN_FLIGHT)
            return RevocationResult(ctx.name, key.key_id, "deferred", IN_FLIGHT)
        return await _refuse(
            deps, ctx, key, "the destinations do not all serve the current key (check them)"
        )
    gone = not await deps.issuer.delete_key(key.key_id)
    listed_before = listed is None or info is not None  # None: not read, so not ruled out
    if gone and listed_before and key.key_id in await _listed(deps, ctx):
        # A 404 for a key the Admin API still lists: a proxy or a wrong path prefix answered,
        # not Mistral. Treating it as revoked would leave a (maybe leaked) key alive.
        return await _refuse(
            deps, ctx, key, "delete answered 404 but the key is still listed; not revoked"
        )
    await deps.store.revocation_done(ctx.name, key.key_id)
    outcome = "already_gone" if gone else "revoked"
    log.info("key_revoked", target=ctx.name, key_id=key.key_id, outcome=outcome)
    return RevocationResult(ctx.name, key.key_id, outcome)


async def _rotation_moved(deps: Deps, target: str, current_fp: str | None) -> bool:
    """A rotation of ``target`` is open, or its current key is no longer ``current_fp`` (asked in
    this order: a rotation records its promotion before it ends)."""
    if await deps.store.open_rotations(target):
        return True
    state = await deps.store.get_target(target)
    return (state.current.fingerprint if state and state.current else None) != current_fp


async def _refuse(deps: Deps, ctx: TargetContext, key: RetiringKey, why: str) -> RevocationResult:
    log.error("revocation_refused", target=ctx.name, key_id=key.key_id, reason=why)
    if deps.on_alert is not None:
        await deps.on_alert(
            Alert("revocation_refused", ctx.name, key.rotation_id, f"key {key.key_id}: {why}")
        )
    return RevocationResult(ctx.name, key.key_id, "refused", why)


async def _listed(deps: Deps, ctx: TargetContext) -> dict[str, ApiKey]:
    keys = await deps.issuer.list_keys(workspace_id=ctx.target.workspace_id)
    return {k.key_id: k for k in keys}


async def _drain(
    deps: Deps, ctx: TargetContext, keys: Sequence[RetiringKey]
) -> tuple[list[RetiringKey], list[RevocationResult]]:
    """Split ``keys`` into those that may go now and those still in use (deferred)."""
    now = deps.clock.now()
    listed = await _listed(deps, ctx)
    policy = ctx.target.policy
    ready: list[RetiringKey] = []
    deferred: list[RevocationResult] = []
    for key in keys:
        info = listed.get(key.key_id)
        used_today = info is not None and info.last_used == now.date()
        if not used_today:
            ready.append(key)
            continue
        replaced_at = await _replaced_at(deps, key, policy.grace)
        limit = replaced_at + policy.max_grace
        if now >= limit:
            keep = policy.at_max_grace == "alert"
            message = f"key {key.key_id} still in use at max_grace; " + (
                "kept (at_max_grace: alert), checked again daily" if keep else "revoking"
            )
            log.error("old_key_in_use_at_max_grace", target=ctx.name, key_id=key.key_id, keep=keep)
            if deps.on_alert is not None:
                await deps.on_alert(
                    Alert("old_key_in_use_at_max_grace", ctx.name, key.rotation_id, message)
                )
            if not keep:
                ready.append(key)
                continue
            later = now + AFTER_MAX_GRACE_RECHECK
            await deps.store.schedule_revocation(
                RetiringKey(key.target, key.key_id, key.fingerprint, later, key.rotation_id)
            )
            deferred.append(RevocationResult(ctx.name, key.key_id, "deferred", message))
            continue
        later = min(now + DRAIN_RECHECK, limit)
        await deps.store.schedule_revocation(
            RetiringKey(key.target, key.key_id, key.fingerprint, later, key.rotation_id)
        )
        deferred.append(
            RevocationResult(ctx.name, key.key_id, "deferred", f"used today; next check {later}")
        )
    return ready, deferred


async def _replaced_at(deps: Deps, key: RetiringKey, grace: timedelta) -> datetime:
    if key.rotation_id is not None:
        rotation = await deps.store.get_rotation(key.rotation_id)
        if rotation is not None and rotation.finished_at is not None:
            return rotation.finished_at
    return key.revoke_due_at - grace
