"""The append-only audit log, hash-chained so that tampering is detectable.

Row ``n`` stores ``sha256(hash(n-1) + canonical_json(n))`` (hex), row 1 chaining from
:data:`GENESIS_HASH`; with ``audit.hmac_key`` configured, rows appended from then on store
``hmac_sha256(key, hash(n-1) + canonical_json(n))`` and the key's id (:attr:`ChainKey.id`, never
the key) in ``hmac_key_id``. The canonical JSON covers every column but the hash and the key id:
``seq``, ``at`` (ISO 8601 UTC, microseconds), ``event``, ``target``, ``rotation_id`` and
``facts``, with sorted keys and no whitespace. ``audit_head`` records the last row's seq and
hash, so rows cut off the end are detected too. Appends lock the head row, which serialises them
across connections.

What it proves (docs/security.md): unkeyed, that the log was not edited by anyone unable to
recompute SHA-256, which is anyone able to write the database. Keyed, that rows chained with
the key were not edited, inserted, reordered or re-chained without the key: keyed rows are
always the last ones (an unkeyed row after a keyed one is a downgrade, reported as tampering),
and rows chained before the key was configured still verify with SHA-256. Neither can tell the
tail was cut and the head rewritten to match: a head published elsewhere (the daemon's
``audit_head`` log line and metrics) checked with an :class:`~rotator.contracts.AuditAnchor`
does.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rotator.contracts import AuditAnchor, AuditEvent, AuditHead, AuditVerdict, JsonValue
from rotator.errors import UnreadableAuditRowError
from rotator.secret import Secret
from rotator.state.migrations import GENESIS_HASH
from rotator.state.schema import AUDIT_COLUMNS, HMAC_KEY_ID
from rotator.state.sql import Stmt, Tx, as_utc

_KEY_ID_MESSAGE = b"rotator audit hmac key id"


class ChainKey:
    """The audit chain's HMAC key (``audit.hmac_key``). Only its :attr:`id`, an HMAC of a fixed
    message (which tells keys apart, and reveals nothing of the key), is ever stored or shown."""

    __slots__ = ("_secret", "id")

    def __init__(self, secret: Secret) -> None:
        self._secret = secret
        self.id = self.mac(_KEY_ID_MESSAGE)[:HMAC_KEY_ID]

    def mac(self, data: bytes) -> str:
        """HMAC-SHA256 (hex) of ``data`` with the key."""
        return hmac.new(self._secret.reveal().encode(), data, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"ChainKey(id={self.id})"


@dataclass(slots=True)
class AuditRow:
    """One audit row, decoded (``at`` an aware UTC time, ``facts`` a dict)."""

    seq: int
    at: datetime
    event: str
    target: str | None
    rotation_id: str | None
    facts: dict[str, JsonValue]
    hash: str
    hmac_key_id: str | None = None

    def event_record(self) -> AuditEvent:
        return AuditEvent(
            seq=self.seq,
            at=self.at,
            event=self.event,
            target=self.target,
            rotation_id=self.rotation_id,
            facts=dict(self.facts),
            hash=self.hash,
            hmac_key_id=self.hmac_key_id,
        )


def decode(stored: Iterable[Any]) -> AuditRow:
    """The row a stored audit row holds (the columns of :data:`~rotator.state.schema.
    AUDIT_COLUMNS`, ``at`` as SQLite's text or PostgreSQL's datetime, ``facts`` as JSON text);
    raises UnreadableAuditRowError for values rotator never writes, so that a row someone
    filled with garbage is reported, row by row, instead of failing the whole read."""
    seq, at, event, target, rotation_id, facts, digest, key_id = stored
    try:
        when = at if isinstance(at, datetime) else datetime.fromisoformat(at)
    except (TypeError, ValueError):
        raise UnreadableAuditRowError(seq, "its timestamp is not a time") from None
    try:
        document = json.loads(facts)
    except (TypeError, ValueError):
        raise UnreadableAuditRowError(seq, "its facts are not JSON") from None
    if not isinstance(document, dict):
        raise UnreadableAuditRowError(seq, "its facts are not a JSON object")
    return AuditRow(seq, as_utc(when), event, target, rotation_id, document, digest, key_id)


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


def chain_hash(previous: str, payload: bytes, key: ChainKey | None = None) -> str:
    """SHA-256 (hex) over the previous row's hash and this row's canonical JSON; HMAC-SHA256
    with ``key`` when given."""
    data = previous.encode("ascii") + payload
    return key.mac(data) if key is not None else hashlib.sha256(data).hexdigest()


def row_hash(row: AuditRow, previous: str, key: ChainKey | None = None) -> str:
    """What ``row.hash`` must be if the row is intact and follows a row hashed ``previous``
    (chained with ``key``, or with none)."""
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
        key,
    )


_HEAD = Stmt("SELECT seq, hash FROM audit_head WHERE id = 1")
_HEAD_FOR_UPDATE = Stmt("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
_SET_HEAD = Stmt("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1")
_INSERT = Stmt(f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_STORED = f"SELECT {AUDIT_COLUMNS} FROM audit_log"
_ALL = Stmt(f"{_STORED} ORDER BY seq")
_NEWEST = {
    (False, False): Stmt(f"{_STORED} ORDER BY seq DESC"),
    (True, False): Stmt(f"{_STORED} WHERE target = ? ORDER BY seq DESC"),
    (False, True): Stmt(f"{_STORED} ORDER BY seq DESC LIMIT ?"),
    (True, True): Stmt(f"{_STORED} WHERE target = ? ORDER BY seq DESC LIMIT ?"),
}
_MISSING_HEAD = "the audit head is missing: the state database is not migrated"


def append(
    tx: Tx,
    *,
    at: datetime,
    event: str,
    target: str | None,
    rotation_id: str | None,
    facts: dict[str, JsonValue],
    key: ChainKey | None = None,
) -> AuditEvent:
    """Add the next row in ``tx`` (values already checked by the guard), chained with ``key``
    when one is configured. Locks the head row, which serialises appends."""
    head = tx.one(_HEAD_FOR_UPDATE)
    if head is None:
        raise RuntimeError(_MISSING_HEAD)
    seq = head[0] + 1
    payload = canonical_json(
        seq=seq, at=at, event=event, target=target, rotation_id=rotation_id, facts=facts
    )
    digest = chain_hash(head[1], payload, key)
    key_id = key.id if key is not None else None
    d = tx.d
    tx.run(_INSERT, (seq, d.ts(at), event, target, rotation_id, d.json(facts), digest, key_id))
    tx.run(_SET_HEAD, (seq, digest))
    return AuditEvent(seq, at, event, target, rotation_id, dict(facts), digest, key_id)


def events(tx: Tx, target: str | None = None, limit: int | None = None) -> list[AuditEvent]:
    """The events, newest first, optionally one target's, at most ``limit``; raises
    UnreadableAuditRowError."""
    params: list[object] = [] if target is None else [target]
    if limit is not None:
        params.append(limit)
    rows = tx.all(_NEWEST[target is not None, limit is not None], params)
    return [decode(row).event_record() for row in rows]


def head_of(tx: Tx) -> AuditHead:
    """The recorded head, as the daemon publishes it."""
    head = tx.one(_HEAD)
    if head is None:
        raise RuntimeError(_MISSING_HEAD)
    return AuditHead(rows=head[0], head_hash=head[1])


def verify(tx: Tx, key: ChainKey | None = None, anchor: AuditAnchor | None = None) -> AuditVerdict:
    """Walk the chain from row 1; the first missing, altered, unreadable, misplaced or
    downgraded row fails it, and so does a published ``anchor`` the chain no longer holds."""
    head = tx.one(_HEAD)
    with contextlib.closing(tx.stream(_ALL)) as rows:  # ends the read on an early verdict
        return check_chain(rows, (head[0], head[1]) if head else None, key, anchor)


def check_chain(
    rows: Iterable[Any],
    head: tuple[int, str] | None,
    key: ChainKey | None = None,
    anchor: AuditAnchor | None = None,
) -> AuditVerdict:
    """The verdict on ``rows`` (stored rows as :func:`decode` takes them, in seq order)
    against the recorded ``head`` (its seq and hash), the configured ``key`` and a published
    ``anchor``."""
    walk = _Walk(key, anchor or AuditAnchor())
    for stored in rows:
        problem = walk.step(stored)
        if problem is not None:
            return walk.verdict(*problem)
    tail = _tail_problem(head, last=walk.count, last_hash=walk.previous) or walk.anchor_problem()
    return walk.verdict(*tail) if tail is not None else walk.verdict()


class _Walk:
    """The state of a walk down the chain: rows read, the last hash, the keyed rows."""

    def __init__(self, key: ChainKey | None, anchor: AuditAnchor) -> None:
        self.key, self.anchor = key, anchor
        self.previous, self.count, self.keyed = GENESIS_HASH, 0, 0
        self.key_id = key.id if key is not None else None
        self.anchored = False
        self.unverifiable = False

    def step(self, stored: Any) -> tuple[int, str] | None:
        """Check the next row; (its seq, the problem) if it breaks the chain."""
        expected = self.count + 1
        if stored[0] != expected:
            return expected, f"row {expected} is missing"
        try:
            row = decode(stored)
        except UnreadableAuditRowError as exc:
            return exc.seq, exc.problem
        key = self._key_of(row)
        if isinstance(key, tuple):
            return key
        if row_hash(row, self.previous, key) != row.hash:
            return (
                row.seq,
                f"row {row.seq} does not match its hash: altered, or moved from elsewhere",
            )
        self.count, self.previous = row.seq, row.hash
        if self.anchor.head is not None and self.anchor.count in (None, row.seq):
            self.anchored = self.anchored or row.hash.startswith(self.anchor.head)
        return None

    def _key_of(self, row: AuditRow) -> ChainKey | tuple[int, str] | None:
        """The key ``row`` must be chained with, or (its seq, the problem)."""
        if row.hmac_key_id is None:
            if self.keyed:
                return row.seq, (
                    f"row {row.seq} is chained without the HMAC key after keyed rows: rewritten "
                    "by someone who does not hold the key"
                )
            return None
        self.unverifiable = self.key is None or row.hmac_key_id != self.key.id
        if self.key is None:
            self.key_id = row.hmac_key_id
            return row.seq, (
                f"rows {row.seq}.. are chained with HMAC key {row.hmac_key_id} and no "
                f"audit.hmac_key is configured: configure it to verify them "
                f"(rows 1..{row.seq - 1} verify)"
            )
        if self.unverifiable:
            return row.seq, (
                f"row {row.seq} is chained with HMAC key {row.hmac_key_id}, audit.hmac_key is "
                f"key {self.key.id}: the wrong key is configured, or the row was altered "
                f"(rows 1..{row.seq - 1} verify)"
            )
        self.keyed += 1
        return self.key

    def anchor_problem(self) -> tuple[int | None, str] | None:
        """How the chain fails the published anchor, if it does."""
        count, want = self.anchor.count, self.anchor.head
        if count is not None and count > self.count:
            return self.count + 1, (
                f"rows {self.count + 1}..{count} are missing from the end (the chain had "
                f"{count} rows when its head was published): the tail was cut"
            )
        if want is None or self.anchored:
            return None
        if count is not None:
            return count, f"row {count}'s hash does not start with {want}: the chain was rewritten"
        return None, f"no row's hash starts with {want}: the chain was rewritten"

    def verdict(self, seq: int | None = None, problem: str | None = None) -> AuditVerdict:
        return AuditVerdict(
            ok=problem is None,
            rows=self.count,
            head_hash=self.previous,
            first_bad_seq=seq,
            problem=problem,
            unverifiable=self.unverifiable and problem is not None,
            keyed=self.keyed,
            hmac_key_id=self.key_id,
        )


def _tail_problem(
    head: tuple[int, str] | None, *, last: int, last_hash: str
) -> tuple[int, str] | None:
    """Where the rows read disagree with the recorded head: (first bad seq, problem)."""
    if head is None:
        return last + 1, "the audit head row is missing"
    seq, digest = head
    if seq > last:
        return last + 1, f"rows {last + 1}..{seq} are missing from the end"
    if seq < last:
        return seq + 1, f"row {seq + 1} is past the recorded head"
    if digest != last_hash:
        return last, f"the audit head's hash does not match row {last}"
    return None
