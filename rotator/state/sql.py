"""The thin layer between the store and the DB-API drivers (``sqlite3``, ``psycopg``).

:class:`Stmt` is a statement written once in the SQL both dialects share; :class:`Dialect` turns
Python values into what each stores (times, dates, JSON) and back; :class:`Tx` is an open
transaction, what every function of :mod:`rotator.state.ops` takes, so several of them compose
into one transaction. No ORM, no statement building at run time: each statement's text for each
dialect is made once, at import, and the drivers cache what they prepare (``sqlite3``'s statement
cache, psycopg's automatic prepared statements).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from datetime import UTC, date, datetime
from typing import Any, Protocol

Row = tuple[Any, ...]
Params = Sequence[object]


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses (``sqlite3.Cursor``, ``psycopg.Cursor``)."""

    @property
    def rowcount(self) -> int: ...

    @property
    def connection(self) -> Any: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Stmt:
    """One statement with ``?`` placeholders, ending with ``FOR UPDATE`` where the rows it reads
    are locked for the transaction. PostgreSQL gets ``%s`` placeholders; SQLite drops ``FOR
    UPDATE`` (its write transactions, ``BEGIN IMMEDIATE``, hold the whole database)."""

    __slots__ = ("postgresql", "sqlite")

    def __init__(self, text: str) -> None:
        text = " ".join(text.split())
        if "%" in text:
            raise ValueError("a statement may not contain '%' (psycopg's placeholder sign)")
        self.sqlite = text.removesuffix(" FOR UPDATE")
        self.postgresql = text.replace("?", "%s")


class Dialect:
    """How one database stores what the store hands it. ``ts``/``day``/``json`` convert a value
    for a statement's parameters; the ``*_out`` ones convert what a query returns."""

    name = ""
    postgresql = False

    def ts(self, value: datetime | None) -> object:
        raise NotImplementedError

    def ts_out(self, value: Any) -> datetime | None:
        raise NotImplementedError

    def day(self, value: date | None) -> object:
        raise NotImplementedError

    def day_out(self, value: Any) -> date | None:
        raise NotImplementedError

    @staticmethod
    def json(value: object) -> str:
        """JSON text as written before issue 14 (``json.dumps`` with its defaults)."""
        return json.dumps(value)

    @staticmethod
    def json_out(value: str) -> Any:
        return json.loads(value)


class SqliteDialect(Dialect):
    """Times as naive UTC text with microseconds, dates as ISO text, booleans as 0/1."""

    name = "sqlite"

    def ts(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    def ts_out(self, value: Any) -> datetime | None:
        if value is None:
            return None
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)

    def day(self, value: date | None) -> str | None:
        return None if value is None else value.isoformat()

    def day_out(self, value: Any) -> date | None:
        return None if value is None else date.fromisoformat(value)


class PostgresDialect(Dialect):
    """psycopg adapts times (``timestamptz``) and dates; JSON columns are read as text (the
    connection's loader for ``json`` is the text one), written as text the server casts."""

    name = "postgresql"
    postgresql = True

    def ts(self, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value

    def ts_out(self, value: Any) -> datetime | None:
        return None if value is None else as_utc(value)

    def day(self, value: date | None) -> date | None:
        return value

    def day_out(self, value: Any) -> date | None:
        return value  # type: ignore[no-any-return]


SQLITE = SqliteDialect()
POSTGRESQL = PostgresDialect()


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (naive means UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Tx:
    """An open transaction on one connection: run statements, read rows. ``d`` is the dialect.
    Set :attr:`rollback` to end it with a rollback instead of a commit (what a probe does)."""

    __slots__ = ("_cur", "_pg", "d", "rollback", "sent")

    def __init__(self, cursor: Cursor, dialect: Dialect) -> None:
        self._cur = cursor
        self._pg = dialect.postgresql
        self.d = dialect
        self.rollback = False
        self.sent = 0
        """How many statements ran (a failure before the first is safe to retry)."""

    def _execute(self, stmt: Stmt, params: Params) -> Cursor:
        self.sent += 1
        cur = self._cur
        cur.execute(stmt.postgresql if self._pg else stmt.sqlite, params)
        return cur

    def one(self, stmt: Stmt, params: Params = ()) -> Row | None:
        """The first row ``stmt`` returns, or None."""
        return self._execute(stmt, params).fetchone()  # type: ignore[no-any-return]

    def all(self, stmt: Stmt, params: Params = ()) -> list[Row]:
        """Every row ``stmt`` returns."""
        return self._execute(stmt, params).fetchall()

    def run(self, stmt: Stmt, params: Params = ()) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        return self._execute(stmt, params).rowcount

    def stream(self, stmt: Stmt, params: Params = (), *, size: int = 500) -> Generator[Row]:
        """The rows of ``stmt``, fetched ``size`` at a time (a server-side cursor on
        PostgreSQL), for results too long to hold at once."""
        self.sent += 1
        conn = self._cur.connection
        if not self._pg:
            cursor = conn.cursor()  # its own: the caller may run statements while it reads
            try:
                yield from cursor.execute(stmt.sqlite, params)
            finally:
                cursor.close()
            return
        with conn.cursor(name="rotator_stream") as named:
            named.itersize = size
            named.execute(stmt.postgresql, params)
            yield from named
