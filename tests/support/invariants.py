"""An independent checker of the invariants I1-I6 (docs/overview.md#the-invariants) against the
real servers and state DB.

It reads what consumers read (not what rotator says), the stand-in's own record of every key
(deleted ones included) and the state database, and returns one line per violation. It never
trusts rotator's code paths: only the shipped state store is used, read-only, for I3's grace
deadlines.

- I1 every destination serves a key that passes ``GET /v1/models``;
- I2 a revoked (deleted) key is served by no destination, and its target's destinations agree;
- I3 (after recovery) every live key with the target's prefix is served, or is a retiring key
  still inside its grace deadline, or belongs to an open rotation;
- I4 no plaintext key (any key the stand-in ever issued that the checker saw, and anything shaped
  like one) in the state database's raw bytes or the given log text;
- I5 no rotation created more than one key; no AWSPENDING is left once no rotation is open;
- I6 the fields seeded beside the key are intact.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rotator.clock import SystemClock
from rotator.secret import fingerprint_of
from rotator.state import SqlStateStore
from tests.support.stack import FIELD, OTHER_FIELDS, Stack, TargetSpec

KEY_SHAPE = re.compile(rb"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?![A-Za-z0-9])")
_HEX_RUN = re.compile(rb"[0-9a-f]{32}")


def key_shaped(blob: bytes) -> list[bytes]:
    """The runs of exactly 32 letters and digits in ``blob`` that could be a Mistral key.

    Runs of lowercase hex are left out: SQLite stores a row's text columns back to back, so a
    key id's last group, a 12-hex fingerprint and a rotation id's first group read as 32 hex
    characters. A Mistral key mixes cases and digits (and exact plaintexts are checked apart).
    """
    return [m for m in KEY_SHAPE.findall(blob) if not _HEX_RUN.fullmatch(m)]


class InvariantChecker:
    """Checks I1-I6 for every target of a :class:`Stack` against one state database."""

    def __init__(self, stack: Stack, state_url: str) -> None:
        self.stack = stack
        self.state_url = state_url
        self.seen_plaintexts: set[str] = set()
        """Every key value the checker read from a destination: the canary set for I4."""

    def check(self, *, after_recovery: bool = True, logs: str = "") -> list[str]:
        """Every violation found now (empty = all invariants hold)."""
        self.stack.standin.control.clear_faults()
        problems: list[str] = []
        # Its own event loop on its own thread: callable from sync and async tests alike.
        with ThreadPoolExecutor(max_workers=1) as one:
            state = one.submit(asyncio.run, self._read_state()).result()
        keys = self.stack.standin.control.key_facts()
        for spec in self.stack.targets:
            problems += self._check_target(spec, state, keys, after_recovery=after_recovery)
        problems += self._check_leaks(logs)
        return problems

    async def _read_state(self) -> dict[str, object]:
        store = SqlStateStore(self.state_url, clock=SystemClock())
        try:
            await store.migrate()
            targets = {t.target: t for t in await store.list_targets()}
            open_rotations = await store.open_rotations()
            rotations = await store.list_rotations(limit=100_000)
        finally:
            await store.close()
        return {"targets": targets, "open": open_rotations, "rotations": rotations}

    def _check_target(
        self,
        spec: TargetSpec,
        state: dict[str, object],
        keys: list,  # type: ignore[type-arg]
        *,
        after_recovery: bool,
    ) -> list[str]:
        problems: list[str] = []
        served: dict[str, str] = {}  # destination -> fingerprint
        for dest, data in self.stack.consumer_reads(spec):
            if data is None or FIELD not in data:
                problems.append(f"I1 {spec.name} {dest}: serves no key")
                continue
            value = data[FIELD]
            self.seen_plaintexts.add(value)
            served[dest] = fingerprint_of(value)
            if not self.stack.key_works(value):
                problems.append(f"I1 {spec.name} {dest}: served key {fingerprint_of(value)} fails")
            for name, expected in OTHER_FIELDS.items():
                if data.get(name) != expected:
                    problems.append(f"I6 {spec.name} {dest}: field {name!r} changed or lost")
        mine = [k for k in keys if (k.name or "").startswith(f"{spec.prefix}-")]
        for key in mine:
            if key.deleted and key.fingerprint in served.values():
                problems.append(f"I2 {spec.name}: revoked key {key.key_id} is still served")
        open_rotations = [r for r in state["open"] if r.target == spec.name]  # type: ignore[attr-defined]
        rotations = [r for r in state["rotations"] if r.target == spec.name]  # type: ignore[attr-defined]
        for rotation in rotations:
            created = [k for k in keys if (k.name or "") == rotation.new_key_name]
            if len(created) > 1:
                problems.append(
                    f"I5 {spec.name}: rotation {rotation.rotation_id} created {len(created)} keys"
                )
        if "aws" in spec.backends and not open_rotations:
            pending = [
                v for v, stages in self.stack.aws_stages(spec).items() if "AWSPENDING" in stages
            ]
            if pending:
                problems.append(f"I5 {spec.name}: AWSPENDING left on {pending}")
        if after_recovery:
            problems += self._check_no_leaked_keys(spec, state, mine, served, open_rotations)
        return problems

    def _check_no_leaked_keys(
        self,
        spec: TargetSpec,
        state: dict[str, object],
        mine: list,  # type: ignore[type-arg]
        served: dict[str, str],
        open_rotations: list,  # type: ignore[type-arg]
    ) -> list[str]:
        target_state = state["targets"].get(spec.name)  # type: ignore[attr-defined]
        retiring = {r.key_id: r for r in target_state.retiring} if target_state else {}
        in_flight = {r.new_key_id for r in open_rotations}
        problems = []
        for key in mine:
            if key.deleted or key.fingerprint in served.values() or key.key_id in in_flight:
                continue
            if key.key_id in retiring:
                continue  # inside its grace deadline, or due and waiting for revoke-due
            problems.append(f"I3 {spec.name}: key {key.key_id} ({key.name}) is leaked")
        return problems

    def _check_leaks(self, logs: str) -> list[str]:
        problems = []
        blobs: list[tuple[str, bytes]] = [("logs", logs.encode())]
        blobs += [(str(p), p.read_bytes()) for p in self._db_files()]
        for where, blob in blobs:
            for value in self.seen_plaintexts:
                if value.encode() in blob:
                    problems.append(
                        f"I4 {where}: contains the plaintext of {fingerprint_of(value)}"
                    )
            shaped = key_shaped(blob)
            if shaped:
                problems.append(f"I4 {where}: {len(shaped)} key-shaped strings")
        return problems

    def _db_files(self) -> Iterable[Path]:
        if not self.state_url.startswith("sqlite:///"):
            return []
        base = Path(self.state_url.removeprefix("sqlite:///"))
        return [p for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists()]
