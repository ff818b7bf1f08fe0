"""The state store on a real PostgreSQL server: the shared contract suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.postgres import PostgresServer, postgres_server  # noqa: F401
from tests.state_fixtures import StoreContract

pytestmark = pytest.mark.integration


class TestPostgresStore(StoreContract):
    """The contract suite, one fresh database per test on the session's server."""

    @pytest.fixture
    def fresh_url(self, postgres_server: PostgresServer) -> Callable[[], str]:  # noqa: F811
        return postgres_server.create_database
