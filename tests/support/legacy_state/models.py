"""The state database's tables as typed SQLAlchemy 2 ORM classes (the latest schema version).

The schema is created and upgraded only by :mod:`rotator.state.migrations`; these classes map it
and must match it column for column (a test compares them with a migrated database). No column
can hold a plaintext key: every value is an identifier, a fingerprint, a timestamp, a count,
scrubbed error text or JSON facts checked by :mod:`rotator.state.guard`.

::

    target_states 1──* retiring_keys      keys replaced, valid until revoke_due_at
          1
          └──* rotations 1──* journal_steps  one step per (rotation_id, step), ordered by seq
    audit_log (seq 1..n, hash- or HMAC-chained)  ·  audit_head (seq, hash of the last row)
    schema_version (one row per migration applied)
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID = 64
"""Length of id columns: Mistral key ids and rotation ids are UUID strings (36)."""
NAME = 255
"""Mistral key names are at most 255 characters."""
FINGERPRINT = 16
"""Fingerprints are 12 hex characters."""
TARGET = 128
HMAC_KEY_ID = 16
"""The id of an audit HMAC key: 16 hex characters derived from the key, never the key."""
LABEL = 64
"""States, outcomes, steps and event names."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps naive UTC text).

    Binding a naive datetime raises ``ValueError``: a time without a zone is a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,
    ) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives it back naive, meaning UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonType = JSON()
"""JSON facts, kept as the exact text written (PostgreSQL ``json``, not ``jsonb``, which would
rewrite numbers such as ``1e+20`` and so change what an audit row's hash covers)."""

ONE_OPEN_ROTATION = "uq_rotations_one_open"
"""The partial unique index that allows one open rotation per target."""
OPEN_ROTATION_WHERE = "finished_at IS NULL"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, date: Date}


class SchemaVersion(Base):
    """One row per migration applied; the schema's version is the highest."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    description: Mapped[str] = mapped_column(String(NAME))
    applied_at: Mapped[datetime]


class TargetRow(Base):
    __tablename__ = "target_states"

    target: Mapped[str] = mapped_column(String(TARGET), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(String(ID))
    key_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT))
    key_created_at: Mapped[datetime | None]
    key_expiration: Mapped[date | None]
    key_rotation_id: Mapped[str | None] = mapped_column(String(ID))
    adopted_key_id: Mapped[str | None] = mapped_column(String(ID))
    last_rotated_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    backoff_until: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    first_seen_at: Mapped[datetime | None]


class RetiringKeyRow(Base):
    __tablename__ = "retiring_keys"
    __table_args__ = (Index("ix_retiring_keys_due", "revoke_due_at"),)

    target: Mapped[str] = mapped_column(
        String(TARGET), ForeignKey("target_states.target", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT))
    rotation_id: Mapped[str | None] = mapped_column(String(ID))
    revoke_due_at: Mapped[datetime]
    added_at: Mapped[datetime]


class RotationRow(Base):
    __tablename__ = "rotations"
    __table_args__ = (
        Index("ix_rotations_target_started", "target", "started_at"),
        Index(
            ONE_OPEN_ROTATION,
            "target",
            unique=True,
            sqlite_where=text(OPEN_ROTATION_WHERE),
            postgresql_where=text(OPEN_ROTATION_WHERE),
        ),
    )

    rotation_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    target: Mapped[str] = mapped_column(String(TARGET), ForeignKey("target_states.target"))
    state: Mapped[str] = mapped_column(String(LABEL))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(LABEL))
    error: Mapped[str | None] = mapped_column(Text)
    emergency: Mapped[bool] = mapped_column(Boolean)
    new_key_id: Mapped[str | None] = mapped_column(String(ID))
    new_key_name: Mapped[str | None] = mapped_column(String(NAME))
    new_key_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT))
    old_key_ids: Mapped[list[str]] = mapped_column(JsonType)


class JournalRow(Base):
    __tablename__ = "journal_steps"
    __table_args__ = (UniqueConstraint("rotation_id", "step", name="uq_journal_steps_step"),)

    rotation_id: Mapped[str] = mapped_column(
        String(ID), ForeignKey("rotations.rotation_id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    step: Mapped[str] = mapped_column(String(LABEL))
    at: Mapped[datetime]
    facts: Mapped[dict[str, Any]] = mapped_column(JsonType)


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(LABEL))
    target: Mapped[str | None] = mapped_column(String(TARGET))
    rotation_id: Mapped[str | None] = mapped_column(String(ID))
    facts: Mapped[dict[str, Any]] = mapped_column(JsonType)
    hash: Mapped[str] = mapped_column(String(64))
    hmac_key_id: Mapped[str | None] = mapped_column(String(HMAC_KEY_ID))
    """The id of the HMAC key the row is chained with; NULL: plain SHA-256 (no key)."""


class AuditHeadRow(Base):
    """The seq and hash of the last audit row, updated with every append (one row, id 1): rows
    cut off the end of the log no longer match it. Appends lock it, which serialises them."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="ck_audit_head_single"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
