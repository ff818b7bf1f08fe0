"""Kubernetes Lease leadership against a small fake Lease API served on loopback.

The fake implements only what the elector uses — GET, POST and PUT of one
``coordination.k8s.io/v1`` Lease — with the API server's compare-and-swap: a write whose
``metadata.resourceVersion`` is not the stored one is refused with 409, as is creating a Lease
that exists. It checks the bearer token like the API server does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rotator.clock import FakeClock
from rotator.daemon.control import Health
from rotator.daemon.leader import KubernetesLeaseElector, Timing
from rotator.errors import LeadershipLost
from tests.support.electors import Changes, leading

NAMESPACE = "rotator-system"
LEASE = "rotator"
TOKEN = "sa-token-1"
BASE = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"


class FakeLeaseApi:
    """One namespace's Leases, with resourceVersion conflicts and bearer-token checks."""

    def __init__(self) -> None:
        self.token = TOKEN
        self.leases: dict[str, dict[str, Any]] = {}
        self.versions = itertools.count(1)
        self.status_override: int | None = None
        """When set, every request is answered with this status (an API outage)."""
        self.before_put: Callable[[], None] | None = None
        """Runs before a PUT is judged (to make a concurrent writer win the race)."""
        self.log: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(BASE, self._collection, methods=["POST"]),
                Route(BASE + "/{name}", self._item, methods=["GET", "PUT"]),
            ]
        )

    def lease(self, name: str = LEASE) -> dict[str, Any]:
        with self.lock:
            copy: dict[str, Any] = json.loads(json.dumps(self.leases[name]))
            return copy

    def write(self, name: str, spec: dict[str, Any]) -> None:
        """Another client's successful write: new spec, new resourceVersion."""
        with self.lock:
            self.leases[name]["spec"] = spec
            self.leases[name]["metadata"]["resourceVersion"] = str(next(self.versions))

    def _answer(self, method: str, status: int, body: object) -> Response:
        self.log.append((method, status))
        return JSONResponse(body, status_code=status)

    def _refused(self, request: Request) -> Response | None:
        if self.status_override is not None:
            return self._answer(request.method, self.status_override, {"kind": "Status"})
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._answer(request.method, 401, {"kind": "Status", "code": 401})
        return None

    async def _collection(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await request.json()
        name = body["metadata"]["name"]
        with self.lock:
            if name in self.leases:
                return self._answer("POST", 409, {"kind": "Status", "reason": "AlreadyExists"})
            body["metadata"]["resourceVersion"] = str(next(self.versions))
            self.leases[name] = body
        return self._answer("POST", 201, body)

    async def _item(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        name = request.path_params["name"]
        if request.method == "GET":
            with self.lock:
                found = self.leases.get(name)
            if found is None:
                return self._answer("GET", 404, {"kind": "Status", "reason": "NotFound"})
            return self._answer("GET", 200, found)
        body = await request.json()
        if self.before_put is not None:
            self.before_put()
        with self.lock:
            stored = self.leases.get(name)
            if stored is None:
                return self._answer("PUT", 404, {"kind": "Status", "reason": "NotFound"})
            given = body.get("metadata", {}).get("resourceVersion")
            if given != stored["metadata"]["resourceVersion"]:
                return self._answer("PUT", 409, {"kind": "Status", "reason": "Conflict"})
            body["metadata"]["resourceVersion"] = str(next(self.versions))
            self.leases[name] = body
        return self._answer("PUT", 200, body)


@pytest.fixture
def api() -> Iterator[tuple[FakeLeaseApi, str]]:
    """The fake Lease API served by uvicorn on a free loopback port, and its URL."""
    fake = FakeLeaseApi()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(fake.app, lifespan="off", access_log=False, log_config=None)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the fake Lease API did not start"
    host, port = sock.getsockname()[:2]
    try:
        yield fake, f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


TIMING = Timing(lease_duration=60, renew_deadline=40, retry_period=15)


@pytest.fixture
async def make(
    api: tuple[FakeLeaseApi, str], tmp_path: Path
) -> AsyncIterator[Callable[..., KubernetesLeaseElector]]:
    """Electors named ``identity`` on the fake API, each with its own fake clock and health."""
    made: list[KubernetesLeaseElector] = []
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")

    def build(identity: str, *, timing: Timing = TIMING) -> KubernetesLeaseElector:
        clock = FakeClock()
        elector = KubernetesLeaseElector(
            api_url=api[1],
            namespace=NAMESPACE,
            lease_name=LEASE,
            identity=identity,
            token_path=token,
            health=Health(monotonic=clock.monotonic),
            timing=timing,
            clock=clock,
        )
        made.append(elector)
        return elector

    yield build
    for elector in made:
        await elector.release()


def fake_clock(elector: KubernetesLeaseElector) -> FakeClock:
    assert isinstance(elector.clock, FakeClock)
    return elector.clock


async def test_first_elector_creates_the_lease_and_leads(
    api: tuple[FakeLeaseApi, str], make: Callable[..., KubernetesLeaseElector]
) -> None:
    """With no Lease, one try creates it naming this instance, with the configured duration."""
    a = make("pod-a")
    assert await a.acquire() is True
    assert a.is_leader
    spec = api[0].lease()["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 60
    assert spec["acquireTime"] == spec["renewTime"]
    assert spec["acquireTime"].endswith("Z")
    assert spec["leaseTransitions"] == 0
    await a.ensure()
    await a.release()


async def test_standby_stays_standby_while_the_leader_renews(
    api: tuple[FakeLeaseApi, str], make: Callable[..., KubernetesLeaseElector]
) -> None:
    """A second instance cannot take a Lease whose holder keeps renewing it, however long."""
    a, b = make("pod-a"), make("pod-b")
    assert await a.acquire()
    first = api[0].lease()["spec"]
    for _ in range(5):
        assert await b.acquire() is False
        fake_clock(a).advance(15)
        fake_clock(b).advance(15)
        assert await a.acquire() is True  # a renewal
    spec = api[0].lease()["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["acquireTime"] == first["acquireTime"]
    assert spec["renewTime"] > first["renewTime"]
    assert spec["leaseTransitions"] == 0
    with pytest.raises(LeadershipLost):
        await b.ensure()
    await a.release()
    await b.release()


async def test_release_hands_the_lease_over_at_the_next_try(
    api: tuple[FakeLeaseApi, str], make: Callable[..., KubernetesLeaseElector]
) -> None:
    """Releasing empties holderIdentity; a standby takes over at once and counts a transition."""
    a, b = make("pod-a"), make("pod-b")
    assert await a.acquire()
    assert await b.acquire() is False
    await a.release()
    assert api[0].lease()["spec"]["holderIdentity"] is None
    assert not a.is_leader
    assert await b.acquire() is True
    spec = api[0].lease()["spec"]
    assert spec["holderIdentity"] == "pod-b"
    assert spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == 60
    await b.release()


async def test_an_expired_lease_is_taken_over_after_a_full_lease_on_the_standbys_clock(
    api: tuple[FakeLeaseApi, str], make: Callable[..., KubernetesLeaseElector]
) -> None:
    """A silent holder loses the Lease only after leaseDurationSeconds of the standby's own
    observation, then learns it lost at its next renewal."""
    a, b = make("pod-a"), make("pod-b")
    assert await a.acquire()
    assert await b.acquire() is False
    fake_clock(b).advance(59)
    assert await b.acquire() is False
    fake_clock(b).advance(2)
    assert await b.acquire() is True
    assert api[0].lease()["spec"]["leaseTransitions"] == 1
    assert await a.acquire() is False  # a sees pod-b on the Lease
    assert not a.is_leader
    with pytest.raises(LeadershipLost):
        await a.ensure()
    assert api[0].lease()["spec"]["holderIdentity"] == "pod-b"
    await a.release()
    assert api[0].lease()["spec"]["holderIdentity"] == "pod-b"  # a's release changed nothing
    await b.release()


async def test_racing_candidates_yield_exactly_one_leader(
    api: tuple[FakeLeaseApi, str], make: Callable[..., KubernetesLeaseElector]
) -> None:
    """Candidates trying at once (on create, then on a released Lease) elect exactly one."""
    electors = [make(f"pod-{i}") for i in range(4)]
    won = await asyncio.gather(*(e.acquire() for e in electors))
    assert sum(won) == 1
    leader = electors[won.index(True)]
    assert api[0].lease()["spec"]["holderIdentity"] == leader.identity
    await leader.release()
    rest = [e for e in electors if e is not leader]
    won = await asyncio.gather(*(e.acquire() for e in rest))
    assert sum(won) == 1
    assert api[0].lease()["spec"]["holderIdentity"] == rest[won.index(True)].identity
    for elector in electors:
        await elector.release()


async def test_a_stale_resource_version_is_refused_and_not_counted_as_a_renewal(
    api: tuple[FakeLeaseApi, str], make: Callable[..., KubernetesLeaseElector]
) -> None:
    """A renewal that loses the compare-and-swap (409) leaves leadership to the deadline."""
    fake, _ = api
    a = make("pod-a")
    assert await a.acquire()

    def concurrent_writer() -> None:
        spec = fake.lease()["spec"]
        fake.write(LEASE, {**spec, "renewTime": "2030-01-01T00:00:00.000000Z"})

    fake.before_put = concurrent_writer
    fake_clock(a).advance(15)
    assert await a.acquire() is False
    assert ("PUT", 409) in fake.log
    fake.before_put = None
    await a.ensure()  # within renew_deadline of the last real renewal
    fake_clock(a).advance(26)  # 41 s since the last renewal
    with pytest.raises(LeadershipLost):
        await a.ensure()
    await a.release()


async def test_unreachable_api_loses_leadership_after_the_renew_deadline(
    api: tuple[FakeLeaseApi, str], make: Callable[..., KubernetesLeaseElector]
) -> None:
    """While the API fails, the leader keeps leading until renew_deadline, then steps down."""
    fake, _ = api
    a = make("pod-a")
    assert await a.acquire()
    fake.status_override = 503
    fake_clock(a).advance(39)
    assert await a.acquire() is False
    await a.ensure()
    fake_clock(a).advance(2)
    with pytest.raises(LeadershipLost, match="not renewed within 40s"):
        await a.ensure()
    assert not a.is_leader
    await a.release()


async def test_the_token_file_is_read_for_every_request(
    api: tuple[FakeLeaseApi, str], make: Callable[..., KubernetesLeaseElector], tmp_path: Path
) -> None:
    """A rejected token (401) is not leadership; the rotated token in the file is picked up."""
    fake, _ = api
    fake.token = "sa-token-2"
    a = make("pod-a")
    assert await a.acquire() is False
    assert ("GET", 401) in fake.log
    (tmp_path / "token").write_text("sa-token-2\n")
    assert await a.acquire() is True
    await a.release()


async def test_run_reports_gain_and_loss_to_health_and_the_callback(
    api: tuple[FakeLeaseApi, str], tmp_path: Path
) -> None:
    """run() leads, keeps health's lease deadline ahead, and on an outage past the renew
    deadline tells the callback and raises LeadershipLost."""
    fake, url = api
    token = tmp_path / "token"
    token.write_text(TOKEN)
    health = Health()
    elector = KubernetesLeaseElector(
        api_url=url,
        namespace=NAMESPACE,
        lease_name=LEASE,
        identity="pod-a",
        token_path=token,
        health=health,
        timing=Timing(lease_duration=2, renew_deadline=0.3, retry_period=0.02),
    )
    changes = Changes()
    task = asyncio.create_task(elector.run(on_change=changes))
    await changes.wait_gained()
    assert changes.seen == [True]
    assert leading(health)
    deadline_while_leading = health.lease_valid_until
    assert deadline_while_leading is not None
    assert health.live() == (True, "ok")
    fake.status_override = 500
    with pytest.raises(LeadershipLost):
        async with asyncio.timeout(10):
            await task
    assert changes.seen == [True, False]
    assert not leading(health)
    assert health.lease_valid_until is None
    await elector.release()
