"""Per-target locks held by the process running a rotation, released by the OS when it dies.

Nothing in the journal tells a live rotation from one whose process died: recovering a live one
would undo or redo its steps under it (a ``rotator recover`` beside the daemon, a CLI ``rotate``
during a fail-over). So every rotation and every recovery of a target holds that target's lock:

- SQLite: an exclusive ``flock`` on ``<state file>.locks/<target>``;
- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) on a connection of its own.

Both vanish with their process (or connection), so a crashed rotation is recoverable at once, and
a live one never is. Taking a lock never waits: it is had or it is held elsewhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from rotator.contracts import TargetLock
from rotator.errors import TransientError


def target_lock_key(target: str) -> int:
    """The PostgreSQL advisory lock key of ``target`` (a signed 64-bit integer, in a space of
    its own: the leader lock and the migrations use other keys)."""
    digest = hashlib.sha256(f"rotator-target:{target}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _FileLock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class _PgLock:
    def __init__(self, conn: Connection, key: int) -> None:
        self._conn: Connection | None = conn
        self._key = key

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            finally:
                conn.close()  # a closed session releases the lock anyway


def try_lock(engine: Engine, target: str) -> TargetLock | None:
    """The target's lock, or None if another process (or connection) holds it."""
    if engine.dialect.name == "sqlite":
        return _try_file_lock(Path(engine.url.database or ""), target)
    return _try_pg_lock(engine, target)


def _try_file_lock(database: Path, target: str) -> TargetLock | None:
    folder = database.with_name(f"{database.name}.locks")
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / target, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return _FileLock(fd)


def _try_pg_lock(engine: Engine, target: str) -> TargetLock | None:
    key = target_lock_key(target)
    try:
        conn = engine.connect()
    except Exception as exc:  # noqa: BLE001 - any connection failure is a transient state error
        raise TransientError("state", "lock target", type(exc).__name__) from None
    try:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
    except Exception:
        conn.close()
        raise
    if not got:
        conn.close()
        return None
    return _PgLock(conn, key)
