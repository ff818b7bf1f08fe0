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
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from rotator.clock import FakeClock
from rotator.contracts import RetiringKey
from rotator.errors import ConfigError, ConflictError, TransientError
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
    key_id,
    key_shaped_secret,
    managed_key,
    odd_secret,
    scripted_run,
)


class JournalBatchContract:
    """The journal written several steps per transaction (``append_steps``, and the ``steps``
    of ``start_rotation``, ``record_promotion`` and ``finish_rotation``): the engine writes
    one transaction before each side effect. Mixed into a ``StoreContract`` test class, whose
    ``store`` and ``clock`` fixtures it uses."""

    async def test_append_steps_journals_a_batch_in_order_in_one_write(
        self, store: SqlStateStore, clock: FakeClock
    ) -> None:
        """One entry per step, numbered on from the journal, stamped now, with its facts; the
        state and the rotation's fields are set with them; a step repeated in the batch or
        journaled before is returned as stored."""
        rid = (await store.start_rotation(TARGET, steps=[("planned", {"n": 0})])).rotation_id
        clock.advance(5)
        entries = await store.append_steps(
            rid,
            [("created", {"key_id": "k1"}), ("verified", None), ("planned", {"n": 9})],
            state="verified",
            new_key_id="k1",
            new_key_fingerprint="0123456789ab",
        )
        assert [(e.seq, e.step, e.facts) for e in entries] == [
            (2, "created", {"key_id": "k1"}),
            (3, "verified", {}),
            (1, "planned", {"n": 0}),
        ]
        assert [e.at for e in entries] == [START + timedelta(seconds=5)] * 2 + [START]
        assert await store.journal(rid) == [entries[2], entries[0], entries[1]]
        rotation = await store.get_rotation(rid)
        assert rotation is not None
        assert (rotation.state, rotation.new_key_id, rotation.new_key_fingerprint) == (
            "verified",
            "k1",
            "0123456789ab",
        )
        twice = await store.append_steps(rid, [("staged", {"a": 1}), ("staged", {"a": 2})])
        assert [(e.seq, e.facts) for e in twice] == [(4, {"a": 1}), (4, {"a": 1})]

    async def test_a_replayed_batch_changes_nothing(self, store: SqlStateStore) -> None:
        """Steps all journaled before: the stored entries come back, and neither the state nor
        a field moves (a replay never moves a rotation back)."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        first = await store.append_steps(rid, [("created", {"key_id": "k1"})], state="created")
        await store.append_steps(rid, [("promoting", None)], state="promoting")
        again = await store.append_steps(
            rid, [("created", {"key_id": "k2"})], state="created", new_key_id="k2", error="x"
        )
        assert again == first
        rotation = await store.get_rotation(rid)
        assert rotation is not None
        assert (rotation.state, rotation.new_key_id, rotation.error) == ("promoting", None, None)

    async def test_append_steps_refuses_what_append_step_refuses(
        self, store: SqlStateStore
    ) -> None:
        """Empty batch: ValueError; unknown rotation: LookupError; a credential-shaped step or
        facts: ValueError with nothing written; a new step for a finished rotation:
        ConflictError with nothing of the batch written, while steps journaled before still
        come back."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        with pytest.raises(ValueError, match="at least one step"):
            await store.append_steps(rid, [])
        with pytest.raises(LookupError):
            await store.append_steps(str(uuid.uuid4()), [("planned", None)])
        secret = key_shaped_secret().reveal()
        with pytest.raises(ValueError):
            await store.append_steps(rid, [("created", None), ("verified", {"id": secret})])
        assert await store.journal(rid) == []
        await store.append_steps(rid, [("created", None)], state="created")
        await store.finish_rotation(rid, state="rolled_back", outcome="rolled_back")
        with pytest.raises(ConflictError, match="finished"):
            await store.append_steps(rid, [("created", None), ("late", None)], state="late")
        assert [e.step for e in await store.journal(rid)] == ["created"]
        assert [e.step for e in await store.append_steps(rid, [("created", None)])] == ["created"]
        assert (await store.get_rotation(rid)).state == "rolled_back"  # type: ignore[union-attr]

    async def test_start_rotation_journals_its_first_steps(self, store: SqlStateStore) -> None:
        """``steps`` are the rotation's first entries, written with it; starting it again
        ignores them."""
        rid = str(uuid.uuid4())
        await store.start_rotation(TARGET, rotation_id=rid, steps=[("planned", {"k": "v"})])
        await store.start_rotation(TARGET, rotation_id=rid, steps=[("other", None)])
        assert [(e.seq, e.step, e.facts) for e in await store.journal(rid)] == [
            (1, "planned", {"k": "v"})
        ]

    async def test_record_promotion_journals_and_closes_in_the_same_write(
        self, store: SqlStateStore, clock: FakeClock
    ) -> None:
        """With steps and a state the rotation's journal moves with the promotion; with an
        outcome the rotation is also closed as done (key.promoted, then rotation.finished)."""
        old = key_id()
        rid = (await store.start_rotation(TARGET, old_key_ids=[old])).rotation_id
        key = managed_key(rid)
        due = clock.now() + timedelta(hours=1)
        retire = [RetiringKey(TARGET, old, None, due, rid)]
        state = await store.record_promotion(
            TARGET, key, retire=retire, steps=[("promoted", None)], state="promoted"
        )
        assert state.current == key
        rotation = await store.get_rotation(rid)
        assert rotation is not None
        assert (rotation.state, rotation.open) == ("promoted", True)
        again = await store.record_promotion(
            TARGET, key, retire=retire, steps=[("promoted", None), ("done", {})], outcome="x"
        )
        assert again == state
        rotation = await store.get_rotation(rid)
        assert rotation is not None
        assert (rotation.state, rotation.outcome, rotation.open) == ("done", "x", False)
        assert [e.step for e in await store.journal(rid)] == ["promoted", "done"]
        events = [e.event for e in await store.audit_events()]
        assert events[:2] == ["rotation.finished", "key.promoted"]

    async def test_record_promotion_with_steps_is_all_or_nothing(
        self, store: SqlStateStore
    ) -> None:
        """Steps or an outcome without the key's rotation id: ValueError. A new step for a
        finished rotation: ConflictError, and the key is not recorded either."""
        with pytest.raises(ValueError, match="rotation_id"):
            await store.record_promotion(TARGET, managed_key(None), steps=[("promoted", None)])
        rid = (await store.start_rotation(TARGET)).rotation_id
        await store.finish_rotation(rid, state="rolled_back", outcome="rolled_back")
        with pytest.raises(ConflictError):
            await store.record_promotion(TARGET, managed_key(rid), steps=[("promoted", None)])
        target = await store.get_target(TARGET)
        assert target is not None
        assert target.current is None

    async def test_finish_rotation_journals_its_last_steps(self, store: SqlStateStore) -> None:
        """``steps`` are journaled before the rotation closes, in the same write; finishing
        again the same way is idempotent, and a new step after the close is refused."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        done = await store.finish_rotation(
            rid, state="done", outcome="rotated", steps=[("done", {"revoked": ["a"]})]
        )
        assert (done.state, done.outcome, done.open) == ("done", "rotated", False)
        assert [(e.step, e.facts) for e in await store.journal(rid)] == [
            ("done", {"revoked": ["a"]})
        ]
        again = await store.finish_rotation(
            rid, state="done", outcome="rotated", steps=[("done", None)]
        )
        assert again == done
        with pytest.raises(ConflictError):
            await store.finish_rotation(
                rid, state="done", outcome="rotated", steps=[("late", None)]
            )
        with pytest.raises(ValueError, match="terminal"):
            await store.finish_rotation(rid, state="promoting", outcome="x", steps=[("y", None)])
        assert [e.step for e in await store.journal(rid)] == ["done"]


class TestSqliteStore(StoreContract, JournalBatchContract):
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
