"""Crash-test scenarios: a child killed at a crash point, then ``rotator recover`` (or
``revoke-due`` again) and the independent I1-I6 checker, each in a fresh
:class:`tests.support.crash_world.CaseWorld`.

A case returns the problems it found, one line each (empty: it passed), instead of raising, so
a test runs every crash point and reports all failures at once (:func:`run_matrix`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from rotator.secret import fingerprint_of
from tests.support.crash_seam import WHENS, CrashPoint
from tests.support.crash_world import CaseError, CaseWorld
from tests.support.stack import FIELD

Phase = Literal["adoption", "later", "immediate"]
PHASES: tuple[Phase, ...] = ("adoption", "later", "immediate")
JOURNAL = "store.write"
"""Every durable write of the state store: each journal boundary (see crash_seam)."""
SIDE_EFFECTS = ("dest.stage", "dest.promote")
"""Destination calls killed right *after* they returned: the side effect happened, the journal
write recording it did not (the writes come before the next side effect, not after each)."""
REVOKE_POLICY = {"grace": "1s"}
"""Revocation cases: old keys fall due a second after their rotation."""
IMMEDIATE_POLICY = {"grace": "0s"}
"""``immediate``: the old key is revoked by the rotation itself (its last writes)."""


# -- rotations -------------------------------------------------------------------------------------


def rotations_before(phase: Phase) -> int:
    """``later`` and ``immediate``: one uncrashed rotation first (in the crashing child, before
    its seams are wrapped), so the crashed one replaces a key rotator created."""
    return 0 if phase == "adoption" else 1


def phase_policy(phase: Phase) -> dict[str, str] | None:
    """The configuration's policy for ``phase`` (None: the stack's default grace, 1 h)."""
    return IMMEDIATE_POLICY if phase == "immediate" else None


def count_rotation(world: CaseWorld, phase: Phase) -> dict[str, int]:
    """The seam calls of one uncrashed rotation in ``phase`` (which must succeed cleanly)."""
    run = world.engine("rotate", None, rotations_before=rotations_before(phase))
    if run.status != 0:
        raise CaseError(f"uncrashed rotation: {run.describe()}")
    report = run.json()
    (result,) = report["results"]
    if result["outcome"] != ("rotated" if phase == "immediate" else "promoted"):
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
    try:
        world.rotate()
    except CaseError as exc:
        return [*problems, f"the follow-up {exc}"]
    problems += world.check("after the follow-up rotation")
    return problems


def recover(world: CaseWorld) -> list[str]:
    """``rotator recover --json`` must exit 0."""
    run = world.rotator("recover", "--json")
    return [] if run.status == 0 else [f"recover: {run.describe()} {run.stdout.strip()[-600:]}"]


def rotation_points(calls: dict[str, int]) -> list[CrashPoint]:
    """Every journal write of a rotation, before and after it; every stage and promotion right
    after it."""
    points = [CrashPoint(JOURNAL, k, w) for k in range(1, calls.get(JOURNAL, 0) + 1) for w in WHENS]
    return points + [
        CrashPoint(call, k, "after")
        for call in SIDE_EFFECTS
        for k in range(1, calls.get(call, 0) + 1)
    ]


# -- revocations -----------------------------------------------------------------------------------

REVOKE_WARMUP = 2
"""Rotations before ``revoke-due`` (grace 1 s): the adopted legacy key and the first managed key
retire, the second managed key is served."""
REVOKE_PAUSE = 1.2
"""Seconds the child waits after them, so both retiring keys are due."""


def count_revocation(world: CaseWorld) -> dict[str, int]:
    """The seam calls of one uncrashed ``revoke-due`` over two due keys."""
    run = world.engine("revoke_due", None, rotations_before=REVOKE_WARMUP, pause=REVOKE_PAUSE)
    if run.status != 0:
        raise CaseError(f"uncrashed revoke-due: {run.describe()}")
    report = run.json()
    retiring = {world.legacy_key_id, report["before"][0]["new_key_id"]}
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
    """Crash ``revoke-due`` at ``point``; re-running it revokes every key of the workspace but
    the served one, and a third run finds nothing due."""
    crashed = world.engine("revoke_due", point, rotations_before=REVOKE_WARMUP, pause=REVOKE_PAUSE)
    if not crashed.killed:
        return [f"the child was not killed at {point}: {crashed.describe()}"]
    problems = []
    again = world.rotator("revoke-due", "--json")
    if again.status != 0:
        problems.append(f"revoke-due again: {again.describe()} {again.stdout.strip()[-600:]}")
    reads = world.stack.consumer_reads(world.spec)
    served = {fingerprint_of(data[FIELD]) for _, data in reads if data and FIELD in data}
    keys = [
        k
        for k in world.stack.standin.control.key_facts()
        if k.workspace_id == world.stack.standin.workspace_id
    ]
    if len(keys) != 1 + REVOKE_WARMUP:
        problems.append(f"expected {1 + REVOKE_WARMUP} keys in the workspace, found {len(keys)}")
    for key in keys:
        if key.fingerprint in served and key.deleted:
            problems.append(f"the served key {key.key_id} was revoked")
        if key.fingerprint not in served and not key.deleted:
            problems.append(f"retiring key {key.key_id} not revoked by re-running revoke-due")
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


def run_matrix(
    count: Callable[[], dict[str, int]],
    points: Callable[[dict[str, int]], list[CrashPoint]],
    case: Callable[[CrashPoint], list[str]],
    *,
    sure: Iterable[CrashPoint],
    workers: int,
) -> tuple[list[CrashPoint], Outcomes]:
    """Count the seam calls of an uncrashed run, then run ``case`` at every point ``points``
    derives from the count, on ``workers`` threads (each case mostly waits on its processes).

    The ``sure`` points exist whatever the count says (every rotation journals at least that
    many steps), so their cases start at once, beside the count. Returns the points and the
    outcomes; a ``sure`` point the count does not confirm is a failed case. A failing count
    raises, after the cases already started have ended.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crash-case") as pool:
        counting = pool.submit(count)
        started = {p: pool.submit(case, p) for p in sure}
        try:
            every = points(counting.result())
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        started.update({p: pool.submit(case, p) for p in every if p not in started})
        problems = {str(p): started[p].result() for p in every}
    for p in set(started) - set(every):
        problems[str(p)] = [f"{p} was run, but the uncrashed run made fewer calls"]
    return every, Outcomes(problems)
