"""One rotation of one target, plan to promote (docs/overview.md), each step journaled first.

:class:`RotationRun` holds the phases as idempotent methods so the same code serves a fresh
rotation (:meth:`RotationRun.execute`) and recovery after a crash (:mod:`rotator.engine.recovery`),
which rebuilds the :class:`RotationState` from the journal and re-enters at the right phase.

Failure rule: until a promotion has been announced nothing is visible to consumers, so any
failure **rolls back** (pending versions removed, the new key deleted). Once a promotion may have
happened the rotation only moves **forward**; if it cannot finish it is left ``stuck`` (open,
both keys valid) and retried by recovery. If a failure during promotion leaves it unclear
whether anything was promoted, every destination is read: a new key served nowhere means
nothing became visible, and the rotation rolls back after all.

Write-ahead, in as few transactions as that takes: what a step learned (the new key's id, that
it verified, a staged version) is noted in memory and written with the step that announces the
next side effect, one transaction before each (docs/overview.md#the-journal). A crash loses
only notes whose side effects recovery can find again (a created key, by its unique name).
Nothing read at plan is read again before the promotion's compare-and-swap writes, and a
read-back byte-equal to the verified key is not sent to ``GET /v1/models`` again: after the
promotions every destination is read once as consumers read it, and the served key proved once
(docs/overview.md#what-each-call-is-for).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import structlog

from rotator.config import Policy
from rotator.contracts import (
    CurrentValue,
    Destination,
    Facts,
    ManagedKey,
    RetiringKey,
    StagedValue,
    TargetState,
)
from rotator.engine.context import (
    Alert,
    Deps,
    RotationState,
    TargetContext,
    gather_bases,
    served_key,
)
from rotator.engine.revocation import revoke_now
from rotator.engine.steps import DestStep, Outcome, Step, dest_step, dest_tag
from rotator.errors import (
    AmbiguousCreate,
    BackendError,
    ConflictError,
    PermanentError,
    RotatorError,
    TransientError,
    VerificationFailed,
)
from rotator.keys import VerifyOutcome
from rotator.render import iso
from rotator.retry import RetryPolicy, retry_async
from rotator.secret import Secret

log = structlog.get_logger(__name__)

FAILURE_BACKOFF_BASE = timedelta(hours=1)
"""The default ``failure_backoff`` (a policy field)."""
FAILURE_BACKOFF_CAP = 32
"""The failure backoff doubles up to this many times its base (1 h → 32 h by default)."""
INTERRUPTED_BACKOFF = timedelta(minutes=1)
"""After recovery undid an interrupted rotation: a short pause (a crash loop must not spin)."""
INCONCLUSIVE = frozenset({VerifyOutcome.UNAVAILABLE, VerifyOutcome.RATE_LIMITED})
"""Verdicts of ``GET /v1/models`` that say nothing about the key (Mistral down, throttled)."""


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What ``rotate --json`` prints for one target (docs/cli.md#rotator-rotate)."""

    target: str
    rotation_id: str | None
    outcome: Outcome
    new_key_id: str | None = None
    revoked_key_ids: tuple[str, ...] = ()
    revoke_due_at: datetime | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "rotation_id": self.rotation_id,
            "outcome": str(self.outcome),
            "new_key_id": self.new_key_id,
            "revoked_key_ids": list(self.revoked_key_ids),
            "revoke_due_at": iso(self.revoke_due_at),
            "error": self.error,
        }


def key_name(prefix: str, now: datetime, rotation_id: str) -> str:
    """``<prefix>-<UTC stamp>-<short rotation id>``: unique and recognisable as ours."""
    return f"{prefix}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{rotation_id.replace('-', '')[:8]}"


def failure_backoff(failures: int, base: timedelta = FAILURE_BACKOFF_BASE) -> timedelta:
    """After ``failures`` consecutive failures: ``base``, doubling per failure, capped at
    :data:`FAILURE_BACKOFF_CAP` times ``base`` (1 h, 2 h, 4 h … 32 h: cert-manager's schedule)."""
    return _doubled(base, failures, base * FAILURE_BACKOFF_CAP)


def stuck_backoff(failures: int, policy: Policy) -> timedelta:
    """When a stuck rotation is carried forward again: ``stuck_backoff``, doubling per
    consecutive failure, capped at ``failure_backoff`` (both keys are valid meanwhile, so
    there is no reason to wait as long as after a failure that changed nothing)."""
    cap = max(policy.stuck_backoff, policy.failure_backoff)
    return _doubled(policy.stuck_backoff, failures, cap)


def _doubled(base: timedelta, failures: int, cap: timedelta) -> timedelta:
    delay = base
    for _ in range(max(0, failures - 1)):
        if delay >= cap:
            break
        delay *= 2
    return min(delay, cap)


async def record_failed_attempt(deps: Deps, ctx: TargetContext, *, stuck: bool = False) -> None:
    """The one place a failed attempt of ``ctx`` is counted and its backoff set (rolled back
    or failed before it started: ``failure_backoff``; left stuck: ``stuck_backoff``)."""
    state = await deps.store.get_target(ctx.name)
    failures = (state.consecutive_failures if state else 0) + 1
    policy = ctx.target.policy
    delay = (
        stuck_backoff(failures, policy)
        if stuck
        else failure_backoff(failures, policy.failure_backoff)
    )
    await deps.store.record_failure(ctx.name, backoff_until=deps.clock.now() + delay)


class RotationRun:
    """Drives one rotation; every method is safe to call again after a crash.

    ``target_state`` is the target's state as the plan read it (None: read it when needed)."""

    def __init__(
        self,
        deps: Deps,
        ctx: TargetContext,
        state: RotationState,
        *,
        target_state: TargetState | None = None,
    ) -> None:
        self.deps = deps
        self.ctx = ctx
        self.st = state
        self.target_state = target_state
        self.log = log.bind(target=ctx.name, rotation_id=state.rotation_id)
        self._notes: list[tuple[str, Facts | None]] = []
        self._fields: dict[str, str] = {}

    # -- the whole forward path ------------------------------------------------------------------

    async def execute(self, bases: dict[str, CurrentValue]) -> RotationResult:
        """Create → verify → stage → read back → promote → finish, with the failure rule."""
        try:
            await self.create()
            await self.verify_new_key()
            await self.stage_all(bases)
            await self.read_back_staged()
        except RotatorError as exc:
            return await self.roll_back(str(exc))
        return await self.promote_and_finish()

    # -- the journal -------------------------------------------------------------------------------

    async def open(self, planned: Facts) -> None:
        """Open the rotation with its ``planned`` step, one transaction, before the create call
        (which the unique key name it records announces). ``ConflictError`` if the target has
        another rotation open."""
        await self._before_write()
        await self.deps.store.start_rotation(
            self.ctx.name,
            rotation_id=self.st.rotation_id,
            emergency=self.st.emergency,
            new_key_name=self.st.key_name,
            old_key_ids=self.st.old_key_ids,
            steps=[(Step.PLANNED, planned)],
        )

    def note(self, step: str, facts: Facts | None = None) -> None:
        """Remember ``step`` for the next journal write (it announces no side effect itself)."""
        self._notes.append((step, facts))

    async def journal(self, step: str | None = None, facts: Facts | None = None) -> None:
        """Write the noted steps, then ``step``, in one transaction, before a side effect (the
        rotation's state becomes the last whole-rotation step among them)."""
        if step is not None:
            self.note(step, facts)
        steps, state = self._take()
        if not steps:
            return
        await self._before_write()
        await self.deps.store.append_steps(
            self.st.rotation_id,
            steps,
            state=state,
            **self._fields,
        )
        self._fields.clear()
        if state is not None:
            self.st.state = Step(state)

    def _take(self) -> tuple[list[tuple[str, Facts | None]], str | None]:
        """The noted steps (forgotten here) and the last whole-rotation step among them."""
        steps, self._notes = self._notes, []
        whole = [name for name, _ in steps if name in Step.__members__.values()]
        return steps, (whole[-1] if whole else None)

    async def _before_write(self) -> None:
        if self.deps.before_step is not None:
            await self.deps.before_step()

    # -- step 2: create --------------------------------------------------------------------------

    async def create(self) -> None:
        expiration = expiration_for(self.deps.clock.now(), self.ctx.target.policy.key_expiration)
        try:
            created = await self.deps.issuer.create_key(
                workspace_id=self.ctx.target.workspace_id,
                user_id=self.deps.user_id,
                name=self.st.key_name,
                expiration=expiration,
            )
        except AmbiguousCreate as exc:
            if exc.key_id is not None:  # created, plaintext lost: it must go
                self.st.key_id = exc.key_id
                self._fields["new_key_id"] = exc.key_id
            raise
        info = created.info
        self.st.key_id, self.st.secret = info.key_id, created.secret
        self.st.fingerprint = created.secret.fingerprint
        self.st.expiration, self.st.created_at = info.expiration_date, info.created_at
        self._fields.update(new_key_id=info.key_id, new_key_fingerprint=self.st.fingerprint)
        self.note(
            Step.CREATED,
            {
                "key_id": info.key_id,
                "fingerprint": self.st.fingerprint,
                "expiration": info.expiration_date.isoformat() if info.expiration_date else None,
                "requested_expiration": expiration.isoformat() if expiration else None,
                "created_at": info.created_at.isoformat() if info.created_at else None,
            },
        )

    # -- step 3: verify ----------------------------------------------------------------------------

    async def verify_new_key(self) -> None:
        secret = self._secret()
        timeout = self.ctx.target.policy.activation_timeout.total_seconds()
        result = await self.deps.verifier.wait_active(secret, timeout=timeout)
        if not result.ok:
            raise VerificationFailed(secret.fingerprint, str(result.outcome), result.detail)
        self.note(
            Step.VERIFIED,
            {"attempts": result.attempts, "elapsed_s": round(result.elapsed, 3)},
        )

    # -- step 4: stage -----------------------------------------------------------------------------

    async def stage_all(self, bases: dict[str, CurrentValue]) -> None:
        """Announce every destination's staging in one write, then stage each."""
        todo = [d for d in self.ctx.destinations if dest_tag(d.name) not in self.st.staged]
        await self._announce_staging(todo)
        for dest in todo:
            await self._stage(dest, bases[dest.name])
        self.note(Step.STAGED)

    async def stage_one(self, dest: Destination, base: CurrentValue) -> StagedValue:
        """Stage one destination (recovery: one staged before the crash but not journaled)."""
        tag = dest_tag(dest.name)
        if tag in self.st.staged:
            return self.st.staged[tag]
        await self._announce_staging([dest])
        return await self._stage(dest, base)

    async def _announce_staging(self, dests: list[Destination]) -> None:
        for dest in dests:
            self.note(dest_step(DestStep.STAGING, dest.name), {"destination": dest.name})
        await self.journal()
        self.st.staging.update(dest_tag(dest.name) for dest in dests)

    async def _stage(self, dest: Destination, base: CurrentValue) -> StagedValue:
        assert self.st.key_id is not None
        staged = await dest.stage(
            self._secret(), rotation_id=self.st.rotation_id, key_id=self.st.key_id, base=base
        )
        self.note(dest_step(DestStep.STAGED, dest.name), dict(staged.to_record()))
        self.st.staged[dest_tag(dest.name)] = staged
        return staged

    # -- step 5: read back -------------------------------------------------------------------------

    async def read_back_staged(self) -> None:
        """Each pending value read back by its version must be the verified key, byte for byte
        (so ``GET /v1/models`` would say what it said of that key)."""
        for dest in self.ctx.destinations:
            staged = self.st.staged[dest_tag(dest.name)]
            if staged.pending:
                assert staged.version is not None
                self._require_new_key(dest, await dest.read_back(staged.version), "read back")
        self.note(Step.READBACK_OK)

    def _require_new_key(self, dest: Destination, value: Secret | None, what: str) -> None:
        if value is None or value != self._secret():
            raise PermanentError("engine", what, f"{dest.name} does not hold the new key")

    # -- step 6: promote ---------------------------------------------------------------------------

    def promotion_order(self) -> list[Destination]:
        """Pending-capable destinations first (a label move is a cheap CAS), Vault writes last."""

        def pending_first(dest: Destination) -> int:
            staged = self.st.staged.get(dest_tag(dest.name))
            return 0 if staged is not None and staged.pending else 1

        return sorted(self.ctx.destinations, key=pending_first)

    async def promote_and_finish(self) -> RotationResult:
        """Announce every promotion in one write, promote each destination (forward only), read
        every one back as consumers read it and prove the served key, then finish."""
        if self.st.state is Step.STUCK:  # resumed: its state says so again (the step exists)
            await self.deps.store.update_rotation(self.st.rotation_id, state=Step.PROMOTING)
            self.st.state = Step.PROMOTING
        order = self.promotion_order()
        todo = [d for d in order if dest_tag(d.name) not in self.st.promoted]
        self.note(Step.PROMOTING)
        for dest in todo:
            self.note(dest_step(DestStep.PROMOTING, dest.name), {"destination": dest.name})
        await self.journal()
        self.st.promoting.update(dest_tag(dest.name) for dest in todo)
        try:
            for dest in todo:
                await self._promote_one(dest)
            served = await self._prove_served()
        except RotatorError as exc:
            return await self._promotion_failed(exc)
        self.note(Step.PROMOTED)
        return await self.finish_promoted(served)

    def _retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.deps.promote_attempts, base_delay=1.0, max_delay=8.0)

    async def _promote_one(self, dest: Destination) -> None:
        tag = dest_tag(dest.name)
        staged = self.st.staged.get(tag)
        if staged is None:  # recovery: staged before the crash but not journaled, or never
            staged = await self.stage_one(dest, await self._base_for(dest))
        secret = self._secret()
        promoted = await retry_async(
            lambda: dest.promote(staged, secret),  # idempotent
            policy=self._retry_policy(),
            clock=self.deps.clock,
            describe=f"promote {dest.name}",
        )
        self.note(dest_step(DestStep.PROMOTED, dest.name), dict(promoted.to_record()))
        self.st.promoted[tag] = promoted

    async def _prove_served(self) -> dict[str, CurrentValue]:
        """Every destination read as consumers read it must serve the verified key, which must
        pass ``GET /v1/models`` once more: the check no revocation goes without. Returns the
        reads (what the revocation decides on)."""
        secret = self._secret()

        async def prove() -> dict[str, CurrentValue]:
            served = await gather_bases(self.ctx)
            for dest in self.ctx.destinations:
                self._require_new_key(dest, served[dest.name].secret, "after promotion")
            result = await self.deps.verifier.check(secret)
            if result.outcome in INCONCLUSIVE:  # says nothing about the key: worth another try
                raise TransientError(
                    "mistral", "verify", f"after promotion: {result.outcome}: {result.detail}"
                )
            if not result.ok:
                raise VerificationFailed(secret.fingerprint, str(result.outcome), "after promotion")
            return served

        return await retry_async(
            prove,
            policy=self._retry_policy(),
            clock=self.deps.clock,
            describe="prove the served key",
        )

    async def _base_for(self, dest: Destination) -> CurrentValue:
        """The compare-and-swap base for a destination staged during recovery: its current
        value, which must still be what the plan saw."""
        current = await dest.read_current()
        planned = self.st.bases.get(dest_tag(dest.name), {})
        if planned and planned.get("version") != current.version:
            raise ConflictError(
                f"{dest.name}: version {current.version} is not the planned "
                f"{planned.get('version')}; someone else wrote it"
            )
        return current

    async def _promotion_failed(self, exc: RotatorError) -> RotationResult:
        served = await self.served_anywhere()
        # A transient failure (a timeout, a dropped connection) may be a write the server applies
        # after our read: only a definitive refusal proves nothing was served. Otherwise stay
        # stuck; recovery reads again later, when such a late write has landed.
        if served is False and not (isinstance(exc, BackendError) and exc.transient):
            return await self.roll_back(f"promotion failed before anything was served: {exc}")
        return await self.mark_stuck(str(exc))

    async def served_anywhere(self) -> bool | None:
        """Whether any destination serves the new key now; None if some could not be read."""
        unknown = False
        for dest in self.ctx.destinations:
            try:
                current = await dest.read_current()
            except RotatorError:
                unknown = True
                continue
            if served_key(current) == self.st.fingerprint:
                return True
        return None if unknown else False

    async def finish_promoted(
        self, served: Mapping[str, CurrentValue] | None = None
    ) -> RotationResult:
        """The new key is served everywhere: make it current, retire the old, maybe revoke.

        ``served``: every destination as just read and proved (the revocation decides on it);
        None after a crash (revocation reads them)."""
        assert self.st.key_id is not None
        assert self.st.fingerprint is not None
        now = self.deps.clock.now()
        policy = self.ctx.target.policy
        immediate = self.st.emergency or policy.grace == timedelta(0)
        due = now if immediate else now + policy.grace
        retire = [
            RetiringKey(
                target=self.ctx.name,
                key_id=old,
                fingerprint=None,
                revoke_due_at=due,
                rotation_id=self.st.rotation_id,
            )
            for old in self.st.old_key_ids
            if old != self.st.key_id
        ]
        retire = await self._with_fingerprints(retire)
        key = ManagedKey(
            key_id=self.st.key_id,
            fingerprint=self.st.fingerprint,
            created_at=self.st.created_at,
            expiration=self.st.expiration,
            rotation_id=self.st.rotation_id,
        )
        steps, state = self._take()
        revoked: list[str] = []
        deferred: str | None = None
        await self._before_write()
        if not (immediate and retire):  # nothing to revoke now: record, journal, close at once
            outcome = Outcome.PROMOTED if retire else Outcome.ROTATED
            steps.append((Step.DONE, {"revoked": []}))
            await self.deps.store.record_promotion(
                self.ctx.name, key, retire=retire, steps=steps, outcome=str(outcome)
            )
        else:
            await self.deps.store.record_promotion(
                self.ctx.name, key, retire=retire, steps=steps, state=state
            )
            try:
                revoked = await revoke_now(
                    self.deps, self.ctx, retire, served=served, current_fp=self.st.fingerprint
                )
            except RotatorError as exc:  # promoted all the same: revoke-due retries the old key
                deferred = f"old key kept until revoke-due: {exc}"
                self.log.warning("revocation_deferred", error=str(exc))
                await self._alert("revocation_deferred", deferred)
            outcome = Outcome.ROTATED if len(revoked) == len(retire) else Outcome.PROMOTED
            await self._before_write()
            await self.deps.store.finish_rotation(
                self.st.rotation_id,
                state=Step.DONE,
                outcome=str(outcome),
                steps=[(Step.DONE, {"revoked": list(revoked)})],
            )
        self.st.state = Step.DONE
        pending_due = None if outcome is Outcome.ROTATED else due
        self.log.info("rotation_finished", outcome=str(outcome), revoked=revoked)
        return RotationResult(
            target=self.ctx.name,
            rotation_id=self.st.rotation_id,
            outcome=outcome,
            new_key_id=self.st.key_id,
            revoked_key_ids=tuple(revoked),
            revoke_due_at=pending_due,
            error=deferred,
        )

    async def _with_fingerprints(self, retire: list[RetiringKey]) -> list[RetiringKey]:
        """Carry each retiring key's fingerprint when the store knows it (the previous current).
        Finishing again after a crash past ``record_promotion`` finds the new key current and
        the old one already retiring: that entry's fingerprint and deadline are kept. The plan's
        read of the target serves when there is one (nothing else changes the target's keys
        while its lock is held); after a crash the state is read."""
        state = self.target_state or await self.deps.store.get_target(self.ctx.name)
        known: dict[str, str | None] = {}
        scheduled: dict[str, RetiringKey] = {}
        if state is not None:
            # A retiring key served again (a restored value) is retired anew: keep what is known.
            known.update((r.key_id, r.fingerprint) for r in state.retiring if r.fingerprint)
            if state.current is not None:
                known[state.current.key_id] = state.current.fingerprint
            scheduled = {
                r.key_id: r for r in state.retiring if r.rotation_id == self.st.rotation_id
            }

        def kept(r: RetiringKey) -> RetiringKey:
            before = scheduled.get(r.key_id)
            return RetiringKey(
                target=r.target,
                key_id=r.key_id,
                fingerprint=known.get(r.key_id) or (before.fingerprint if before else None),
                revoke_due_at=before.revoke_due_at if before else r.revoke_due_at,
                rotation_id=r.rotation_id,
            )

        return [kept(r) for r in retire]

    # -- failure paths -----------------------------------------------------------------------------

    async def roll_back(self, reason: str, *, interrupted: bool = False) -> RotationResult:
        """Undo everything (nothing was visible to consumers) and close the rotation.

        ``interrupted``: recovery undoes a rotation its process did not finish (a crash, a lost
        leader). That is no verdict on the backends: the target may try again after
        :data:`INTERRUPTED_BACKOFF` instead of the failure backoff, and no failure alert is sent.
        """
        if self.st.state is not Step.ROLLING_BACK:
            await self.journal(Step.ROLLING_BACK, {"reason": reason})
        self.log.warning("rotation_rolling_back", reason=reason)
        problems: list[str] = []
        for tag in sorted(self.st.staging | set(self.st.staged)):
            dest = self.ctx.destination(tag)
            if dest is None:
                problems.append(f"destination {tag} left the configuration; undo it by hand")
                continue
            staged = self.st.staged.get(tag) or self._synthetic_staged(dest)
            try:
                await dest.roll_back(staged)
            except RotatorError as exc:
                problems.append(str(exc))
        if self.st.key_id is not None:
            try:
                await self.deps.issuer.delete_key(self.st.key_id)
            except RotatorError as exc:
                problems.append(str(exc))
        else:
            problems += await self._delete_by_name()
        if problems:
            # Consumers still have the old key everywhere; the leftovers are cleaned up by recovery
            # at the next attempt, after the backoff (a backend failing the cleanup is a failure:
            # without it the daemon would retry every minute through an outage).
            await self.deps.store.update_rotation(self.st.rotation_id, error=reason)
            await record_failed_attempt(self.deps, self.ctx)
            await self._alert("rollback_incomplete", f"{reason}; cleanup pending: {problems[0]}")
            return self._result(Outcome.ROLLED_BACK, f"{reason}; cleanup pending: {problems[0]}")
        await self.deps.store.finish_rotation(
            self.st.rotation_id,
            state=Step.ROLLED_BACK,
            outcome=str(Outcome.ROLLED_BACK),
            error=reason,
        )
        if interrupted:
            # No verdict on the backends: a pause, not a failure (the count stays as it was).
            await self.deps.store.record_failure(
                self.ctx.name,
                backoff_until=self.deps.clock.now() + INTERRUPTED_BACKOFF,
                counted=False,
            )
        else:
            await record_failed_attempt(self.deps, self.ctx)
            await self._alert("rotation_failed", reason)
        return self._result(Outcome.ROLLED_BACK, reason)

    def _synthetic_staged(self, dest: Destination) -> StagedValue:
        """What a stage that crashed before being journaled would have recorded (the AWS version
        id is the rotation id), so its pending label can still be removed."""
        base = self.st.bases.get(dest_tag(dest.name), {})
        version = base.get("version")
        return StagedValue(
            destination=dest.name,
            rotation_id=self.st.rotation_id,
            key_id=self.st.key_id or "unknown",
            fingerprint=self.st.fingerprint or "unknown",
            base_version=version if isinstance(version, str) else None,
            version=None,
        )

    async def _delete_by_name(self) -> list[str]:
        """A create whose answer was lost: find the key by its unique name and delete it."""
        try:
            keys = await self.deps.issuer.list_keys(workspace_id=self.ctx.target.workspace_id)
        except RotatorError as exc:
            return [f"could not look up key {self.st.key_name!r}: {exc}"]
        problems = []
        for key in keys:
            if key.name == self.st.key_name:
                try:
                    await self.deps.issuer.delete_key(key.key_id)
                except RotatorError as exc:
                    problems.append(str(exc))
        return problems

    async def mark_stuck(self, reason: str) -> RotationResult:
        """Forward progress failed after a promotion: both keys stay valid, recovery retries."""
        if self.st.state is not Step.STUCK:
            await self.journal(Step.STUCK, {"reason": reason})
        # Also when stuck again after a resumption (the STUCK step exists already).
        await self.deps.store.update_rotation(self.st.rotation_id, state=Step.STUCK, error=reason)
        self.st.state = Step.STUCK
        await record_failed_attempt(self.deps, self.ctx, stuck=True)
        self.log.error("rotation_stuck", reason=reason)
        await self._alert("rotation_stuck", reason)
        return self._result(Outcome.STUCK, reason)

    async def _alert(self, event: str, message: str) -> None:
        if self.deps.on_alert is None:
            return
        try:
            await self.deps.on_alert(Alert(event, self.ctx.name, self.st.rotation_id, message))
        except Exception:
            self.log.exception("alert_hook_failed", alert=event)

    def _result(self, outcome: Outcome, error: str | None) -> RotationResult:
        return RotationResult(
            target=self.ctx.name,
            rotation_id=self.st.rotation_id,
            outcome=outcome,
            new_key_id=self.st.key_id,
            error=error,
        )

    def _secret(self) -> Secret:
        if self.st.secret is None:
            raise PermanentError("engine", "rotate", "the new key's plaintext is not available")
        return self.st.secret


def expiration_for(now: datetime, key_expiration: timedelta | None) -> date | None:
    """The Mistral-side expiration date requested for a key created ``now``."""
    return (now + key_expiration).date() if key_expiration is not None else None
