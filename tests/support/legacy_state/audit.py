"""The audit log's SQLAlchemy side as it was (appends, reads, the walk's query); the chain itself
(hashing, the walk's verdicts) is :mod:`rotator.state.audit`'s, which did not change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, Text, cast, select, type_coerce
from sqlalchemy.orm import Session

from rotator.contracts import AuditAnchor, AuditEvent, AuditHead, AuditVerdict, JsonValue
from rotator.state.audit import ChainKey, check_chain, decode, row_hash
from tests.support.legacy_state import records
from tests.support.legacy_state.models import AuditHeadRow, AuditRow

STORED: Select[Any] = select(
    AuditRow.seq,
    type_coerce(AuditRow.at, String).label("at"),
    AuditRow.event,
    AuditRow.target,
    AuditRow.rotation_id,
    cast(AuditRow.facts, Text).label("facts"),
    AuditRow.hash,
    AuditRow.hmac_key_id,
)
"""Audit rows as stored, undecoded (facts as JSON text; the time as SQLite's text, or
PostgreSQL's datetime): what :func:`rotator.state.audit.decode` takes."""


def append(
    session: Session,
    *,
    at: datetime,
    event: str,
    target: str | None,
    rotation_id: str | None,
    facts: dict[str, JsonValue],
    key: ChainKey | None = None,
) -> AuditEvent:
    """Add the next row in ``session``'s transaction, chained with ``key`` when given."""
    head = session.get(AuditHeadRow, 1, with_for_update=True)
    if head is None:
        raise RuntimeError("the audit head is missing: the state database is not migrated")
    row = AuditRow(
        seq=head.seq + 1,
        at=at,
        event=event,
        target=target,
        rotation_id=rotation_id,
        facts=facts,
        hmac_key_id=key.id if key is not None else None,
    )
    row.hash = row_hash(row, head.hash, key)  # type: ignore[arg-type]
    session.add(row)
    head.seq, head.hash = row.seq, row.hash
    return records.audit_event(row)


def events(session: Session, query: Select[Any]) -> list[AuditEvent]:
    """The events of ``query`` (a :data:`STORED` select)."""
    return [decode(stored).event_record() for stored in session.execute(query)]


def head_of(session: Session) -> AuditHead:
    head = session.get(AuditHeadRow, 1)
    if head is None:
        raise RuntimeError("the audit head is missing: the state database is not migrated")
    return AuditHead(rows=head.seq, head_hash=head.hash)


def verify(
    session: Session, key: ChainKey | None = None, anchor: AuditAnchor | None = None
) -> AuditVerdict:
    head = session.get(AuditHeadRow, 1)
    query = STORED.order_by(AuditRow.seq).execution_options(yield_per=500)
    with session.execute(query) as result:
        return check_chain(result, (head.seq, head.hash) if head else None, key, anchor)
