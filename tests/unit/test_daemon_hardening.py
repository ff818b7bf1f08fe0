"""The daemon's honesty about itself: the exit status it logs, what a failed rotation is counted
as, and (with the HTTP server's limits) that health keeps answering while clients misbehave.

The daemon tests run a real :class:`Daemon` of ``test_daemon_runner``'s world (real engine,
SQLite state, the Mistral stand-in and HTTP on loopback).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sqlite3
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from rotator.config import Config
from rotator.daemon.control import Health
from rotator.daemon.leader import Elector, SoleElector, Timing
from rotator.daemon.metrics import failure_reason
from rotator.daemon.runner import Daemon
from rotator.destinations.vault.api import HvacApi
from rotator.errors import ConfigError, RotatorError, TransientError
from rotator_dev.standin import StandinHandle
from tests.unit.test_daemon_runner import FAST, TOKEN, NeverLeads, Running, World, eventually
from tests.unit.test_daemon_serving import drip


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


async def test_a_corrupt_state_store_logs_exit_status_2(world: World, tmp_path: Path) -> None:
    """A daemon whose state file is not a database logs ``daemon_stopped`` with exit code 2,
    the status ``rotator run`` exits with for it (a configuration problem: ``state.url``), not
    0."""
    world.add_target()
    cfg = world.write_config()
    (tmp_path / "state.db").write_bytes(b"this is not a SQLite database\n" * 200)
    with capture_logs() as logs, pytest.raises(ConfigError) as raised:
        await world.daemon(cfg).run(handle_signals=False)
    assert "is not a rotator state database" in str(raised.value)
    assert _stopped(logs) == [2]


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


async def test_health_and_rotations_go_on_under_a_crowd_of_slow_clients(world: World) -> None:
    """150 clients dripping requests and 150 idle ones (3x ``server.max_connections``) neither
    stop ``/livez`` from answering 200 nor an on-demand rotation from finishing; the heartbeat
    stays fresh, and every slow client is gone after ``header_timeout``."""
    name = world.add_target()
    server = {
        "listen": "127.0.0.1:0",
        "admin_token": TOKEN,
        "header_timeout": "1s",
        "idle_timeout": "1s",
        "max_connections": 100,
    }
    run = Running(world.daemon(world.write_config(server=server)))
    daemon = await run.ready()
    stop = asyncio.Event()
    crowd: list[asyncio.StreamWriter] = []
    drips: list[asyncio.Task[None]] = []
    try:
        assert daemon.http is not None
        host, port = daemon.http.address
        url = f"http://{host}:{port}"
        for i in range(300):
            _, writer = await asyncio.open_connection(host, port)
            crowd.append(writer)
            if i % 2:
                drips.append(asyncio.create_task(drip(writer, stop)))
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            for _ in range(5):
                assert (await client.get("/livez")).status_code == 200
            answer = await client.post(
                f"/api/v1/targets/{name}/rotate", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert answer.status_code == 202
            rotation_id = answer.json()["rotation_id"]
            await eventually(lambda: name not in daemon._tasks, "the rotation finished")
            view = await daemon.rotation_view(rotation_id)
            assert view is not None
            assert view["outcome"] == "promoted"
            assert daemon.health.live() == (True, "ok")
            await asyncio.sleep(1.5)
            assert (await client.get("/livez")).status_code == 200
        slow = daemon.metrics.sample("rotator_http_requests_rejected_total", {"reason": "slow"})
        evicted = daemon.metrics.sample(
            "rotator_http_requests_rejected_total", {"reason": "evicted"}
        )
        assert (slow or 0) + (evicted or 0) >= 150
    finally:
        stop.set()
        await asyncio.gather(*drips)
        for writer in crowd:
            writer.close()
        assert await run.stop() == 0


async def readyz(daemon: Daemon) -> tuple[int, str]:
    assert daemon.http is not None
    host, port = daemon.http.address
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
        answer = await client.get("/readyz")
    return answer.status_code, answer.json()["reason"]


async def ready_becomes(daemon: Daemon, status: int) -> str:
    """Poll /readyz until it answers ``status``; its reason then."""
    found: list[str] = []

    async def poll() -> None:
        while True:
            code, reason = await readyz(daemon)
            if code == status:
                found.append(reason)
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 15)
    return found[0]


async def test_readyz_fails_while_the_state_store_cannot_be_written_or_read(world: World) -> None:
    """/readyz answers 503 while another process holds the state database locked against
    writes, and while its targets table is gone (half-corrupt), then 200 again once the store
    works (before: 200 throughout); /livez stays 200."""
    world.add_target()
    timings = dataclasses.replace(FAST, readiness_every=0.2)
    run = Running(world.daemon(world.write_config(), timings=timings))
    daemon = await run.ready()
    database = world.state_url.removeprefix("sqlite:///")
    try:
        assert await ready_becomes(daemon, 200) == "ok"
        locker = sqlite3.connect(database, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            assert "state store" in await ready_becomes(daemon, 503)
            assert daemon.health.live() == (True, "ok")
        finally:
            locker.execute("ROLLBACK")
        assert await ready_becomes(daemon, 200) == "ok"
        locker.execute("ALTER TABLE target_states RENAME TO target_states_broken")
        assert "state store" in await ready_becomes(daemon, 503)
        locker.execute("ALTER TABLE target_states_broken RENAME TO target_states")
        assert await ready_becomes(daemon, 200) == "ok"
        locker.close()
    finally:
        assert await run.stop() == 0


async def test_a_standby_that_cannot_reach_the_election_is_not_ready(world: World) -> None:
    """A standby whose election backend does not answer cannot tell who leads: /readyz 503;
    a standby that was told another instance leads is ready."""
    world.add_target()
    run = Running(world.daemon(world.write_config(), elector=unreachable_election))
    daemon = await run.ready(leading=False)
    try:
        assert "who leads" in await ready_becomes(daemon, 503)
    finally:
        assert await run.stop() == 0
    run = Running(world.daemon(world.write_config(), elector=never_leads))
    daemon = await run.ready(leading=False)
    try:
        assert await ready_becomes(daemon, 200) == "ok"
    finally:
        assert await run.stop() == 0


class UnreachableElection(SoleElector):
    """A standby whose election backend never answers."""

    async def acquire(self) -> bool:
        self._unknown()
        return False


def unreachable_election(_cfg: Config, health: Health) -> Elector:
    return UnreachableElection(health=health, timing=Timing(retry_period=0.05))


def never_leads(_cfg: Config, health: Health) -> Elector:
    return NeverLeads(health=health, timing=Timing(retry_period=0.05))
