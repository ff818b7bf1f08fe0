"""Leak canary (I4): no key rotator ever handled appears in its logs, its CLI output or the raw
bytes of its state database, across every path a key takes.

One scenario on the stand-in, OpenBao and moto, logging at DEBUG as JSON into a buffer: rotations
on every backend set (normal and emergency), a failure after staging that rolls back (another
writer's AWSCURRENT, refused by the promotion's compare-and-swap), a rotation
left stuck after its first promotion and then recovered, revoke-due after the grace, and the CLI
commands ``status --json``, ``history --json`` and ``rotate --json`` run in-process. The canary
set is every plaintext the Admin API handed out: the engine's create answers (read at the
issuer seam) and everything any destination ever served (the pre-rotator keys, the CLI's keys);
the test proves the set covers every key the stand-in issued. Then neither any of those values
nor anything shaped like a Mistral key may appear in the log text, the CLI's stdout and stderr,
or the database file, its WAL and shared-memory file (read after every phase, as the WAL is
rewritten).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rotator.app.wiring import build_engine
from rotator.cli import main as cli_main
from rotator.clock import FakeClock
from rotator.contracts import KeyIssuer
from rotator.engine.context import Alert
from rotator.engine.engine import Engine
from rotator.engine.steps import Outcome
from rotator.keys import CreatedKey
from rotator.logs import configure_logging
from rotator.secret import fingerprint_of
from tests.support.engine_fakes import StepHookStore
from tests.support.invariants import InvariantChecker, key_shaped
from tests.support.stack import BACKEND_SETS, FIELD, Stack, TargetSpec

pytestmark = pytest.mark.integration

T = TypeVar("T")
POLICY = {"grace": "1h", "activation_timeout": "2s"}


class RecordingIssuer:
    """The engine's Admin API client, keeping every plaintext a create answered with."""

    def __init__(self, inner: KeyIssuer, plaintexts: set[str]) -> None:
        self._inner = inner
        self._plaintexts = plaintexts

    async def create_key(
        self, *, workspace_id: str, user_id: str, name: str, expiration: date | None
    ) -> CreatedKey:
        created = await self._inner.create_key(
            workspace_id=workspace_id, user_id=user_id, name=name, expiration=expiration
        )
        self._plaintexts.add(created.secret.reveal())
        return created

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class Evidence:
    """Everything the canary scans, gathered while the scenario runs."""

    db_path: Path
    plaintexts: set[str] = field(default_factory=set)
    texts: dict[str, str] = field(default_factory=dict)
    db_snapshots: list[tuple[str, bytes]] = field(default_factory=list)

    def snapshot_db(self, phase: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{self.db_path}{suffix}")
            if path.exists():
                self.db_snapshots.append((f"{phase}: {path.name}", path.read_bytes()))

    def blobs(self) -> Iterator[tuple[str, bytes]]:
        for name, text in self.texts.items():
            yield name, text.encode()
        yield from self.db_snapshots

    def findings(self) -> list[str]:
        """One line per plaintext or key-shaped string found, naming where (never the value)."""
        found = []
        for where, blob in self.blobs():
            for value in self.plaintexts:
                if value.encode() in blob:
                    found.append(f"{where}: plaintext of key {fingerprint_of(value)}")
            shaped = key_shaped(blob)
            if shaped:
                found.append(f"{where}: {len(shaped)} key-shaped strings")
        return found


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """rotator's whole log output (its events and every library's) at DEBUG, as JSON."""
    buffer = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=buffer)
    try:
        yield buffer
    finally:
        configure_logging(level="WARNING", fmt="json", stream=io.StringIO())


def _served(stack: Stack, specs: list[TargetSpec]) -> set[str]:
    """Every key value the destinations of ``specs`` serve now."""
    values = set()
    for spec in specs:
        for _dest, data in stack.consumer_reads(spec):
            if data and data.get(FIELD):
                values.add(data[FIELD])
    return values


class Scenario:
    """The engine part of the scenario on one event loop, with a clock shared with the
    stand-in (frozen, moved together)."""

    def __init__(self, stack: Stack, state_url: str, evidence: Evidence) -> None:
        self.stack = stack
        self.evidence = evidence
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(stack.standin.control.now().replace(microsecond=0))
        stack.standin.control.set_now(self.clock.now(), frozen=True)
        self.alerts: list[Alert] = []
        self.specs = [stack.add_target(BACKEND_SETS[b]) for b in ("vault", "aws", "both")]
        for spec in self.specs:
            stack.seed(spec)
        self.cfg = stack.config(state_url=state_url, policy=POLICY)
        self.engine = self.run(self._build())

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    async def _build(self) -> Engine:
        async def on_alert(alert: Alert) -> None:
            self.alerts.append(alert)

        engine = await build_engine(self.cfg, clock=self.clock, on_alert=on_alert)
        engine.deps.issuer = RecordingIssuer(engine.deps.issuer, self.evidence.plaintexts)
        return engine

    def phase(self, name: str) -> None:
        """After each phase: collect what destinations serve, snapshot the database."""
        self.evidence.plaintexts |= _served(self.stack, self.specs)
        self.evidence.snapshot_db(name)

    def rotate(self, index: int, *, emergency: bool = False) -> Outcome:
        return self.run(self.engine.rotate(self.specs[index].name, emergency=emergency)).outcome

    def rotate_with(self, index: int, hook: Any) -> Outcome:
        """Rotate with a hook on the journal writes (where the world changes mid-rotation)."""
        store = self.engine.deps.store
        self.engine.deps.store = StepHookStore(store, after=hook).as_store()
        try:
            return self.rotate(index)
        finally:
            self.engine.deps.store = store

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.stack.standin.control.advance(seconds)

    def close(self) -> None:
        try:
            self.run(self.engine.close())
        finally:
            self.loop.close()


def _engine_phases(scenario: Scenario, stack: Stack) -> None:
    control = stack.standin.control
    for index in range(3):
        assert scenario.rotate(index) is Outcome.PROMOTED
    scenario.phase("rotations")
    assert scenario.rotate(2, emergency=True) is Outcome.ROTATED
    scenario.phase("emergency")

    def conflict_after_staging(_n: int, step: str) -> None:
        # Once the new key is staged and read back, another writer puts a new AWSCURRENT
        # version (the same value): the promotion's compare-and-swap fails, nothing was
        # served, and the staged version is rolled back.
        if step == "promoting":
            spec = scenario.specs[2]
            admin = stack.moto.admin_client()
            current = admin.get_secret_value(SecretId=spec.aws_secret_id)["SecretString"]
            admin.put_secret_value(SecretId=spec.aws_secret_id, SecretString=current)

    assert scenario.rotate_with(2, conflict_after_staging) is Outcome.ROLLED_BACK
    scenario.phase("roll back")

    promotions: list[str] = []

    def fail_second_promotion(_n: int, step: str) -> None:
        if step.startswith("promoting:"):
            promotions.append(step)
            if len(promotions) == 2:
                control.fail("models", 503, count=None)

    assert scenario.rotate_with(2, fail_second_promotion) is Outcome.STUCK
    control.clear_faults()
    scenario.phase("stuck")
    results, orphans = scenario.run(scenario.engine.recover())
    assert [r.outcome for r in results] == [Outcome.PROMOTED]
    assert orphans == []
    scenario.phase("recovered")

    scenario.advance(7200)
    revoked = scenario.run(scenario.engine.revoke_due())
    assert revoked
    assert {r.outcome for r in revoked} == {"revoked"}
    scenario.phase("revoke-due")
    assert [a.event for a in scenario.alerts] == ["rotation_failed", "rotation_stuck"]


def _cli(capsys: pytest.CaptureFixture[str], evidence: Evidence, config: Path, *args: str) -> str:
    """Run ``rotator --log-level DEBUG --log-format json ARGS --config CONFIG`` in-process;
    its stdout and stderr join the evidence. Returns stdout."""
    with pytest.raises(SystemExit) as exited:
        cli_main(["--log-level", "DEBUG", "--log-format", "json", *args, "--config", str(config)])
    out, err = capsys.readouterr()
    assert exited.value.code == 0, err[-2000:]
    name = " ".join(args)
    evidence.texts[f"cli {name} stdout"] = out
    evidence.texts[f"cli {name} stderr"] = err
    return out


def test_no_key_in_logs_cli_output_or_state_database(
    stack: Stack,
    state_url: str,
    checker: InvariantChecker,
    log_buffer: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Across rotations, a roll back, a stuck rotation and its recovery, revoke-due and the CLI,
    no plaintext of any key issued and nothing key-shaped reaches logs, CLI output or the DB."""
    evidence = Evidence(db_path=Path(state_url.removeprefix("sqlite:///")))
    scenario = Scenario(stack, state_url, evidence)
    try:
        scenario.phase("seeded")
        _engine_phases(scenario, stack)
    finally:
        scenario.close()
    scenario.phase("engine closed")
    evidence.texts["logs"] = log_buffer.getvalue()

    config = stack.write_config(tmp_path / "rotator.yaml", state_url=state_url, policy=POLICY)
    status = json.loads(_cli(capsys, evidence, config, "status", "--json"))
    assert {row["target"] for row in status} == {s.name for s in scenario.specs}
    history = json.loads(_cli(capsys, evidence, config, "history", "--json", "--limit", "500"))
    assert {"rotation.started", "key.promoted", "key.revoked"} <= {e["event"] for e in history}
    names = [s.name for s in scenario.specs]
    rotated = json.loads(_cli(capsys, evidence, config, "rotate", *names, "--json"))
    assert {row["outcome"] for row in rotated} == {"promoted"}
    scenario.phase("cli")
    configure_logging(level="WARNING", fmt="json", stream=io.StringIO())

    issued = {k.fingerprint for k in stack.standin.control.key_facts()}
    assert {fingerprint_of(p) for p in evidence.plaintexts} == issued, "a key escaped the canary"
    assert len(issued) == 3 + 3 + 1 + 2 + 3  # seeds, rotations, emergency, failures, CLI
    assert '"event": "mistral.key_created"' in evidence.texts["logs"]
    assert '"level": "debug"' in evidence.texts["logs"]
    assert evidence.findings() == []
    assert checker.check(logs="\n".join(evidence.texts.values())) == []
    scanned = sum(len(blob) for _where, blob in evidence.blobs())
    print(
        f"leak canary: {len(evidence.plaintexts)} keys, {len(evidence.texts)} texts and "
        f"{len(evidence.db_snapshots)} database snapshots, {scanned} bytes scanned, 0 found"
    )
