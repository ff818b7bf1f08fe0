"""The daemon's HTTP server on a real loopback socket: what misbehaving clients cost it.

A real uvicorn (:class:`rotator.daemon.serving.HttpServer`) serves the real app
(:func:`rotator.daemon.http.build_app`) on a free 127.0.0.1 port; only the DaemonControl behind
it is the narrow fake of ``test_daemon_http``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from structlog.testing import capture_logs

from rotator.daemon.control import Health
from rotator.daemon.http import LOGGED_PATH, LogSampler, build_app
from rotator.daemon.metrics import Metrics
from rotator.daemon.serving import HttpServer, SwappableApp, bind
from rotator.secret import Secret
from tests.unit.test_daemon_http import TOKEN, FakeControl, Ticks


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="0.0.0-test")


@pytest.fixture
async def served(metrics: Metrics) -> AsyncIterator[str]:
    """The app with an admin token, served on a free loopback port; its base URL."""
    control = FakeControl(health=Health(ready=True), statuses=[])
    app = build_app(
        control,
        admin_token=Secret(TOKEN),
        registry=metrics.registry,
        on_rejected=metrics.observe_rejected,
    )
    server = HttpServer(SwappableApp(app), bind("127.0.0.1", 0))
    await server.start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}"
    finally:
        await server.stop()


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
