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
from typing import TYPE_CHECKING, Any

from rotator.contracts import TargetLock
from rotator.errors import TransientError

if TYPE_CHECKING:
    import psycopg


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


def try_file_lock(database: Path, target: str) -> TargetLock | None:
    """The target's lock beside a SQLite file, or None if another process holds it."""
    folder = database.with_name(f"{database.name}.locks")
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / target, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return _FileLock(fd)


class PgLocks:
    """Advisory target locks, each held on a connection of its own (libpq URI ``conninfo``).

    A released lock's connection is kept for the next lock (up to :attr:`KEEP` of them), so a
    rotation does not pay for a new connection; :meth:`close` closes the kept ones.
    """

    KEEP = 4

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._idle: list[psycopg.Connection[Any]] = []

    def try_lock(self, target: str) -> TargetLock | None:
        """The target's lock, or None if another session holds it."""
        import psycopg

        key = target_lock_key(target)
        while True:
            try:
                kept: psycopg.Connection[Any] | None = self._idle.pop()
            except IndexError:
                kept = None
            try:
                conn = kept or psycopg.connect(self._conninfo, autocommit=True)
            except Exception as exc:  # noqa: BLE001 - any connection failure is transient
                raise TransientError("state", "lock target", type(exc).__name__) from None
            try:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            except Exception:
                conn.close()
                if kept is not None:
                    continue  # a kept connection that died meanwhile: take a new one
                raise
            if row and row[0]:
                return _PgLock(self, conn, key)
            self._keep(conn)
            return None

    def _keep(self, conn: psycopg.Connection[Any]) -> None:
        if conn.closed or conn.broken or len(self._idle) >= self.KEEP:
            conn.close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        """Close the kept connections (held locks stay held). Idempotent."""
        while self._idle:
            self._idle.pop().close()


class _PgLock:
    def __init__(self, owner: PgLocks, conn: psycopg.Connection[Any], key: int) -> None:
        self._owner = owner
        self._conn: psycopg.Connection[Any] | None = conn
        self._key = key

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                row = conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,)).fetchone()
            except Exception:
                conn.close()  # a closed session releases the lock anyway
                raise
            if row and row[0]:
                self._owner._keep(conn)
            else:
                conn.close()
