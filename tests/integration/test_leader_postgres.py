"""PostgreSQL leadership (session advisory lock) on a real server: one leader, hand-over on
release and on a killed connection, and loss detected before the next step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from rotator.clock import SystemClock
from rotator.daemon.control import Health
from rotator.daemon.leader import (
    MIGRATION_LOCK_KEY,
    LeadershipLost,
    PostgresElector,
    Timing,
    leader_lock_key,
)
from rotator.state import SqlStateStore
from tests.integration.postgres import PostgresServer
from tests.support.electors import Changes, leading

pytestmark = pytest.mark.integration

TIMING = Timing(lease_duration=5, renew_deadline=3, retry_period=0.05)


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
async def make(postgres_url: str) -> AsyncIterator[Callable[[], PostgresElector]]:
    """Electors on one fresh database, each with its own health; all released afterwards."""
    made: list[PostgresElector] = []

    def build() -> PostgresElector:
        elector = PostgresElector(
            libpq(postgres_url),
            lock_key=leader_lock_key("rotator"),
            health=Health(),
            timing=TIMING,
            safe_url=postgres_url,
        )
        made.append(elector)
        return elector

    yield build
    for elector in made:
        await elector.release()


async def test_exactly_one_of_two_electors_leads(make: Callable[[], PostgresElector]) -> None:
    """Two instances on one database: one holds the lock, the other stays standby."""
    a, b = make(), make()
    results = await asyncio.gather(a.acquire(), b.acquire())
    assert sorted(results) == [False, True]
    leader, standby = (a, b) if results[0] else (b, a)
    await leader.ensure()
    with pytest.raises(LeadershipLost):
        await standby.ensure()
    assert await leader.acquire() is True  # asking again keeps it, without stacking the lock
    assert await standby.acquire() is False
    await leader.release()
    assert await standby.acquire() is True


async def test_the_standby_takes_over_within_a_retry_period_after_release(
    make: Callable[[], PostgresElector],
) -> None:
    """run() on the standby leads at its next retry once the leader releases."""
    a, b = make(), make()
    assert await a.acquire()
    changes = Changes()
    task = asyncio.create_task(b.run(on_change=changes))
    try:
        await asyncio.sleep(TIMING.retry_period * 4)  # several standby rounds
        assert not leading(b.health)
        assert changes.seen == []
        await a.release()
        await changes.wait_gained()
        assert changes.seen == [True]
        assert leading(b.health)
        await b.ensure()
        with pytest.raises(LeadershipLost):
            await a.ensure()
    finally:
        task.cancel()


async def test_a_killed_connection_loses_leadership_and_hands_it_over(
    make: Callable[[], PostgresElector], postgres_server: PostgresServer
) -> None:
    """pg_terminate_backend on the leader's connection: its next check raises and its loop
    stops, while the standby becomes leader."""
    a, b = make(), make()
    a_changes, b_changes = Changes(), Changes()
    a_task = asyncio.create_task(a.run(on_change=a_changes))
    await a_changes.wait_gained()
    b_task = asyncio.create_task(b.run(on_change=b_changes))
    try:
        pid = a.backend_pid
        assert pid is not None
        async with await psycopg.AsyncConnection.connect(
            host="127.0.0.1", port=postgres_server.port, user="postgres", autocommit=True
        ) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await b_changes.wait_gained()
        with pytest.raises(LeadershipLost):
            async with asyncio.timeout(30):
                await a_task
        assert a_changes.seen == [True, False]
        assert not leading(a.health)
        assert a.health.lease_valid_until is None
        with pytest.raises(LeadershipLost):
            await a.ensure()
        assert b_changes.seen == [True]
        await b.ensure()
    finally:
        a_task.cancel()
        b_task.cancel()


async def test_ensure_raises_once_the_lock_is_gone_even_before_the_loop_notices(
    make: Callable[[], PostgresElector], postgres_server: PostgresServer
) -> None:
    """Leadership is re-checked on the lock's own connection before each step."""
    a = make()
    assert await a.acquire()
    async with await psycopg.AsyncConnection.connect(
        host="127.0.0.1", port=postgres_server.port, user="postgres", autocommit=True
    ) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (a.backend_pid,))
    with pytest.raises(LeadershipLost, match="postgres leadership lost"):
        await a.ensure()
    assert not a.is_leader


async def test_the_leader_lock_does_not_block_migrations(
    make: Callable[[], PostgresElector], postgres_url: str
) -> None:
    """The state store migrates while a leader holds its lock (distinct advisory keys)."""
    a = make()
    assert await a.acquire()
    assert leader_lock_key("rotator") != MIGRATION_LOCK_KEY
    store = SqlStateStore(postgres_url, clock=SystemClock())
    try:
        async with asyncio.timeout(30):
            assert await store.migrate() >= 1
    finally:
        await store.close()
    await a.ensure()


async def test_an_unreachable_server_is_standby_not_an_error(
    postgres_server: PostgresServer,
) -> None:
    """When PostgreSQL cannot be reached, acquire() answers False and the loop keeps trying."""
    elector = PostgresElector(
        f"postgresql://postgres@127.0.0.1:{postgres_server.port}/no_such_database",
        lock_key=leader_lock_key("rotator"),
        health=Health(),
        timing=TIMING,
    )
    assert await elector.acquire() is False
    assert not elector.is_leader
    await elector.release()
