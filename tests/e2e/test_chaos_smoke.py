"""The resilience campaign (bench/chaos.py) in a tiny bound, and its checker against broken worlds.

The campaign runs as a script would: real servers, a real ``rotator run`` SIGKILLed three times,
faults and restarts; it must exit 0 with every check passed. The race-safe checker
(:mod:`tests.support.live_invariants`) must report each invariant broken on purpose, and must
not call a race a violation.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rotator.clock import SystemClock
from rotator.secret import fingerprint_of
from rotator.state import SqlStateStore
from tests.support.live_invariants import LiveChecker
from tests.support.stack import FIELD, OTHER_FIELDS, Stack, TargetSpec

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHAOS = REPO / "bench" / "chaos.py"


def test_chaos_campaign_in_a_tiny_bound(tmp_path: Path) -> None:
    """Three SIGKILLs of a rotating daemon with faults and restarts: four checks (one per restart
    and one at rest), no violation, no consumer failure, a clean final recovery, and the
    results written."""
    out = tmp_path / "results"
    args = ["--kills", "3", "--targets", "2", "--minutes", "2", "--every", "1", "--grace", "2"]
    args += ["--drain-share", "0", "--kill-after", "0.5", "1.5", "--restart-every", "2", "4"]
    done = subprocess.run(
        [sys.executable, str(CHAOS), *args, "--out", str(out), "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "chaos.json").read_text())
    assert results["kills"]["total"] == 3
    assert results["invariants"]["checks"] == 4
    assert results["invariants"]["violations"] == []
    assert results["consumers"].get("failures", 0) == 0
    assert results["consumers"]["calls"] > 0
    final = results["final"]
    exits = (final["recover exit"], final["revoke-due exit"], final["audit verify exit"])
    assert exits == (0, 0, 0)
    assert "| SIGKILLs of rotator run | 3 |" in (out / "chaos.md").read_text()


# -- the checker against broken worlds --------------------------------------------------------


@dataclass
class Seeded:
    """One seeded target, its legacy key and a checker on a migrated state database."""

    stack: Stack
    spec: TargetSpec
    key_id: str
    checker: LiveChecker

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.standin.url,
            headers={"Authorization": f"Bearer {self.stack.standin.admin_key}"},
            timeout=10,
        )

    def create_key(self, name: str) -> dict[str, str]:
        with self.admin() as admin:
            answer = admin.post(
                "/v1/admin/api-keys",
                json={
                    "workspace_uuid": self.spec.workspace_id,
                    "user_id": self.stack.standin.user_id,
                    "name": name,
                },
            )
        answer.raise_for_status()
        created: dict[str, str] = answer.json()
        return created

    def write_vault(self, data: dict[str, str]) -> None:
        self.stack.openbao.root().secrets.kv.v2.create_or_update_secret(
            path=self.spec.vault_path, secret=data, mount_point="secret"
        )


@pytest.fixture
def seeded(stack: Stack, state_url: str) -> Iterator[Seeded]:
    """A target seeded with a working key, as the world is before rotator."""

    async def migrate() -> None:
        store = SqlStateStore(state_url, clock=SystemClock())
        await store.migrate()
        await store.close()

    asyncio.run(migrate())
    spec = stack.add_target(("vault", "aws"))
    key_id = stack.seed(spec)
    checker = LiveChecker(stack, state_url)
    yield Seeded(stack, spec, key_id, checker)
    checker.close()


def test_checker_passes_a_sound_world(seeded: Seeded) -> None:
    """A seeded world breaks nothing: both destinations checked, no violation."""
    report = seeded.checker.check()
    assert report.violations == []
    assert report.checked["I1"] == 2


def revoke_served_key(world: Seeded) -> None:
    with world.admin() as admin:
        admin.delete(f"/v1/admin/api-keys/{world.key_id}").raise_for_status()


def leak_a_managed_key(world: Seeded) -> None:
    world.create_key(f"{world.spec.prefix}-20260101T000000Z-deadbeef")


def leave_awspending(world: Seeded) -> None:
    value = json.dumps({**OTHER_FIELDS, FIELD: world.create_key("other")["key"]})
    world.stack.moto.admin_client().put_secret_value(
        SecretId=world.spec.aws_secret_id,
        SecretString=value,
        VersionStages=["AWSPENDING"],
        ClientRequestToken=str(uuid.uuid4()),
    )


def drop_a_field(world: Seeded) -> None:
    world.write_vault({FIELD: world.create_key("replacement")["key"], "note": "do not remove"})


def serve_a_key_never_issued(world: Seeded) -> None:
    world.write_vault({**OTHER_FIELDS, FIELD: "N0tAKeyMistralEverIssuedAtAll123"})


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        pytest.param(revoke_served_key, ["I1", "I2"], id="revoked key served"),
        pytest.param(leak_a_managed_key, ["I3"], id="leaked managed key"),
        pytest.param(leave_awspending, ["I5"], id="AWSPENDING left"),
        pytest.param(drop_a_field, ["I6"], id="other field lost"),
        pytest.param(serve_a_key_never_issued, ["I1"], id="key never issued"),
    ],
)
def test_checker_reports_a_broken_world(
    seeded: Seeded, breakage: Callable[[Seeded], None], expected: list[str]
) -> None:
    """Each invariant broken on purpose is reported as that invariant, and nothing else is."""
    breakage(seeded)
    report = seeded.checker.check()
    assert sorted({line.split()[0] for line in report.violations}) == expected


def test_checker_reports_a_plaintext_in_a_log(seeded: Seeded, tmp_path: Path) -> None:
    """A key the checker read, found in a log file, is reported (I4); a scan resumes where the
    last one stopped, so it is reported once."""
    seeded.checker.check()
    log = tmp_path / "daemon.log"
    value = next(iter(seeded.checker.seen_plaintexts))
    log.write_text(f'{{"event": "oops", "value": "{value}"}}\n')
    found = seeded.checker.leaks.scan_files([log])
    assert any(line.startswith("I4") and fingerprint_of(value) in line for line in found)
    assert seeded.checker.leaks.scan_files([log]) == []


class RotatingBetweenReadAndProbe(LiveChecker):
    """A checker whose probe of the Vault key comes after rotator moved Vault to a new key and
    revoked the one read: what a fast rotation with a short grace can do mid-check."""

    def __init__(self, world: Seeded, state_url: str) -> None:
        super().__init__(world.stack, state_url, workers=1)
        self.world = world
        self.rotated = False

    def _models(self, value: str) -> int | None:
        if not self.rotated:
            self.rotated = True
            self.world.write_vault({**OTHER_FIELDS, FIELD: self.world.create_key("next")["key"]})
            revoke_served_key(self.world)
        return super()._models(value)


def test_checker_calls_a_move_between_read_and_probe_a_race(seeded: Seeded, state_url: str) -> None:
    """A key revoked after it was read, from a destination that serves another key by then, is a
    race (inconclusive), not an I1 violation."""
    checker = RotatingBetweenReadAndProbe(seeded, state_url)
    try:
        report = checker.check()
    finally:
        checker.close()
    assert report.inconclusive["I1 raced: the destination moved on while the key was probed"] == 1
    assert not [v for v in report.violations if v.startswith("I1") and "vault" in v]
