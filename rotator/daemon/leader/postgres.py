"""``leader.election: postgres``: leadership as a PostgreSQL session advisory lock.

The lock is held on a dedicated direct connection for the process lifetime; losing the
connection loses the lock. Instances share a leader exactly when they share the state database
and ``leader.lease_name`` (:func:`leader_lock_key`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

import structlog

from rotator.clock import Clock
from rotator.config.dburl import parse_database_url
from rotator.daemon.control import Health
from rotator.daemon.leader.base import Elector, Timing, _why, default_identity

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger(__package__)  # the package's name, as before the split

MIGRATION_LOCK_KEY = 0x726F7461746F72
"""The advisory lock migrations take (``rotator.state.migrations``); the leader's differs."""


def leader_lock_key(lease_name: str) -> int:
    """The advisory lock id of ``leader.lease_name``: a signed 64-bit number from its hash,
    distinct from :data:`MIGRATION_LOCK_KEY`. Advisory locks are per database, so instances
    share a leader exactly when they share the state database and the lease name."""
    digest = hashlib.sha256(f"rotator-leader:{lease_name}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    return key if key != MIGRATION_LOCK_KEY else key ^ 1


_HELD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
  AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1
"""


class PostgresElector(Elector):
    """Leadership as a PostgreSQL session advisory lock (``pg_try_advisory_lock``).

    The lock lives as long as one dedicated connection (autocommit, TCP keepalives), opened by
    :meth:`acquire` and kept for the process lifetime. Before each step :meth:`ensure` asks
    that connection whether its session still holds the lock (``pg_locks``, a cheap catalog
    read, bounded by ``renew_deadline``); any error or timeout counts as a loss, because the
    server releases a session's locks when the session ends. The daemon exits on a loss.

    **Not behind PgBouncer in transaction (or statement) pooling mode**: the lock belongs to a
    server session, and a transaction pooler hands that session to other clients between
    transactions — the lock could be released under us or held for someone else, and the
    check would run on another session. Give ``state.url`` a direct connection to PostgreSQL
    (or a session-pooling PgBouncer).

    A leader whose host vanishes keeps the lock until the server notices the dead TCP peer:
    set the server's ``tcp_keepalives_idle``/``_interval``/``_count`` (or
    ``client_connection_check_interval``) low enough for the hand-over time you need.
    """

    kind = "postgres"

    def __init__(
        self,
        conninfo: str,
        *,
        lock_key: int,
        health: Health,
        timing: Timing,
        clock: Clock | None = None,
        safe_url: str = "postgresql",
        identity: str | None = None,
    ) -> None:
        super().__init__(health=health, timing=timing, clock=clock)
        if lock_key == MIGRATION_LOCK_KEY:
            raise ValueError("the leader lock key must differ from the migrations' key")
        self._conninfo = conninfo
        self._key = lock_key
        self._safe_url = safe_url
        self._identity = self.identity = identity or default_identity()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the dedicated connection (None when not connected)."""
        return self._conn.info.backend_pid if self._conn is not None else None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        if self._conn is None or self._conn.closed:
            timeout = max(1, int(self.timing.renew_deadline))
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=timeout,
                application_name=f"rotator-leader {self._identity}"[:63],
                keepalives=1,
                keepalives_idle=timeout,
                keepalives_interval=max(1, timeout // 3),
                keepalives_count=3,
            )
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def acquire(self) -> bool:
        if self._leading:
            return True  # the lock is re-entrant: taking it twice would need two unlocks
        import psycopg

        try:
            async with asyncio.timeout(self.timing.renew_deadline):
                conn = await self._connection()
                cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning(
                "leader_acquire_failed", election=self.kind, url=self._safe_url, error=_why(exc)
            )
            self._unknown()
            await self._close()
            return False
        self._known()
        self._leading = bool(row and row[0])
        return self._leading

    async def ensure(self) -> None:
        if not self._leading or self._conn is None:
            raise self._lost("not holding the lock")
        import psycopg

        high, low = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF
        try:
            async with asyncio.timeout(self.timing.renew_deadline):
                cursor = await self._conn.execute(_HELD, (high, low))
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._close()
            raise self._lost(f"the lock connection failed ({_why(exc)})") from None
        if not row or not row[0]:
            await self._close()
            raise self._lost("the session no longer holds the lock")

    async def release(self) -> None:
        if self._leading and self._conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timing.renew_deadline):
                    await self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        await self._close()  # closing the session releases its locks anyway
        self._release_done()

    def _valid_for(self) -> float | None:
        # No lease on the server: "fresh" means the renew loop checked within a lease duration.
        return self.timing.lease_duration


def _is_postgres(url: str) -> bool:
    return parse_database_url(url).backend == "postgresql"


def _conninfo(url: str) -> str:
    """The libpq URI of a ``postgresql[+driver]://`` URL (password kept)."""
    return parse_database_url(url).libpq()


__all__ = ["MIGRATION_LOCK_KEY", "PostgresElector", "leader_lock_key"]
