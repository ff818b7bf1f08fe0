"""``SqlStateStore``: the :class:`rotator.contracts.StateStore` on stdlib ``sqlite3`` or psycopg.

Each public method checks its arguments (:mod:`rotator.state.guard`), then runs one short
transaction, a function of :mod:`rotator.state.ops`, on a worker thread of the store's own small
pool (or of the ``pool`` given: simulations give an inline one) and awaits it, so the event loop
never blocks on the database, and the store's waits never hold the threads the SDK calls need.
The store has one connection, used by one thread at a time
(:class:`rotator.state.database.Database`): this process's transactions queue on a lock and
contend on the database only with other processes'. Writers lock the target or rotation
they change first; the partial unique index ``uq_rotations_one_open`` is the last word on "one
open rotation per target". A database that is down or locked for too long raises
:class:`rotator.errors.TransientError` (backend ``state``).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from rotator.clock import Clock, SystemClock
from rotator.contracts import (
    TERMINAL_STATES,
    AuditAnchor,
    AuditEvent,
    AuditHead,
    AuditVerdict,
    Facts,
    JournalEntry,
    JournalSteps,
    JsonValue,
    ManagedKey,
    RetiringKey,
    Rotation,
    StateStore,
    TargetLock,
    TargetState,
)
from rotator.errors import TransientError
from rotator.logs import scrub
from rotator.pool import BlockingPool
from rotator.secret import Secret
from rotator.state import audit, guard, ops
from rotator.state.database import SqliteDatabase, StateUrlError, open_database
from rotator.state.migrations import migrate
from rotator.state.schema import FINGERPRINT, ID, LABEL, NAME, TARGET
from rotator.state.sql import Stmt, Tx

P = ParamSpec("P")
T = TypeVar("T")

STORE_THREADS = 4
"""Threads of a store's own pool (when it is given none). Its transactions run one at a time
anyway; several threads take turns because a commit's ``fdatasync`` from the thread that made
the previous one measured several times slower on the machines rotator was benchmarked on
(docs/design/20261206-state-store-stdlib.md)."""


def _offloaded(
    fn: Callable[Concatenate[SqlStateStore, P], T],
) -> Callable[Concatenate[SqlStateStore, P], Coroutine[Any, Any, T]]:
    """Turn a synchronous transaction into an awaitable run on a worker thread."""

    @functools.wraps(fn)
    async def offloaded(self: SqlStateStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await self._run(fn, self, *args, **kwargs)
        except self._db.transient as exc:
            raise TransientError("state", fn.__name__, _detail(exc)) from None

    return offloaded


def _detail(exc: BaseException) -> str:
    """The driver's first line about ``exc`` (scrubbed)."""
    lines = str(exc).strip().splitlines()
    return scrub(lines[0] if lines else type(exc).__name__)


class SqlStateStore:
    """The state store on one database URL (``sqlite:///path`` or ``postgresql[+psycopg]://…``).

    Call :meth:`migrate` once before use, :meth:`close` at the end. Timestamps come from
    ``clock``. Transactions run on the store's own threads (:data:`STORE_THREADS`), or on
    ``pool`` when given (an inline pool for simulated time). Raises
    :class:`~rotator.state.database.StateUrlError` for an unusable URL, or a missing SQLite
    file when ``create`` is false (see :func:`open_database`).
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        pool: BlockingPool | None = None,
        create: bool = True,
        audit_key: Secret | None = None,
    ) -> None:
        self._db = open_database(url, create=create)
        self._clock: Clock = clock or SystemClock()
        self._pool = pool
        self._own_pool: BlockingPool | None = None
        self._own_pid = 0
        self._audit_key = audit.ChainKey(audit_key) if audit_key is not None else None

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._db.url

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        pool = self._pool
        if pool is None:
            pool = self._own_pool
            if pool is None or self._own_pid != os.getpid():  # none yet, or a forked child
                pool = self._own_pool = BlockingPool(STORE_THREADS, name="rotator-state")
                self._own_pid = os.getpid()
        return await pool.run_blocking(fn, *args, **kwargs)

    # --- schema -----------------------------------------------------------------------------

    @_offloaded
    def migrate(self) -> int:
        """Bring the schema up to date: the first use of the database. Raises
        :class:`StateUrlError` for a SQLite file that is not a database (or a corrupt one), and
        :class:`TransientError` naming the database when it cannot be opened or read."""
        try:
            return self._db.run("write", migrate, now=self._clock.now(), where=self.url)
        except self._db.transient as exc:
            raise TransientError("state", "open", f"{self.url}: {_detail(exc)}") from None
        except self._db.corrupt as exc:
            assert isinstance(self._db, SqliteDatabase)
            raise StateUrlError(
                f"{self._db.path} is not a rotator state database ({_detail(exc)})"
            ) from None

    async def close(self) -> None:
        await self._run(self._db.close)
        own, self._own_pool = self._own_pool, None
        if own is not None:
            own.shutdown(wait=False)

    @_offloaded
    def probe(self) -> None:
        """Raise unless the store answers reads and takes writes: every target and retiring key
        is read (what status reads) and a row inserted, in one transaction rolled back, so
        nothing changes."""
        self._db.run("write", _probe, self._db.dialect.ts(self._clock.now()))

    # --- targets ----------------------------------------------------------------------------

    @_offloaded
    def get_target(self, target: str) -> TargetState | None:
        return self._db.run("read", ops.get_target, target)

    @_offloaded
    def list_targets(self) -> list[TargetState]:
        return self._db.run("read", ops.list_targets)

    @_offloaded
    def register_target(self, target: str) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        return self._db.run("write", ops.register_target, target, self._clock.now())

    @_offloaded
    def record_promotion(
        self,
        target: str,
        key: ManagedKey,
        *,
        retire: Sequence[RetiringKey] = (),
        steps: JournalSteps = (),
        state: str | None = None,
        outcome: str | None = None,
    ) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        key = guard.managed_key(key)
        entries = [guard.retiring_key(entry) for entry in retire]
        for entry in entries:
            if entry.target != target:
                raise ValueError(f"retire: key {entry.key_id} belongs to target {entry.target}")
            if entry.key_id == key.key_id:
                raise ValueError(f"retire: key {entry.key_id} is the key being promoted")
        batch = _clean_steps(steps)
        state = guard.optional_ident(state, "state", LABEL)
        outcome = guard.optional_ident(outcome, "outcome", LABEL)
        if key.rotation_id is None and (batch or state or outcome):
            raise ValueError("steps, state and outcome need the key's rotation_id")
        now = self._clock.now()
        return self._db.run(
            "write",
            ops.record_promotion,
            target,
            key,
            entries,
            now,
            audit_key=self._audit_key,
            steps=batch,
            state=state,
            outcome=outcome,
        )

    @_offloaded
    def adopt_key(self, target: str, key_id: str | None) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        key_id = guard.optional_ident(key_id, "key_id", ID)
        now = self._clock.now()
        return self._db.run("write", ops.adopt_key, target, key_id, now, audit_key=self._audit_key)

    @_offloaded
    def record_failure(
        self, target: str, *, backoff_until: datetime | None, counted: bool = True
    ) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        backoff_until = guard.optional_aware(backoff_until, "backoff_until")
        now = self._clock.now()
        return self._db.run("write", ops.record_failure, target, backoff_until, counted, now)

    @_offloaded
    def clear_failures(self, target: str) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        return self._db.run("write", ops.clear_failures, target, self._clock.now())

    @_offloaded
    def schedule_revocation(self, key: RetiringKey) -> TargetState:
        key = guard.retiring_key(key)
        return self._db.run("write", ops.schedule_revocation, key, self._clock.now())

    @_offloaded
    def revocations_due(self) -> list[RetiringKey]:
        return self._db.run("once", ops.revocations_due, self._clock.now())

    @_offloaded
    def revocation_done(self, target: str, key_id: str) -> bool:
        target = guard.ident(target, "target", TARGET)
        key_id = guard.ident(key_id, "key_id", ID)
        now = self._clock.now()
        return self._db.run(
            "write", ops.revocation_done, target, key_id, now, audit_key=self._audit_key
        )

    # --- rotations --------------------------------------------------------------------------

    @_offloaded
    def start_rotation(
        self,
        target: str,
        *,
        rotation_id: str | None = None,
        state: str = "planned",
        emergency: bool = False,
        new_key_name: str | None = None,
        old_key_ids: Sequence[str] = (),
        steps: JournalSteps = (),
    ) -> Rotation:
        target = guard.ident(target, "target", TARGET)
        rotation_id = guard.rotation_id(rotation_id or str(uuid.uuid4()))
        state = guard.ident(state, "state", LABEL)
        new_key_name = guard.optional_ident(new_key_name, "new_key_name", NAME)
        old_ids = guard.idents(old_key_ids, "old_key_ids", ID)
        return self._db.run(
            "write",
            ops.start_rotation,
            target,
            rotation_id,
            state=state,
            emergency=bool(emergency),
            new_key_name=new_key_name,
            old_key_ids=old_ids,
            now=self._clock.now(),
            audit_key=self._audit_key,
            steps=_clean_steps(steps),
        )

    @_offloaded
    def update_rotation(
        self,
        rotation_id: str,
        *,
        state: str | None = None,
        new_key_id: str | None = None,
        new_key_name: str | None = None,
        new_key_fingerprint: str | None = None,
        old_key_ids: Sequence[str] | None = None,
        error: str | None = None,
    ) -> Rotation:
        changes = _rotation_changes(
            state=state,
            new_key_id=new_key_id,
            new_key_name=new_key_name,
            new_key_fingerprint=new_key_fingerprint,
            old_key_ids=old_key_ids,
            error=error,
        )
        return self._db.run("write", ops.update_rotation, rotation_id, changes)

    @_offloaded
    def finish_rotation(
        self,
        rotation_id: str,
        *,
        state: str,
        outcome: str,
        error: str | None = None,
        steps: JournalSteps = (),
    ) -> Rotation:
        if state not in TERMINAL_STATES:
            raise ValueError(f"state {state!r} is not terminal: one of {sorted(TERMINAL_STATES)}")
        state = guard.ident(state, "state", LABEL)
        outcome = guard.ident(outcome, "outcome", LABEL)
        error = guard.error_text(error)
        now = self._clock.now()
        return self._db.run(
            "write",
            ops.finish_rotation,
            rotation_id,
            state=state,
            outcome=outcome,
            error=error,
            now=now,
            audit_key=self._audit_key,
            steps=_clean_steps(steps),
        )

    @_offloaded
    def get_rotation(self, rotation_id: str) -> Rotation | None:
        return self._db.run("once", ops.get_rotation, rotation_id)

    @_offloaded
    def open_rotations(self, target: str | None = None) -> list[Rotation]:
        return self._db.run("once", ops.open_rotations, target)

    @_offloaded
    def list_rotations(self, target: str | None = None, *, limit: int = 50) -> list[Rotation]:
        return self._db.run("once", ops.list_rotations, target, limit)

    # --- journal ----------------------------------------------------------------------------

    @_offloaded
    def append_step(
        self,
        rotation_id: str,
        step: str,
        facts: Facts | None = None,
        *,
        state: str | None = None,
    ) -> JournalEntry:
        ((step, clean),) = _clean_steps([(step, facts)])
        state = guard.optional_ident(state, "state", LABEL)
        now = self._clock.now()
        return self._db.run(
            "write", ops.append_step, rotation_id, step, clean, state=state, now=now
        )

    @_offloaded
    def append_steps(
        self,
        rotation_id: str,
        steps: JournalSteps,
        *,
        state: str | None = None,
        new_key_id: str | None = None,
        new_key_fingerprint: str | None = None,
        error: str | None = None,
    ) -> list[JournalEntry]:
        batch = _clean_steps(steps)
        if not batch:
            raise ValueError("append_steps needs at least one step")
        changes = _rotation_changes(
            state=state,
            new_key_id=new_key_id,
            new_key_fingerprint=new_key_fingerprint,
            error=error,
        )
        now = self._clock.now()
        return self._db.run("write", ops.append_steps, rotation_id, batch, now=now, changes=changes)

    async def try_lock_target(self, target: str) -> TargetLock | None:
        """This process's lock on ``target`` (see :mod:`rotator.state.locks`), or None if another
        process holds it. Release it with :meth:`unlock_target`."""
        return await self._run(self._db.try_lock, target)

    async def unlock_target(self, lock: TargetLock) -> None:
        """Release a lock from :meth:`try_lock_target`. Idempotent."""
        await self._run(lock.release)

    @_offloaded
    def journal(self, rotation_id: str) -> list[JournalEntry]:
        return self._db.run("once", ops.journal, rotation_id)

    # --- audit ------------------------------------------------------------------------------

    @_offloaded
    def append_audit(
        self,
        event: str,
        *,
        target: str | None = None,
        rotation_id: str | None = None,
        facts: Facts | None = None,
    ) -> AuditEvent:
        event = guard.ident(event, "event", LABEL)
        target = guard.optional_ident(target, "target", TARGET)
        rotation_id = guard.optional_ident(rotation_id, "rotation_id", ID)
        clean = guard.facts(facts)
        return self._db.run(
            "write",
            audit.append,
            key=self._audit_key,
            at=self._clock.now(),
            event=event,
            target=target,
            rotation_id=rotation_id,
            facts=clean,
        )

    @_offloaded
    def audit_events(
        self, target: str | None = None, *, limit: int | None = None
    ) -> list[AuditEvent]:
        return self._db.run("once", audit.events, target, limit)

    @_offloaded
    def verify_audit(self, anchor: AuditAnchor | None = None) -> AuditVerdict:
        return self._db.run("read", audit.verify, self._audit_key, anchor)

    @_offloaded
    def audit_head(self) -> AuditHead:
        return self._db.run("once", audit.head_of)


_PROBE_READS = (
    Stmt("SELECT target FROM target_states"),
    Stmt("SELECT target, key_id FROM retiring_keys"),
)
_PROBE_WRITE = Stmt(
    "INSERT INTO schema_version (version, description, applied_at) VALUES (-1, 'probe', ?)"
)


def _rotation_changes(
    *,
    state: str | None = None,
    new_key_id: str | None = None,
    new_key_name: str | None = None,
    new_key_fingerprint: str | None = None,
    old_key_ids: Sequence[str] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The rotation fields to set, each checked (None: left unchanged)."""
    return {
        "state": guard.optional_ident(state, "state", LABEL),
        "new_key_id": guard.optional_ident(new_key_id, "new_key_id", ID),
        "new_key_name": guard.optional_ident(new_key_name, "new_key_name", NAME),
        "new_key_fingerprint": guard.optional_ident(
            new_key_fingerprint, "new_key_fingerprint", FINGERPRINT
        ),
        "old_key_ids": None
        if old_key_ids is None
        else guard.idents(old_key_ids, "old_key_ids", ID),
        "error": guard.error_text(error),
    }


def _clean_steps(steps: JournalSteps) -> list[tuple[str, dict[str, JsonValue]]]:
    """``steps`` with each name and its facts checked (see the StateStore docstring)."""
    return [(guard.ident(step, "step", LABEL), guard.facts(facts)) for step, facts in steps]


def _probe(tx: Tx, now: object) -> None:
    for stmt in _PROBE_READS:
        tx.all(stmt)
    tx.run(_PROBE_WRITE, (now,))
    tx.rollback = True


if TYPE_CHECKING:

    def _conforms(store: SqlStateStore) -> StateStore:
        """mypy proves here that SqlStateStore implements the StateStore protocol."""
        return store
