"""The state store on SQLite: the shared contract suite, plus what only a SQLite file shows."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.clock import FakeClock
from rotator.errors import ConfigError, TransientError
from rotator.pool import BlockingPool
from rotator.state import SqlStateStore
from rotator.state import audit as audit_chain
from rotator.state.database import open_database
from rotator.state.sql import Stmt
from tests.state_fixtures import (
    AUDIT_KEY,
    START,
    TARGET,
    StoreContract,
    key_shaped_secret,
    odd_secret,
    scripted_run,
)


class TestSqliteStore(StoreContract):
    """The contract suite on a SQLite file per database."""

    @pytest.fixture
    def fresh_url(self, tmp_path: Path) -> Callable[[], str]:
        counter = itertools.count(1)
        return lambda: f"sqlite:///{tmp_path}/db{next(counter)}/state.db"


_START_ONE = """
import asyncio, sys, time
from rotator.errors import ConflictError
from rotator.state import SqlStateStore

async def main() -> None:
    store = SqlStateStore(sys.argv[1])
    while time.time() < float(sys.argv[2]):  # start together with the other processes
        time.sleep(0.001)
    try:
        await store.start_rotation(sys.argv[3])
        print("started")
    except ConflictError:
        print("refused")
    finally:
        await store.close()

asyncio.run(main())
"""


def test_separate_processes_cannot_both_start_a_rotation(tmp_path: Path) -> None:
    """Of several processes starting a rotation of one target at the same moment, exactly one
    succeeds: the lock is the database file's, not the process's."""
    url = f"sqlite:///{tmp_path}/state.db"
    store = SqlStateStore(url)
    asyncio.run(store.migrate())
    start_at = str(time.time() + 1.5)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _START_ONE, url, start_at, TARGET],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert sorted(out.strip() for out, _ in outputs) == ["refused", "refused", "started"]
    assert len(asyncio.run(store.open_rotations(TARGET))) == 1
    asyncio.run(store.close())


async def test_file_and_directory_are_private(tmp_path: Path) -> None:
    """The state directory is created 0700 and the database file 0600."""
    path = tmp_path / "state" / "rotator.db"
    store = SqlStateStore(f"sqlite:///{path}")
    try:
        await store.migrate()
    finally:
        await store.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    """The file is in WAL mode, and the store's connection commits durably (synchronous=FULL),
    enforces foreign keys and waits for other processes' locks (busy timeout)."""
    url = f"sqlite:///{tmp_path}/state.db"
    store = SqlStateStore(url)
    await store.migrate()
    await store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db = open_database(url)
    try:
        pragmas = {
            name: db.run("once", lambda tx, name=name: tx.one(Stmt(f"PRAGMA {name}")))
            for name in ("synchronous", "foreign_keys", "busy_timeout")
        }
        assert pragmas == {"synchronous": (2,), "foreign_keys": (1,), "busy_timeout": (30000,)}
        orphan = Stmt(
            "INSERT INTO rotations (rotation_id, target, state, started_at, emergency,"
            " old_key_ids) VALUES (?, 'no-such-target', 'planned', ?, 0, '[]')"
        )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            db.run("write", lambda tx: tx.run(orphan, ("0" * 32, "2026-03-01 12:00:00.000000")))
    finally:
        db.close()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "mysql://db/state", "not a url"]
)
def test_unusable_urls_are_configuration_errors(url: str) -> None:
    """In-memory SQLite, other databases and garbage are refused as configuration errors."""
    with pytest.raises(ConfigError, match=r"state\.url"):
        SqlStateStore(url)


async def test_an_unreachable_database_is_a_transient_error(tmp_path: Path) -> None:
    """A database that refuses connections raises TransientError naming the operation."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        store = SqlStateStore(f"postgresql+psycopg://nobody@127.0.0.1:{port}/state")
        try:
            with pytest.raises(TransientError, match="state get_target"):
                await store.get_target(TARGET)
        finally:
            await store.close()


async def test_calls_run_on_the_given_pool(tmp_path: Path) -> None:
    """With a BlockingPool, the store's work goes through it (a shut pool refuses it)."""
    pool = BlockingPool(2)
    store = SqlStateStore(f"sqlite:///{tmp_path}/state.db", pool=pool)
    assert await store.migrate() > 0
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        await store.get_target(TARGET)
    store_without_pool = SqlStateStore(f"sqlite:///{tmp_path}/state.db")
    assert await store_without_pool.get_target(TARGET) is None
    await store_without_pool.close()


async def test_without_a_pool_the_store_runs_on_threads_of_its_own(tmp_path: Path) -> None:
    """Given no pool, transactions run on the store's own threads, never on a pool the SDK calls
    share; closing the store ends them, and a later call starts them again."""
    store = SqlStateStore(f"sqlite:///{tmp_path}/state.db")
    await store.migrate()
    names = {await store._run(lambda: threading.current_thread().name) for _ in range(20)}
    assert {name.split("_")[0] for name in names} == {"rotator-state"}, names
    await store.close()
    assert await store.get_target(TARGET) is None
    await store.close()


async def test_no_plaintext_reaches_the_sqlite_files(tmp_path: Path) -> None:
    """Canary: after a full scripted run with fingerprints and smuggling attempts, its audit
    rows chained with an HMAC key, the raw bytes of the database, its WAL and shared-memory
    files contain no plaintext key, nor the HMAC key (only its id)."""
    clock = FakeClock(START)
    plaintexts = [key_shaped_secret(), odd_secret(), AUDIT_KEY]
    store = SqlStateStore(f"sqlite:///{tmp_path}/state/state.db", clock=clock, audit_key=AUDIT_KEY)
    await store.migrate()
    await scripted_run(store, clock, plaintexts[:2])
    wal = tmp_path / "state" / "state.db-wal"
    assert wal.exists()  # the run's pages sit in the WAL until the store closes
    files = {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir()}
    await store.close()
    files |= {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir()}
    everything = b"".join(files.values())
    assert plaintexts[0].fingerprint.encode() in everything
    assert audit_chain.ChainKey(AUDIT_KEY).id.encode() in everything
    for secret in plaintexts:
        assert secret.reveal().encode() not in everything
