"""Two `rotator run` daemons on one real PostgreSQL state: one leader, hand-over on SIGKILL.

Both processes run the same configuration (every target rotates every few seconds, against the
Mistral stand-in, OpenBao and moto) and the same PostgreSQL database, so leadership is the
advisory lock. The test checks what really happened rather than what the daemons say about
themselves: rotations in the state store, keys in the stand-in's own records, what consumers
read (the invariant checker), and each daemon's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rotator.clock import SystemClock
from rotator.contracts import Rotation
from rotator.state import SqlStateStore
from tests.support.invariants import InvariantChecker
from tests.support.jsonlog import read_events
from tests.support.stack import Stack, TargetSpec

pytestmark = pytest.mark.e2e

ROTATOR = str(Path(sys.executable).with_name("rotator"))
INTERVAL = 4
"""Seconds between a target's rotations (``schedule: every 4s``)."""
RETRY = 1.0
"""``leader.retry_period``: how often a standby tries to take the lock."""
WAIT = 90.0
"""Upper bound of every wait below (a hang guard, not an expectation)."""


@dataclass
class Daemon:
    """One `rotator run` process, its log file and (once started) its HTTP address."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.log)

    def wait_started(self) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == "daemon_started":
                    self.url = f"http://{event['host']}:{event['port']}"
                    return
            assert self.process.poll() is None, f"{self.name} exited:\n{self.tail()}"
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not start:\n{self.tail()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``: (name, sorted labels) -> value."""
        answer = httpx.get(f"{self.url}/metrics", timeout=10)
        answer.raise_for_status()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples
        }

    def leading(self) -> bool:
        return self.metrics().get(("rotator_leader", ())) == 1.0

    def rotations_counted(self) -> float:
        return sum(v for (n, _), v in self.metrics().items() if n == "rotator_rotations_total")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture
def spawn(stack: Stack, tmp_path: Path) -> Iterator[Callable[[str, Path], Daemon]]:
    """Starts `rotator run` processes with rotator's AWS identity; kills leftovers."""
    started: list[Daemon] = []

    def start(name: str, config: Path) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
        env.update(stack.aws_env())
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [ROTATOR, "--log-level", "INFO", "--log-format", "json", "run", "--config",
                 str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip
        daemon = Daemon(name, process, log)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=30)


def wait_for(what: str, check: Callable[[], bool], daemons: list[Daemon]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {d.name}\n{d.tail()}" for d in daemons)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def rotations(state_url: str) -> list[Rotation]:
    async def read() -> list[Rotation]:
        store = SqlStateStore(state_url, clock=SystemClock())
        try:
            return await store.list_rotations(limit=10_000)
        finally:
            await store.close()

    return asyncio.run(read())


def finished(state_url: str, spec: TargetSpec, *, after: datetime | None = None) -> int:
    return sum(
        1
        for r in rotations(state_url)
        if r.target == spec.name
        and r.outcome in {"rotated", "promoted"}
        and r.finished_at is not None
        and (after is None or r.started_at > after)
    )


def quiet(state_url: str, specs: list[TargetSpec]) -> bool:
    """No rotation open and none due for the next 1.5 s (every target rotated recently)."""

    async def read() -> bool:
        store = SqlStateStore(state_url, clock=SystemClock())
        try:
            if await store.open_rotations():
                return False
            states = {t.target: t for t in await store.list_targets()}
        finally:
            await store.close()
        soon = datetime.now(UTC) + timedelta(seconds=1.5)
        for spec in specs:
            state = states.get(spec.name)
            last = state.last_rotated_at if state else None
            if last is None or last + timedelta(seconds=INTERVAL) < soon:
                return False
        return True

    return asyncio.run(read())


def test_two_daemons_one_leader_and_hand_over_on_sigkill(
    stack: Stack, postgres_url: str, spawn: Callable[[str, Path], Daemon], tmp_path: Path
) -> None:
    """Exactly one daemon rotates; after SIGKILL the other takes over within the retry period
    and keeps rotating every target; no due time is rotated twice and the invariants hold."""
    specs = [stack.add_target(("vault", "aws")), stack.add_target(("aws",))]
    for spec in specs:
        stack.seed(spec)
    data = stack.config_dict(
        state_url=postgres_url,
        policy={"schedule": f"every {INTERVAL}s", "grace": "0s", "max_grace": "0s"},
    )
    data["server"] = {"listen": "127.0.0.1:0"}
    data["leader"] = {
        "election": "postgres",
        "retry_period": f"{RETRY:g}s",
        "renew_deadline": "3s",
        "lease_duration": "5s",
    }
    config = tmp_path / "rotator.yaml"
    config.write_text(yaml.safe_dump(data))

    a, b = spawn("a", config), spawn("b", config)
    daemons = [a, b]
    a.wait_started()
    b.wait_started()
    wait_for("a leader", lambda: a.leading() or b.leading(), daemons)
    leader, standby = (a, b) if a.leading() else (b, a)
    wait_for(
        "two rotations of every target",
        lambda: all(finished(postgres_url, s) >= 2 for s in specs),
        daemons,
    )
    assert leader.leading()
    assert not standby.leading()
    assert leader.rotations_counted() >= 4
    assert standby.rotations_counted() == 0

    # Kill between rotations: a rotation cut short is rolled back by the survivor's recovery
    # and counts as a failed attempt (backoff), which would hold that target back for an hour.
    wait_for("a quiet moment", lambda: quiet(postgres_url, specs), daemons)
    killed_at = datetime.now(UTC)
    kill_clock = time.monotonic()
    leader.process.send_signal(signal.SIGKILL)
    leader.process.wait(timeout=30)
    wait_for("the standby to lead", standby.leading, daemons)
    handover = time.monotonic() - kill_clock
    print(f"hand-over after SIGKILL: {handover:.2f}s (retry period {RETRY:g}s)")
    wait_for(
        "two more rotations of every target by the survivor",
        lambda: all(finished(postgres_url, s, after=killed_at) >= 2 for s in specs),
        daemons,
    )
    assert standby.rotations_counted() >= 4

    standby.process.send_signal(signal.SIGTERM)
    assert standby.process.wait(timeout=WAIT) == 0, standby.tail()

    everything = rotations(postgres_url)
    assert not [r for r in everything if r.open], "a rotation was left open"
    for spec in specs:
        mine = sorted((r for r in everything if r.target == spec.name), key=lambda r: r.started_at)
        for first, second in itertools.pairwise(mine):
            # One due time, one rotation: the next starts only once `every` has passed since
            # the previous promotion (which came after the previous start).
            if first.outcome in {"rotated", "promoted"}:
                gap = second.started_at - first.started_at
                assert gap >= timedelta(seconds=INTERVAL), (
                    f"{spec.name}: rotations {first.rotation_id} and {second.rotation_id}"
                    f" started {gap.total_seconds():.2f}s apart"
                )
        names = {r.new_key_name for r in mine}
        for key in stack.standin.control.key_facts():
            if (key.name or "").startswith(f"{spec.prefix}-"):
                assert key.name in names, f"key {key.key_id} was created outside any rotation"
    problems = InvariantChecker(stack, postgres_url).check(
        logs=a.log.read_text(errors="replace") + b.log.read_text(errors="replace")
    )
    assert problems == []
