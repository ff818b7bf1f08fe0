"""Versioned schema migrations: an ordered list of functions, applied in one transaction.

``schema_version`` holds one row per migration applied; the database's version is the highest.
:func:`migrate` applies the missing ones in order and keeps every existing row. It refuses a
database written by a newer rotator (:class:`SchemaTooNewError`) and tables of ours without a
``schema_version`` (:class:`SchemaError`). Concurrent migrators are serialised: PostgreSQL by a
transaction-level advisory lock, SQLite by ``BEGIN IMMEDIATE`` (see :mod:`rotator.state.database`).

Each migration defines the tables it creates as they were at that version, never by importing
:mod:`rotator.state.models` (which is the latest shape). To change the schema, append a
migration; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Date,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    inspect,
    select,
    text,
)

from rotator.errors import SchemaError, SchemaTooNewError
from tests.support.legacy_state.models import (
    FINGERPRINT,
    HMAC_KEY_ID,
    ID,
    LABEL,
    NAME,
    ONE_OPEN_ROTATION,
    OPEN_ROTATION_WHERE,
    TARGET,
    JsonType,
    SchemaVersion,
    UtcDateTime,
)

log = structlog.get_logger(__name__)

GENESIS_HASH = "0" * 64
"""The "previous hash" of the first audit row."""

_LOCK_KEY = 0x726F7461746F72  # "rotator": the advisory lock id that serialises migrators


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    md = MetaData()
    Table(
        "target_states",
        md,
        Column("target", String(TARGET), primary_key=True),
        Column("key_id", String(ID)),
        Column("key_fingerprint", String(FINGERPRINT)),
        Column("key_created_at", UtcDateTime),
        Column("key_expiration", Date),
        Column("key_rotation_id", String(ID)),
        Column("last_rotated_at", UtcDateTime),
        Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
        Column("backoff_until", UtcDateTime),
        Column("updated_at", UtcDateTime, nullable=False),
    )
    Table(
        "retiring_keys",
        md,
        Column(
            "target",
            String(TARGET),
            ForeignKey("target_states.target", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("key_id", String(ID), primary_key=True),
        Column("fingerprint", String(FINGERPRINT)),
        Column("rotation_id", String(ID)),
        Column("revoke_due_at", UtcDateTime, nullable=False),
        Column("added_at", UtcDateTime, nullable=False),
        Index("ix_retiring_keys_due", "revoke_due_at"),
    )
    Table(
        "rotations",
        md,
        Column("rotation_id", String(ID), primary_key=True),
        Column("target", String(TARGET), ForeignKey("target_states.target"), nullable=False),
        Column("state", String(LABEL), nullable=False),
        Column("started_at", UtcDateTime, nullable=False),
        Column("finished_at", UtcDateTime),
        Column("outcome", String(LABEL)),
        Column("error", Text),
        Column("emergency", Boolean, nullable=False),
        Column("new_key_id", String(ID)),
        Column("new_key_name", String(NAME)),
        Column("new_key_fingerprint", String(FINGERPRINT)),
        Column("old_key_ids", JsonType, nullable=False),
        Index("ix_rotations_target_started", "target", "started_at"),
        Index(
            ONE_OPEN_ROTATION,
            "target",
            unique=True,
            sqlite_where=text(OPEN_ROTATION_WHERE),
            postgresql_where=text(OPEN_ROTATION_WHERE),
        ),
    )
    Table(
        "journal_steps",
        md,
        Column(
            "rotation_id",
            String(ID),
            ForeignKey("rotations.rotation_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("step", String(LABEL), nullable=False),
        Column("at", UtcDateTime, nullable=False),
        Column("facts", JsonType, nullable=False),
        UniqueConstraint("rotation_id", "step", name="uq_journal_steps_step"),
    )
    Table(
        "audit_log",
        md,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("at", UtcDateTime, nullable=False),
        Column("event", String(LABEL), nullable=False),
        Column("target", String(TARGET)),
        Column("rotation_id", String(ID)),
        Column("facts", JsonType, nullable=False),
        Column("hash", String(64), nullable=False),
        Index("ix_audit_log_target", "target"),
    )
    md.create_all(conn)


def _v2_adoption_and_audit_head(conn: Connection) -> None:
    """Adopted keys per target; the audit head, filled from the last existing audit row so a
    log written by v1 still verifies."""
    conn.execute(text(f"ALTER TABLE target_states ADD COLUMN adopted_key_id VARCHAR({ID})"))
    md = MetaData()
    head = Table(
        "audit_head",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("seq", Integer, nullable=False),
        Column("hash", String(64), nullable=False),
        CheckConstraint("id = 1", name="ck_audit_head_single"),
    )
    md.create_all(conn)
    audit = Table("audit_log", MetaData(), autoload_with=conn)
    last = conn.execute(
        select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
    ).first()
    seq, digest = (last.seq, last.hash) if last is not None else (0, GENESIS_HASH)
    conn.execute(insert(head).values(id=1, seq=seq, hash=digest))


def _v3_first_seen(conn: Connection) -> None:
    """When rotator first saw each target: the daemon anchors a never-rotated target's first
    scheduled fire to it, so restarts never postpone that fire. Existing rows get their
    ``updated_at``, the oldest time this version can know of."""
    column_type = UtcDateTime().compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE target_states ADD COLUMN first_seen_at {column_type}"))
    conn.execute(text("UPDATE target_states SET first_seen_at = updated_at"))


def _v4_audit_hmac_key_id(conn: Connection) -> None:
    """Which HMAC key each audit row is chained with (``audit.hmac_key``). Existing rows keep
    NULL: they were chained with plain SHA-256 and still verify so; rows appended with a key
    configured record its id."""
    conn.execute(text(f"ALTER TABLE audit_log ADD COLUMN hmac_key_id VARCHAR({HMAC_KEY_ID})"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "targets, retiring keys, rotations, journal, audit log", _v1_initial),
    Migration(2, "adopted key per target; audit head", _v2_adoption_and_audit_head),
    Migration(3, "first time each target was seen", _v3_first_seen),
    Migration(4, "the HMAC key each audit row is chained with", _v4_audit_hmac_key_id),
)
LATEST = MIGRATIONS[-1].version

_OUR_TABLES = frozenset({"target_states", "retiring_keys", "rotations", "journal_steps"})


def current_version(conn: Connection) -> int:
    """The schema version of the database (0 when it has no ``schema_version`` table)."""
    if not inspect(conn).has_table(SchemaVersion.__tablename__):
        return 0
    return int(conn.execute(select(func.coalesce(func.max(SchemaVersion.version), 0))).scalar_one())


def migrate(engine: Engine, *, now: datetime, upto: int = LATEST) -> int:
    """Bring the database to version ``upto`` (default: the latest) and return it.

    Applies the missing migrations in order in one transaction (all or none). Idempotent.
    Raises :class:`SchemaTooNewError` if the database is newer than this code knows,
    :class:`SchemaError` if it holds rotator tables without a ``schema_version``, ``ValueError``
    for a bad ``upto``.
    """
    if not 0 <= upto <= LATEST:
        raise ValueError(f"no schema version {upto} (latest is {LATEST})")
    where = engine.url.render_as_string(hide_password=True)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
        version = current_version(conn)
        if version > LATEST:
            raise SchemaTooNewError(
                where,
                "schema_version",
                f"the database is at schema v{version}, newer than this rotator knows "
                f"(v{LATEST}): upgrade rotator, or point state.url at another database",
            )
        if version == 0:
            found = _OUR_TABLES & set(inspect(conn).get_table_names())
            if found:
                raise SchemaError(
                    where,
                    "schema_version",
                    f"tables {', '.join(sorted(found))} exist without a schema_version table: "
                    "not a database rotator migrated; refusing to touch it",
                )
            SchemaVersion.metadata.tables[SchemaVersion.__tablename__].create(conn)
        for migration in MIGRATIONS[version:upto]:
            migration.apply(conn)
            conn.execute(
                insert(SchemaVersion).values(
                    version=migration.version, description=migration.description, applied_at=now
                )
            )
            log.info("state_schema_migrated", version=migration.version, database=where)
        return max(version, upto)
