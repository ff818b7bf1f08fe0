"""One crash case's world: its own seeded target, state database, configuration, checker and
child runner, on the session's shared servers.

Cases of one test run on several threads at once; each has its own target (unique Vault path
and AWS secret) in its own Mistral workspace, its own database and stand-in control client.
What is costly to build and safe to share between threads is built once per test by
:class:`CaseServers`: the admin boto3 client (about 90 ms of CPU each; the harness would build
one per call) and the HTTP client the checker's consumer probes use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx

from rotator.clock import SystemClock
from rotator.contracts import Rotation, TargetState
from rotator.state import SqlStateStore
from rotator_dev.standin import StandinControl
from tests.support.crash_runner import ChildRun, CrashRunner, Launcher
from tests.support.crash_seam import CrashPoint
from tests.support.harness import MotoEnv
from tests.support.invariants import KEY_SHAPE, InvariantChecker
from tests.support.stack import Backend, Stack, TargetSpec

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

T = TypeVar("T")
OK_OUTCOMES = frozenset({"promoted", "rotated"})


class CaseError(Exception):
    """A case cannot go on; its message is the problem line."""


@dataclass(frozen=True)
class SharedMoto(MotoEnv):
    """The session's moto, with one admin client for every caller (boto3 clients are safe to
    call from several threads)."""

    @functools.cached_property
    def _admin(self) -> SecretsManagerClient:
        return MotoEnv.admin_client(self)

    def admin_client(self) -> SecretsManagerClient:
        return self._admin

    @classmethod
    def of(cls, moto: MotoEnv) -> SharedMoto:
        return cls(**{f.name: getattr(moto, f.name) for f in dataclasses.fields(moto)})


@dataclass
class CaseStack(Stack):
    """A :class:`Stack` whose consumer probe (``key_works``) uses a shared HTTP client."""

    http: httpx.Client | None = None

    def key_works(self, plaintext: str) -> bool:
        assert self.http is not None
        answer = self.http.get("/v1/models", headers={"Authorization": f"Bearer {plaintext}"})
        return answer.status_code == 200


class CaseServers:
    """The servers as every case of one test sees them; makes each case's world."""

    def __init__(self, base: Stack, launcher: Launcher, root: Path) -> None:
        self.base = base
        self.launcher = launcher
        self.root = root
        self.moto = SharedMoto.of(base.moto)
        self.http = httpx.Client(base_url=base.standin.url, timeout=10)

    def world(
        self, name: str, backends: Sequence[Backend], policy: dict[str, str] | None = None
    ) -> CaseWorld:
        """The world of case ``name``: a fresh target of ``backends``, seeded."""
        return CaseWorld.create(self, self.root / name, backends, policy)

    def close(self) -> None:
        self.http.close()
        self.moto.admin_client().close()


@dataclass
class CaseWorld:
    """One case's target, state database, configuration, checker and child runner."""

    stack: CaseStack
    spec: TargetSpec
    config: Path
    state_url: str
    checker: InvariantChecker
    runner: CrashRunner
    legacy_key_id: str

    @classmethod
    def create(
        cls,
        servers: CaseServers,
        workdir: Path,
        backends: Sequence[Backend],
        policy: dict[str, str] | None = None,
    ) -> CaseWorld:
        """A target of its own, seeded with a working key rotator did not create."""
        workdir.mkdir(parents=True)
        base = servers.base
        control = StandinControl(base.standin.url)
        # A workspace per case: listing keys (adoption, the orphan scan) stays one case's size.
        workspace = control.add_workspace(f"crash-{uuid.uuid4().hex[:12]}")
        standin = dataclasses.replace(base.standin, control=control, workspace_id=workspace)
        stack = CaseStack(
            standin=standin,
            openbao=base.openbao,
            moto=servers.moto,
            workdir=workdir,
            http=servers.http,
        )
        spec = stack.add_target(backends)
        legacy = stack.seed(spec)
        state_url = f"sqlite:///{workdir / 'state.db'}"
        config = stack.write_config(workdir / "rotator.yaml", state_url=state_url, policy=policy)
        return cls(
            stack=stack,
            spec=spec,
            config=config,
            state_url=state_url,
            checker=InvariantChecker(stack, state_url),
            runner=CrashRunner(servers.launcher, workdir, stack.aws_env()),
            legacy_key_id=legacy,
        )

    def close(self) -> None:
        self.stack.standin.control.close()

    # -- the operator's commands, each in its own process ----------------------------------------

    def rotator(self, *argv: str) -> ChildRun:
        """``rotator <argv> --config <this case's file>``."""
        return self.runner.cli(*argv, "--config", str(self.config))

    def rotate(self) -> dict[str, Any]:
        """``rotator rotate TARGET --json``; fails the case unless it promoted or rotated."""
        run = self.rotator("rotate", self.spec.name, "--json")
        if run.status != 0:
            raise CaseError(f"rotate failed: {run.describe()}")
        (row,) = run.json()
        if row["outcome"] not in OK_OUTCOMES:
            raise CaseError(f"rotate: outcome {row['outcome']}: {row['error']}")
        return dict(row)

    def engine(
        self,
        action: Literal["rotate", "revoke_due"],
        crash: CrashPoint | None,
        *,
        rotations_before: int = 0,
        pause: float = 0.0,
    ) -> ChildRun:
        """``action`` on this case's target through a child's engine, crashing at ``crash``
        (after ``rotations_before`` uncrashed rotations in the same child and ``pause`` s)."""
        return self.runner.engine(
            self.config,
            action,
            target=self.spec.name,
            crash=crash,
            rotations_before=rotations_before,
            pause=pause,
        )

    def check(self, when: str) -> list[str]:
        """The checker's violations (after recovery, logs of every child included) and
        :meth:`settled`'s, each prefixed with ``when``; the checker's raw key-shape scan is
        narrowed by :func:`packed_ids_only`."""
        found = self.checker.check(after_recovery=True, logs=self.runner.logs())
        found = [p for p in found if not packed_ids_only(p)] + self.settled()
        return [f"{when}: {p}" for p in found]

    def settled(self) -> list[str]:
        """What the checker leaves aside: no rotation of the target is left open, and every
        retiring key rotator created keeps its fingerprint (revocation compares it with what
        the destinations serve; without it only the 4+4-character ``hidden_key`` is left)."""
        target, still_open = read_state(self.state_url, self.spec.name)
        problems = [f"rotation {r.rotation_id} left open at {r.state}" for r in still_open]
        prefix = f"{self.spec.prefix}-"
        managed = {
            k.key_id
            for k in self.stack.standin.control.key_facts()
            if (k.name or "").startswith(prefix)
        }
        for entry in target.retiring if target else ():
            if entry.key_id in managed and entry.fingerprint is None:
                problems.append(f"retiring key {entry.key_id} lost its fingerprint")
        return problems


def read_state(url: str, target: str) -> tuple[TargetState | None, list[Rotation]]:
    """The target's state and its open rotations, read through the shipped store."""

    async def read() -> tuple[TargetState | None, list[Rotation]]:
        store = SqlStateStore(url, clock=SystemClock())
        try:
            await store.migrate()
            return await store.get_target(target), await store.open_rotations(target)
        finally:
            await store.close()

    # Its own event loop on its own thread: callable from any thread, in or out of a loop.
    with ThreadPoolExecutor(max_workers=1) as one:
        return one.submit(asyncio.run, read()).result()


DB_SHAPES = re.compile(r"^I4 (?P<path>/\S+): \d+ key-shaped strings$")
PACKED_HEX = re.compile(rb"[0-9a-f]{32}")


def packed_ids_only(problem: str) -> bool:
    """True when ``problem`` is the checker's key-shape finding in a database file and every
    run it matched there is lowercase hex. SQLite stores a row's columns side by side, so a key
    id's last group, a 12-hex fingerprint and a rotation id's first group read as 32 letters and
    digits; a Mistral key mixes cases (a 32-character lowercase-hex key has odds near 1e-19).
    Exact plaintexts are still searched in the raw bytes by the checker itself."""
    match = DB_SHAPES.match(problem)
    if match is None:
        return False
    blob = Path(match["path"]).read_bytes()
    return all(PACKED_HEX.fullmatch(run) for run in KEY_SHAPE.findall(blob))


def in_world(make: Callable[[], CaseWorld], body: Callable[[CaseWorld], T]) -> T:
    """Build a world, run ``body`` on it, close the world."""
    world = make()
    try:
        return body(world)
    finally:
        world.close()


def run_case(make: Callable[[], CaseWorld], body: Callable[[CaseWorld], list[str]]) -> list[str]:
    """:func:`in_world`, a :class:`CaseError` turned into the case's one problem."""
    try:
        return in_world(make, body)
    except CaseError as exc:
        return [str(exc)]
