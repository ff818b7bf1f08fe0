"""The schedule outlives what operators do: `rotator run` keeps rotating a target on schedule after
a CLI rotation, an HTTP rotation and a failed CLI rotation, as a real process against the
stand-in, OpenBao and moto.

The regression this guards: a CLI rotation made the daemon's next scheduled fire find the target
"not due any more", and the daemon never planned it again (found with the demo in a new user's
first hour).
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from rotator.clock import SystemClock
from rotator.contracts import Rotation
from tests.e2e.test_daemon_run import (
    ROTATOR,
    TOKEN,
    Daemon,
    daemons,  # noqa: F401 - a fixture
    environment,
    finished_ok,
    read_state,
    wait_until,
    write_config,
)
from tests.support.invariants import InvariantChecker
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

EVERY = timedelta(seconds=15)
BACKOFF = timedelta(seconds=5)
LATE = timedelta(seconds=5)
"""How late after its due time a scheduled rotation may start on a busy machine."""


def scheduled(daemon: Daemon, rotations: list[Rotation]) -> list[Rotation]:
    """The rotations the daemon started from its schedule (its log says so)."""
    ids = {
        e["rotation_id"]
        for e in daemon.events()
        if e.get("event") == "rotation_result" and e.get("origin") == "schedule"
    }
    return [r for r in rotations if r.rotation_id in ids]


def cli(stack: Stack, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROTATOR, "--log-format", "json", *args, "-c", str(config)],
        env=environment(stack),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_daemon_keeps_its_schedule_after_cli_http_and_failed_rotations(
    stack: Stack,
    state_url: str,
    tmp_path: Path,
    checker: InvariantChecker,
    daemons: list[Daemon],  # noqa: F811 - the fixture
) -> None:
    """``every 15s``: after a CLI rotation, an HTTP rotation, and a CLI rotation that fails
    (the daemon's own schedule untouched), the daemon rotates the target again by itself each
    time: 15 s after the last rotation, and after the failure once its 5 s backoff has ended."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    policy = {
        "schedule": "every 15s",
        "grace": "2s",
        "jitter": "0s",
        "failure_backoff": "5s",
        "activation_timeout": "5s",
    }
    config = write_config(stack, tmp_path / "rotator.yaml", state_url=state_url, policy=policy)
    daemon = Daemon(stack, config, tmp_path / "daemon.log")
    daemons.append(daemon)
    timeline: list[str] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - t0:6.1f}s {what}")

    def last_ok() -> Rotation:
        return finished_ok(read_state(state_url, spec.name)[1])[-1]

    def promoted_at() -> datetime:
        """When the target's current key was promoted: the schedule counts from there (the
        rotation itself finishes a little later, after revoking the old key at grace 0)."""
        state = read_state(state_url, spec.name)[0]
        assert state is not None
        assert state.last_rotated_at is not None
        return state.last_rotated_at

    def daemon_rotates_after(when: datetime, what: str) -> Rotation:
        def found() -> Rotation | None:
            ok = finished_ok(read_state(state_url, spec.name)[1])
            return next((r for r in scheduled(daemon, ok) if r.started_at > when), None)

        rotation = wait_until(found, what)
        note(f"daemon rotated on schedule ({rotation.outcome}): {what}")
        return rotation

    # 1. A CLI rotation, then the daemon's own rotation 15 s after it.
    answer = cli(stack, config, "rotate", spec.name)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    by_cli, cli_promoted = last_ok(), promoted_at()
    note("CLI rotation promoted")
    after_cli = daemon_rotates_after(by_cli.finished_at or by_cli.started_at, "after the CLI")
    assert by_cli.finished_at is not None
    assert cli_promoted + EVERY <= after_cli.started_at
    assert after_cli.started_at <= by_cli.finished_at + EVERY + LATE
    # The fire planned before the CLI rotation found it not due (or, landing within a second
    # of the new plan, waited for it): no scheduled rotation started before the new plan.
    early = [
        r
        for r in scheduled(daemon, finished_ok(read_state(state_url, spec.name)[1]))
        if by_cli.started_at < r.started_at < cli_promoted + EVERY
    ]
    assert early == [], early

    # 2. An HTTP rotation, then the daemon's own rotation 15 s after it.
    answer_http = httpx.post(
        f"{daemon.url}/api/v1/targets/{spec.name}/rotate",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert answer_http.status_code == 202, answer_http.text
    rotation_id = answer_http.json()["rotation_id"]
    by_api = wait_until(
        lambda: next(
            (
                r
                for r in finished_ok(read_state(state_url, spec.name)[1])
                if r.rotation_id == rotation_id
            ),
            None,
        ),
        "the HTTP rotation",
    )
    api_promoted = promoted_at()
    note("HTTP rotation promoted")
    assert by_api.finished_at is not None
    after_api = daemon_rotates_after(by_api.finished_at, "after the HTTP rotation")
    assert api_promoted + EVERY <= after_api.started_at <= by_api.finished_at + EVERY + LATE

    # 3. Right after a rotation of the daemon, a CLI rotation that fails (Mistral refuses to
    #    create keys while it runs); the daemon retries once the backoff allows.
    stack.standin.control.fail("create_key", 400, count=None)
    try:
        answer = cli(stack, config, "rotate", spec.name)
    finally:
        stack.standin.control.clear_faults()
    assert answer.returncode == 1, answer.stdout + answer.stderr
    state = read_state(state_url, spec.name)[0]
    assert state is not None
    assert state.consecutive_failures == 1
    assert state.backoff_until is not None
    failed_at = SystemClock().now()
    wait_s = (state.backoff_until - failed_at).total_seconds()
    note(f"CLI rotation failed: backoff until +{wait_s:.1f}s")
    assert state.backoff_until - failed_at <= BACKOFF
    retried = daemon_rotates_after(failed_at, "after the failed CLI rotation")
    assert retried.started_at >= state.backoff_until
    assert retried.started_at <= after_api.started_at + EVERY + LATE + EVERY

    status = cli(stack, config, "status", "--json")
    assert status.returncode == 0, status.stderr
    note("status after the retry: " + status.stdout.replace("\n", "")[:160])
    assert daemon.terminate() == 0
    note("SIGTERM: exit 0")
    print("\n".join(timeline))
    assert checker.check(logs=daemon.text()) == []
