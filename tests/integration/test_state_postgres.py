"""The state store on a real PostgreSQL server: the shared contract suite, plus what only a
server shows."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from rotator.config.dburl import parse_database_url
from rotator.state import SqlStateStore
from rotator.state.sql import Stmt
from tests.integration.postgres import PostgresServer, postgres_server  # noqa: F401
from tests.state_fixtures import StoreContract

pytestmark = pytest.mark.integration


class TestPostgresStore(StoreContract):
    """The contract suite, one fresh database per test on the session's server."""

    @pytest.fixture
    def fresh_url(self, postgres_server: PostgresServer) -> Callable[[], str]:  # noqa: F811
        return postgres_server.create_database


async def test_a_connection_the_server_dropped_is_replaced(postgres_url: str) -> None:
    """A store whose connection the server ended (a restart, an idle timeout) opens a new one
    for the next transaction, read or write, instead of failing it."""
    store = SqlStateStore(postgres_url)
    try:
        await store.migrate()
        await store.register_target("t1")
        for call in (lambda: store.get_target("t1"), lambda: store.register_target("t2")):
            backend = await store._run(store._db.run, "once", lambda tx: tx.one(_PID))
            with psycopg.connect(parse_database_url(postgres_url).libpq(), autocommit=True) as c:
                c.execute("SELECT pg_terminate_backend(%s)", backend)
            assert await call() is not None
        assert [t.target for t in await store.list_targets()] == ["t1", "t2"]
    finally:
        await store.close()


_PID = Stmt("SELECT pg_backend_pid()")
