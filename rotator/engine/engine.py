"""The engine's front door: what the CLI, the scheduler and the HTTP API ask of it.

:class:`Engine` plans and runs rotations (one per target at a time, at most ``concurrency`` at
once), recovers interrupted ones, revokes due keys, adopts pre-existing keys and reports status.
It owns no timers: *when* to rotate is computed from state (:meth:`Engine.status`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from rotator.clock import Clock
from rotator.config import Config, Target
from rotator.contracts import (
    AuditAnchor,
    AuditEvent,
    AuditHead,
    AuditVerdict,
    CurrentValue,
    Facts,
    JournalEntry,
    Rotation,
    TargetState,
)
from rotator.durations import format_duration
from rotator.engine.context import (
    Alert,
    Deps,
    RotationState,
    TargetContext,
    gather_bases,
    served_key,
)
from rotator.engine.due import compliant as is_compliant
from rotator.engine.due import plan_fire
from rotator.engine.recovery import (
    Orphan,
    find_orphans,
    recover_rotation,
)
from rotator.engine.revocation import RevocationResult, revoke_due
from rotator.engine.rotation import (
    RotationResult,
    RotationRun,
    expiration_for,
    key_name,
    record_failed_attempt,
)
from rotator.engine.steps import Outcome, Step, dest_tag
from rotator.errors import ConflictError, PermanentError, RotatorError
from rotator.keys import ApiKey, Workspace, masked
from rotator.logs import scrub
from rotator.render import iso, plural

log = structlog.get_logger(__name__)

IN_FLIGHT_ELSEWHERE = "a rotation of this target is running in another rotator process"


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """One row of ``rotator status`` (its fields: docs/cli.md#rotator-status)."""

    target: str
    state: str  # idle | rotating | draining | stuck | failing
    key_id: str | None
    last_rotated_at: datetime | None
    next_due_at: datetime
    revoke_due_at: datetime | None
    compliant: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "state": self.state,
            "key_id": self.key_id,
            "last_rotated_at": iso(self.last_rotated_at),
            "next_due_at": iso(self.next_due_at),
            "revoke_due_at": iso(self.revoke_due_at),
            "compliant": self.compliant,
            "reason": self.reason,
        }


class Engine:
    """Rotations for the targets of one configuration."""

    def __init__(self, cfg: Config, deps: Deps) -> None:
        self.cfg = cfg
        self.deps = deps
        self.contexts = {t.name: _context(t, deps) for t in cfg.targets}
        self._locks = {name: asyncio.Lock() for name in self.contexts}
        self._slots = asyncio.Semaphore(cfg.engine.concurrency)

    def context(self, name: str) -> TargetContext:
        try:
            return self.contexts[name]
        except KeyError:
            known = ", ".join(self.contexts) or "none"
            raise LookupError(f"unknown target {name!r} (known: {known})") from None

    # -- rotate ------------------------------------------------------------------------------------

    async def rotate_many(
        self, names: Sequence[str], *, emergency: bool = False
    ) -> list[RotationResult]:
        """Rotate each target (bounded concurrency); results in the order asked. One target's
        unexpected failure becomes its own result row; the others run to their end."""
        results = await asyncio.gather(
            *(self.rotate(n, emergency=emergency) for n in names), return_exceptions=True
        )
        out: list[RotationResult] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, RotationResult):
                out.append(result)
            elif isinstance(result, Exception):
                out.append(await self._failed_result(name, result))
            else:  # KeyboardInterrupt, SystemExit, cancellation: not ours to swallow
                raise result
        return out

    async def _failed_result(self, name: str, exc: Exception) -> RotationResult:
        """A rotation that raised instead of reaching an outcome: stuck if it left a rotation
        open (``rotator recover`` finishes or undoes it), rolled back if it left nothing."""
        log.error("rotation_raised", target=name, error_type=type(exc).__name__, error=str(exc))
        try:
            still_open = bool(await self.deps.store.open_rotations(name))
        except RotatorError:
            still_open = True
        detail = str(exc) if isinstance(exc, RotatorError) else f"{type(exc).__name__}: {exc}"
        outcome = Outcome.STUCK if still_open else Outcome.ROLLED_BACK
        hint = "; run rotator recover" if still_open else ""
        return RotationResult(name, None, outcome, error=scrub(detail) + hint)

    def busy(self, name: str) -> bool:
        """True while a rotation of ``name`` runs in this process."""
        return self._locks[name].locked()

    async def rotate(
        self, name: str, *, emergency: bool = False, rotation_id: str | None = None
    ) -> RotationResult:
        """One rotation of ``name``; an interrupted earlier rotation is recovered first, one that
        another process may still be running makes this call ``skipped``.

        ``rotation_id`` (a UUID string) lets a caller announce the id before the rotation runs
        (the HTTP API answers 202 with it); by default a new one is drawn.
        """
        ctx = self.context(name)
        async with self._locks[name], self._slots:
            structlog.contextvars.bind_contextvars(target=name)
            lock = await self.deps.store.try_lock_target(name)
            if lock is None:
                structlog.contextvars.unbind_contextvars("target")
                return RotationResult(name, None, Outcome.SKIPPED, error=IN_FLIGHT_ELSEWHERE)
            try:
                return await self._rotate(
                    ctx, emergency=emergency, rotation_id=rotation_id or str(uuid.uuid4())
                )
            finally:
                await self.deps.store.unlock_target(lock)
                structlog.contextvars.unbind_contextvars("target", "rotation_id")

    async def _rotate(
        self, ctx: TargetContext, *, emergency: bool, rotation_id: str
    ) -> RotationResult:
        for open_rotation in await self.deps.store.open_rotations(ctx.name):
            recovered = await recover_rotation(self.deps, ctx, open_rotation)
            if recovered.outcome is Outcome.STUCK or (
                await self.deps.store.open_rotations(ctx.name)
            ):
                return recovered
        try:
            bases = await gather_bases(ctx)
            self._refuse_foreign(bases)
            state = await self.deps.store.get_target(ctx.name)
            old_keys = await self._old_keys(ctx, bases, state)
        except RotatorError as exc:
            # Nothing was created or written: a failed attempt like a rollback, for the CLI
            # and the daemon alike (counted, backed off, alerted).
            await record_failed_attempt(self.deps, ctx)
            await self._alert(ctx, "rotation_failed", str(exc))
            return RotationResult(ctx.name, None, Outcome.ROLLED_BACK, error=str(exc))
        name = key_name(ctx.target.key_name_prefix, self.deps.clock.now(), rotation_id)
        st = RotationState(
            rotation_id=rotation_id,
            target=ctx.name,
            emergency=emergency,
            key_name=name,
            old_key_ids=tuple(old_keys),
        )
        run = RotationRun(self.deps, ctx, st, target_state=state)
        planned: Facts = {
            "key_name": name,
            "old_key_ids": list(old_keys),
            "emergency": emergency,
            "bases": {
                dest_tag(d): {
                    "destination": d,
                    "exists": c.exists,
                    "version": c.version,
                    "fingerprint": served_key(c),
                }
                for d, c in bases.items()
            },
        }
        try:
            await run.open(planned)
        except ConflictError as exc:
            return RotationResult(ctx.name, None, Outcome.SKIPPED, error=str(exc))
        structlog.contextvars.bind_contextvars(rotation_id=rotation_id)
        return await run.execute(bases)

    @staticmethod
    def _refuse_foreign(bases: dict[str, CurrentValue]) -> None:
        for dest, current in bases.items():
            if current.foreign:
                raise ConflictError(
                    f"{dest}: managed by {current.managed_by!r}, not rotator; refusing to write"
                )

    async def _old_keys(
        self, ctx: TargetContext, bases: dict[str, CurrentValue], state: TargetState | None
    ) -> list[str]:
        """The keys this rotation replaces (``state``: the target's, as just read): the current
        managed key, an adopted one, and any retiring key a destination serves again (a restored
        previous value). Each gets a fresh grace at promotion: consumers may have read it since,
        so its earlier deadline no longer protects them."""
        old: list[str] = []
        if state is not None and state.current is not None:
            old.append(state.current.key_id)
        if state is not None and state.adopted_key_id and state.adopted_key_id not in old:
            old.append(state.adopted_key_id)
        if state is not None:
            old += await self._served_again(ctx, state, bases, exclude=set(old))
        if not old and ctx.target.adopt_existing:
            adopted = await self._identify_served_key(ctx, bases)
            if adopted is not None:
                await self.deps.store.adopt_key(ctx.name, adopted)
                old.append(adopted)
        return old

    async def _served_again(
        self,
        ctx: TargetContext,
        state: TargetState,
        bases: dict[str, CurrentValue],
        *,
        exclude: set[str],
    ) -> list[str]:
        """The retiring keys some destination serves again, told by fingerprint or (an adopted
        key, whose fingerprint rotator never knew) by the masked form the workspace listing shows;
        the listing is read only when a destination serves something other than the current
        key."""
        current_fp = state.current.fingerprint if state.current is not None else None
        strays = {c.secret for c in bases.values() if c.secret is not None}
        strays = {secret for secret in strays if secret.fingerprint != current_fp}
        candidates = [k for k in state.retiring if k.key_id not in exclude]
        if not strays or not candidates:
            return []
        fingerprints = {secret.fingerprint for secret in strays}
        found = [k.key_id for k in candidates if k.fingerprint in fingerprints]
        unknown = [k for k in candidates if k.fingerprint is None]
        if unknown:
            masks = {masked(secret.reveal()) for secret in strays}
            listed = await self.deps.issuer.list_keys(workspace_id=ctx.target.workspace_id)
            hidden = {k.key_id: k.hidden_key for k in listed}
            found += [k.key_id for k in unknown if hidden.get(k.key_id) in masks]
        return found

    async def _identify_served_key(
        self, ctx: TargetContext, bases: dict[str, CurrentValue]
    ) -> str | None:
        """``adopt_existing``: the one workspace key whose ``hidden_key`` matches what every
        destination serves; refused (None, with an alert) unless exactly one matches."""
        masks = {masked(c.secret.reveal()) for c in bases.values() if c.secret is not None}
        if len(masks) != 1:
            await self._alert(ctx, "adoption_refused", "destinations serve no single key")
            return None
        keys = await self.deps.issuer.list_keys(workspace_id=ctx.target.workspace_id)
        matches = [k for k in keys if k.hidden_key in masks]
        if len(matches) != 1:
            await self._alert(
                ctx,
                "adoption_refused",
                f"{len(matches)} keys in the workspace match the served key; adopt one by id",
            )
            return None
        return matches[0].key_id

    async def _alert(self, ctx: TargetContext, event: str, message: str) -> None:
        log.warning(event, target=ctx.name, message=message)
        if self.deps.on_alert is not None:
            await self.deps.on_alert(Alert(event, ctx.name, None, message))

    # -- dry run -----------------------------------------------------------------------------------

    async def plan(self, name: str, *, emergency: bool = False) -> dict[str, object]:
        """What ``rotate --dry-run`` prints: the exact steps, reading only."""
        ctx = self.context(name)
        now = self.deps.clock.now()
        policy = ctx.target.policy
        bases = await gather_bases(ctx)
        problems = []
        try:
            self._refuse_foreign(bases)
        except ConflictError as exc:
            problems.append(str(exc))
        state = await self.deps.store.get_target(name)
        open_rotations = await self.deps.store.open_rotations(name)
        grace = "0s (emergency)" if emergency else format_duration(policy.grace)
        activation = format_duration(policy.activation_timeout)
        return {
            "target": name,
            "rotation_id": None,
            "outcome": str(Outcome.PLANNED),
            "new_key_id": None,
            "revoked_key_ids": [],
            "revoke_due_at": None,
            "error": "; ".join(problems) or None,
            "plan": {
                "recover_first": [r.rotation_id for r in open_rotations],
                "create": {
                    "workspace_id": ctx.target.workspace_id,
                    "name": key_name(ctx.target.key_name_prefix, now, "xxxxxxxx"),
                    "expiration": (
                        expiry.isoformat()
                        if (expiry := expiration_for(now, policy.key_expiration))
                        else None
                    ),
                },
                "verify": f"GET /v1/models until it passes (up to {activation})",
                "destinations": [
                    {
                        "destination": d,
                        "exists": c.exists,
                        "version": c.version,
                        "serves_fingerprint": served_key(c),
                        "pending_version": c.pending_version,
                    }
                    for d, c in bases.items()
                ],
                "replaces": list(_plan_old(state)),
                "grace": grace,
            },
        }

    # -- recover, revoke, adopt ------------------------------------------------------------------

    async def recover(
        self, *, sweep_orphans: bool = False
    ) -> tuple[list[RotationResult], list[Orphan]]:
        """Finish or undo every open rotation, then report (or sweep) orphan keys."""
        results: list[RotationResult] = []
        for rotation in await self.deps.store.open_rotations():
            ctx = self.contexts.get(rotation.target)
            if ctx is None:
                results.append(
                    RotationResult(
                        rotation.target,
                        rotation.rotation_id,
                        Outcome.STUCK,
                        rotation.new_key_id,
                        error="target not in the configuration; cannot recover",
                    )
                )
                continue
            async with self._locks[ctx.name]:
                lock = await self.deps.store.try_lock_target(ctx.name)
                if lock is None:
                    results.append(
                        RotationResult(
                            ctx.name,
                            rotation.rotation_id,
                            Outcome.SKIPPED,
                            rotation.new_key_id,
                            error=IN_FLIGHT_ELSEWHERE,
                        )
                    )
                    continue
                try:
                    results.append(await recover_rotation(self.deps, ctx, rotation))
                finally:
                    await self.deps.store.unlock_target(lock)
        orphans: list[Orphan] = []
        # One listing per workspace, not per target: a fleet sharing a workspace would list
        # all of its keys, page by page, once for each of its targets.
        listings: dict[str, list[ApiKey] | RotatorError] = {}
        for ctx in self.contexts.values():
            workspace = ctx.target.workspace_id
            if workspace not in listings:
                try:
                    listings[workspace] = await self.deps.issuer.list_keys(workspace_id=workspace)
                except RotatorError as exc:
                    listings[workspace] = exc
            try:
                listed = listings[workspace]
                if isinstance(listed, RotatorError):
                    raise listed
                orphans += await find_orphans(self.deps, ctx, sweep=sweep_orphans, listed=listed)
            except RotatorError as exc:
                log.warning("orphan_scan_failed", target=ctx.name, error=str(exc))
        return results, orphans

    async def revoke_due(self) -> list[RevocationResult]:
        """Revoke every old key whose grace deadline passed and that nothing serves."""
        return await revoke_due(self.deps, self.contexts)

    async def adopt(self, name: str, key_id: str) -> TargetState:
        """Declare ``key_id`` (in the target's workspace) the key served before rotator."""
        ctx = self.context(name)
        keys = await self.deps.issuer.list_keys(workspace_id=ctx.target.workspace_id)
        if not any(k.key_id == key_id for k in keys):
            raise PermanentError(
                "engine", "adopt", f"no key {key_id} in workspace {ctx.target.workspace_id}"
            )
        return await self.deps.store.adopt_key(name, key_id)

    # -- status ----------------------------------------------------------------------------------

    async def status(self, states: Sequence[TargetState] | None = None) -> list[TargetStatus]:
        """Per-target state, next fire (jitter and failure backoff included, as the daemon
        plans it: :func:`rotator.engine.due.plan_fire`) and compliance, from the state store
        (``states``: the store's targets, when the caller has just read them)."""
        now = self.deps.clock.now()
        if states is None:
            states = await self.deps.store.list_targets()
        by_name = {s.target: s for s in states}
        open_by_target = {r.target: r for r in await self.deps.store.open_rotations()}
        rows = []
        for name, ctx in self.contexts.items():
            policy = ctx.target.policy
            st = by_name.get(name)
            rotation = open_by_target.get(name)
            last = st.last_rotated_at if st else None
            next_due = plan_fire(name, policy, st, now=now).fire_at
            compliant = is_compliant(policy, last_rotated_at=last, now=now)
            retiring = st.retiring if st else ()
            if rotation is not None and rotation.state == Step.STUCK:
                state, reason = "stuck", rotation.error or "rotation stuck"
            elif rotation is not None:
                state, reason = "rotating", f"rotation {rotation.rotation_id} at {rotation.state}"
            elif st is not None and st.consecutive_failures:
                state, reason = "failing", f"{st.consecutive_failures} failed attempts"
            elif retiring:
                state, reason = "draining", f"{plural(len(retiring), 'old key')} pending revocation"
            else:
                state = "idle"
                reason = (
                    ""
                    if compliant
                    else ("never rotated by rotator" if last is None else "older than max_age")
                )
            rows.append(
                TargetStatus(
                    target=name,
                    state=state,
                    key_id=st.current.key_id if st and st.current else None,
                    last_rotated_at=last,
                    next_due_at=next_due,
                    revoke_due_at=retiring[0].revoke_due_at if retiring else None,
                    compliant=compliant,
                    reason=reason,
                )
            )
        return rows

    # -- what the faces read (they never reach into ``deps``) ---------------------------------

    @property
    def clock(self) -> Clock:
        """The clock the engine runs on (the CLI's ``--wait`` sleeps on it)."""
        return self.deps.clock

    async def get_target(self, name: str) -> TargetState | None:
        return await self.deps.store.get_target(name)

    async def list_targets(self) -> list[TargetState]:
        return await self.deps.store.list_targets()

    async def register_target(self, name: str) -> TargetState:
        """Record ``name`` as managed (its first-seen time anchors its schedule); idempotent."""
        return await self.deps.store.register_target(name)

    async def get_rotation(self, rotation_id: str) -> Rotation | None:
        return await self.deps.store.get_rotation(rotation_id)

    async def open_rotations(self, target: str | None = None) -> list[Rotation]:
        return await self.deps.store.open_rotations(target)

    async def rotations(self, target: str | None = None, *, limit: int = 50) -> list[Rotation]:
        """The latest rotations (of ``target``, or of every target), newest first."""
        return await self.deps.store.list_rotations(target, limit=limit)

    async def journal(self, rotation_id: str) -> list[JournalEntry]:
        return await self.deps.store.journal(rotation_id)

    async def audit_events(
        self, target: str | None = None, *, limit: int | None = None
    ) -> list[AuditEvent]:
        return await self.deps.store.audit_events(target, limit=limit)

    async def verify_audit(self, anchor: AuditAnchor | None = None) -> AuditVerdict:
        return await self.deps.store.verify_audit(anchor)

    async def audit_head(self) -> AuditHead:
        return await self.deps.store.audit_head()

    async def probe_store(self) -> None:
        """Read and write the state store once (readiness); raises when it cannot."""
        await self.deps.store.probe()

    async def list_keys(self, *, workspace_id: str | None = None) -> list[ApiKey]:
        """The Admin API's key listing (every workspace's, or one's)."""
        return await self.deps.issuer.list_keys(workspace_id=workspace_id)

    async def list_workspaces(self) -> list[Workspace]:
        return await self.deps.issuer.list_workspaces()

    async def close(self) -> None:
        close = getattr(self.deps.issuer, "aclose", None)
        if close is not None:
            await close()
        close = getattr(self.deps.verifier, "aclose", None)
        if close is not None:
            await close()
        await self.deps.store.close()
        if self.deps.pool is not None:
            self.deps.pool.shutdown(wait=False)


def _context(target: Target, deps: Deps) -> TargetContext:
    """The target's context; its destinations are built at their first use."""
    return TargetContext(target, lambda: deps.destinations(target))


def _plan_old(state: TargetState | None) -> list[str]:
    if state is None:
        return []
    return [k for k in (state.current.key_id if state.current else None, state.adopted_key_id) if k]


__all__ = ["Engine", "RotationState", "TargetStatus"]
