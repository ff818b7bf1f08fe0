"""Crash injection at every journal boundary: a real rotation in its own process, killed with
SIGKILL before or after each durable write of the state store (every journal write, and the
others of the rotation), or right after each destination stage and promotion (a side effect the
next write records), then ``rotator recover`` and the I1-I6 checker.

For each backend set and for the first rotation of a seeded target (adoption), a later one, and
a later one with grace 0 (revoking the old key itself), an uncrashed rotation first counts the
writes K and the stage and promote calls; then for every such point a fresh seeded target is
rotated by a child killed there, ``rotator recover`` must exit 0, the invariants must hold, a
follow-up ``rotate`` must succeed and the invariants must hold again. ``revoke-due`` is crashed
around each Mistral delete the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.crash_cases import (
    JOURNAL,
    PHASES,
    REVOKE_POLICY,
    Phase,
    count_revocation,
    count_rotation,
    phase_policy,
    recover,
    revocation_crash,
    revocation_points,
    rotation_crash,
    rotation_points,
    run_matrix,
)
from tests.support.crash_runner import (
    REPO,
    ExecLauncher,
    ForkServerLauncher,
    Launcher,
    make_launcher,
)
from tests.support.crash_seam import CrashPoint
from tests.support.crash_world import CaseServers, in_world, read_state, run_case
from tests.support.stack import BACKEND_SETS, Stack

pytestmark = pytest.mark.integration

MIN_JOURNAL_WRITES = 4
"""The rotation opened with ``planned``; [created … staging:*]; [staged:* … promoting:*];
[promoted:* … done] with the promotion recorded: at least 4 writes (adopting a key adds one,
revoking the old one at once two)."""
WORKERS = max(2, min(6, 2 * (os.cpu_count() or 1)))
"""Cases run at once: each mostly waits on its child processes and the servers."""


@dataclass
class Tally:
    """Crash points exercised per group (``rotation <phase>``, ``revoke-due``) and backend set."""

    cases: dict[tuple[str, str], int] = field(default_factory=dict)
    failed: int = 0

    def add(self, group: str, backends: str, cases: int, failed: int) -> None:
        self.cases[group, backends] = cases
        self.failed += failed

    def summary(self) -> str:
        parts = [f"{g} x {b}: {n}" for (g, b), n in sorted(self.cases.items())]
        total = sum(self.cases.values())
        return (
            f"crash points x backend sets exercised: {total} "
            f"({'; '.join(parts)}); failed cases: {self.failed}"
        )


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """The fork-server (or, with ROTATOR_CRASH_LAUNCHER=exec, fresh interpreters)."""
    started = make_launcher(tmp_path_factory.mktemp("crash-launcher"))
    yield started
    started.close()


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest, launcher: Launcher) -> Iterator[Tally]:
    """Counts the crash points run; printed on the terminal when the module ends."""
    counts = Tally()
    yield counts
    lines = [counts.summary()]
    if isinstance(launcher, ForkServerLauncher):
        cpu = launcher.child_cpu
        lines.append(f"rotator processes forked: {len(cpu)}, CPU {sum(cpu):.0f} s")
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and counts.cases:
        with capture.global_and_fixture_disabled():  # past pytest's capture, onto the terminal
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)


HOOK_SCRIPT = """
import asyncio, sys
from tests.support.crash_seam import CallLog, CrashingProxy, CrashPoint

class Journal:
    async def append_step(self, n):
        print("wrote", n, flush=True)

    async def read(self):
        return None

async def main():
    point = CrashPoint("store.append_step", int(sys.argv[1]), sys.argv[2])
    store = CrashingProxy(Journal(), "store", CallLog(crash=point))
    for n in (1, 2, 3):
        await store.read()
        await store.append_step(n)

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("k", "when", "written", "status"),
    [(2, "before", ["1"], -9), (2, "after", ["1", "2"], -9), (4, "before", ["1", "2", "3"], 0)],
)
def test_the_hook_kills_the_process_before_or_after_the_kth_call(
    k: int, when: str, written: list[str], status: int
) -> None:
    """The proxy SIGKILLs its process exactly before or after the k-th call of the method it
    watches (other methods are not counted), and never when there is no k-th call."""
    ran = subprocess.run(
        [sys.executable, "-c", HOOK_SCRIPT, str(k), when],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == status, ran.stderr
    assert [line.split()[1] for line in ran.stdout.splitlines()] == written


@pytest.fixture
def servers(stack: Stack, launcher: Launcher, tmp_path: Path) -> Iterator[CaseServers]:
    """The test's servers, making one world per case under ``tmp_path``."""
    with closing(CaseServers(stack, launcher, tmp_path)) as made:
        yield made


@pytest.mark.timeout(600)
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("backends", sorted(BACKEND_SETS))
def test_rotation_recovers_from_a_crash_at_every_journal_step(
    servers: CaseServers, tally: Tally, backends: str, phase: Phase
) -> None:
    """A rotation killed before or after any journal write is recovered with I1-I6 intact, and
    the target rotates cleanly afterwards."""
    dests = BACKEND_SETS[backends]

    policy = phase_policy(phase)

    def case(point: CrashPoint) -> list[str]:
        return run_case(
            lambda: servers.world(f"{point.call}-{point.when}-{point.k:02d}", dests, policy),
            lambda w: rotation_crash(w, phase, point),
        )

    points, outcomes = run_matrix(
        lambda: in_world(
            lambda: servers.world("count", dests, policy), lambda w: count_rotation(w, phase)
        ),
        rotation_points,
        case,
        sure=rotation_points({JOURNAL: MIN_JOURNAL_WRITES}),
        workers=WORKERS,
    )
    tally.add(f"rotation ({phase})", backends, len(points), len(outcomes.failed))
    assert not outcomes.failed, outcomes.report()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backends", sorted(BACKEND_SETS))
def test_revoke_due_converges_after_a_crash_around_each_delete(
    servers: CaseServers, tally: Tally, backends: str
) -> None:
    """``revoke-due`` killed before a Mistral delete, between it and ``revocation_done``, or
    after that, converges when run again and never revokes a served key."""
    dests = BACKEND_SETS[backends]

    def case(point: CrashPoint) -> list[str]:
        return run_case(
            lambda: servers.world(f"{point.call}-{point.when}-{point.k}", dests, REVOKE_POLICY),
            lambda w: revocation_crash(w, point),
        )

    points, outcomes = run_matrix(
        lambda: in_world(lambda: servers.world("count", dests, REVOKE_POLICY), count_revocation),
        revocation_points,
        case,
        sure=revocation_points({"issuer.delete_key": 2}),
        workers=WORKERS,
    )
    assert len(points) == 3 * 2, "expected two due keys, each crashed at three points"
    tally.add("revoke-due", backends, len(points), len(outcomes.failed))
    assert not outcomes.failed, outcomes.report()


def test_fresh_interpreters_recover_like_forked_children(
    servers: CaseServers, stack: Stack, tmp_path: Path
) -> None:
    """Without the fork-server (a new ``python -m rotator`` per command) a crash mid-promotion
    is recovered the same way: the fork-server changes start-up time, nothing else."""
    dests = BACKEND_SETS["both"]
    # AWS (promoted first) serves the new key, Vault not yet: recovery must go forward.
    point = CrashPoint("dest.promote", 1, "after")
    with closing(CaseServers(stack, ExecLauncher(), tmp_path / "exec")) as fresh:
        problems = run_case(
            lambda: fresh.world("case", dests), lambda w: rotation_crash(w, "adoption", point)
        )
    assert problems == []


def test_finishing_again_after_a_crash_keeps_the_retiring_keys(servers: CaseServers) -> None:
    """Killed after the promotion was recorded but before ``done`` (with grace 0 they are two
    writes: the old key is revoked in between), a later rotation is finished by recovery with
    the old key's fingerprint and deadline unchanged (its revocation failing here, so that the
    entry stays to be compared)."""
    dests = BACKEND_SETS["vault"]
    world = servers.world("case", dests, phase_policy("immediate"))
    try:
        crashed = world.engine(
            "rotate", CrashPoint("store.record_promotion", 1, "after"), rotations_before=1
        )
        assert crashed.killed, crashed.describe()
        before, _ = read_state(world.state_url, world.spec.name)
        assert before is not None
        assert [r.fingerprint is not None for r in before.retiring] == [True]
        world.stack.standin.control.fail("delete_key", 503, count=None)
        try:
            assert recover(world) == []
        finally:
            world.stack.standin.control.clear_faults()
        after, still_open = read_state(world.state_url, world.spec.name)
        assert after is not None
        assert still_open == []
        assert after.retiring == before.retiring
    finally:
        world.close()
