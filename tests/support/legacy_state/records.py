"""Rows to records: the frozen :mod:`rotator.contracts` values the store hands out.

A record never holds a reference to a session or a row; what it carries was read inside the
transaction that made it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from rotator.contracts import (
    AuditEvent,
    JournalEntry,
    ManagedKey,
    RetiringKey,
    Rotation,
    TargetState,
)
from tests.support.legacy_state.models import (
    AuditRow,
    JournalRow,
    RetiringKeyRow,
    RotationRow,
    TargetRow,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


def from_row(record: type[R], row: object, **overrides: Any) -> R:
    """``record`` built from the row's attributes of the same names, ``overrides`` aside."""
    names = (f.name for f in dataclasses.fields(record) if f.name not in overrides)
    return record(**{name: getattr(row, name) for name in names}, **overrides)


def retiring_key(row: RetiringKeyRow) -> RetiringKey:
    return from_row(RetiringKey, row)


def rotation(row: RotationRow) -> Rotation:
    return from_row(Rotation, row, old_key_ids=tuple(row.old_key_ids))


def journal_entry(row: JournalRow) -> JournalEntry:
    return from_row(JournalEntry, row, facts=dict(row.facts))


def audit_event(row: AuditRow) -> AuditEvent:
    return from_row(AuditEvent, row, facts=dict(row.facts))


def target_state(row: TargetRow, retiring: tuple[RetiringKey, ...]) -> TargetState:
    current = None
    if row.key_id is not None and row.key_fingerprint is not None:
        current = ManagedKey(
            key_id=row.key_id,
            fingerprint=row.key_fingerprint,
            created_at=row.key_created_at,
            expiration=row.key_expiration,
            rotation_id=row.key_rotation_id,
        )
    return from_row(TargetState, row, current=current, retiring=retiring)
