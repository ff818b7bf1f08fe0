"""The daemon's honesty about itself: the exit status it logs, what a failed rotation is counted
as, and (with the HTTP server's limits) that health keeps answering while clients misbehave.

The daemon tests run a real :class:`Daemon` of ``test_daemon_runner``'s world (real engine,
SQLite state, the Mistral stand-in and HTTP on loopback).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rotator.daemon.metrics import failure_reason
from rotator.destinations.vault_api import HvacApi
from rotator.errors import ConfigError, RotatorError, TransientError
from rotator.mistral.standin import StandinHandle
from tests.unit.test_daemon_runner import World


@pytest.fixture
def world(standin: StandinHandle, tmp_path: Path) -> World:
    return World(standin, tmp_path)


def _stopped(logs: list[dict[str, object]]) -> list[object]:
    return [e["exit_code"] for e in logs if e["event"] == "daemon_stopped"]


async def test_a_port_in_use_logs_exit_status_2(world: World) -> None:
    """A daemon that cannot listen (port in use) logs ``daemon_stopped`` with exit code 2, the
    status ``rotator run`` exits with for a configuration error, not 0."""
    world.add_target()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = world.write_config(server={"listen": f"127.0.0.1:{port}"})
        with capture_logs() as logs, pytest.raises(ConfigError, match="cannot listen"):
            await world.daemon(cfg).run(handle_signals=False)
    assert _stopped(logs) == [2]


async def test_a_corrupt_state_store_logs_exit_status_1(world: World, tmp_path: Path) -> None:
    """A daemon whose state database is not a database logs ``daemon_stopped`` with exit code 1,
    the status ``rotator run`` exits with for it, not 0."""
    world.add_target()
    cfg = world.write_config()
    (tmp_path / "state.db").write_bytes(b"this is not a SQLite database\n" * 200)
    with capture_logs() as logs, pytest.raises(Exception) as raised:
        await world.daemon(cfg).run(handle_signals=False)
    assert not isinstance(raised.value, ConfigError)
    assert _stopped(logs) == [1]


def test_a_vault_outage_is_counted_as_unreachable() -> None:
    """A Vault server that refuses connections fails the call with an error whose step-failure
    reason is ``unreachable`` (as for Mistral and AWS), not the catch-all ``error``."""
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        api = HvacApi.connect(f"http://127.0.0.1:{port}", timeout=5)
        with pytest.raises(TransientError) as raised:
            api.read_version("secret", "mistral/t1")
    assert failure_reason(str(raised.value)) == "unreachable"
    assert isinstance(raised.value, RotatorError)
