"""The state store: per-target state, rotations and their journal, and the audit log.

``SqlStateStore(url)`` implements :class:`rotator.contracts.StateStore` on SQLite (stdlib
``sqlite3``, the default) or PostgreSQL (psycopg 3); :mod:`rotator.state.migrations` owns the
schema, :mod:`rotator.state.ops` what each transaction does.
"""

from __future__ import annotations

from rotator.errors import SchemaError, SchemaTooNewError
from rotator.state.migrations import LATEST as LATEST_SCHEMA
from rotator.state.store import SqlStateStore

__all__ = ["LATEST_SCHEMA", "SchemaError", "SchemaTooNewError", "SqlStateStore"]
