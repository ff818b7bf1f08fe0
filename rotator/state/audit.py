"""The append-only audit log, hash-chained so that tampering is detectable.

Row ``n`` stores ``sha256(hash(n-1) + canonical_json(n))`` (hex), row 1 chaining from
:data:`GENESIS_HASH`. The canonical JSON covers every column but the hash: ``seq``, ``at``
(ISO 8601 UTC, microseconds), ``event``, ``target``, ``rotation_id`` and ``facts``, with sorted
keys and no whitespace. ``audit_head`` records the last row's seq and hash, so rows cut off the
end are detected too. Appends lock the head row, which serialises them across connections.

The chain proves the log was not edited by anyone unable to recompute it; someone with write
access to the database can rewrite every hash from a row onwards. Exporting
:attr:`AuditVerdict.head_hash` elsewhere (a log line, a ticket) anchors what came before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, String, Text, cast, select, type_coerce
from sqlalchemy.orm import Session

from rotator.contracts import AuditEvent, AuditVerdict, JsonValue
from rotator.errors import RotatorError
from rotator.state import records
from rotator.state.migrations import GENESIS_HASH
from rotator.state.models import AuditHeadRow, AuditRow, as_utc

STORED: Select[Any] = select(
    AuditRow.seq,
    type_coerce(AuditRow.at, String).label("at"),
    AuditRow.event,
    AuditRow.target,
    AuditRow.rotation_id,
    cast(AuditRow.facts, Text).label("facts"),
    AuditRow.hash,
)
"""Audit rows as stored, undecoded (facts as JSON text; the time as SQLite's text, or
PostgreSQL's datetime), so that a row someone filled with garbage is reported, row by row, by
:func:`decode` instead of failing the whole query."""


class UnreadableAuditRowError(RotatorError):
    """An audit row whose stored values rotator never writes: it was edited in the database."""

    def __init__(self, seq: int, what: str) -> None:
        self.seq = seq
        self.what = what
        super().__init__(
            f"audit {self.problem} (the audit log was altered: see rotator history --verify)"
        )

    @property
    def problem(self) -> str:
        """The verdict's problem: ``row N cannot be read: …``."""
        return f"row {self.seq} cannot be read: {self.what}"


def decode(stored: Any) -> AuditRow:
    """The (transient) row a :data:`STORED` result row holds; raises UnreadableAuditRowError."""
    try:
        at = stored.at if isinstance(stored.at, datetime) else datetime.fromisoformat(stored.at)
    except (TypeError, ValueError):
        raise UnreadableAuditRowError(stored.seq, "its timestamp is not a time") from None
    try:
        facts = json.loads(stored.facts)
    except (TypeError, ValueError):
        raise UnreadableAuditRowError(stored.seq, "its facts are not JSON") from None
    if not isinstance(facts, dict):
        raise UnreadableAuditRowError(stored.seq, "its facts are not a JSON object")
    return AuditRow(
        seq=stored.seq,
        at=as_utc(at),
        event=stored.event,
        target=stored.target,
        rotation_id=stored.rotation_id,
        facts=facts,
        hash=stored.hash,
    )


def canonical_json(
    *,
    seq: int,
    at: datetime,
    event: str,
    target: str | None,
    rotation_id: str | None,
    facts: dict[str, JsonValue],
) -> bytes:
    """The bytes a row's hash covers."""
    document = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "event": event,
        "target": target,
        "rotation_id": rotation_id,
        "facts": facts,
    }
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def chain_hash(previous: str, payload: bytes) -> str:
    """SHA-256 (hex) over the previous row's hash and this row's canonical JSON."""
    return hashlib.sha256(previous.encode("ascii") + payload).hexdigest()


def row_hash(row: AuditRow, previous: str) -> str:
    """What ``row.hash`` must be if the row is intact and follows a row hashed ``previous``."""
    return chain_hash(
        previous,
        canonical_json(
            seq=row.seq,
            at=row.at,
            event=row.event,
            target=row.target,
            rotation_id=row.rotation_id,
            facts=row.facts,
        ),
    )


def append(
    session: Session,
    *,
    at: datetime,
    event: str,
    target: str | None,
    rotation_id: str | None,
    facts: dict[str, JsonValue],
) -> AuditEvent:
    """Add the next row in ``session``'s transaction (values already checked by the guard)."""
    head = session.get(AuditHeadRow, 1, with_for_update=True)
    if head is None:
        raise RuntimeError("the audit head is missing: the state database is not migrated")
    row = AuditRow(
        seq=head.seq + 1, at=at, event=event, target=target, rotation_id=rotation_id, facts=facts
    )
    row.hash = row_hash(row, head.hash)
    session.add(row)
    head.seq, head.hash = row.seq, row.hash
    return records.audit_event(row)


def events(session: Session, query: Select[Any]) -> list[AuditEvent]:
    """The events of ``query`` (a :data:`STORED` select); raises UnreadableAuditRowError."""
    return [records.audit_event(decode(stored)) for stored in session.execute(query)]


def verify(session: Session) -> AuditVerdict:
    """Walk the chain from row 1; the first missing, altered, unreadable or misplaced row fails
    it."""
    head = session.get(AuditHeadRow, 1)
    query = STORED.order_by(AuditRow.seq).execution_options(yield_per=500)
    with session.execute(query) as result:  # closes the server-side cursor on an early verdict
        return check_chain(result, head)


def check_chain(rows: Iterable[Any], head: AuditHeadRow | None) -> AuditVerdict:
    """The verdict on ``rows`` (:data:`STORED` rows, in seq order) against the recorded
    ``head``."""
    previous, expected, count = GENESIS_HASH, 1, 0
    for stored in rows:
        count += 1
        if stored.seq != expected:
            return _bad(count, previous, expected, f"row {expected} is missing")
        try:
            row = decode(stored)
        except UnreadableAuditRowError as exc:
            return _bad(count, previous, exc.seq, exc.problem)
        if row_hash(row, previous) != row.hash:
            return _bad(
                count,
                previous,
                row.seq,
                f"row {row.seq} does not match its hash: altered, or moved from elsewhere",
            )
        previous, expected = row.hash, expected + 1
    tail = _tail_problem(head, last=expected - 1, last_hash=previous)
    if tail is not None:
        return _bad(count, previous, *tail)
    return AuditVerdict(ok=True, rows=count, head_hash=previous)


def _tail_problem(
    head: AuditHeadRow | None, *, last: int, last_hash: str
) -> tuple[int, str] | None:
    """Where the rows read disagree with the recorded head: (first bad seq, problem)."""
    if head is None:
        return last + 1, "the audit head row is missing"
    if head.seq > last:
        return last + 1, f"rows {last + 1}..{head.seq} are missing from the end"
    if head.seq < last:
        return head.seq + 1, f"row {head.seq + 1} is past the recorded head"
    if head.hash != last_hash:
        return last, f"the audit head's hash does not match row {last}"
    return None


def _bad(rows: int, head_hash: str, seq: int, problem: str) -> AuditVerdict:
    return AuditVerdict(
        ok=False, rows=rows, head_hash=head_hash, first_bad_seq=seq, problem=problem
    )
