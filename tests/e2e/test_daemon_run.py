"""`rotator run` as a real process against the stand-in, OpenBao and moto.

Rotations come when their plan says (each plan derived from the state, never from a timer), a
restart does not postpone the next one, ``/metrics`` shows them, the on-demand API answers
401/404/202/409, and SIGTERM during a rotation exits 0 with nothing left for recovery.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rotator.clock import SystemClock
from rotator.contracts import AuditEvent, Rotation, TargetState
from rotator.state import SqlStateStore
from tests.support.invariants import InvariantChecker
from tests.support.jsonlog import read_events
from tests.support.stack import Stack, TargetSpec

pytestmark = pytest.mark.e2e

ROTATOR = str(Path(sys.executable).with_name("rotator"))
TOKEN = "e2e-admin-token"
EVERY = timedelta(seconds=3)
GUARD = 90.0
"""Seconds any awaited event may take before the test gives up (a hang guard, not a timing)."""


def environment(stack: Stack) -> dict[str, str]:
    """rotator's process environment: its AWS identity and nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
    env.update(stack.aws_env())
    return env


def write_config(stack: Stack, path: Path, *, state_url: str, policy: dict[str, str]) -> Path:
    data = stack.config_dict(state_url=state_url, policy=policy)
    data["server"] = {"listen": "127.0.0.1:0", "admin_token": TOKEN}
    path.write_text(yaml.safe_dump(data))
    return path


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until it returns something truthy (that value), within :data:`GUARD`."""
    deadline = time.monotonic() + GUARD
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.1)


class Daemon:
    """One ``rotator run`` process; its JSON log lines go to a file read back as events."""

    def __init__(self, stack: Stack, config: Path, log: Path) -> None:
        self.log = log
        self.started = SystemClock().now()
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [ROTATOR, "--log-format", "json", "--log-level", "INFO", "run", "-c", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=environment(stack),
            )
        started = self.wait_event(lambda e: e.get("event") == "daemon_started", "started")
        self.url = f"http://127.0.0.1:{started['port']}"

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.log)

    def wait_event(self, match: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"rotator run exited {self.proc.returncode}: {self.text()}")
            return next((e for e in self.events() if match(e)), None)

        result: dict[str, Any] = wait_until(found, what)
        return result

    def plans(self, target: str) -> list[datetime]:
        """Every fire time this process planned for ``target``, in order."""
        return [
            datetime.fromisoformat(e["fire_at"])
            for e in self.events()
            if e.get("event") == "rotation_planned" and e.get("target") == target
        ]

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=GUARD)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Started daemons, killed at the end whatever happened."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def read_state(
    state_url: str, target: str
) -> tuple[TargetState | None, list[Rotation], list[AuditEvent]]:
    async def read() -> tuple[TargetState | None, list[Rotation], list[AuditEvent]]:
        store = SqlStateStore(state_url, clock=SystemClock())
        try:
            return (
                await store.get_target(target),
                await store.list_rotations(target, limit=1000),
                await store.audit_events(target),
            )
        finally:
            await store.close()

    return asyncio.run(read())


def finished_ok(rotations: list[Rotation]) -> list[Rotation]:
    ok = [r for r in rotations if r.outcome in {"promoted", "rotated"}]
    return sorted(ok, key=lambda r: r.started_at)


def metric(url: str, name: str, labels: dict[str, str]) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def check_on_time(spec: TargetSpec, audit: list[AuditEvent]) -> int:
    """Every rotation after the first started no earlier than the last promotion + EVERY (its
    due time from state), and each promotion was followed by a start. Returns the promotions."""
    promoted = sorted(e.at for e in audit if e.event == "key.promoted")
    started = sorted(e.at for e in audit if e.event == "rotation.started")
    for when in promoted[:-1]:
        following = [s for s in started if s > when]
        assert following, f"{spec.name}: no rotation after the promotion at {when}"
        assert following[0] >= when + EVERY, f"{spec.name}: started early after {when}"
    return len(promoted)


def test_scheduled_rotations_survive_a_restart(
    stack: Stack,
    state_url: str,
    tmp_path: Path,
    checker: InvariantChecker,
    daemons: list[Daemon],
) -> None:
    """Every 3 s a rotation comes at the time planned from state; /metrics counts them; after
    SIGTERM (exit 0) and a restart the first plan is the one the state gives (last rotation +
    3 s), not a later one, and the rotation it plans runs."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    policy = {"schedule": "every 3s", "grace": "2s", "jitter": "0s"}
    config = write_config(stack, tmp_path / "rotator.yaml", state_url=state_url, policy=policy)
    first = Daemon(stack, config, tmp_path / "daemon-1.log")
    daemons.append(first)

    wait_until(lambda: len(finished_ok(read_state(state_url, spec.name)[1])) >= 2, "2 rotations")
    promoted_metric = wait_until(
        lambda: metric(
            first.url, "rotator_rotations_total", {"target": spec.name, "outcome": "promoted"}
        ),
        "promoted rotations in /metrics",
    )
    assert promoted_metric >= 2

    def gauge_matches_state() -> bool:
        state = read_state(state_url, spec.name)[0]
        gauge = metric(
            first.url, "rotator_key_last_rotation_timestamp_seconds", {"target": spec.name}
        )
        return (
            state is not None
            and state.last_rotated_at is not None
            and (gauge == state.last_rotated_at.timestamp())
        )

    wait_until(gauge_matches_state, "last-rotation gauge equal to the state")
    assert first.terminate() == 0

    state, rotations, audit = read_state(state_url, spec.name)
    assert state is not None
    assert state.last_rotated_at is not None
    assert all(not r.open for r in rotations), "SIGTERM left a rotation open"
    before = check_on_time(spec, audit)
    for planned, promoted in zip(
        first.plans(spec.name)[1:],
        sorted(e.at for e in audit if e.event == "key.promoted"),
        strict=False,
    ):
        assert planned == promoted + EVERY  # each plan is derived from the state

    second = Daemon(stack, config, tmp_path / "daemon-2.log")
    daemons.append(second)
    second.wait_event(
        lambda e: e.get("event") == "rotation_planned" and e.get("target") == spec.name,
        "planned after the restart",
    )
    assert second.plans(spec.name)[0] == state.last_rotated_at + EVERY  # not postponed
    wait_until(
        lambda: any(
            r.started_at >= second.started for r in finished_ok(read_state(state_url, spec.name)[1])
        ),
        "a rotation after the restart",
    )
    assert second.terminate() == 0
    _, rotations, audit = read_state(state_url, spec.name)
    assert all(not r.open for r in rotations)
    assert check_on_time(spec, audit) > before
    logs = first.text() + second.text()
    assert checker.check(logs=logs) == []


def test_on_demand_api_and_sigterm_during_a_rotation(
    stack: Stack,
    state_url: str,
    tmp_path: Path,
    checker: InvariantChecker,
    daemons: list[Daemon],
) -> None:
    """401 without or with a wrong token, 404 for an unknown target, 202 with a rotation id,
    409 while it is in flight; SIGTERM then exits 0 after the rotation finished, and
    ``rotator recover`` has nothing to do."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    # New keys start working only when the test moves the stand-in's clock: until then the
    # rotation waits in its verify step, in flight for as long as the test needs.
    stack.standin.control.set_activation_delay(600)
    policy = {"schedule": "every 30d", "grace": "1h", "jitter": "0s", "activation_timeout": "60s"}
    config = write_config(stack, tmp_path / "rotator.yaml", state_url=state_url, policy=policy)
    daemon = Daemon(stack, config, tmp_path / "daemon.log")
    daemons.append(daemon)
    daemon.wait_event(lambda e: e.get("event") == "rotation_planned", "leading, planned")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=daemon.url, timeout=10) as api:
        assert api.get("/livez").status_code == 200
        assert api.get("/api/v1/targets").status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert api.post(f"/api/v1/targets/{spec.name}/rotate", headers=wrong).status_code == 401
        assert api.post("/api/v1/targets/nope/rotate", headers=auth).status_code == 404
        accepted = api.post(f"/api/v1/targets/{spec.name}/rotate", headers=auth)
        assert accepted.status_code == 202, accepted.text
        rotation_id = accepted.json()["rotation_id"]
        again = api.post(f"/api/v1/targets/{spec.name}/rotate", headers=auth)
        assert again.status_code == 409, again.text
        view = api.get(f"/api/v1/rotations/{rotation_id}", headers=auth)
        assert view.status_code == 200
        assert view.json()["state"] not in {"done", "rolled_back", "stuck"}
        assert api.get("/api/v1/rotations/unknown-id", headers=auth).status_code == 404
        rows = api.get("/api/v1/targets", headers=auth).json()
        assert [r["target"] for r in rows] == [spec.name]

    daemon.proc.send_signal(signal.SIGTERM)
    stopping = daemon.wait_event(
        lambda e: e.get("event") == "shutdown_requested", "the SIGTERM received"
    )
    assert stopping["in_flight"] == [spec.name]
    daemon.wait_event(
        lambda e: e.get("event") == "mistral.key_created" and e.get("rotation_id") == rotation_id,
        "the new key created",
    )
    assert daemon.alive()  # waiting for the rotation, which cannot finish yet
    stack.standin.control.advance(600)  # the new key starts working; the rotation goes on
    assert daemon.proc.wait(timeout=GUARD) == 0

    _, rotations, _ = read_state(state_url, spec.name)
    ours = next(r for r in rotations if r.rotation_id == rotation_id)
    assert (ours.state, ours.outcome) == ("done", "promoted")
    assert all(not r.open for r in rotations)
    recovered = subprocess.run(
        [ROTATOR, "--log-level", "WARNING", "recover", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        env=environment(stack),
        timeout=GUARD,
        check=False,
    )
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["rotations"] == []
    assert checker.check(logs=daemon.text()) == []
