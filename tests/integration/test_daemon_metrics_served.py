"""The HTTP app served by uvicorn on loopback, scraped by a real client, over a real rotation.

The engine runs against the stand-in, OpenBao and moto with the metrics hooks wired as the daemon
wires them (one ``on_call`` for the Mistral clients and the destinations); a small control
stands in for the runner (another part of the daemon) to drive the on-demand API.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from rotator.app.wiring import build_engine
from rotator.daemon.control import (
    Health,
    RotationInFlightError,
    UnknownTargetError,
)
from rotator.daemon.http import build_app
from rotator.daemon.metrics import Metrics
from rotator.engine.engine import Engine, TargetStatus
from rotator.engine.steps import Outcome
from rotator.secret import Secret
from tests.support.stack import FIELD, Stack

pytestmark = pytest.mark.integration

TOKEN = "adm-integration-token-5cQ1-not-a-key"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class EngineControl:
    """A minimal DaemonControl over a real engine: rotations run as tasks and are observed."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.health = Health(ready=True, leading=True)
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def target_names(self) -> list[str]:
        return list(self.engine.contexts)

    async def status(self) -> list[TargetStatus]:
        return await self.engine.status()

    def request_rotation(self, target: str, *, emergency: bool) -> str:
        if target not in self.engine.contexts:
            raise UnknownTargetError(target)
        task = self.tasks.get(target)
        if self.engine.busy(target) or (task is not None and not task.done()):
            raise RotationInFlightError(target)
        rotation_id = str(uuid.uuid4())
        self.tasks[target] = asyncio.create_task(self._run(target, emergency, rotation_id))
        return rotation_id

    async def _run(self, target: str, emergency: bool, rotation_id: str) -> None:
        started = time.monotonic()
        result = await self.engine.rotate(target, emergency=emergency, rotation_id=rotation_id)
        journal = await self.engine.deps.store.journal(rotation_id)
        self.metrics.observe_rotation(result, time.monotonic() - started, journal=journal)
        await self.refresh()

    async def refresh(self) -> None:
        store = self.engine.deps.store
        self.metrics.refresh(
            self.engine.cfg,
            await self.engine.status(),
            await store.list_targets(),
            now=self.engine.deps.clock.now(),
        )

    async def rotation_view(self, rotation_id: str) -> dict[str, object] | None:
        store = self.engine.deps.store
        rotation = await store.get_rotation(rotation_id)
        if rotation is None:
            return None
        journal = await store.journal(rotation_id)
        return {
            "rotation_id": rotation.rotation_id,
            "target": rotation.target,
            "state": rotation.state,
            "outcome": rotation.outcome,
            "steps": [{"step": e.step, "at": e.at.isoformat()} for e in journal],
            "error": rotation.error,
            "started_at": rotation.started_at.isoformat(),
            "finished_at": rotation.finished_at.isoformat() if rotation.finished_at else None,
        }


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in this event loop on a free 127.0.0.1 port; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) → value for a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, frozenset(labels.items())))


def total(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(
        v for (n, lbls), v in found.items() if n == name and set(labels.items()) <= set(lbls)
    )


async def test_served_app_reflects_an_on_demand_rotation(stack: Stack, state_url: str) -> None:
    """Over real sockets: 401/202/409/404 from the API, then /metrics shows the rotation, the
    backend calls, the new state gauges, and no response ever carries a key or the token."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    legacy = {data[FIELD] for _, data in stack.consumer_reads(spec) if data}
    metrics = Metrics()
    engine = await build_engine(stack.config(state_url=state_url), on_call=metrics.observe_call)
    control = EngineControl(engine, metrics)
    bodies: list[str] = []
    try:
        await control.refresh()
        app = build_app(control, admin_token=Secret(TOKEN), registry=metrics.registry)
        async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/livez")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            before = samples((await client.get("/metrics")).text)
            ready = {"target": spec.name}
            assert value(before, "rotator_key_ready_status", **ready, condition="Unknown") == 1.0
            assert value(before, "rotator_rotations_total", **ready, outcome="promoted") == 0.0

            refused = await client.post(f"/api/v1/targets/{spec.name}/rotate")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            accepted = await client.post(f"/api/v1/targets/{spec.name}/rotate", headers=AUTH)
            assert accepted.status_code == 202
            rotation_id = accepted.json()["rotation_id"]
            assert (
                await client.post(f"/api/v1/targets/{spec.name}/rotate", headers=AUTH)
            ).status_code == 409
            assert (
                await client.post("/api/v1/targets/no-such-target/rotate", headers=AUTH)
            ).status_code == 404
            await control.tasks[spec.name]

            view = await client.get(f"/api/v1/rotations/{rotation_id}", headers=AUTH)
            assert view.status_code == 200
            assert (view.json()["outcome"], view.json()["target"]) == (
                str(Outcome.PROMOTED),
                spec.name,
            )
            targets = await client.get("/api/v1/targets", headers=AUTH)
            assert [row["target"] for row in targets.json()] == [spec.name]
            scraped = await client.get("/metrics")
            bodies += [refused.text, accepted.text, view.text, targets.text, scraped.text]
            bodies += [str(r.headers) for r in (refused, accepted, view, targets, scraped)]
    finally:
        await engine.close()

    after = samples(scraped.text)
    rows = {row.target: row for row in await _status(stack, state_url)}
    last = rows[spec.name].last_rotated_at
    assert last is not None
    assert value(after, "rotator_rotations_total", **ready, outcome="promoted") == 1.0
    assert value(after, "rotator_rotation_duration_seconds_count", **ready) == 1.0
    assert value(after, "rotator_key_ready_status", **ready, condition="True") == 1.0
    assert value(after, "rotator_key_last_rotation_timestamp_seconds", **ready) == last.timestamp()
    max_age_deadline = last.timestamp() + 30 * 86400
    assert value(after, "rotator_key_expiration_timestamp_seconds", **ready) == max_age_deadline
    assert value(after, "rotator_previous_keys_pending_revocation", **ready) == 1.0
    assert (
        total(after, "rotator_backend_requests_total", backend="mistral", operation="create_key")
        == 1.0
    )
    assert total(after, "rotator_backend_requests_total", backend="mistral", status="200") >= 2.0
    assert total(after, "rotator_backend_requests_total", backend="vault", status="ok") >= 2.0
    assert total(after, "rotator_backend_requests_total", backend="aws", status="ok") >= 2.0

    new = {data[FIELD] for _, data in stack.consumer_reads(spec) if data}
    assert new.isdisjoint(legacy)
    assert rotation_id not in scraped.text
    everything = "\n".join(bodies)
    for forbidden in (*legacy, *new, TOKEN):
        assert forbidden not in everything


async def _status(stack: Stack, state_url: str) -> list[TargetStatus]:
    """The status rows as a fresh engine on the same state reads them."""
    engine = await build_engine(stack.config(state_url=state_url))
    try:
        return await engine.status()
    finally:
        await engine.close()
