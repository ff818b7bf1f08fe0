"""``SqlStateStore`` as it was on SQLAlchemy (SQLite, PostgreSQL), frozen for the tests (see
:mod:`tests.support.legacy_state`); its per-target locks are left out.

Each public method is one short synchronous transaction run on a worker thread (the shared
:class:`rotator.pool.BlockingPool` when given, else ``asyncio.to_thread``) and awaited, so the
event loop never blocks on the database. Writers that touch a target or a rotation lock its row
first (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers
anyway); the partial unique index ``uq_rotations_one_open`` is the last word on "one open
rotation per target". A database that is down or locked for too long raises
:class:`rotator.errors.TransientError` (backend ``state``).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from sqlalchemy import Select, Table, bindparam, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    DatabaseError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker

from rotator.clock import Clock, SystemClock
from rotator.contracts import (
    TERMINAL_STATES,
    AuditAnchor,
    AuditEvent,
    AuditHead,
    AuditVerdict,
    Facts,
    JournalEntry,
    ManagedKey,
    RetiringKey,
    Rotation,
    TargetState,
)
from rotator.errors import ConflictError, TransientError
from rotator.logs import scrub
from rotator.pool import BlockingPool
from rotator.secret import Secret
from rotator.state import guard
from tests.support.legacy_state import audit, records
from tests.support.legacy_state.database import StateUrlError, create_state_engine
from tests.support.legacy_state.migrations import migrate
from tests.support.legacy_state.models import (
    FINGERPRINT,
    ID,
    LABEL,
    NAME,
    TARGET,
    AuditRow,
    JournalRow,
    RetiringKeyRow,
    RotationRow,
    SchemaVersion,
    TargetRow,
)

P = ParamSpec("P")
T = TypeVar("T")


def _offloaded(
    fn: Callable[Concatenate[SqlStateStore, P], T],
) -> Callable[Concatenate[SqlStateStore, P], Coroutine[Any, Any, T]]:
    """Turn a synchronous transaction into an awaitable run on a worker thread."""

    @functools.wraps(fn)
    async def offloaded(self: SqlStateStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await self._run(fn, self, *args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            raise TransientError("state", fn.__name__, _detail(exc)) from None

    return offloaded


def _detail(exc: DBAPIError) -> str:
    """The driver's first line about ``exc`` (scrubbed), without SQLAlchemy's SQL and links."""
    return scrub(str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__)


class SqlStateStore:
    """The state store on one database URL (``sqlite:///path`` or ``postgresql+psycopg://…``).

    Call :meth:`migrate` once before use, :meth:`close` at the end. Timestamps come from
    ``clock``. Raises :class:`~rotator.state.database.StateUrlError` for an unusable URL, or a
    missing SQLite file when ``create`` is false (see :func:`create_state_engine`).
    """

    def __init__(
        self,
        url: str | URL,
        *,
        clock: Clock | None = None,
        pool: BlockingPool | None = None,
        create: bool = True,
        audit_key: Secret | None = None,
    ) -> None:
        self._engine = create_state_engine(url, create=create)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._clock: Clock = clock or SystemClock()
        self._pool = pool
        self._audit_key = audit.ChainKey(audit_key) if audit_key is not None else None

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._engine.url.render_as_string(hide_password=True)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._pool is not None:
            return await self._pool.run_blocking(fn, *args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # --- schema -----------------------------------------------------------------------------

    @_offloaded
    def migrate(self) -> int:
        """Bring the schema up to date: the first use of the database. Raises
        :class:`StateUrlError` for a SQLite file that is not a database (or a corrupt one), and
        :class:`TransientError` naming the database when it cannot be opened or read."""
        try:
            return migrate(self._engine, now=self._clock.now())
        except (OperationalError, InterfaceError) as exc:
            raise TransientError("state", "open", f"{self.url}: {_detail(exc)}") from None
        except DatabaseError as exc:
            if self._engine.dialect.name != "sqlite":
                raise
            path = self._engine.url.database
            raise StateUrlError(
                f"{path} is not a rotator state database ({_detail(exc)})"
            ) from None

    async def close(self) -> None:
        await self._run(self._engine.dispose)

    @_offloaded
    def probe(self) -> None:
        """Raise unless the store answers reads and takes writes: every target and retiring key
        is read (what status reads) and a row inserted, in one transaction rolled back, so
        nothing changes."""
        with self._engine.connect() as conn, conn.begin() as tx:
            conn.execute(_TARGETS.select()).all()
            conn.execute(_RETIRING.select()).all()
            conn.execute(
                insert(_SCHEMA).values(
                    version=-1, description="probe", applied_at=self._clock.now()
                )
            )
            tx.rollback()

    # --- targets ----------------------------------------------------------------------------

    @_offloaded
    def get_target(self, target: str) -> TargetState | None:
        # Core, not the ORM: read for every rotation several times, and records need no session.
        with self._engine.begin() as conn:
            row = conn.execute(_TARGET_ROW, {"target": target}).one_or_none()
            if row is None:
                return None
            rows = conn.execute(_TARGET_RETIRING, {"target": target})
            retiring = tuple(records.retiring_key(r) for r in rows)  # type: ignore[arg-type]
            return records.target_state(row, retiring)  # type: ignore[arg-type]

    @_offloaded
    def list_targets(self) -> list[TargetState]:
        # Core, like get_target: the daemon reads every target's state at each metrics refresh.
        with self._engine.begin() as conn:
            rows = conn.execute(_TARGETS.select().order_by(_TARGETS.c.target)).all()
            query = _RETIRING.select().order_by(*_RETIRING_ORDER)
            retiring = _retiring_by_target(conn.execute(query))  # type: ignore[arg-type]
            return [records.target_state(row, retiring.get(row.target, ())) for row in rows]  # type: ignore[arg-type]

    @_offloaded
    def register_target(self, target: str) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        now = self._clock.now()
        with self._tx() as s:
            row = _lock_target(s, target, now)
            if row.first_seen_at is None:
                row.first_seen_at = now
            return _target_state(s, row)

    @_offloaded
    def record_promotion(
        self, target: str, key: ManagedKey, *, retire: Sequence[RetiringKey] = ()
    ) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        key = guard.managed_key(key)
        entries = [guard.retiring_key(entry) for entry in retire]
        for entry in entries:
            if entry.target != target:
                raise ValueError(f"retire: key {entry.key_id} belongs to target {entry.target}")
            if entry.key_id == key.key_id:
                raise ValueError(f"retire: key {entry.key_id} is the key being promoted")
        now = self._clock.now()
        with self._tx() as s:
            row = _lock_target(s, target, now)
            changed = row.key_id != key.key_id
            if changed:
                row.key_id, row.key_fingerprint = key.key_id, key.fingerprint
                row.key_created_at, row.key_expiration = key.created_at, key.expiration
                row.key_rotation_id, row.last_rotated_at = key.rotation_id, now
            row.consecutive_failures, row.backoff_until, row.updated_at = 0, None, now
            s.execute(
                delete(RetiringKeyRow).where(
                    RetiringKeyRow.target == target, RetiringKeyRow.key_id == key.key_id
                )
            )
            for entry in entries:
                _upsert_retiring(s, entry, now)
            if row.adopted_key_id in {entry.key_id for entry in entries}:
                row.adopted_key_id = None
            if changed:
                audit.append(
                    s,
                    key=self._audit_key,
                    at=now,
                    event="key.promoted",
                    target=target,
                    rotation_id=key.rotation_id,
                    facts={
                        "key_id": key.key_id,
                        "fingerprint": key.fingerprint,
                        "expiration": key.expiration.isoformat() if key.expiration else None,
                        "retiring": [
                            {"key_id": e.key_id, "revoke_due_at": e.revoke_due_at.isoformat()}
                            for e in entries
                        ],
                    },
                )
            s.flush()
            return _target_state(s, row)

    @_offloaded
    def adopt_key(self, target: str, key_id: str | None) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        key_id = guard.optional_ident(key_id, "key_id", ID)
        now = self._clock.now()
        with self._tx() as s:
            row = _lock_target(s, target, now)
            if key_id is not None and key_id == row.key_id:
                raise ValueError(f"key {key_id} is already target {target}'s managed key")
            if row.adopted_key_id != key_id:
                row.adopted_key_id, row.updated_at = key_id, now
                audit.append(
                    s,
                    key=self._audit_key,
                    at=now,
                    event="key.adopted" if key_id else "key.adoption_withdrawn",
                    target=target,
                    rotation_id=None,
                    facts={"key_id": key_id},
                )
            return _target_state(s, row)

    @_offloaded
    def record_failure(
        self, target: str, *, backoff_until: datetime | None, counted: bool = True
    ) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        backoff_until = guard.optional_aware(backoff_until, "backoff_until")
        now = self._clock.now()
        with self._tx() as s:
            row = _lock_target(s, target, now)
            if counted:
                row.consecutive_failures += 1
            elif row.backoff_until is not None and (
                backoff_until is None or row.backoff_until > backoff_until
            ):
                backoff_until = row.backoff_until
            row.backoff_until, row.updated_at = backoff_until, now
            return _target_state(s, row)

    @_offloaded
    def clear_failures(self, target: str) -> TargetState:
        target = guard.ident(target, "target", TARGET)
        now = self._clock.now()
        with self._tx() as s:
            row = _lock_target(s, target, now)
            row.consecutive_failures, row.backoff_until, row.updated_at = 0, None, now
            return _target_state(s, row)

    @_offloaded
    def schedule_revocation(self, key: RetiringKey) -> TargetState:
        key = guard.retiring_key(key)
        now = self._clock.now()
        with self._tx() as s:
            row = _lock_target(s, key.target, now)
            if key.key_id == row.key_id:
                raise ValueError(f"key {key.key_id} is target {key.target}'s current key")
            _upsert_retiring(s, key, now)
            row.updated_at = now
            s.flush()
            return _target_state(s, row)

    @_offloaded
    def revocations_due(self) -> list[RetiringKey]:
        now = self._clock.now()
        with self._tx() as s:
            rows = s.scalars(_retiring_query().where(RetiringKeyRow.revoke_due_at <= now))
            return [records.retiring_key(row) for row in rows]

    @_offloaded
    def revocation_done(self, target: str, key_id: str) -> bool:
        target = guard.ident(target, "target", TARGET)
        key_id = guard.ident(key_id, "key_id", ID)
        now = self._clock.now()
        with self._tx() as s:
            if s.get(TargetRow, target, with_for_update=True) is None:
                return False
            row = s.get(RetiringKeyRow, (target, key_id))
            if row is None:
                return False
            s.delete(row)
            audit.append(
                s,
                key=self._audit_key,
                at=now,
                event="key.revoked",
                target=target,
                rotation_id=row.rotation_id,
                facts={"key_id": key_id, "fingerprint": row.fingerprint},
            )
            return True

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
    ) -> Rotation:
        target = guard.ident(target, "target", TARGET)
        rotation_id = guard.rotation_id(rotation_id or str(uuid.uuid4()))
        state = guard.ident(state, "state", LABEL)
        new_key_name = guard.optional_ident(new_key_name, "new_key_name", NAME)
        old_ids = guard.idents(old_key_ids, "old_key_ids", ID)
        now = self._clock.now()
        with self._tx() as s:
            existing = s.get(RotationRow, rotation_id)
            if existing is not None:
                if existing.target != target:
                    raise ConflictError(
                        f"rotation {rotation_id} belongs to target {existing.target}, not {target}"
                    )
                return records.rotation(existing)
            _lock_target(s, target, now)
            _refuse_if_open(s, target)
            row = RotationRow(
                rotation_id=rotation_id,
                target=target,
                state=state,
                started_at=now,
                emergency=bool(emergency),
                new_key_name=new_key_name,
                old_key_ids=old_ids,
            )
            try:
                with s.begin_nested():
                    s.add(row)
            except IntegrityError:
                _refuse_if_open(s, target)
                raise
            audit.append(
                s,
                key=self._audit_key,
                at=now,
                event="rotation.started",
                target=target,
                rotation_id=rotation_id,
                facts={
                    "emergency": bool(emergency),
                    "new_key_name": new_key_name,
                    "old_key_ids": list(old_ids),
                },
            )
            return records.rotation(row)

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
        changes: dict[str, Any] = {
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
        with self._tx() as s:
            row = _lock_rotation(s, rotation_id)
            for name, value in changes.items():
                if value is not None:
                    setattr(row, name, value)
            return records.rotation(row)

    @_offloaded
    def finish_rotation(
        self, rotation_id: str, *, state: str, outcome: str, error: str | None = None
    ) -> Rotation:
        if state not in TERMINAL_STATES:
            raise ValueError(f"state {state!r} is not terminal: one of {sorted(TERMINAL_STATES)}")
        outcome = guard.ident(outcome, "outcome", LABEL)
        error = guard.error_text(error)
        now = self._clock.now()
        with self._tx() as s:
            row = _lock_rotation(s, rotation_id)
            if row.finished_at is not None:
                if (row.state, row.outcome) == (state, outcome):
                    return records.rotation(row)
                raise ConflictError(
                    f"rotation {rotation_id} already finished as {row.state}/{row.outcome}"
                )
            row.state, row.outcome, row.finished_at = state, outcome, now
            if error is not None:
                row.error = error
            audit.append(
                s,
                key=self._audit_key,
                at=now,
                event="rotation.finished",
                target=row.target,
                rotation_id=rotation_id,
                facts={
                    "state": state,
                    "outcome": outcome,
                    "new_key_id": row.new_key_id,
                    "new_key_fingerprint": row.new_key_fingerprint,
                    "old_key_ids": list(row.old_key_ids),
                    "error": row.error,
                },
            )
            return records.rotation(row)

    @_offloaded
    def get_rotation(self, rotation_id: str) -> Rotation | None:
        with self._tx() as s:
            row = s.get(RotationRow, rotation_id)
            return None if row is None else records.rotation(row)

    @_offloaded
    def open_rotations(self, target: str | None = None) -> list[Rotation]:
        query = select(RotationRow).where(RotationRow.finished_at.is_(None))
        if target is not None:
            query = query.where(RotationRow.target == target)
        with self._tx() as s:
            rows = s.scalars(query.order_by(RotationRow.started_at, RotationRow.rotation_id))
            return [records.rotation(row) for row in rows]

    @_offloaded
    def list_rotations(self, target: str | None = None, *, limit: int = 50) -> list[Rotation]:
        query = select(RotationRow)
        if target is not None:
            query = query.where(RotationRow.target == target)
        query = query.order_by(RotationRow.started_at.desc(), RotationRow.rotation_id.desc())
        with self._tx() as s:
            return [records.rotation(row) for row in s.scalars(query.limit(limit))]

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
        step = guard.ident(str(step) if isinstance(step, str) else step, "step", LABEL)
        clean = guard.facts(facts)
        state = guard.optional_ident(state, "state", LABEL)
        now = self._clock.now()
        # Core statements on one connection, not the ORM: this runs before every side effect of
        # every rotation, and a unit of work per step cost more CPU than the rest of the step.
        with self._engine.begin() as conn:
            rotation = conn.execute(_STEP_ROTATION, {"rid": rotation_id}).one_or_none()
            if rotation is None:
                raise LookupError(f"no rotation {rotation_id}")
            steps = conn.execute(_STEP_NAMES, {"rid": rotation_id}).all()
            same = sorted(seq for seq, name in steps if name == step)
            if rotation.finished_at is not None and not same:
                # A late writer (a process that lost this rotation to recovery elsewhere) must not
                # add steps, nor move the state of a closed rotation.
                raise ConflictError(
                    f"rotation {rotation_id} is finished ({rotation.state}); step {step!r} refused"
                )
            if same:
                existing = conn.execute(_STEP_ENTRY, {"rid": rotation_id, "seq": same[0]}).one()
                return records.journal_entry(existing)  # type: ignore[arg-type]
            seq = len(steps) + 1
            conn.execute(
                _STEP_INSERT,
                {"rotation_id": rotation_id, "seq": seq, "step": step, "at": now, "facts": clean},
            )
            if state is not None:
                conn.execute(_STEP_STATE, {"rid": rotation_id, "state": state})
            return JournalEntry(rotation_id=rotation_id, seq=seq, step=step, at=now, facts=clean)

    @_offloaded
    def journal(self, rotation_id: str) -> list[JournalEntry]:
        with self._tx() as s:
            rows = s.scalars(
                select(JournalRow)
                .where(JournalRow.rotation_id == rotation_id)
                .order_by(JournalRow.seq)
            )
            return [records.journal_entry(row) for row in rows]

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
        now = self._clock.now()
        with self._tx() as s:
            return audit.append(
                s,
                key=self._audit_key,
                at=now,
                event=event,
                target=target,
                rotation_id=rotation_id,
                facts=clean,
            )

    @_offloaded
    def audit_events(
        self, target: str | None = None, *, limit: int | None = None
    ) -> list[AuditEvent]:
        query = audit.STORED
        if target is not None:
            query = query.where(AuditRow.target == target)
        query = query.order_by(AuditRow.seq.desc()).limit(limit)
        with self._tx() as s:
            return audit.events(s, query)

    @_offloaded
    def verify_audit(self, anchor: AuditAnchor | None = None) -> AuditVerdict:
        with self._tx() as s:
            return audit.verify(s, self._audit_key, anchor)

    @_offloaded
    def audit_head(self) -> AuditHead:
        with self._tx() as s:
            return audit.head_of(s)


# --- helpers --------------------------------------------------------------------------------

_SCHEMA = cast("Table", SchemaVersion.__table__)
_TARGETS = cast("Table", TargetRow.__table__)
_RETIRING = cast("Table", RetiringKeyRow.__table__)
_ROTATIONS = cast("Table", RotationRow.__table__)
_JOURNAL = cast("Table", JournalRow.__table__)
_RETIRING_ORDER = (_RETIRING.c.revoke_due_at, _RETIRING.c.target, _RETIRING.c.key_id)

# get_target's statements, built once (see append_step's below).
_TARGET_ROW = _TARGETS.select().where(_TARGETS.c.target == bindparam("target"))
_TARGET_RETIRING = (
    _RETIRING.select().where(_RETIRING.c.target == bindparam("target")).order_by(*_RETIRING_ORDER)
)

# append_step's statements, built once: it runs before every side effect of every rotation, and
# building them per call (and their cache keys) was most of its CPU.
_STEP_ROTATION = (
    select(_ROTATIONS.c.finished_at, _ROTATIONS.c.state)
    .where(_ROTATIONS.c.rotation_id == bindparam("rid"))
    .with_for_update()
)
_STEP_NAMES = select(_JOURNAL.c.seq, _JOURNAL.c.step).where(
    _JOURNAL.c.rotation_id == bindparam("rid")
)
_STEP_ENTRY = _JOURNAL.select().where(
    _JOURNAL.c.rotation_id == bindparam("rid"), _JOURNAL.c.seq == bindparam("seq")
)
_STEP_INSERT = _JOURNAL.insert()
_STEP_STATE = (
    _ROTATIONS.update()
    .where(_ROTATIONS.c.rotation_id == bindparam("rid"))
    .values(state=bindparam("state"))
)


def _lock_target(session: Session, target: str, now: datetime) -> TargetRow:
    """The target's row, created if missing, locked for this transaction."""
    values = {"target": target, "consecutive_failures": 0, "updated_at": now, "first_seen_at": now}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(TargetRow).values(values).on_conflict_do_nothing())
    row = session.get(TargetRow, target, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def _lock_rotation(session: Session, rotation_id: str) -> RotationRow:
    row = session.get(RotationRow, rotation_id, with_for_update=True)
    if row is None:
        raise LookupError(f"no rotation {rotation_id}")
    return row


def _refuse_if_open(session: Session, target: str) -> None:
    open_id = session.scalar(
        select(RotationRow.rotation_id).where(
            RotationRow.target == target, RotationRow.finished_at.is_(None)
        )
    )
    if open_id is not None:
        raise ConflictError(f"target {target} already has rotation {open_id} in flight")


def _retiring_query() -> Select[tuple[RetiringKeyRow]]:
    return select(RetiringKeyRow).order_by(
        RetiringKeyRow.revoke_due_at, RetiringKeyRow.target, RetiringKeyRow.key_id
    )


def _upsert_retiring(session: Session, key: RetiringKey, now: datetime) -> None:
    row = session.get(RetiringKeyRow, (key.target, key.key_id))
    if row is None:
        row = RetiringKeyRow(target=key.target, key_id=key.key_id, added_at=now)
        session.add(row)
    row.fingerprint, row.rotation_id = key.fingerprint, key.rotation_id
    row.revoke_due_at = key.revoke_due_at


def _retiring_by_target(rows: Iterable[RetiringKeyRow]) -> dict[str, tuple[RetiringKey, ...]]:
    out: dict[str, tuple[RetiringKey, ...]] = {}
    for row in rows:
        out[row.target] = (*out.get(row.target, ()), records.retiring_key(row))
    return out


def _target_state(
    session: Session, row: TargetRow, retiring: tuple[RetiringKey, ...] | None = None
) -> TargetState:
    if retiring is None:
        query = _retiring_query().where(RetiringKeyRow.target == row.target)
        retiring = tuple(records.retiring_key(r) for r in session.scalars(query))
    return records.target_state(row, retiring)
