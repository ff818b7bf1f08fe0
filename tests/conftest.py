"""Shared fixtures: one Mistral stand-in per test session, reset before every test that uses it."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from rotator.logs import configure_logging
from rotator_dev.standin import (
    DEFAULT_ADMIN_KEY,
    DEFAULT_WORKSPACE_ID,
    SEED_USER_ID,
    StandinControl,
    StandinHandle,
    StandinServer,
)

pytest.register_assert_rewrite("tests.state_fixtures")  # plain asserts there explain failures

# The real servers (OpenBao, moto), the engine test world and PostgreSQL, for every test module.
pytest_plugins = [
    "tests.integration.postgres",
    "tests.support.engine_fakes",
    "tests.support.fixtures",
    "tests.support.stack_fixtures",
]


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    """Logs go through rotator's redacting chain at WARNING into a sink, not onto pytest's output
    (server threads log outside any test's capture). Tests that read logs configure their own."""
    configure_logging(level="WARNING", fmt="json", stream=io.StringIO())


@pytest.fixture(scope="session")
def standin_server() -> Iterator[StandinServer]:
    """A stand-in served on a free loopback port for the whole session."""
    server = StandinServer(host="127.0.0.1", port=0, admin_key=DEFAULT_ADMIN_KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def standin_control(standin_server: StandinServer) -> Iterator[StandinControl]:
    with StandinControl(standin_server.url) as control:
        yield control


@pytest.fixture
def standin(standin_server: StandinServer, standin_control: StandinControl) -> StandinHandle:
    """The session's stand-in, reset to its seed organization (no keys, no faults, real time)."""
    standin_control.reset()
    return StandinHandle(
        url=standin_server.url,
        admin_key=standin_server.admin_key,
        control=standin_control,
        user_id=SEED_USER_ID,
        workspace_id=DEFAULT_WORKSPACE_ID,
    )
