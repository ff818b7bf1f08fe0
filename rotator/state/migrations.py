"""Versioned schema migrations in plain SQL, applied in one transaction.

``schema_version`` holds one row per migration applied; the database's version is the highest.
:func:`migrate` applies the missing ones in order and keeps every existing row. It refuses a
database written by a newer rotator (:class:`SchemaTooNewError`) and tables of ours without a
``schema_version`` (:class:`SchemaError`). Concurrent migrators are serialised: PostgreSQL by a
transaction-level advisory lock, SQLite by ``BEGIN IMMEDIATE`` (see :mod:`rotator.state.database`).

Each migration is the SQL that creates or alters the tables as they were at that version, the
same statements on both databases but for the type of a time (:data:`TIMESTAMP`), which is
``DATETIME`` on SQLite and ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL. Migrations 1 to 4 are, word
for word, the DDL SQLAlchemy emitted for them before issue 14, so a database created by either
has the same schema. To change the schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog

from rotator.errors import SchemaError, SchemaTooNewError
from rotator.state.sql import Stmt, Tx

log = structlog.get_logger(__name__)

GENESIS_HASH = "0" * 64
"""The "previous hash" of the first audit row."""

LOCK_KEY = 0x726F7461746F72  # "rotator": the advisory lock id that serialises migrators

TIMESTAMP = "TIMESTAMP_UTC"
"""Stands for the type of a UTC time in the migrations' SQL (see :data:`TIMESTAMP_TYPES`)."""
TIMESTAMP_TYPES = {"sqlite": "DATETIME", "postgresql": "TIMESTAMP WITH TIME ZONE"}


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, what it brings, and its SQL (statements separated by
    ``;``, comments on lines of their own, times typed :data:`TIMESTAMP`)."""

    version: int
    description: str
    sql: str

    def statements(self, dialect: str) -> list[str]:
        """The migration's statements for ``dialect`` (``sqlite`` or ``postgresql``)."""
        lines = (line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        text = "\n".join(lines).replace(TIMESTAMP, TIMESTAMP_TYPES[dialect])
        return [s.strip() for s in text.split(";") if s.strip()]


SCHEMA_VERSION_SQL = f"""
CREATE TABLE schema_version (
    version INTEGER NOT NULL,
    description VARCHAR(255) NOT NULL,
    applied_at {TIMESTAMP} NOT NULL,
    PRIMARY KEY (version)
)
"""

V1_INITIAL = f"""
CREATE TABLE target_states (
    target VARCHAR(128) NOT NULL,
    key_id VARCHAR(64),
    key_fingerprint VARCHAR(16),
    key_created_at {TIMESTAMP},
    key_expiration DATE,
    key_rotation_id VARCHAR(64),
    last_rotated_at {TIMESTAMP},
    consecutive_failures INTEGER DEFAULT 0 NOT NULL,
    backoff_until {TIMESTAMP},
    updated_at {TIMESTAMP} NOT NULL,
    PRIMARY KEY (target)
);
CREATE TABLE audit_log (
    seq INTEGER NOT NULL,
    at {TIMESTAMP} NOT NULL,
    event VARCHAR(64) NOT NULL,
    target VARCHAR(128),
    rotation_id VARCHAR(64),
    facts JSON NOT NULL,
    hash VARCHAR(64) NOT NULL,
    PRIMARY KEY (seq)
);
CREATE INDEX ix_audit_log_target ON audit_log (target);
CREATE TABLE retiring_keys (
    target VARCHAR(128) NOT NULL,
    key_id VARCHAR(64) NOT NULL,
    fingerprint VARCHAR(16),
    rotation_id VARCHAR(64),
    revoke_due_at {TIMESTAMP} NOT NULL,
    added_at {TIMESTAMP} NOT NULL,
    PRIMARY KEY (target, key_id),
    FOREIGN KEY(target) REFERENCES target_states (target) ON DELETE CASCADE
);
CREATE INDEX ix_retiring_keys_due ON retiring_keys (revoke_due_at);
CREATE TABLE rotations (
    rotation_id VARCHAR(64) NOT NULL,
    target VARCHAR(128) NOT NULL,
    state VARCHAR(64) NOT NULL,
    started_at {TIMESTAMP} NOT NULL,
    finished_at {TIMESTAMP},
    outcome VARCHAR(64),
    error TEXT,
    emergency BOOLEAN NOT NULL,
    new_key_id VARCHAR(64),
    new_key_name VARCHAR(255),
    new_key_fingerprint VARCHAR(16),
    old_key_ids JSON NOT NULL,
    PRIMARY KEY (rotation_id),
    FOREIGN KEY(target) REFERENCES target_states (target)
);
CREATE INDEX ix_rotations_target_started ON rotations (target, started_at);
CREATE UNIQUE INDEX uq_rotations_one_open ON rotations (target) WHERE finished_at IS NULL;
CREATE TABLE journal_steps (
    rotation_id VARCHAR(64) NOT NULL,
    seq INTEGER NOT NULL,
    step VARCHAR(64) NOT NULL,
    at {TIMESTAMP} NOT NULL,
    facts JSON NOT NULL,
    PRIMARY KEY (rotation_id, seq),
    CONSTRAINT uq_journal_steps_step UNIQUE (rotation_id, step),
    FOREIGN KEY(rotation_id) REFERENCES rotations (rotation_id) ON DELETE CASCADE
)
"""

V2_ADOPTION_AND_AUDIT_HEAD = f"""
ALTER TABLE target_states ADD COLUMN adopted_key_id VARCHAR(64);
CREATE TABLE audit_head (
    id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash VARCHAR(64) NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT ck_audit_head_single CHECK (id = 1)
);
-- The head starts at the last existing audit row, so a log written by v1 still verifies.
INSERT INTO audit_head (id, seq, hash)
SELECT 1, COALESCE(MAX(seq), 0),
       COALESCE((SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1), '{GENESIS_HASH}')
FROM audit_log
"""

V3_FIRST_SEEN = f"""
-- When rotator first saw each target: the daemon anchors a never-rotated target's first
-- scheduled fire to it. Existing rows get their updated_at, the oldest time v3 can know of.
ALTER TABLE target_states ADD COLUMN first_seen_at {TIMESTAMP};
UPDATE target_states SET first_seen_at = updated_at
"""

V4_AUDIT_HMAC_KEY_ID = """
-- Which HMAC key each audit row is chained with (audit.hmac_key). Existing rows keep NULL:
-- they were chained with plain SHA-256 and still verify so.
ALTER TABLE audit_log ADD COLUMN hmac_key_id VARCHAR(16)
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "targets, retiring keys, rotations, journal, audit log", V1_INITIAL),
    Migration(2, "adopted key per target; audit head", V2_ADOPTION_AND_AUDIT_HEAD),
    Migration(3, "first time each target was seen", V3_FIRST_SEEN),
    Migration(4, "the HMAC key each audit row is chained with", V4_AUDIT_HMAC_KEY_ID),
)
LATEST = MIGRATIONS[-1].version

_OUR_TABLES = frozenset({"target_states", "retiring_keys", "rotations", "journal_steps"})

_TABLES_SQLITE = Stmt("SELECT name FROM sqlite_master WHERE type = 'table'")
_TABLES_POSTGRESQL = Stmt(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
)
_ADVISORY_LOCK = Stmt("SELECT pg_advisory_xact_lock(?)")
_VERSION = Stmt("SELECT COALESCE(MAX(version), 0) FROM schema_version")
_RECORD = Stmt("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)")


def table_names(tx: Tx) -> set[str]:
    """The tables of the database (PostgreSQL: of the current schema)."""
    query = _TABLES_POSTGRESQL if tx.d.postgresql else _TABLES_SQLITE
    return {name for (name,) in tx.all(query)}


def current_version(tx: Tx) -> int:
    """The schema version of the database (0 when it has no ``schema_version`` table)."""
    if "schema_version" not in table_names(tx):
        return 0
    row = tx.one(_VERSION)
    return int(row[0]) if row else 0


def migrate(tx: Tx, *, now: datetime, where: str, upto: int = LATEST) -> int:
    """Bring the database to version ``upto`` (default: the latest) in ``tx`` and return it.

    Applies the missing migrations in order (all or none: the caller's transaction). Idempotent.
    Raises :class:`SchemaTooNewError` if the database is newer than this code knows,
    :class:`SchemaError` if it holds rotator tables without a ``schema_version``, ``ValueError``
    for a bad ``upto``. ``where`` names the database in errors and logs.
    """
    if not 0 <= upto <= LATEST:
        raise ValueError(f"no schema version {upto} (latest is {LATEST})")
    if tx.d.postgresql:
        tx.one(_ADVISORY_LOCK, (LOCK_KEY,))
    version = current_version(tx)
    if version > LATEST:
        raise SchemaTooNewError(
            where,
            "schema_version",
            f"the database is at schema v{version}, newer than this rotator knows "
            f"(v{LATEST}): upgrade rotator, or point state.url at another database",
        )
    if version == 0:
        found = _OUR_TABLES & table_names(tx)
        if found:
            raise SchemaError(
                where,
                "schema_version",
                f"tables {', '.join(sorted(found))} exist without a schema_version table: "
                "not a database rotator migrated; refusing to touch it",
            )
        _execute(tx, Migration(0, "", SCHEMA_VERSION_SQL))
    for migration in MIGRATIONS[version:upto]:
        _execute(tx, migration)
        tx.run(_RECORD, (migration.version, migration.description, tx.d.ts(now)))
        log.info("state_schema_migrated", version=migration.version, database=where)
    return max(version, upto)


def _execute(tx: Tx, migration: Migration) -> None:
    for statement in migration.statements(tx.d.name):
        tx.run(Stmt(statement))
