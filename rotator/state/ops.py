"""What each store method does inside its transaction: small functions on an open :class:`Tx`.

Every function here takes the transaction first and values already checked by
:mod:`rotator.state.guard`, and runs its statements in it; none commits. A store method is one
of them run by :meth:`rotator.state.database.Database.run`, so a method that does several things
in one transaction (say, journal a step and update its rotation) is those functions called in
turn from one function. Writers lock what they change first: the target's row (``FOR UPDATE``
on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already holds the database), the rotation's row,
the audit head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rotator.contracts import (
    JournalEntry,
    JsonValue,
    ManagedKey,
    RetiringKey,
    Rotation,
    TargetState,
)
from rotator.errors import ConflictError
from rotator.state import audit
from rotator.state.schema import (
    JOURNAL_COLUMNS,
    RETIRING_COLUMNS,
    ROTATION_COLUMNS,
    TARGET_COLUMNS,
)
from rotator.state.sql import Row, Stmt, Tx

# --- targets --------------------------------------------------------------------------------

_TARGET_CREATE = Stmt(
    "INSERT INTO target_states (target, consecutive_failures, updated_at, first_seen_at)"
    " VALUES (?, 0, ?, ?) ON CONFLICT DO NOTHING"
)
_TARGET = Stmt(f"SELECT {TARGET_COLUMNS} FROM target_states WHERE target = ?")
_TARGET_FOR_UPDATE = Stmt(f"SELECT {TARGET_COLUMNS} FROM target_states WHERE target = ? FOR UPDATE")
_TARGETS = Stmt(f"SELECT {TARGET_COLUMNS} FROM target_states ORDER BY target")
_TARGET_SAVE = Stmt(
    "UPDATE target_states SET key_id = ?, key_fingerprint = ?, key_created_at = ?,"
    " key_expiration = ?, key_rotation_id = ?, adopted_key_id = ?, last_rotated_at = ?,"
    " consecutive_failures = ?, backoff_until = ?, updated_at = ?, first_seen_at = ?"
    " WHERE target = ?"
)
_RETIRING_ORDER = "ORDER BY revoke_due_at, target, key_id"
_RETIRING_OF = Stmt(
    f"SELECT {RETIRING_COLUMNS} FROM retiring_keys WHERE target = ? {_RETIRING_ORDER}"
)
_RETIRING_ALL = Stmt(f"SELECT {RETIRING_COLUMNS} FROM retiring_keys {_RETIRING_ORDER}")
_RETIRING_DUE = Stmt(
    f"SELECT {RETIRING_COLUMNS} FROM retiring_keys WHERE revoke_due_at <= ? {_RETIRING_ORDER}"
)
_RETIRING_ONE = Stmt(
    f"SELECT {RETIRING_COLUMNS} FROM retiring_keys WHERE target = ? AND key_id = ?"
)
_RETIRING_UPSERT = Stmt(
    "INSERT INTO retiring_keys (target, key_id, fingerprint, rotation_id, revoke_due_at,"
    " added_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (target, key_id) DO UPDATE SET"
    " fingerprint = excluded.fingerprint, rotation_id = excluded.rotation_id,"
    " revoke_due_at = excluded.revoke_due_at"
)
_RETIRING_DELETE = Stmt("DELETE FROM retiring_keys WHERE target = ? AND key_id = ?")


@dataclass(slots=True)
class TargetRow:
    """A target's row, decoded, to change and :func:`save_target` in the same transaction."""

    target: str
    key_id: str | None
    key_fingerprint: str | None
    key_created_at: datetime | None
    key_expiration: Any
    key_rotation_id: str | None
    adopted_key_id: str | None
    last_rotated_at: datetime | None
    consecutive_failures: int
    backoff_until: datetime | None
    updated_at: datetime | None
    first_seen_at: datetime | None

    @classmethod
    def decode(cls, tx: Tx, row: Row) -> TargetRow:
        ts, d = tx.d.ts_out, tx.d
        return cls(
            row[0],
            row[1],
            row[2],
            ts(row[3]),
            d.day_out(row[4]),
            row[5],
            row[6],
            ts(row[7]),
            row[8],
            ts(row[9]),
            ts(row[10]),
            ts(row[11]),
        )

    def state(self, retiring: tuple[RetiringKey, ...]) -> TargetState:
        current = None
        if self.key_id is not None and self.key_fingerprint is not None:
            current = ManagedKey(
                key_id=self.key_id,
                fingerprint=self.key_fingerprint,
                created_at=self.key_created_at,
                expiration=self.key_expiration,
                rotation_id=self.key_rotation_id,
            )
        return TargetState(
            target=self.target,
            current=current,
            retiring=retiring,
            adopted_key_id=self.adopted_key_id,
            last_rotated_at=self.last_rotated_at,
            consecutive_failures=self.consecutive_failures,
            backoff_until=self.backoff_until,
            first_seen_at=self.first_seen_at,
        )


def lock_target(tx: Tx, target: str, now: datetime) -> TargetRow:
    """The target's row, created if missing (``first_seen_at`` = now), locked for ``tx``."""
    stamp = tx.d.ts(now)
    tx.run(_TARGET_CREATE, (target, stamp, stamp))
    row = tx.one(_TARGET_FOR_UPDATE, (target,))
    assert row is not None
    return TargetRow.decode(tx, row)


def save_target(tx: Tx, row: TargetRow) -> None:
    """Write back every changeable column of a row from :func:`lock_target`."""
    ts, d = tx.d.ts, tx.d
    tx.run(
        _TARGET_SAVE,
        (
            row.key_id,
            row.key_fingerprint,
            ts(row.key_created_at),
            d.day(row.key_expiration),
            row.key_rotation_id,
            row.adopted_key_id,
            ts(row.last_rotated_at),
            row.consecutive_failures,
            ts(row.backoff_until),
            ts(row.updated_at),
            ts(row.first_seen_at),
            row.target,
        ),
    )


def retiring_key(tx: Tx, row: Row) -> RetiringKey:
    return RetiringKey(row[0], row[1], row[2], tx.d.ts_out(row[3]), row[4])  # type: ignore[arg-type]


def target_state(tx: Tx, row: TargetRow) -> TargetState:
    """The record of a row, with its retiring keys read in ``tx``."""
    retiring = tuple(retiring_key(tx, r) for r in tx.all(_RETIRING_OF, (row.target,)))
    return row.state(retiring)


def get_target(tx: Tx, target: str) -> TargetState | None:
    row = tx.one(_TARGET, (target,))
    return None if row is None else target_state(tx, TargetRow.decode(tx, row))


def list_targets(tx: Tx) -> list[TargetState]:
    rows = [TargetRow.decode(tx, r) for r in tx.all(_TARGETS)]
    retiring: dict[str, list[RetiringKey]] = {}
    for r in tx.all(_RETIRING_ALL):
        retiring.setdefault(r[0], []).append(retiring_key(tx, r))
    return [row.state(tuple(retiring.get(row.target, ()))) for row in rows]


def register_target(tx: Tx, target: str, now: datetime) -> TargetState:
    row = lock_target(tx, target, now)
    if row.first_seen_at is None:
        row.first_seen_at = now
        save_target(tx, row)
    return target_state(tx, row)


def upsert_retiring(tx: Tx, key: RetiringKey, now: datetime) -> None:
    """Schedule ``key``; an entry for the same key gets its deadline and facts replaced."""
    ts = tx.d.ts
    tx.run(
        _RETIRING_UPSERT,
        (key.target, key.key_id, key.fingerprint, key.rotation_id, ts(key.revoke_due_at), ts(now)),
    )


def record_promotion(
    tx: Tx,
    target: str,
    key: ManagedKey,
    retire: Sequence[RetiringKey],
    now: datetime,
    *,
    audit_key: audit.ChainKey | None,
    steps: Sequence[tuple[str, dict[str, JsonValue]]] = (),
    state: str | None = None,
    outcome: str | None = None,
) -> TargetState:
    """Promote ``key``; with ``steps``/``state``, journal them for ``key.rotation_id`` first,
    and with ``outcome``, close that rotation as ``done`` after (one transaction)."""
    row = lock_target(tx, target, now)
    if key.rotation_id is not None and steps:
        append_steps(tx, key.rotation_id, steps, now=now, changes={"state": state})
    changed = row.key_id != key.key_id
    if changed:
        row.key_id, row.key_fingerprint = key.key_id, key.fingerprint
        row.key_created_at, row.key_expiration = key.created_at, key.expiration
        row.key_rotation_id, row.last_rotated_at = key.rotation_id, now
    row.consecutive_failures, row.backoff_until, row.updated_at = 0, None, now
    tx.run(_RETIRING_DELETE, (target, key.key_id))
    for entry in retire:
        upsert_retiring(tx, entry, now)
    if row.adopted_key_id in {entry.key_id for entry in retire}:
        row.adopted_key_id = None
    save_target(tx, row)
    if changed:
        audit.append(
            tx,
            key=audit_key,
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
                    for e in retire
                ],
            },
        )
    if outcome is not None:
        assert key.rotation_id is not None
        finish_rotation(
            tx,
            key.rotation_id,
            state="done",
            outcome=outcome,
            error=None,
            now=now,
            audit_key=audit_key,
        )
    return target_state(tx, row)


def adopt_key(
    tx: Tx, target: str, key_id: str | None, now: datetime, *, audit_key: audit.ChainKey | None
) -> TargetState:
    row = lock_target(tx, target, now)
    if key_id is not None and key_id == row.key_id:
        raise ValueError(f"key {key_id} is already target {target}'s managed key")
    if row.adopted_key_id != key_id:
        row.adopted_key_id, row.updated_at = key_id, now
        save_target(tx, row)
        audit.append(
            tx,
            key=audit_key,
            at=now,
            event="key.adopted" if key_id else "key.adoption_withdrawn",
            target=target,
            rotation_id=None,
            facts={"key_id": key_id},
        )
    return target_state(tx, row)


def record_failure(
    tx: Tx, target: str, backoff_until: datetime | None, counted: bool, now: datetime
) -> TargetState:
    row = lock_target(tx, target, now)
    if counted:
        row.consecutive_failures += 1
    elif row.backoff_until is not None and (
        backoff_until is None or row.backoff_until > backoff_until
    ):
        backoff_until = row.backoff_until
    row.backoff_until, row.updated_at = backoff_until, now
    save_target(tx, row)
    return target_state(tx, row)


def clear_failures(tx: Tx, target: str, now: datetime) -> TargetState:
    row = lock_target(tx, target, now)
    row.consecutive_failures, row.backoff_until, row.updated_at = 0, None, now
    save_target(tx, row)
    return target_state(tx, row)


def schedule_revocation(tx: Tx, key: RetiringKey, now: datetime) -> TargetState:
    row = lock_target(tx, key.target, now)
    if key.key_id == row.key_id:
        raise ValueError(f"key {key.key_id} is target {key.target}'s current key")
    upsert_retiring(tx, key, now)
    row.updated_at = now
    save_target(tx, row)
    return target_state(tx, row)


def revocations_due(tx: Tx, now: datetime) -> list[RetiringKey]:
    return [retiring_key(tx, r) for r in tx.all(_RETIRING_DUE, (tx.d.ts(now),))]


def revocation_done(
    tx: Tx, target: str, key_id: str, now: datetime, *, audit_key: audit.ChainKey | None
) -> bool:
    if tx.one(_TARGET_FOR_UPDATE, (target,)) is None:
        return False
    row = tx.one(_RETIRING_ONE, (target, key_id))
    if row is None:
        return False
    tx.run(_RETIRING_DELETE, (target, key_id))
    audit.append(
        tx,
        key=audit_key,
        at=now,
        event="key.revoked",
        target=target,
        rotation_id=row[4],
        facts={"key_id": key_id, "fingerprint": row[2]},
    )
    return True


# --- rotations ------------------------------------------------------------------------------

_ROTATION = Stmt(f"SELECT {ROTATION_COLUMNS} FROM rotations WHERE rotation_id = ?")
_ROTATION_FOR_UPDATE = Stmt(
    f"SELECT {ROTATION_COLUMNS} FROM rotations WHERE rotation_id = ? FOR UPDATE"
)
_ROTATION_INSERT = Stmt(
    "INSERT INTO rotations (rotation_id, target, state, started_at, emergency, new_key_name,"
    " old_key_ids) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_ROTATION_SAVE = Stmt(
    "UPDATE rotations SET state = ?, finished_at = ?, outcome = ?, error = ?, new_key_id = ?,"
    " new_key_name = ?, new_key_fingerprint = ?, old_key_ids = ? WHERE rotation_id = ?"
)
_ROTATION_STATE = Stmt("UPDATE rotations SET state = ? WHERE rotation_id = ?")
_OPEN_OF = Stmt("SELECT rotation_id FROM rotations WHERE target = ? AND finished_at IS NULL")
_OPEN = Stmt(
    f"SELECT {ROTATION_COLUMNS} FROM rotations WHERE finished_at IS NULL"
    " ORDER BY started_at, rotation_id"
)
_OPEN_TARGET = Stmt(
    f"SELECT {ROTATION_COLUMNS} FROM rotations WHERE finished_at IS NULL AND target = ?"
    " ORDER BY started_at, rotation_id"
)
_LATEST = Stmt(
    f"SELECT {ROTATION_COLUMNS} FROM rotations ORDER BY started_at DESC, rotation_id DESC LIMIT ?"
)
_LATEST_TARGET = Stmt(
    f"SELECT {ROTATION_COLUMNS} FROM rotations WHERE target = ?"
    " ORDER BY started_at DESC, rotation_id DESC LIMIT ?"
)

ROTATION_FIELDS = (
    "state",
    "new_key_id",
    "new_key_name",
    "new_key_fingerprint",
    "old_key_ids",
    "error",
)
"""What :func:`update_rotation` may set."""


def rotation(tx: Tx, row: Row) -> Rotation:
    ts = tx.d.ts_out
    return Rotation(
        rotation_id=row[0],
        target=row[1],
        state=row[2],
        started_at=ts(row[3]),  # type: ignore[arg-type]
        finished_at=ts(row[4]),
        outcome=row[5],
        error=row[6],
        emergency=bool(row[7]),
        new_key_id=row[8],
        new_key_name=row[9],
        new_key_fingerprint=row[10],
        old_key_ids=tuple(tx.d.json_out(row[11])),
    )


def lock_rotation(tx: Tx, rotation_id: str) -> Rotation:
    """The rotation, locked for ``tx``; ``LookupError`` if there is none."""
    row = tx.one(_ROTATION_FOR_UPDATE, (rotation_id,))
    if row is None:
        raise LookupError(f"no rotation {rotation_id}")
    return rotation(tx, row)


def save_rotation(tx: Tx, r: Rotation) -> None:
    """Write back every changeable column of a rotation from :func:`lock_rotation`."""
    d = tx.d
    tx.run(
        _ROTATION_SAVE,
        (
            r.state,
            d.ts(r.finished_at),
            r.outcome,
            r.error,
            r.new_key_id,
            r.new_key_name,
            r.new_key_fingerprint,
            d.json(list(r.old_key_ids)),
            r.rotation_id,
        ),
    )


def refuse_if_open(tx: Tx, target: str) -> None:
    """``ConflictError`` naming the target's open rotation, if it has one."""
    row = tx.one(_OPEN_OF, (target,))
    if row is not None:
        raise ConflictError(f"target {target} already has rotation {row[0]} in flight")


def start_rotation(
    tx: Tx,
    target: str,
    rotation_id: str,
    *,
    state: str,
    emergency: bool,
    new_key_name: str | None,
    old_key_ids: list[str],
    now: datetime,
    audit_key: audit.ChainKey | None,
    steps: Sequence[tuple[str, dict[str, JsonValue]]] = (),
) -> Rotation:
    existing = tx.one(_ROTATION, (rotation_id,))
    if existing is not None:
        if existing[1] != target:
            raise ConflictError(
                f"rotation {rotation_id} belongs to target {existing[1]}, not {target}"
            )
        return rotation(tx, existing)
    lock_target(tx, target, now)
    refuse_if_open(tx, target)
    d = tx.d
    params = (
        rotation_id,
        target,
        state,
        d.ts(now),
        emergency,
        new_key_name,
        d.json(old_key_ids),
    )
    if not tx.run(_ROTATION_INSERT, params):
        # Only a writer that went around the store (or its target lock) gets here: the unique
        # index uq_rotations_one_open (or the id's key) refused the row.
        refuse_if_open(tx, target)
        raise ConflictError(f"rotation {rotation_id} exists already")
    audit.append(
        tx,
        key=audit_key,
        at=now,
        event="rotation.started",
        target=target,
        rotation_id=rotation_id,
        facts={"emergency": emergency, "new_key_name": new_key_name, "old_key_ids": old_key_ids},
    )
    if steps:
        append_steps(tx, rotation_id, steps, now=now)
    return Rotation(
        rotation_id=rotation_id,
        target=target,
        state=state,
        started_at=now,
        finished_at=None,
        outcome=None,
        error=None,
        emergency=emergency,
        new_key_id=None,
        new_key_name=new_key_name,
        new_key_fingerprint=None,
        old_key_ids=tuple(old_key_ids),
    )


def update_rotation(tx: Tx, rotation_id: str, changes: dict[str, Any]) -> Rotation:
    """Set the fields of ``changes`` (names of :data:`ROTATION_FIELDS`) that are not None."""
    current = lock_rotation(tx, rotation_id)
    values = {name: value for name, value in changes.items() if value is not None}
    if "old_key_ids" in values:
        values["old_key_ids"] = tuple(values["old_key_ids"])
    if not values:
        return current
    updated = dataclasses.replace(current, **values)
    save_rotation(tx, updated)
    return updated


def finish_rotation(
    tx: Tx,
    rotation_id: str,
    *,
    state: str,
    outcome: str,
    error: str | None,
    now: datetime,
    audit_key: audit.ChainKey | None,
    steps: Sequence[tuple[str, dict[str, JsonValue]]] = (),
) -> Rotation:
    if steps:
        append_steps(tx, rotation_id, steps, now=now)
    current = lock_rotation(tx, rotation_id)
    if current.finished_at is not None:
        if (current.state, current.outcome) == (state, outcome):
            return current
        raise ConflictError(
            f"rotation {rotation_id} already finished as {current.state}/{current.outcome}"
        )
    values: dict[str, Any] = {"state": state, "outcome": outcome, "finished_at": now}
    if error is not None:
        values["error"] = error
    done = dataclasses.replace(current, **values)
    save_rotation(tx, done)
    audit.append(
        tx,
        key=audit_key,
        at=now,
        event="rotation.finished",
        target=done.target,
        rotation_id=rotation_id,
        facts={
            "state": state,
            "outcome": outcome,
            "new_key_id": done.new_key_id,
            "new_key_fingerprint": done.new_key_fingerprint,
            "old_key_ids": list(done.old_key_ids),
            "error": done.error,
        },
    )
    return done


def get_rotation(tx: Tx, rotation_id: str) -> Rotation | None:
    row = tx.one(_ROTATION, (rotation_id,))
    return None if row is None else rotation(tx, row)


def open_rotations(tx: Tx, target: str | None) -> list[Rotation]:
    rows = tx.all(_OPEN) if target is None else tx.all(_OPEN_TARGET, (target,))
    return [rotation(tx, row) for row in rows]


def list_rotations(tx: Tx, target: str | None, limit: int) -> list[Rotation]:
    query, params = (_LATEST, (limit,)) if target is None else (_LATEST_TARGET, (target, limit))
    return [rotation(tx, row) for row in tx.all(query, params)]


# --- journal --------------------------------------------------------------------------------

_STEP_ROTATION = Stmt("SELECT finished_at, state FROM rotations WHERE rotation_id = ? FOR UPDATE")
_STEP = Stmt(f"SELECT {JOURNAL_COLUMNS} FROM journal_steps WHERE rotation_id = ? AND step = ?")
_STEP_NEXT = Stmt("SELECT COALESCE(MAX(seq), 0) + 1 FROM journal_steps WHERE rotation_id = ?")
_STEP_INSERT = Stmt(f"INSERT INTO journal_steps ({JOURNAL_COLUMNS}) VALUES (?, ?, ?, ?, ?)")
_JOURNAL = Stmt(f"SELECT {JOURNAL_COLUMNS} FROM journal_steps WHERE rotation_id = ? ORDER BY seq")


def journal_entry(tx: Tx, row: Row) -> JournalEntry:
    d = tx.d
    return JournalEntry(row[0], row[1], row[2], d.ts_out(row[3]), d.json_out(row[4]))  # type: ignore[arg-type]


def append_step(
    tx: Tx,
    rotation_id: str,
    step: str,
    facts: dict[str, JsonValue],
    *,
    state: str | None,
    now: datetime,
) -> JournalEntry:
    """Journal ``step`` (and set the rotation's ``state``), or return the step journaled
    before: first write wins. A new step for a finished rotation is a ``ConflictError``."""
    return append_steps(tx, rotation_id, [(step, facts)], now=now, changes={"state": state})[0]


def append_steps(
    tx: Tx,
    rotation_id: str,
    steps: Sequence[tuple[str, dict[str, JsonValue]]],
    *,
    now: datetime,
    changes: dict[str, Any] | None = None,
) -> list[JournalEntry]:
    """Journal ``steps`` (checked) in order, each once (first write wins: a step journaled
    before, or earlier in ``steps``, is returned as stored); with at least one new step, set
    the non-None ``changes`` (names of :data:`ROTATION_FIELDS`) on the rotation. A new step for
    a finished rotation is a ``ConflictError`` (the caller's transaction then writes nothing)."""
    found = tx.one(_STEP_ROTATION, (rotation_id,))
    if found is None:
        raise LookupError(f"no rotation {rotation_id}")
    d = tx.d
    entries: list[JournalEntry] = []
    added: dict[str, JournalEntry] = {}
    seq = 0
    for step, facts in steps:
        if step in added:
            entries.append(added[step])
            continue
        existing = tx.one(_STEP, (rotation_id, step))
        if existing is not None:
            entries.append(journal_entry(tx, existing))
            continue
        if found[0] is not None:
            # A late writer (a process that lost this rotation to recovery elsewhere) must not
            # add steps, nor move the state of a closed rotation.
            raise ConflictError(
                f"rotation {rotation_id} is finished ({found[1]}); step {step!r} refused"
            )
        if not seq:
            next_seq = tx.one(_STEP_NEXT, (rotation_id,))
            seq = int(next_seq[0]) if next_seq else 1
        else:
            seq += 1
        tx.run(_STEP_INSERT, (rotation_id, seq, step, d.ts(now), d.json(facts)))
        added[step] = JournalEntry(rotation_id=rotation_id, seq=seq, step=step, at=now, facts=facts)
        entries.append(added[step])
    fields = {name: value for name, value in (changes or {}).items() if value is not None}
    if added and list(fields) == ["state"]:
        tx.run(_ROTATION_STATE, (fields["state"], rotation_id))
    elif added and fields:
        update_rotation(tx, rotation_id, fields)
    return entries


def journal(tx: Tx, rotation_id: str) -> list[JournalEntry]:
    return [journal_entry(tx, row) for row in tx.all(_JOURNAL, (rotation_id,))]
