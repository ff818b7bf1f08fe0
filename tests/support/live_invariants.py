"""The invariants I1-I6 (docs/overview.md#the-invariants), checked while a daemon may be
rotating at that very moment.

:class:`~tests.support.invariants.InvariantChecker` checks a world at rest. This checker reads the
same sources — what consumers read (Vault's latest version, AWS's plain ``GetSecretValue``), the
stand-in's own record of every key, the state database read-only, the log files — but orders its
reads so that a rotation running between two reads can never produce a false violation:

1. the stand-in's key record ``F0``; 2. every AWS secret's staging labels ``D1``; 3. the state
(open rotations first, then targets, then every rotation); 4. each destination as a consumer
reads it, and ``GET /v1/models`` with what was read; 5. the labels again ``D2``; 6. the key
record again ``F2``.

- I1: a read key refused with 401 is a violation when the destination still serves it on a
  second read, when the stand-in never issued it or it is not active, or when it was revoked
  before the first read began; otherwise the destination moved on in between (``raced``).
- I2: a key revoked before ``F0`` is served by no destination read after it.
- I3: a managed key (named with the target's prefix) live in both ``F0`` and ``F2`` is the
  target's current, retiring or adopted key, or an open rotation's; a late key of a rolled-back
  rotation may wait for the next recovery (``late``; :meth:`LiveChecker.check_quiescent` allows
  none).
- I4: no plaintext key in the given files or texts: every key the checker read, and anything
  shaped like one (:func:`~tests.support.invariants.key_shaped`); files are scanned from where
  the previous scan stopped.
- I5: no rotation's key name was issued twice; AWSPENDING stays only on an open rotation's
  version (seen in ``D1`` and ``D2`` while the state said the rotation was closed is a leftover).
- I6: the fields seeded beside the key are intact.

A destination or server that cannot be read makes that part *inconclusive* (counted, not a
violation): outages are injected on purpose.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import botocore.exceptions
import httpx
import hvac
import hvac.exceptions
import requests

from rotator.clock import SystemClock
from rotator.contracts import Rotation, TargetState
from rotator.secret import fingerprint_of
from rotator.state import SqlStateStore
from rotator_dev.standin import KeyFacts
from tests.support.invariants import key_shaped
from tests.support.stack import FIELD, OTHER_FIELDS, Stack, TargetSpec

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

T = TypeVar("T")
PROBE_ATTEMPTS = 3
"""``GET /v1/models`` tries before a probe is inconclusive (faults are injected on purpose)."""
_ALNUM_RUN = re.compile(rb"[A-Za-z0-9]{32,}")
_KEY_LENGTH = 32


class UnavailableError(Exception):
    """A source could not be read (down, sealed, faulted): the check is inconclusive."""


@dataclass
class Report:
    """What one check found: violations (one line each), how many facts were checked per
    invariant, and what could not be decided (by reason)."""

    violations: list[str] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)
    inconclusive: Counter[str] = field(default_factory=Counter)

    def add(self, other: Report) -> None:
        self.violations += other.violations
        self.checked.update(other.checked)
        self.inconclusive.update(other.inconclusive)


@dataclass(frozen=True)
class Read:
    """One destination as a consumer read it: the data (None: the secret does not exist) and
    when the read was sent (UTC)."""

    dest: str
    started: datetime
    data: dict[str, str] | None


@dataclass(frozen=True)
class State:
    """The state database, read in the order the checks rely on."""

    open: list[Rotation]
    targets: dict[str, TargetState]
    rotations: list[Rotation]


class LeakScanner:
    """I4 over blobs and growing files: key-shaped strings and known plaintexts."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self._offsets: dict[Path, int] = {}

    def scan(self, where: str, blob: bytes) -> list[str]:
        problems = []
        shaped = key_shaped(blob)
        if shaped:
            problems.append(f"I4 {where}: {len(shaped)} key-shaped strings")
        for run in _ALNUM_RUN.findall(blob):
            text = run.decode()
            found = {
                text[i : i + _KEY_LENGTH]
                for i in range(len(text) - _KEY_LENGTH + 1)
                if text[i : i + _KEY_LENGTH] in self.known
            }
            problems += [
                f"I4 {where}: contains the plaintext of {fingerprint_of(v)}" for v in found
            ]
        return problems

    def scan_files(self, paths: Iterable[Path], *, whole: bool = False) -> list[str]:
        """Scan each file from where the last scan of it stopped (all of it with ``whole``)."""
        problems = []
        for path in paths:
            if not path.exists():
                continue
            start = 0 if whole else max(0, self._offsets.get(path, 0) - _KEY_LENGTH)
            with path.open("rb") as handle:
                handle.seek(start)
                blob = handle.read()
            self._offsets[path] = start + len(blob)
            problems += self.scan(str(path), blob)
        return problems


class LiveChecker:
    """Checks I1-I6 for every target of ``stack`` (see the module docstring).

    ``stack.moto`` must reach moto directly (the checker is an observer, not a consumer behind
    an injected outage); ``stack.openbao.root()`` must be an admin client.
    """

    def __init__(self, stack: Stack, state_url: str, *, workers: int = 8) -> None:
        self.stack = stack
        self.state_url = state_url
        self.workers = workers
        self.seen_plaintexts: set[str] = set()
        self.leaks = LeakScanner(self.seen_plaintexts)
        self._aws: SecretsManagerClient = stack.moto.admin_client()
        self._probe = httpx.Client(base_url=stack.standin.url, timeout=5)
        self._local = threading.local()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._probe.close()
        self._aws.close()

    # -- the checks ------------------------------------------------------------------------------

    def check(self) -> Report:
        """Every invariant that holds at any instant (safe while a daemon runs)."""
        report = Report()
        try:
            f0 = self._facts()
            d1 = self._labels()
            state = self.read_state()
        except UnavailableError as exc:
            report.inconclusive[f"check skipped: {exc}"] += 1
            return report
        reads = self._map(self._read_and_probe, self._destinations())
        d2 = self._labels()
        try:
            f2 = self._facts()
        except UnavailableError as exc:
            report.inconclusive[f"check skipped: {exc}"] += 1
            return report
        for spec in self.stack.targets:
            mine = [r for r in reads if r[0] is spec]
            report.add(self._check_target(spec, f0, f2, state, d1, d2, mine))
        return report

    def check_quiescent(self) -> Report:
        """The live checks, and what must hold once recovery and revoke-due ran with no daemon
        and no fault: no open rotation, no AWSPENDING, every target's destinations all serving
        its current key, and no other managed key alive."""
        report = self.check()
        state = self.read_state()
        facts = self._facts()
        for rotation in state.open:
            report.violations.append(
                f"I3 {rotation.target}: rotation {rotation.rotation_id} left open at "
                f"{rotation.state} after recovery"
            )
        report.checked["quiescent open rotations"] += 1
        labels = self._labels()
        for spec in self.stack.targets:
            report.add(self._quiescent_target(spec, state, facts, labels))
        return report

    def _quiescent_target(
        self,
        spec: TargetSpec,
        state: State,
        facts: list[KeyFacts],
        labels: Mapping[str, dict[str, list[str]] | None],
    ) -> Report:
        report = Report()
        served: set[str] = set()
        for dest in self._dest_names(spec):
            try:
                read = self._read(spec, dest)
            except UnavailableError as exc:
                report.violations.append(f"quiescent {spec.name} {dest}: unreadable: {exc}")
                continue
            if read.data is not None and FIELD in read.data:
                served.add(fingerprint_of(read.data[FIELD]))
        target = state.targets.get(spec.name)
        current = target.current.fingerprint if target and target.current else None
        report.checked["I2 agreement"] += 1
        if len(served) != 1 or (current is not None and served != {current}):
            report.violations.append(
                f"I2 {spec.name}: destinations serve {sorted(served)}, current is {current}"
            )
        report.checked["I3 strict"] += 1
        for key in facts:
            if _managed_by(spec, key) and not key.deleted and key.fingerprint not in served:
                report.violations.append(
                    f"I3 {spec.name}: key {key.key_id} ({key.name}) alive after recovery and "
                    "revoke-due, served nowhere"
                )
        stages = labels.get(spec.name)
        report.checked["I5 no AWSPENDING"] += 1
        if stages is None and "aws" in spec.backends:
            report.violations.append(f"quiescent {spec.name}: AWS labels unreadable")
        elif stages:
            pending = [v for v, s in stages.items() if "AWSPENDING" in s]
            if pending:
                report.violations.append(f"I5 {spec.name}: AWSPENDING left on {pending}")
        return report

    def _check_target(
        self,
        spec: TargetSpec,
        f0: list[KeyFacts],
        f2: list[KeyFacts],
        state: State,
        d1: Mapping[str, dict[str, list[str]] | None],
        d2: Mapping[str, dict[str, list[str]] | None],
        reads: Sequence[tuple[TargetSpec, str, Read | UnavailableError, list[str], list[str]]],
    ) -> Report:
        report = Report()
        revoked_before = {k.fingerprint: k for k in f0 if k.deleted}
        for _, dest, read, violations, inconclusive in reads:
            report.violations += violations
            report.inconclusive.update(inconclusive)
            if isinstance(read, UnavailableError):
                continue
            report.checked["I1"] += 1
            if read.data is None or FIELD not in read.data:
                continue
            fp = fingerprint_of(read.data[FIELD])
            report.checked["I2"] += 1
            if fp in revoked_before:
                key = revoked_before[fp]
                report.violations.append(
                    f"I2 {spec.name} {dest}: serves key {key.key_id}, revoked at "
                    f"{key.deleted_at:%H:%M:%S.%f} before the read at {read.started:%H:%M:%S.%f}"
                )
            report.checked["I6"] += 1
            for name, expected in OTHER_FIELDS.items():
                if read.data.get(name) != expected:
                    report.violations.append(f"I6 {spec.name} {dest}: field {name!r} changed")
        report.add(self._check_keys(spec, f0, f2, state))
        report.add(_check_pending(spec, state, d1.get(spec.name), d2.get(spec.name)))
        return report

    def _check_keys(
        self, spec: TargetSpec, f0: list[KeyFacts], f2: list[KeyFacts], state: State
    ) -> Report:
        """I3 (keys explained by the state) and I5 (one key per rotation)."""
        report = Report()
        live_after = {k.key_id for k in f2 if not k.deleted}
        target = state.targets.get(spec.name)
        known: set[str] = set()
        if target is not None:
            known |= {r.key_id for r in target.retiring}
            known |= {k for k in (target.adopted_key_id,) if k}
            if target.current is not None:
                known.add(target.current.key_id)
        open_rotations = [r for r in state.open if r.target == spec.name]
        known |= {r.new_key_id for r in open_rotations if r.new_key_id}
        open_names = {r.new_key_name for r in open_rotations if r.new_key_name}
        rolled_back = {
            r.new_key_name
            for r in state.rotations
            if r.target == spec.name and r.outcome == "rolled_back" and r.new_key_name
        }
        for key in f0:
            if not _managed_by(spec, key) or key.deleted or key.key_id not in live_after:
                continue
            report.checked["I3"] += 1
            if key.key_id in known or key.name in open_names:
                continue
            if key.name in rolled_back:
                report.inconclusive["I3 late key of a rolled-back rotation"] += 1
                continue
            report.violations.append(f"I3 {spec.name}: key {key.key_id} ({key.name}) is leaked")
        names = Counter(k.name for k in f2 if _managed_by(spec, k))
        for rotation in state.rotations:
            if rotation.target != spec.name or not rotation.new_key_name:
                continue
            report.checked["I5 one key"] += 1
            if names[rotation.new_key_name] > 1:
                report.violations.append(
                    f"I5 {spec.name}: rotation {rotation.rotation_id} created "
                    f"{names[rotation.new_key_name]} keys"
                )
        return report

    # -- reading ---------------------------------------------------------------------------------

    def _destinations(self) -> list[tuple[TargetSpec, str]]:
        return [(spec, dest) for spec in self.stack.targets for dest in self._dest_names(spec)]

    @staticmethod
    def _dest_names(spec: TargetSpec) -> list[str]:
        names = []
        if "vault" in spec.backends:
            names.append(f"vault:{spec.vault_path}")
        if "aws" in spec.backends:
            names.append(f"aws:{spec.aws_secret_id}")
        return names

    def _read_and_probe(
        self, item: tuple[TargetSpec, str]
    ) -> tuple[TargetSpec, str, Read | UnavailableError, list[str], list[str]]:
        """One destination: its read, I1's violations and inconclusive reasons."""
        spec, dest = item
        try:
            first = self._read(spec, dest)
        except UnavailableError as exc:
            return spec, dest, exc, [], ["I1 destination unreadable"]
        if first.data is None or FIELD not in first.data:
            return spec, dest, first, [f"I1 {spec.name} {dest}: serves no key"], []
        value = first.data[FIELD]
        with self._lock:
            self.seen_plaintexts.add(value)
        status = self._models(value)
        if status == 200:
            return spec, dest, first, [], []
        if status != 401:
            return spec, dest, first, [], ["I1 /v1/models unavailable"]
        return spec, dest, first, *self._refused(spec, dest, first, value)

    def _refused(
        self, spec: TargetSpec, dest: str, first: Read, value: str
    ) -> tuple[list[str], list[str]]:
        """A key read from ``dest`` was refused with 401: a violation, or a race (see I1)."""
        fp = fingerprint_of(value)
        where = f"I1 {spec.name} {dest}: served key {fp}"
        try:
            again = self._read(spec, dest)
            if again.data is not None and again.data.get(FIELD) == value:
                return [f"{where} is refused with 401 and still served"], []
        except UnavailableError:
            pass
        try:
            key = next((k for k in self._facts() if k.fingerprint == fp), None)
        except UnavailableError:
            return [], ["I1 refused key, facts unreadable"]
        if key is None:
            return [f"{where} was never issued by Mistral"], []
        if key.deleted_at is None:
            return [f"{where} ({key.key_id}) is refused though not revoked (not active?)"], []
        if key.deleted_at < first.started:
            return [f"{where} ({key.key_id}) was revoked before it was read"], []
        return [], ["I1 raced: the destination moved on while the key was probed"]

    def _read(self, spec: TargetSpec, dest: str) -> Read:
        started = datetime.now(UTC)
        if dest.startswith("vault:"):
            return Read(dest, started, self._vault_data(spec.vault_path))
        return Read(dest, started, self._aws_data(spec.aws_secret_id))

    def _vault(self) -> hvac.Client:
        client: hvac.Client | None = getattr(self._local, "vault", None)
        if client is None:
            client = self.stack.openbao.root()
            self._local.vault = client
        return client

    def _vault_data(self, path: str) -> dict[str, str] | None:
        try:
            answer = self._vault().secrets.kv.v2.read_secret_version(
                path=path, mount_point="secret", raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise UnavailableError(f"vault: {type(exc).__name__}") from None
        return {str(k): str(v) for k, v in (answer["data"]["data"] or {}).items()}

    def _aws_data(self, secret_id: str) -> dict[str, str] | None:
        try:
            answer = self._aws.get_secret_value(SecretId=secret_id)
        except self._aws.exceptions.ResourceNotFoundException:
            return None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise UnavailableError(f"aws: {type(exc).__name__}") from None
        parsed: dict[str, Any] = json.loads(answer["SecretString"])
        return {str(k): str(v) for k, v in parsed.items()}

    def _labels(self) -> dict[str, dict[str, list[str]] | None]:
        """Per target with an AWS destination: version id → staging labels (None: unreadable)."""
        specs = [s for s in self.stack.targets if "aws" in s.backends]
        return dict(zip((s.name for s in specs), self._map(self._stages, specs), strict=True))

    def _stages(self, spec: TargetSpec) -> dict[str, list[str]] | None:
        try:
            described = self._aws.describe_secret(SecretId=spec.aws_secret_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return None
        return {k: list(v) for k, v in described.get("VersionIdsToStages", {}).items()}

    def _models(self, value: str) -> int | None:
        """``GET /v1/models`` with ``value``: 200, 401, or None when it said nothing about the
        key (5xx, timeouts, dropped connections) :data:`PROBE_ATTEMPTS` times."""
        for attempt in range(PROBE_ATTEMPTS):
            try:
                answer = self._probe.get("/v1/models", headers={"Authorization": f"Bearer {value}"})
                if answer.status_code in (200, 401):
                    return answer.status_code
            except httpx.HTTPError:
                pass
            time.sleep(0.2 * (attempt + 1))
        return None

    def _facts(self) -> list[KeyFacts]:
        try:
            return self.stack.standin.control.key_facts()
        except Exception as exc:  # any failure of the stand-in: inconclusive
            raise UnavailableError(f"stand-in key record: {type(exc).__name__}") from None

    def read_state(self) -> State:
        """The state database (open rotations, then targets, then every rotation)."""

        async def read() -> State:
            store = SqlStateStore(self.state_url, clock=SystemClock())
            try:
                open_rotations = await store.open_rotations()
                targets = {t.target: t for t in await store.list_targets()}
                rotations = await store.list_rotations(limit=1_000_000)
            finally:
                await store.close()
            return State(open_rotations, targets, rotations)

        try:
            with ThreadPoolExecutor(max_workers=1) as one:  # callable from inside a loop too
                return one.submit(asyncio.run, read()).result()
        except Exception as exc:  # a locked or busy database: inconclusive
            raise UnavailableError(f"state: {type(exc).__name__}") from None

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(fn, items))


def _managed_by(spec: TargetSpec, key: KeyFacts) -> bool:
    return (key.name or "").startswith(f"{spec.prefix}-")


def _check_pending(
    spec: TargetSpec,
    state: State,
    before: dict[str, list[str]] | None,
    after: dict[str, list[str]] | None,
) -> Report:
    """I5: AWSPENDING seen on the same version before and after a state read that shows its
    rotation closed (or unknown) is a leftover; two AWSPENDING versions never exist."""
    report = Report()
    if "aws" not in spec.backends:
        return report
    if before is None or after is None:
        report.inconclusive["I5 AWS labels unreadable"] += 1
        return report
    report.checked["I5 pending"] += 1
    pending = [v for v, stages in before.items() if "AWSPENDING" in stages]
    if len(pending) > 1:
        report.violations.append(f"I5 {spec.name}: AWSPENDING on {len(pending)} versions")
    open_ids = {r.rotation_id for r in state.open if r.target == spec.name}
    for version in pending:
        if version in open_ids or "AWSPENDING" not in after.get(version, []):
            continue
        report.violations.append(f"I5 {spec.name}: AWSPENDING left on {version}, no rotation open")
    return report
