"""The daemon's HTTP routes against a fake DaemonControl, through httpx's ASGI transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from rotator.daemon.control import (
    HEARTBEAT_STALE,
    Health,
    RateLimitedError,
    RotationInFlightError,
    UnknownTargetError,
)
from rotator.daemon.http import build_app, token_matches
from rotator.daemon.metrics import Metrics
from rotator.engine.engine import TargetStatus
from rotator.secret import Secret

TOKEN = "adm-7Qf2-token-for-tests-only-9xK"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROTATION_ID = "5f0c8a52-8a4e-4d36-9a43-2f1f4b3c2d11"
PLAINTEXT = "Zq3vN8xR2mK7pL4wT9yB6cH1jF5dS0gA"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeControl:
    """The narrow seam the HTTP API drives; records what it was asked."""

    health: Health
    statuses: list[TargetStatus]
    views: dict[str, dict[str, object]] = field(default_factory=dict)
    refuse: Exception | None = None
    broken: Exception | None = None
    requests: list[tuple[str, bool]] = field(default_factory=list)
    view_lookups: list[str] = field(default_factory=list)

    def target_names(self) -> list[str]:
        return [s.target for s in self.statuses]

    async def status(self) -> list[TargetStatus]:
        if self.broken is not None:
            raise self.broken
        return self.statuses

    def request_rotation(self, target: str, *, emergency: bool) -> str:
        if target not in self.target_names():
            raise UnknownTargetError(target)
        if self.refuse is not None:
            raise self.refuse
        self.requests.append((target, emergency))
        return ROTATION_ID

    async def rotation_view(self, rotation_id: str) -> dict[str, object] | None:
        self.view_lookups.append(rotation_id)
        return self.views.get(rotation_id)


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def control(ticks: Ticks) -> FakeControl:
    health = Health(monotonic=ticks, started=ticks.now, last_heartbeat=ticks.now, ready=True)
    row = TargetStatus(
        target="payments",
        state="idle",
        key_id="7a1e7e1c-0b8e-4f59-a3d4-6c2a1f9f0e21",
        last_rotated_at=NOW - timedelta(days=1),
        next_due_at=NOW + timedelta(days=6),
        revoke_due_at=None,
        compliant=True,
        reason="",
    )
    view: dict[str, object] = {
        "rotation_id": ROTATION_ID,
        "target": "payments",
        "state": "done",
        "outcome": "promoted",
        "steps": [{"step": "planned", "at": "2026-03-10T12:00:00Z"}],
        "error": None,
        "started_at": "2026-03-10T12:00:00Z",
        "finished_at": "2026-03-10T12:00:09Z",
    }
    return FakeControl(health=health, statuses=[row], views={ROTATION_ID: view})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="0.0.0-test")


def client_for(control: FakeControl, metrics: Metrics, token: str | None) -> httpx.AsyncClient:
    app = build_app(
        control, admin_token=Secret(token) if token else None, registry=metrics.registry
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rotator.test")


@pytest.fixture
async def api(control: FakeControl, metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(control, metrics, TOKEN) as client:
        yield client


@pytest.fixture
async def no_api(control: FakeControl, metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(control, metrics, None) as client:
        yield client


def assert_error(response: httpx.Response, status: int) -> str:
    """The response is ``status`` with a one-line ``{"error": ...}`` body; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "\n" not in response.text
    body = json.loads(response.text)
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


# -- health ---------------------------------------------------------------------------------------


async def test_livez_follows_the_heartbeat(
    api: httpx.AsyncClient, control: FakeControl, ticks: Ticks
) -> None:
    """Live while the heartbeat is fresh, 503 with a reason once stale, live again after a beat."""
    first = await api.get("/livez")
    assert (first.status_code, first.json()) == (200, {"status": "ok", "reason": "ok"})
    ticks.now += HEARTBEAT_STALE + 1
    stale = await api.get("/livez")
    assert stale.status_code == 503
    assert "heartbeat" in stale.json()["reason"]
    control.health.beat()
    assert (await api.get("/livez")).status_code == 200


async def test_livez_fails_when_the_lease_lapses_while_leading(
    api: httpx.AsyncClient, control: FakeControl, ticks: Ticks
) -> None:
    """A leader whose lease was not renewed in time is not live."""
    control.health.leading = True
    control.health.lease_valid_until = ticks.now + 5
    assert (await api.get("/livez")).status_code == 200
    ticks.now += 6
    control.health.beat()
    lapsed = await api.get("/livez")
    assert lapsed.status_code == 503
    assert "lease" in lapsed.json()["reason"]


async def test_livez_ignores_an_unreachable_state_or_upstream(
    api: httpx.AsyncClient, control: FakeControl
) -> None:
    """Liveness never asks the daemon's backends: a failing status call leaves it at 200."""
    control.broken = ConnectionError("state store down")
    assert (await api.get("/livez")).status_code == 200
    assert (await api.get("/api/v1/targets", headers=AUTH)).status_code == 503


async def test_readyz_follows_health_ready(api: httpx.AsyncClient, control: FakeControl) -> None:
    """503 with the reason while not ready, 200 once ready, 503 again when readiness drops."""
    control.health.ready = False
    control.health.reason = "starting"
    starting = await api.get("/readyz")
    assert (starting.status_code, starting.json()["reason"]) == (503, "starting")
    control.health.ready = True
    ready = await api.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    control.health.ready = False
    control.health.reason = "shutting down"
    assert (await api.get("/readyz")).status_code == 503


async def test_health_routes_need_no_token(no_api: httpx.AsyncClient) -> None:
    """Health and metrics answer without credentials and without an admin token configured."""
    for path in ("/livez", "/readyz", "/metrics"):
        assert (await no_api.get(path)).status_code == 200


# -- metrics --------------------------------------------------------------------------------------


async def test_metrics_serves_the_registry_in_text_format(
    api: httpx.AsyncClient, metrics: Metrics
) -> None:
    """GET /metrics renders the given registry at scrape time in Prometheus text format."""
    metrics.set_leader(True)
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples["rotator_leader"] == 1.0
    metrics.set_leader(False)
    assert "rotator_leader 0.0" in (await api.get("/metrics")).text


async def test_metrics_negotiates_openmetrics(api: httpx.AsyncClient) -> None:
    """A scraper asking for OpenMetrics gets it (Prometheus does by default)."""
    response = await api.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


# -- the API switched off -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/targets"),
        ("POST", "/api/v1/targets/payments/rotate"),
        ("GET", f"/api/v1/rotations/{ROTATION_ID}"),
    ],
)
async def test_without_admin_token_the_api_answers_404(
    no_api: httpx.AsyncClient, control: FakeControl, method: str, path: str
) -> None:
    """No server.admin_token: every /api/v1 route is 404, even with a bearer token."""
    response = await no_api.request(method, path, headers=AUTH)
    assert_error(response, 404)
    assert control.requests == []
    assert control.view_lookups == []


# -- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer x{TOKEN}",
        "Bearer wrong",
        f"Token {TOKEN}",
    ],
    ids=[
        "absent",
        "empty",
        "scheme-only",
        "scheme-space",
        "basic",
        "suffix",
        "truncated",
        "prefix",
        "wrong",
        "other-scheme",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/targets"),
        ("POST", "/api/v1/targets/payments/rotate"),
        ("GET", f"/api/v1/rotations/{ROTATION_ID}"),
        ("GET", "/api/v1/no-such-route"),
    ],
)
async def test_missing_or_wrong_token_is_401_with_a_bearer_challenge(
    api: httpx.AsyncClient, control: FakeControl, header: str | None, method: str, path: str
) -> None:
    """Anything but the exact bearer token is 401 with WWW-Authenticate: Bearer; nothing runs."""
    headers = {"Authorization": header} if header is not None else {}
    response = await api.request(method, path, headers=headers)
    assert_error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert control.requests == []
    assert control.view_lookups == []


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"BEARER   {TOKEN}  ", True),
        (f"Bearer {TOKEN} extra", False),
        (f"Bearer {TOKEN.upper()}", False),
        (None, False),
        ("Bearer ", False),
    ],
)
def test_token_matches_only_the_exact_token(header: str | None, ok: bool) -> None:
    """The scheme is case-insensitive; the token must match exactly."""
    assert token_matches(header, Secret(TOKEN)) is ok


async def test_no_response_or_log_line_carries_the_token_or_a_guess(
    api: httpx.AsyncClient,
) -> None:
    """The admin token and a rejected guess are never echoed in bodies, headers or logs."""
    guess = "Bearer guess-" + TOKEN[::-1]
    with capture_logs() as logs:
        refused = await api.get("/api/v1/targets", headers={"Authorization": guess})
        accepted = await api.post("/api/v1/targets/payments/rotate", headers=AUTH)
    assert (refused.status_code, accepted.status_code) == (401, 202)
    dumped = " ".join(
        [refused.text, accepted.text, str(refused.headers), str(accepted.headers), repr(logs)]
    )
    assert TOKEN not in dumped
    assert TOKEN[::-1] not in dumped
    assert {"api_unauthorized", "rotation_requested"} <= {e["event"] for e in logs}


# -- the API --------------------------------------------------------------------------------------


async def test_targets_lists_status_rows_like_status_json(
    api: httpx.AsyncClient, control: FakeControl
) -> None:
    """GET /api/v1/targets answers the `status --json` rows."""
    response = await api.get("/api/v1/targets", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == [row.as_dict() for row in control.statuses]
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("query", "emergency"),
    [("", False), ("?emergency=true", True), ("?emergency=false", False), ("?emergency=1", True)],
)
async def test_rotate_is_accepted_with_a_rotation_id(
    api: httpx.AsyncClient, control: FakeControl, query: str, emergency: bool
) -> None:
    """POST …/rotate answers 202 {rotation_id} and asks the daemon once, emergency as given."""
    response = await api.post(f"/api/v1/targets/payments/rotate{query}", headers=AUTH)
    assert response.status_code == 202
    assert response.json() == {"rotation_id": ROTATION_ID}
    assert response.headers["location"] == f"/api/v1/rotations/{ROTATION_ID}"
    assert control.requests == [("payments", emergency)]


async def test_rotate_refuses_a_non_boolean_emergency(
    api: httpx.AsyncClient, control: FakeControl
) -> None:
    """?emergency=maybe is 400 and asks nothing."""
    assert_error(
        await api.post("/api/v1/targets/payments/rotate?emergency=maybe", headers=AUTH), 400
    )
    assert control.requests == []


async def test_rotate_an_unknown_target_is_404_without_echoing_it(api: httpx.AsyncClient) -> None:
    """An unknown target is 404; the name from the URL is not reflected in the answer."""
    response = await api.post(f"/api/v1/targets/{PLAINTEXT}/rotate", headers=AUTH)
    assert_error(response, 404)
    assert PLAINTEXT not in response.text


async def test_rotate_while_one_is_in_flight_is_409(
    api: httpx.AsyncClient, control: FakeControl
) -> None:
    """A rotation running or queued for the target gives 409."""
    control.refuse = RotationInFlightError("payments")
    assert "in flight" in assert_error(
        await api.post("/api/v1/targets/payments/rotate", headers=AUTH), 409
    )


@pytest.mark.parametrize(("retry_after", "header"), [(12.2, "13"), (0.1, "1"), (60.0, "60")])
async def test_rate_limited_rotate_is_429_with_retry_after(
    api: httpx.AsyncClient, control: FakeControl, retry_after: float, header: str
) -> None:
    """The per-target rate limit gives 429 and Retry-After in whole seconds, rounded up."""
    control.refuse = RateLimitedError(retry_after)
    response = await api.post("/api/v1/targets/payments/rotate", headers=AUTH)
    assert_error(response, 429)
    assert response.headers["retry-after"] == header


async def test_rotate_on_a_standby_is_503(api: httpx.AsyncClient, control: FakeControl) -> None:
    """A standby (not leading) refuses on-demand rotations with 503."""
    control.refuse = PermissionError("standby")
    assert "standby" in assert_error(
        await api.post("/api/v1/targets/payments/rotate", headers=AUTH), 503
    )


async def test_rotation_view_is_served_or_404(api: httpx.AsyncClient, control: FakeControl) -> None:
    """A known rotation id gives its view; an unknown one 404; a malformed one never reaches the
    daemon."""
    known = await api.get(f"/api/v1/rotations/{ROTATION_ID}", headers=AUTH)
    assert (known.status_code, known.json()) == (200, control.views[ROTATION_ID])
    assert_error(await api.get("/api/v1/rotations/0000-unknown", headers=AUTH), 404)
    assert_error(await api.get(f"/api/v1/rotations/{'x' * 65}", headers=AUTH), 404)
    assert_error(await api.get("/api/v1/rotations/a%20b", headers=AUTH), 404)
    assert control.view_lookups == [ROTATION_ID, "0000-unknown"]


async def test_wrong_method_and_unknown_path_are_json_errors(api: httpx.AsyncClient) -> None:
    """405 and 404 (with a valid token) use the same one-line JSON error shape."""
    assert_error(await api.get("/api/v1/targets/payments/rotate", headers=AUTH), 405)
    assert_error(await api.get("/api/v1/nothing-here", headers=AUTH), 404)
    assert_error(await api.get("/nothing-here"), 404)
    assert_error(await api.post("/livez"), 405)


async def test_a_failing_daemon_is_503_without_its_error_text(
    api: httpx.AsyncClient, control: FakeControl
) -> None:
    """When the status call fails the API answers 503 and never sends the exception's text."""
    control.broken = RuntimeError(f"database said {PLAINTEXT}")
    response = await api.get("/api/v1/targets", headers=AUTH)
    assert_error(response, 503)
    assert PLAINTEXT not in response.text
    assert "database" not in response.text


async def test_a_view_with_datetimes_is_rendered_in_iso_utc(
    api: httpx.AsyncClient, control: FakeControl
) -> None:
    """Datetimes a control puts in a rotation view come out as ISO 8601 with a Z."""
    control.views[ROTATION_ID] = {
        "rotation_id": ROTATION_ID,
        "started_at": NOW,
        "finished_at": None,
    }
    response = await api.get(f"/api/v1/rotations/{ROTATION_ID}", headers=AUTH)
    assert response.json() == {
        "rotation_id": ROTATION_ID,
        "started_at": "2026-03-10T12:00:00Z",
        "finished_at": None,
    }
