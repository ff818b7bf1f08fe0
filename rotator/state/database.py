"""Opening the state database and running transactions on it: stdlib ``sqlite3`` or ``psycopg``.

One connection per store, used by one thread at a time (a lock): a transaction of this process
never waits on the database for another of this process, only for other processes' (SQLite's
busy timeout, PostgreSQL's row locks), and a waiting thread wakes the moment the lock is free
instead of polling as SQLite's busy handler does.

SQLite (the default): one file whose parent directory is created mode 0700 and the file itself
0600; WAL journal, ``synchronous=FULL`` (a commit is on disk before the side effect it
announces), foreign keys on, a busy timeout; write transactions open with ``BEGIN IMMEDIATE``
so writers queue for the lock up front instead of failing halfway, reads with a plain ``BEGIN``
(a snapshot that never blocks a writer), single-statement reads with none.
PostgreSQL: ``postgresql[+psycopg]://…`` through psycopg 3 in autocommit mode with explicit
``BEGIN`` (reads: ``REPEATABLE READ READ ONLY``, one snapshot); a connection found dead when a
transaction starts is replaced once, as a pool's pre-ping would.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar

from rotator.config import state_url_problem
from rotator.config.dburl import DatabaseUrl, parse_database_url
from rotator.contracts import TargetLock
from rotator.errors import ConfigError
from rotator.state import locks
from rotator.state.sql import POSTGRESQL, SQLITE, Cursor, Dialect, Tx

if TYPE_CHECKING:
    import psycopg

P = ParamSpec("P")
T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's lock before giving up."""

Mode = Literal["write", "read", "once"]
"""``write``: a transaction that may change rows (SQLite ``BEGIN IMMEDIATE``). ``read``: several
reads from one snapshot. ``once``: a single read statement, which is its own transaction."""


class StateUrlError(ConfigError):
    """``state.url`` names no usable state (exit 2). Callers that know the configuration file
    report :attr:`problem` under its name (see :func:`rotator.app.wiring.build_engine`)."""

    def __init__(self, problem: str) -> None:
        super().__init__("state.url", "", problem)


class Database:
    """One state database: its dialect, this store's connection to it and its target locks."""

    dialect: Dialect
    transient: tuple[type[Exception], ...] = ()
    """Driver errors that mean "down or busy, try later" (:class:`TransientError`)."""
    corrupt: tuple[type[Exception], ...] = ()
    """Driver errors that mean "this is not a state database"."""

    def __init__(self, url: DatabaseUrl) -> None:
        self.url = url.safe()
        """The URL with any password masked."""
        self._lock = threading.Lock()
        self._conn: Any = None
        self._cur: Cursor | None = None
        self._pid = os.getpid()

    def run(
        self, mode: Mode, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(tx, …)`` in one transaction, committed if it returns, rolled back if it raises
        (or sets ``tx.rollback``). Blocks while another thread of this process runs one."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child never uses its parent's connection
                self._conn, self._cur, self._pid = None, None, os.getpid()
            retried = False
            while True:
                cur = self._cur if self._cur is not None else self._open()
                tx = Tx(cur, self.dialect)
                try:
                    self._begin(cur, mode)
                    result = fn(tx, *args, **kwargs)
                    if mode != "once":
                        cur.execute("ROLLBACK" if tx.rollback else "COMMIT")
                except BaseException as exc:
                    dropped = self._abort()
                    # A connection found dead before anything was written is replaced once.
                    safe = mode != "write" or tx.sent == 0
                    if dropped and safe and not retried and isinstance(exc, self.transient):
                        retried = True
                        continue
                    raise
                return result

    def close(self) -> None:
        """Close the connection (the next transaction opens a new one). Idempotent."""
        with self._lock:
            self._drop()

    def try_lock(self, target: str) -> TargetLock | None:
        """The per-target lock (see :mod:`rotator.state.locks`), or None if held elsewhere."""
        raise NotImplementedError

    def _open(self) -> Cursor:
        raise NotImplementedError

    def _begin(self, cur: Cursor, mode: Mode) -> None:
        raise NotImplementedError

    def _in_transaction(self) -> bool:
        raise NotImplementedError

    def _broken(self) -> bool:
        raise NotImplementedError

    def _abort(self) -> bool:
        """Roll back after a failure; drop the connection if it is unusable (True then)."""
        if self._conn is None:
            return False
        try:
            if self._in_transaction():
                self._conn.rollback()
        except Exception:  # noqa: BLE001 - a connection that cannot roll back is dropped
            self._drop()
            return True
        if self._broken():
            self._drop()
            return True
        return False

    def _drop(self) -> None:
        conn, self._conn, self._cur = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class SqliteDatabase(Database):
    """A SQLite file (see the module's docstring for its settings)."""

    dialect = SQLITE
    transient = (sqlite3.OperationalError, sqlite3.InterfaceError)
    corrupt = (sqlite3.DatabaseError,)

    def __init__(self, url: DatabaseUrl, *, create: bool) -> None:
        super().__init__(url)
        self.path = Path(url.database or "").expanduser()
        if create:
            _prepare_file(self.path)
        elif not self.path.exists():
            raise StateUrlError(f"no state at {self.path} (has rotator run yet?)")

    def _open(self) -> Cursor:
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,  # autocommit: BEGIN and COMMIT are ours
            check_same_thread=False,  # used by one thread at a time, under self._lock
            cached_statements=256,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        except BaseException:
            conn.close()
            raise
        self._conn, self._cur = conn, conn.cursor()
        return self._cur

    def _begin(self, cur: Cursor, mode: Mode) -> None:
        if mode == "write":
            cur.execute("BEGIN IMMEDIATE")
        elif mode == "read":
            cur.execute("BEGIN")

    def _in_transaction(self) -> bool:
        return bool(self._conn.in_transaction)

    def _broken(self) -> bool:
        return False

    def try_lock(self, target: str) -> TargetLock | None:
        return locks.try_file_lock(self.path, target)


class PostgresDatabase(Database):
    """A PostgreSQL database through psycopg 3 (the ``postgres`` extra)."""

    dialect = POSTGRESQL

    def __init__(self, url: DatabaseUrl) -> None:
        import psycopg

        super().__init__(url)
        self.transient = (psycopg.OperationalError, psycopg.InterfaceError)
        self._conninfo = url.libpq()
        self._locks = locks.PgLocks(self._conninfo)

    def _open(self) -> Cursor:
        import psycopg
        from psycopg.types.string import TextLoader

        conn: psycopg.Connection[Any] = psycopg.connect(self._conninfo, autocommit=True)
        conn.adapters.register_loader("json", TextLoader)  # JSON as the text stored
        self._conn, self._cur = conn, conn.cursor()
        return self._cur

    def _begin(self, cur: Cursor, mode: Mode) -> None:
        if mode == "write":
            cur.execute("BEGIN")
        elif mode == "read":
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self._conn.info.transaction_status != TransactionStatus.IDLE)

    def _broken(self) -> bool:
        return bool(self._conn.broken or self._conn.closed)

    def try_lock(self, target: str) -> TargetLock | None:
        return self._locks.try_lock(target)

    def close(self) -> None:
        super().close()
        self._locks.close()


def open_database(url: str, *, create: bool = True) -> Database:
    """The database of a ``sqlite:///path`` or ``postgresql[+psycopg]://`` URL; nothing is
    connected until the first transaction.

    A SQLite file (and its folder) is created when missing, unless ``create`` is false: the
    read-only commands say there is no state instead of creating an empty one. Raises
    :class:`StateUrlError` for a URL :func:`rotator.config.state_url_problem` refuses, or a
    SQLite file that is missing when ``create`` is false.
    """
    problem = state_url_problem(url)
    if problem:
        raise StateUrlError(problem)
    parsed = parse_database_url(url)
    if parsed.backend == "sqlite":
        return SqliteDatabase(parsed, create=create)
    return PostgresDatabase(parsed)


def _prepare_file(path: Path) -> None:
    """Create the parent directory (0700) and the file (0600) if missing: the journal is not a
    secret, but it is nobody else's business either."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
