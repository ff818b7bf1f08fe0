"""Crash-test scenarios: a child killed at a crash point, then ``rotator recover`` (or
``revoke-due`` again) and the independent I1-I6 checker, each in a fresh
:class:`tests.support.crash_world.CaseWorld`.

A case returns the problems it found, one line each (empty: it passed), instead of raising, so
a test runs every crash point and reports all failures at once (:func:`run_all`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from tests.support.crash_seam import WHENS, CrashPoint
from tests.support.crash_world import CaseError, CaseWorld

Phase = Literal["adoption", "later"]
PHASES: tuple[Phase, ...] = ("adoption", "later")
JOURNAL = "store.append_step"
REVOKE_POLICY = {"grace": "1s"}
"""Revocation cases: old keys fall due a second after their rotation."""


# -- rotations -------------------------------------------------------------------------------------


def rotations_before(phase: Phase) -> int:
    """``later``: one uncrashed rotation first (in the crashing child, before its seams are
    wrapped), so the crashed one replaces a key rotator created."""
    return 1 if phase == "later" else 0


def count_rotation(world: CaseWorld, phase: Phase) -> dict[str, int]:
    """The seam calls of one uncrashed rotation in ``phase`` (which must succeed cleanly)."""
    run = world.engine("rotate", None, rotations_before=rotations_before(phase))
    if run.status != 0:
        raise CaseError(f"uncrashed rotation: {run.describe()}")
    report = run.json()
    (result,) = report["results"]
    if result["outcome"] != "promoted":
        raise CaseError(f"uncrashed rotation: outcome {result['outcome']}: {result['error']}")
    problems = world.check("uncrashed rotation")
    if problems:
        raise CaseError("; ".join(problems))
    return {str(k): int(v) for k, v in report["calls"].items()}


def rotation_crash(world: CaseWorld, phase: Phase, point: CrashPoint) -> list[str]:
    """Crash a rotation at ``point``; recovery, the invariants and a follow-up rotation must
    all come out clean."""
    crashed = world.engine("rotate", point, rotations_before=rotations_before(phase))
    if not crashed.killed:
        return [f"the child was not killed at {point}: {crashed.describe()}"]
    problems = recover(world)
    problems += world.check("after recovery")
    world.rotate()
    problems += world.check("after the follow-up rotation")
    return problems


def recover(world: CaseWorld) -> list[str]:
    """``rotator recover --json`` must exit 0."""
    run = world.rotator("recover", "--json")
    return [] if run.status == 0 else [f"recover: {run.describe()} {run.stdout.strip()[-600:]}"]


def rotation_points(calls: dict[str, int]) -> list[CrashPoint]:
    """Every journal call of a rotation, before and after it."""
    return [CrashPoint(JOURNAL, k, w) for k in range(1, calls.get(JOURNAL, 0) + 1) for w in WHENS]


# -- revocations -----------------------------------------------------------------------------------

REVOKE_CALLS = ("issuer.delete_key", "store.revocation_done")


def two_retiring_keys(world: CaseWorld) -> set[str]:
    """Two rotations (grace 1 s): the adopted legacy key and the first managed key retire; wait
    until both are due. Returns their ids."""
    first = world.rotate()
    second = world.rotate()
    due = datetime.fromisoformat(str(second["revoke_due_at"]))
    time.sleep(max(0.0, (due - datetime.now(due.tzinfo)).total_seconds()) + 0.05)
    return {world.legacy_key_id, str(first["new_key_id"])}


def count_revocation(world: CaseWorld) -> dict[str, int]:
    """The seam calls of one uncrashed ``revoke-due`` over two due keys."""
    retiring = two_retiring_keys(world)
    run = world.engine("revoke_due", None)
    if run.status != 0:
        raise CaseError(f"uncrashed revoke-due: {run.describe()}")
    report = run.json()
    revoked = {r["key_id"] for r in report["results"] if r["outcome"] == "revoked"}
    if revoked != retiring:
        raise CaseError(f"uncrashed revoke-due revoked {revoked}, expected {retiring}")
    return {str(k): int(v) for k, v in report["calls"].items()}


def revocation_points(calls: dict[str, int]) -> list[CrashPoint]:
    """Per due key: before the Mistral delete, between it and the store's ``revocation_done``,
    and after that."""
    points = []
    for k in range(1, calls.get("issuer.delete_key", 0) + 1):
        points += [
            CrashPoint("issuer.delete_key", k, "before"),
            CrashPoint("store.revocation_done", k, "before"),
            CrashPoint("store.revocation_done", k, "after"),
        ]
    return points


def revocation_crash(world: CaseWorld, point: CrashPoint) -> list[str]:
    """Crash ``revoke-due`` at ``point``; re-running it revokes what is left, nothing served
    is revoked, and a third run finds nothing due."""
    retiring = two_retiring_keys(world)
    crashed = world.engine("revoke_due", point)
    if not crashed.killed:
        return [f"the child was not killed at {point}: {crashed.describe()}"]
    problems = []
    again = world.rotator("revoke-due", "--json")
    if again.status != 0:
        problems.append(f"revoke-due again: {again.describe()} {again.stdout.strip()[-600:]}")
    control = world.stack.standin.control
    alive = {k for k in retiring if not control.key(k).deleted}
    if alive:
        problems.append(f"retiring keys not revoked after re-running revoke-due: {alive}")
    problems += world.check("after re-running revoke-due")
    last = world.rotator("revoke-due", "--json")
    if last.status != 0 or last.json() != []:
        problems.append(f"a third revoke-due still found work: {last.describe()} {last.stdout}")
    return problems


# -- running many cases ----------------------------------------------------------------------------


@dataclass
class Outcomes:
    """Problems per case name; a case with none passed."""

    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> dict[str, list[str]]:
        return {name: p for name, p in self.problems.items() if p}

    def report(self, limit: int = 40) -> str:
        lines = [f"{name}: {p}" for name, ps in sorted(self.failed.items()) for p in ps]
        more = f"\n… and {len(lines) - limit} more" if len(lines) > limit else ""
        return (
            f"{len(self.failed)} of {len(self.problems)} cases failed:\n"
            + "\n".join(lines[:limit])
            + more
        )


def run_all(cases: Iterable[tuple[str, Callable[[], list[str]]]], workers: int) -> Outcomes:
    """Run every case on ``workers`` threads (each case only waits on its own processes)."""
    named = list(cases)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crash-case") as pool:
        futures = {name: pool.submit(case) for name, case in named}
        return Outcomes({name: future.result() for name, future in futures.items()})
