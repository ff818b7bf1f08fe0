"""The daemon's HTTP server on a real loopback socket: what misbehaving clients cost it.

A real uvicorn (:class:`rotator.daemon.serving.HttpServer`) serves the real app
(:func:`rotator.daemon.http.build_app`) on a free 127.0.0.1 port; only the DaemonControl behind
it is the narrow fake of ``test_daemon_http``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from structlog.testing import capture_logs

from rotator.daemon.control import Health
from rotator.daemon.http import LOGGED_PATH, LogSampler, build_app
from rotator.daemon.metrics import Metrics
from rotator.daemon.serving import HttpServer, ServerLimits, SwappableApp, bind
from rotator.engine.engine import TargetStatus
from rotator.secret import Secret
from tests.unit.test_daemon_http import AUTH, TOKEN, FakeControl, Ticks

SHORT = ServerLimits(header_timeout=1.0, idle_timeout=0.5, max_connections=20)
"""Limits short enough to watch in a test (the defaults are 10 s, 5 s and 100)."""


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="0.0.0-test")


class HeldControl(FakeControl):
    """The fake control whose status (``GET /api/v1/targets``) waits until ``release`` is set:
    a request the test keeps in progress."""

    release: asyncio.Event

    async def status(self) -> list[TargetStatus]:
        await self.release.wait()
        return await super().status()


@contextlib.asynccontextmanager
async def serving(
    metrics: Metrics, limits: ServerLimits | None = None
) -> AsyncIterator[tuple[str, HeldControl]]:
    """The app with an admin token, served on a free loopback port: its base URL and control."""
    control = HeldControl(health=Health(ready=True), statuses=[])
    control.release = asyncio.Event()
    control.release.set()
    app = build_app(
        control,
        admin_token=Secret(TOKEN),
        registry=metrics.registry,
        on_rejected=metrics.observe_rejected,
    )
    server = HttpServer(
        SwappableApp(app), bind("127.0.0.1", 0), limits, on_rejected=metrics.observe_rejected
    )
    await server.start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}", control
    finally:
        control.release.set()
        await server.stop()


@pytest.fixture
async def served(metrics: Metrics) -> AsyncIterator[str]:
    """The app with the default limits on a free loopback port; its base URL."""
    async with serving(metrics) as (url, _):
        yield url


def rejected(metrics: Metrics, reason: str) -> float | None:
    return metrics.sample("rotator_http_requests_rejected_total", {"reason": reason})


async def test_unauthenticated_floods_log_a_few_short_lines_and_count_the_rest(
    served: str, metrics: Metrics
) -> None:
    """500 unauthenticated requests with 60 KB paths (and a query string) write at most 10
    ``api_unauthorized`` lines, each with at most 200 characters of path and no query; every
    refusal is counted in ``rotator_http_requests_rejected_total{reason="unauthorized"}``, and
    unknown routes in ``{reason="not_found"}``."""
    long_path = "/api/v1/" + "a" * 60_000
    with capture_logs() as logs:
        async with httpx.AsyncClient(base_url=served, timeout=30) as client:
            for _ in range(500):
                answer = await client.get(long_path, params={"q": "secret-query"})
                assert answer.status_code == 401
            for _ in range(3):
                assert (await client.get("/nowhere")).status_code == 404
    lines = [e for e in logs if e["event"] == "api_unauthorized"]
    assert 1 <= len(lines) <= 10
    assert all(len(str(e["path"])) <= LOGGED_PATH for e in lines)
    assert "secret-query" not in repr(logs)
    assert len(json.dumps(logs, default=str)) < 10_000  # was over 28 MiB
    assert rejected(metrics, "unauthorized") == 500.0
    assert rejected(metrics, "not_found") == 3.0
    assert rejected(metrics, "method_not_allowed") == 0.0


def test_the_sampler_admits_a_burst_per_window_and_tells_what_it_held_back() -> None:
    """Past ``burst`` lines in a window, lines are held back; the first line of the next window
    is admitted with the count held back."""
    ticks = Ticks()
    sampler = LogSampler(burst=2, window=60.0, monotonic=ticks)
    assert [sampler.admit() for _ in range(5)] == [0, 0, None, None, None]
    ticks.now += 60.0
    assert [sampler.admit() for _ in range(3)] == [3, 0, None]


async def test_the_api_logs_a_truncated_path_without_its_query(served: str) -> None:
    """The one line of a refused request shows a path cut to 200 characters, ending in ``…``."""
    with capture_logs() as logs:
        async with httpx.AsyncClient(base_url=served, timeout=10) as client:
            await client.get("/api/v1/" + "b" * 500 + "?token=abc")
    (line,) = [e for e in logs if e["event"] == "api_unauthorized"]
    path = str(line["path"])
    assert len(path) == LOGGED_PATH
    assert path.startswith("/api/v1/bbb")
    assert path.endswith("…")


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing the connection (fails if it is still open)."""
    return await asyncio.wait_for(reader.read(), seconds)


async def drip(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """Send a request one byte every 0.1 s, never finishing it, until the server hangs up."""
    for byte in b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
        if stop.is_set() or writer.is_closing():
            return
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0.1)


async def test_slow_and_idle_clients_are_dropped_while_health_answers(metrics: Metrics) -> None:
    """5 clients dripping a request a byte at a time are closed after ``header_timeout`` and 5
    idle ones after ``idle_timeout`` (before: all 10 still open after 20 s); /livez answers 200
    meanwhile; each slow one counts in ``rotator_http_requests_rejected_total{reason="slow"}``."""
    async with serving(metrics, SHORT) as (url, _):
        started = time.monotonic()
        idle = [await connect(url) for _ in range(5)]
        slow = [await connect(url) for _ in range(5)]
        stop = asyncio.Event()
        drips = [asyncio.create_task(drip(w, stop)) for _, w in slow]
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                assert (await client.get("/livez")).status_code == 200
            for reader, _ in idle:
                assert await closed_within(reader, 3.0) == b""
            idle_closed = time.monotonic() - started
            for reader, _ in slow:
                assert await closed_within(reader, 3.0) == b""
            slow_closed = time.monotonic() - started
        finally:
            stop.set()
            await asyncio.gather(*drips)
            for _, writer in idle + slow:
                writer.close()
    assert 0.4 <= idle_closed < 2.0
    assert 0.9 <= slow_closed < 3.0
    assert rejected(metrics, "slow") == 5.0


async def test_a_kept_alive_connection_is_closed_when_idle(metrics: Metrics) -> None:
    """After an answer, a kept-alive connection with no next request is closed after
    ``idle_timeout``; one whose next request drips is closed after ``header_timeout``."""
    async with serving(metrics, SHORT) as (url, _):
        reader, writer = await connect(url)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b'"ok"}'), 5)
        assert answer.startswith(b"HTTP/1.1 200")
        assert await closed_within(reader, 2.0) == b""
        writer.close()
        reader, writer = await connect(url)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b'"ok"}'), 5)
        stop = asyncio.Event()
        dripping = asyncio.create_task(drip(writer, stop))
        try:
            assert await closed_within(reader, 3.0) == b""
        finally:
            stop.set()
            await dripping
            writer.close()
    assert rejected(metrics, "slow") == 1.0


async def test_beyond_the_cap_waiting_clients_make_room_and_busy_ones_get_503(
    metrics: Metrics,
) -> None:
    """With ``max_connections`` held by clients that send nothing, a health probe still gets
    200 (the oldest waiting client is closed for it, counted as ``evicted``); with every slot
    busy with a request in progress, one more connection is answered 503 (``overloaded``)."""
    limits = ServerLimits(header_timeout=30.0, idle_timeout=30.0, max_connections=20)
    async with serving(metrics, limits) as (url, control):
        idle = [await connect(url) for _ in range(3 * limits.max_connections)]
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            for _ in range(5):
                assert (await client.get("/livez")).status_code == 200
        open_now = 0
        for reader, _ in idle:
            try:
                await asyncio.wait_for(reader.read(), 0.05)
            except TimeoutError:
                open_now += 1
        assert open_now <= limits.max_connections
        assert (rejected(metrics, "evicted") or 0) >= 2 * limits.max_connections
        control.release.clear()
        limit = httpx.Limits(max_connections=limits.max_connections)
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=limit) as busy:
            held = [
                asyncio.create_task(busy.get("/api/v1/targets", headers=AUTH))
                for _ in range(limits.max_connections)
            ]
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(base_url=url, timeout=5) as probe:
                refused = await probe.get("/livez")
            control.release.set()
            assert all(r.status_code == 200 for r in await asyncio.gather(*held))
        for _, writer in idle:
            writer.close()
    assert refused.status_code == 503
    assert refused.json() == {"error": "too many connections; try again later"}
    assert rejected(metrics, "overloaded") == 1.0
