"""Opening the state database: one SQLAlchemy engine per store, set up for safe short writes.

SQLite (the default): one file whose parent directory is created mode 0700 and the file itself
0600; WAL journal, foreign keys on, a busy timeout, and every transaction opened with
``BEGIN IMMEDIATE`` so writers queue for the lock up front instead of failing halfway (pysqlite's
own transaction handling is switched off, as SQLAlchemy's documentation recommends).
PostgreSQL: ``postgresql+psycopg://…`` with connections checked before use.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from rotator.config import state_url_problem
from rotator.state.database import BUSY_TIMEOUT_S, StateUrlError, _prepare_file


def create_state_engine(url: str | URL, *, create: bool = True) -> Engine:
    """An engine for a ``sqlite:///path`` or ``postgresql+psycopg://`` URL.

    A SQLite file (and its folder) is created when missing, unless ``create`` is false: the
    read-only commands say there is no state instead of creating an empty one. Raises
    :class:`StateUrlError` for a URL :func:`rotator.config.state_url_problem` refuses, or a
    SQLite file that is missing when ``create`` is false.
    """
    problem = state_url_problem(url)
    if problem:
        raise StateUrlError(problem)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, create=create)
    if parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True)


def _sqlite_engine(url: URL, *, create: bool) -> Engine:
    path = Path(url.database or "").expanduser()
    if create:
        _prepare_file(path)
    elif not path.exists():
        raise StateUrlError(f"no state at {path} (has rotator run yet?)")
    engine = create_engine(
        url.set(database=str(path)),
        connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_sqlite_begin)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
