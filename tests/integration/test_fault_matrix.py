"""The fault matrix: every backend operation of a rotation failing every way it can.

Each case rotates a seeded target whose stores sit behind fault-injecting proxies
(:mod:`tests.support.faultproxy`; Mistral faults come from the stand-in's control API) while one
operation fails one way: a 5xx, a hang past the client timeout, a dropped connection, 401/403,
or a concurrent writer changing the destination between plan and promotion (a compare-and-swap
conflict, played with the harness's admin identity from a state-store hook at a journal step).
It asserts the outcome :data:`MATRIX` gives (rolled back with the destinations unchanged and the
new key deleted; stuck with both keys valid; promoted; …), the one-line error naming the backend
operation, and I1-I6 (:class:`InvariantChecker`). Then the fault is cleared, ``recover`` runs and
a follow-up rotation, and the invariants are checked again.

Retries are part of the table: the Mistral client tries idempotent calls 4 times, boto3 twice,
the engine each promotion 3 times; a fault meant to fail outlasts them (``count=None`` holds it
until cleared), and the ``heals`` rows fail fewer times than the retries absorb.

Speed: clients time out after 2 s and backoff waits are cut short (:class:`QuickClock`). The cases
share the session's OpenBao and moto (one proxy each, with rules that name the case's own secret)
and run :data:`CONCURRENCY` at a time, each with its own target, state database, engine and
stand-in (Mistral faults are per stand-in), in one module fixture; each parametrised test then
reports its own case.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import httpx
import pytest

from rotator.app.wiring import build_engine
from rotator.clock import SystemClock
from rotator.config import Config, parse_config
from rotator.contracts import StateStore
from rotator.engine.engine import Engine
from rotator.engine.rotation import RotationResult
from rotator.engine.steps import Outcome
from rotator.secret import fingerprint_of
from rotator_dev.standin import (
    DEFAULT_ADMIN_KEY,
    DEFAULT_WORKSPACE_ID,
    SEED_USER_ID,
    StandinControl,
    StandinHandle,
    StandinServer,
)
from rotator_dev.standin.records import KeyFacts
from tests.support.faultproxy import (
    FaultProxy,
    Match,
    Rule,
    aws_call,
    vault_data,
    vault_metadata,
)
from tests.support.harness import MotoEnv, OpenBaoEnv
from tests.support.invariants import InvariantChecker
from tests.support.journal_writes import is_write, steps_of
from tests.support.servers import AWS_REGION
from tests.support.stack import BACKEND_SETS, FIELD, OTHER_FIELDS, Stack, TargetSpec

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


pytestmark = pytest.mark.integration

CONCURRENCY = 4
"""Cases in flight at once (each with its own stand-in)."""
CLIENT_TIMEOUT = "2s"
"""Every client's timeout in these configurations: a hang costs this per attempt (1 s is
too close to what a loaded machine takes for an ordinary call)."""
ACTIVATION_TIMEOUT = "3s"
"""How long a new key may take to pass ``GET /v1/models``: a failing verify costs this."""
MATRIX_TIMEOUT = 600
"""Seconds pytest-timeout allows a case, whose set-up may run the whole matrix."""
MAX_SLEEP = 0.05
"""Backoff waits (promotion retries, Mistral client retries, verify polling) are cut to this:
the retries still happen, in order, only sooner."""


# -- the rig: clock, state-store hooks, one seeded target ------------------------------------------


class QuickClock(SystemClock):
    """Real time shifted by :attr:`offset` (to pass grace deadlines), with short sleeps."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(max(0.0, seconds), MAX_SLEEP))


class HookedStore:
    """The engine's state store; an action in :attr:`hooks` runs once, right after the journal
    write holding the step it is keyed by (``planned``, ``readback_ok``, ``promoting`` …): the
    moment between a journal write and the side effect it announces."""

    def __init__(self, inner: StateStore) -> None:
        self._inner = inner
        self.hooks: dict[str, Callable[[], None]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not (inspect.iscoroutinefunction(attr) and is_write(name)):
            return attr

        async def hooked(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            for step in steps_of(name, args, kwargs):
                hook = self.hooks.pop(step.partition(":")[0], None)
                if hook is not None:
                    await asyncio.to_thread(hook)
            return result

        return hooked


@dataclass(frozen=True)
class CachedAdminMoto(MotoEnv):
    """The session's moto, whose admin client is made once (boto3 clients are slow to build and
    the checker asks for one per read). :meth:`close` closes it."""

    cached: SecretsManagerClient | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, env: MotoEnv) -> CachedAdminMoto:
        client = env.admin.session().client("secretsmanager", endpoint_url=env.url)
        return cls(**{f.name: getattr(env, f.name) for f in fields(env)}, cached=client)

    def admin_client(self) -> SecretsManagerClient:
        assert self.cached is not None
        return self.cached

    def close(self) -> None:
        if self.cached is not None:
            self.cached.close()


@dataclass
class QuickStack(Stack):
    """A :class:`Stack` whose consumer check reuses one HTTP client (a new ``httpx.Client``
    builds a TLS context, which costs more CPU than the check itself)."""

    models: httpx.Client | None = None

    def key_works(self, plaintext: str) -> bool:
        assert self.models is not None
        answer = self.models.get("/v1/models", headers={"Authorization": f"Bearer {plaintext}"})
        return answer.status_code == 200


@dataclass
class World:
    """One case's seeded target, the proxies in front of its stores, its clock and hooks."""

    stack: Stack
    spec: TargetSpec
    legacy: str
    vault: FaultProxy
    aws: FaultProxy
    store: HookedStore
    clock: QuickClock
    rules: list[Rule] = field(default_factory=list)
    written: dict[str, str] = field(default_factory=dict)
    """Destination → fingerprint a concurrent writer put there."""

    @property
    def control(self) -> StandinControl:
        return self.stack.standin.control

    def aws_base(self) -> str:
        """The version AWSCURRENT is on now."""
        return next(v for v, s in self.stack.aws_stages(self.spec).items() if "AWSCURRENT" in s)

    def served(self) -> dict[str, str | None]:
        """Destination → fingerprint of the key consumers read there."""
        return {
            dest: fingerprint_of(data[FIELD]) if data and FIELD in data else None
            for dest, data in self.stack.consumer_reads(self.spec)
        }

    def rotator_keys(self) -> list[KeyFacts]:
        """Every key rotator created for this target (named with its prefix), deleted or not."""
        prefix = f"{self.spec.prefix}-"
        return [k for k in self.control.key_facts() if (k.name or "").startswith(prefix)]

    def operator_key(self, who: str) -> str:
        """A working key made by someone other than rotator (a concurrent writer's value)."""
        standin = self.stack.standin
        with httpx.Client(
            base_url=standin.url,
            headers={"Authorization": f"Bearer {standin.admin_key}"},
            timeout=10,
        ) as admin:
            answer = admin.post(
                "/v1/admin/api-keys",
                json={
                    "workspace_uuid": self.spec.workspace_id,
                    "user_id": standin.user_id,
                    "name": f"{who}-{self.spec.name}",
                },
            )
            answer.raise_for_status()
            return str(answer.json()["key"])

    def write_vault(self) -> None:
        """A concurrent writer (root token) replaces the Vault secret's key, other fields kept."""
        key = self.operator_key("vault-writer")
        self.written[f"vault:{self.spec.vault_path}"] = fingerprint_of(key)
        self.stack.openbao.root().secrets.kv.v2.create_or_update_secret(
            path=self.spec.vault_path, secret={**OTHER_FIELDS, FIELD: key}, mount_point="secret"
        )

    def write_aws(self) -> None:
        """A concurrent writer (the admin IAM user) puts a new AWSCURRENT version."""
        key = self.operator_key("aws-writer")
        self.written[f"aws:{self.spec.aws_secret_id}"] = fingerprint_of(key)
        self.stack.moto.admin_client().put_secret_value(
            SecretId=self.spec.aws_secret_id, SecretString=json.dumps({**OTHER_FIELDS, FIELD: key})
        )

    def clear(self) -> None:
        """This case's faults and hooks disarmed (other cases' rules stay)."""
        self.vault.remove(*self.rules)
        self.aws.remove(*self.rules)
        self.rules.clear()
        self.control.clear_faults()
        self.store.hooks.clear()


# -- arming faults --------------------------------------------------------------------------------

Arm = Callable[[World], None]
Kind = Literal["5xx", "timeout", "drop", "401", "403"]
Picks = Callable[[World], Match]


def mistral(operation: str, kind: Kind, count: int | None = None, *, when: str = "before") -> Arm:
    """``kind`` on the stand-in's ``operation`` for ``count`` calls (None: until cleared)."""

    def arm(world: World) -> None:
        if kind == "timeout":
            world.control.hang(operation, None, count=count, when=when)
        elif kind == "drop":
            world.control.drop(operation, count=count, when=when)
        else:
            world.control.fail(
                operation, 503 if kind == "5xx" else int(kind), count=count, when=when
            )

    return arm


def _proxy_fault(
    which: Literal["vault", "aws"], picks: Picks, kind: Kind, count: int | None, **kw: Any
) -> Arm:
    def arm(world: World) -> None:
        proxy = world.vault if which == "vault" else world.aws
        match = picks(world)
        if kind == "timeout":
            rule = proxy.hang(match, count=count, **kw)
        elif kind == "drop":
            rule = proxy.drop(match, count=count, **kw)
        else:
            status = (500 if which == "vault" else 503) if kind == "5xx" else int(kind)
            rule = proxy.fail(match, status, count=count, **kw)
        world.rules.append(rule)

    return arm


def vault(
    picks: Picks, kind: Kind, count: int | None = None, *, skip: int = 0, after: bool = False
) -> Arm:
    """``kind`` on the OpenBao proxy for the requests ``picks`` selects."""
    return _proxy_fault("vault", picks, kind, count, skip=skip, after=after)


def aws(picks: Picks, kind: Kind, count: int | None = None, *, after: bool = False) -> Arm:
    """``kind`` on the moto proxy for the requests ``picks`` selects."""
    return _proxy_fault("aws", picks, kind, count, after=after)


def hook(step: str, action: Arm) -> Arm:
    """``action`` right after the rotation journals ``step`` (before that step's side effect)."""

    def arm(world: World) -> None:
        world.store.hooks[step] = lambda: action(world)

    return arm


def together(*arms: Arm) -> Arm:
    def arm(world: World) -> None:
        for one in arms:
            one(world)

    return arm


# Which requests a fault picks (upper case: they read as table columns).


def VREAD(world: World) -> Match:
    return vault_data(world.spec.vault_path, "GET")


def VCAPS(world: World) -> Match:
    """``sys/capabilities-self`` asked about this case's secret (staging's permission check)."""
    return Match(path=r"^/v1/sys/capabilities-self(\?|$)", body=(re.escape(world.spec.vault_path),))


def VWRITE(world: World) -> Match:
    return vault_data(world.spec.vault_path, "POST")


def VMETA(world: World) -> Match:
    return vault_metadata(world.spec.vault_path, "POST")


def PUT(world: World) -> Match:
    return aws_call("PutSecretValue", world.spec.aws_secret_id)


def READBACK(world: World) -> Match:
    """GetSecretValue of a version other than the planned base: the staged one."""
    base = re.escape(world.aws_base())
    return aws_call("GetSecretValue", world.spec.aws_secret_id, body=rf'"VersionId":\s*"(?!{base})')


def UNPEND(world: World) -> Match:
    """The label move that takes AWSPENDING off the promoted version."""
    pending = r'"VersionStage":\s*"AWSPENDING"'
    return aws_call("UpdateSecretVersionStage", world.spec.aws_secret_id, body=pending)


def PROMOTE(world: World) -> Match:
    """The label move that promotes (AWSCURRENT), not the AWSPENDING clean-ups."""
    current = r'"VersionStage":\s*"AWSCURRENT"'
    return aws_call("UpdateSecretVersionStage", world.spec.aws_secret_id, body=current)


# -- the expected-outcome table ----------------------------------------------------------------

Expect = Literal[
    "not_started",  # refused at plan: no rotation, no key, nothing written
    "rolled_back",  # new key deleted, destinations unchanged (but for a concurrent writer's value)
    "cleanup_pending",  # nothing served, but a leftover (key, label) awaits recovery
    "stuck",  # the new key is served somewhere, not everywhere; both keys stay valid
    "in_doubt",  # stuck with the new key served nowhere yet: a failed write may still land
    "promoted",  # the new key is served everywhere; the old one retires after its grace
    "rotated",  # promoted, and the old key revoked at once (emergency)
    "deferred",  # revoke-due kept the old key for its next run
    "revoked",  # revoke-due deleted the old key
]
NOT_STARTED: Expect = "not_started"
ROLLED_BACK: Expect = "rolled_back"
CLEANUP: Expect = "cleanup_pending"
STUCK: Expect = "stuck"
IN_DOUBT: Expect = "in_doubt"
PROMOTED: Expect = "promoted"
ROTATED: Expect = "rotated"
DEFERRED: Expect = "deferred"
REVOKED: Expect = "revoked"
Mode = Literal["rotate", "emergency", "revoke_due"]
"""What a case runs: a rotation, an emergency rotation, or revoke-due after a rotation."""


@dataclass(frozen=True)
class Case:
    """One row: ``operation`` failing with ``fault`` (armed by ``arm``) → ``expect``, an error
    line matching ``error``, ``recovered`` = what ``recover`` reports once the fault is cleared
    (None: nothing left open), then a follow-up rotation ending ``follow_up``."""

    operation: str
    fault: str
    arm: Arm
    expect: Expect
    error: str | None = None
    dests: str = "both"
    recovered: Outcome | None = None
    follow_up: Outcome = Outcome.PROMOTED
    mode: Mode = "rotate"
    note: str = ""

    @property
    def id(self) -> str:
        parts = [self.operation.replace(" ", "-"), self.fault, self.dests, self.note]
        return "/".join(p for p in parts if p)


CREATE = r"mistral create_key"
LOST = r"mistral create_key: created key \S+ .*plaintext was lost"
VERIFY = r"failed verification: "
DELETE = r"mistral delete_key"
V_READ = r"vault read secret/data/"
V_CAPS = r"vault capabilities sys/capabilities-self"
V_WRITE = r"vault write secret/data/"
V_META = r"vault write metadata secret/metadata/"
A_PUT = r"aws PutSecretValue"
A_GET = r"aws GetSecretValue"
A_MOVE = r"aws UpdateSecretVersionStage"
CAS = r"someone else wrote it"
R, S, P = Outcome.ROLLED_BACK, Outcome.STUCK, Outcome.PROMOTED
E: Mode = "emergency"
RD: Mode = "revoke_due"

# fmt: off
MATRIX: list[Case] = [
    # Mistral create (POST /v1/admin/api-keys): not idempotent; an ambiguous failure (the key
    # was created, the answer lost) is resolved by name and the lost key deleted.
    Case("mistral create", "5xx", mistral("create_key", "5xx", 1), ROLLED_BACK, CREATE),
    Case("mistral create", "5xx", mistral("create_key", "5xx", 1, when="after"), ROLLED_BACK,
         LOST, note="after"),
    Case("mistral create", "timeout", mistral("create_key", "timeout", 1), ROLLED_BACK, CREATE),
    Case("mistral create", "timeout", mistral("create_key", "timeout", 1, when="after"),
         ROLLED_BACK, LOST, note="after"),
    Case("mistral create", "drop", mistral("create_key", "drop", 1), ROLLED_BACK, CREATE),
    Case("mistral create", "drop", mistral("create_key", "drop", 1, when="after"), ROLLED_BACK,
         LOST, note="after"),
    Case("mistral create", "401", mistral("create_key", "401", 1), ROLLED_BACK,
         r"mistral create_key: admin key rejected \(HTTP 401\)"),
    Case("mistral create", "403", mistral("create_key", "403", 1), ROLLED_BACK,
         r"mistral create_key: admin key rejected \(HTTP 403\)"),
    Case("mistral create", "timeout",
         together(mistral("create_key", "timeout", 1, when="after"),
                  hook("planned", mistral("list_keys", "5xx", 8))),
         CLEANUP, r"mistral create_key: outcome unknown.*cleanup pending", recovered=R,
         note="after+lookup-down"),
    # Mistral verify (GET /v1/models with the new key): it never proves itself → roll back.
    Case("mistral verify", "5xx", mistral("models", "5xx"), ROLLED_BACK, VERIFY + "unavailable"),
    Case("mistral verify", "timeout", mistral("models", "timeout"), ROLLED_BACK,
         VERIFY + "unavailable"),
    Case("mistral verify", "drop", mistral("models", "drop"), ROLLED_BACK, VERIFY + "unavailable"),
    Case("mistral verify", "401", mistral("models", "401"), ROLLED_BACK, VERIFY + "unauthorized"),
    Case("mistral verify", "403", mistral("models", "403"), ROLLED_BACK, VERIFY + "unauthorized"),
    Case("mistral verify", "heals", mistral("models", "5xx", 2), PROMOTED),
    Case("mistral verify", "heals", hook("promoting", mistral("models", "5xx", 1)), PROMOTED,
         note="after-promotion"),
    Case("mistral verify", "5xx", hook("promoting", mistral("models", "5xx")), STUCK,
         r"mistral verify: after promotion", recovered=P, note="after-promotion"),
    # Mistral delete, revoking the old key: it is kept and revoke-due tries again.
    Case("mistral delete", "5xx", mistral("delete_key", "5xx", 4), DEFERRED, DELETE, mode=RD),
    Case("mistral delete", "timeout", mistral("delete_key", "timeout", 4), DEFERRED, DELETE,
         mode=RD),
    Case("mistral delete", "drop", mistral("delete_key", "drop", 4), DEFERRED, DELETE, mode=RD),
    Case("mistral delete", "403", mistral("delete_key", "403", 1), DEFERRED,
         DELETE + r": admin key rejected \(HTTP 403\)", mode=RD),
    Case("mistral delete", "heals", mistral("delete_key", "5xx", 3), REVOKED, mode=RD),
    Case("mistral delete", "5xx", mistral("delete_key", "5xx", 4), PROMOTED,
         r"old key kept until revoke-due: mistral delete_key", mode=E, note="emergency"),
    Case("mistral delete", "heals", mistral("delete_key", "5xx", 3), ROTATED, mode=E,
         note="emergency"),
    Case("mistral delete", "5xx",
         together(mistral("models", "5xx"), mistral("delete_key", "5xx", 4)),
         CLEANUP, r"cleanup pending: mistral delete_key", recovered=R, note="in-rollback"),
    # Vault read (GET secret/data/…): at plan nothing starts; after the write (the proving read,
    # the second: staging and promotion work from the plan's read) it is retried as the proof.
    Case("vault read", "5xx", vault(VREAD, "5xx", 1), NOT_STARTED, V_READ, note="plan"),
    Case("vault read", "403", vault(VREAD, "403", 1), NOT_STARTED, V_READ, note="plan"),
    Case("vault read", "heals", vault(VREAD, "5xx", 1, skip=1), PROMOTED, note="after-write"),
    Case("vault read", "5xx", vault(VREAD, "5xx", skip=1), STUCK, V_READ, recovered=P,
         note="after-write"),
    # Vault capabilities (sys/capabilities-self, staging a secret rotator's marks do not show
    # it promoted last, as here, the first rotation): nothing is written yet → roll back.
    Case("vault capabilities", "5xx", vault(VCAPS, "5xx", 1), ROLLED_BACK, V_CAPS, note="stage"),
    Case("vault capabilities", "timeout", vault(VCAPS, "timeout", 1), ROLLED_BACK, V_CAPS,
         note="stage"),
    Case("vault capabilities", "drop", vault(VCAPS, "drop", 1), ROLLED_BACK, V_CAPS,
         note="stage"),
    Case("vault capabilities", "403", vault(VCAPS, "403", 1), ROLLED_BACK, V_CAPS, note="stage"),
    # Vault write (promotion, last): after AWS was promoted the rotation is stuck; alone, it
    # rolls back. A CAS conflict keeps the concurrent writer's value (stuck until an operator).
    Case("vault write", "5xx", vault(VWRITE, "5xx"), STUCK, V_WRITE, recovered=P),
    Case("vault write", "timeout", vault(VWRITE, "timeout"), STUCK, V_WRITE, recovered=P),
    Case("vault write", "drop", vault(VWRITE, "drop"), STUCK, V_WRITE, recovered=P),
    Case("vault write", "403", vault(VWRITE, "403"), STUCK, V_WRITE, recovered=P),
    # A 5xx, timeout or drop on the first promotion may hide a write that lands later: stuck
    # (both keys valid), and recovery, reading again once the fault is gone, rolls back.
    Case("vault write", "5xx", vault(VWRITE, "5xx"), IN_DOUBT, V_WRITE, dests="vault",
         recovered=R),
    Case("vault write", "403", vault(VWRITE, "403"), ROLLED_BACK, V_WRITE, dests="vault"),
    Case("vault write", "heals", vault(VWRITE, "5xx", 2), PROMOTED),
    Case("vault write", "heals", vault(VWRITE, "timeout", 1, after=True), PROMOTED,
         note="timeout-after"),
    Case("vault write", "cas", hook("readback_ok", World.write_vault), STUCK, CAS, recovered=S,
         follow_up=S),
    Case("vault write", "cas", hook("readback_ok", World.write_vault), ROLLED_BACK, CAS,
         dests="vault"),
    Case("vault write", "cas", hook("verified", World.write_vault), ROLLED_BACK, CAS,
         dests="vault", note="at-stage"),
    # Vault metadata (after the value was written: the new key is served) → stuck.
    Case("vault metadata", "5xx", vault(VMETA, "5xx"), STUCK, V_META, dests="vault",
         recovered=P),
    Case("vault metadata", "timeout", vault(VMETA, "timeout"), STUCK, V_META, dests="vault",
         recovered=P),
    Case("vault metadata", "drop", vault(VMETA, "drop"), STUCK, V_META, dests="vault",
         recovered=P),
    Case("vault metadata", "403", vault(VMETA, "403"), STUCK, V_META, recovered=P),
    Case("vault metadata", "heals", vault(VMETA, "5xx", 2), PROMOTED),
    # AWS PutSecretValue (stage AWSPENDING): nothing is served yet → roll back.
    Case("aws PutSecretValue", "5xx", aws(PUT, "5xx"), ROLLED_BACK, A_PUT),
    Case("aws PutSecretValue", "timeout", aws(PUT, "timeout"), ROLLED_BACK, A_PUT),
    Case("aws PutSecretValue", "drop", aws(PUT, "drop"), ROLLED_BACK, A_PUT),
    Case("aws PutSecretValue", "403", aws(PUT, "403"), ROLLED_BACK, A_PUT, dests="aws"),
    Case("aws PutSecretValue", "heals", aws(PUT, "5xx", 1), PROMOTED),
    Case("aws PutSecretValue", "heals", aws(PUT, "drop", 1, after=True), PROMOTED,
         note="drop-after"),
    Case("aws PutSecretValue", "cas", hook("verified", World.write_aws), ROLLED_BACK, CAS,
         dests="aws"),
    # AWS GetSecretValue by VersionId (read back the staged version) → roll back.
    Case("aws GetSecretValue", "5xx", aws(READBACK, "5xx"), ROLLED_BACK, A_GET),
    Case("aws GetSecretValue", "timeout", aws(READBACK, "timeout"), ROLLED_BACK, A_GET),
    Case("aws GetSecretValue", "drop", aws(READBACK, "drop"), ROLLED_BACK, A_GET),
    Case("aws GetSecretValue", "403", aws(READBACK, "403"), ROLLED_BACK, A_GET),
    Case("aws GetSecretValue", "heals", aws(READBACK, "5xx", 1), PROMOTED),
    # AWS UpdateSecretVersionStage (promotion, first, a CAS on AWSCURRENT): a refusal rolls
    # back; a 5xx, timeout or drop may hide a move that lands later → stuck, then recovery
    # (reading again once the fault is gone) rolls back.
    Case("aws UpdateSecretVersionStage", "5xx", aws(PROMOTE, "5xx"), IN_DOUBT, A_MOVE,
         recovered=R),
    Case("aws UpdateSecretVersionStage", "timeout", aws(PROMOTE, "timeout"), IN_DOUBT, A_MOVE,
         dests="aws", recovered=R),
    Case("aws UpdateSecretVersionStage", "drop", aws(PROMOTE, "drop"), IN_DOUBT, A_MOVE,
         recovered=R),
    Case("aws UpdateSecretVersionStage", "403", aws(PROMOTE, "403"), ROLLED_BACK, A_MOVE),
    Case("aws UpdateSecretVersionStage", "heals", aws(PROMOTE, "5xx", 3), PROMOTED),
    Case("aws UpdateSecretVersionStage", "heals", aws(PROMOTE, "drop", 1, after=True), PROMOTED,
         note="drop-after"),
    Case("aws UpdateSecretVersionStage", "heals", aws(PROMOTE, "5xx", 1, after=True), PROMOTED,
         note="5xx-after"),
    Case("aws UpdateSecretVersionStage", "heals", aws(UNPEND, "5xx", 1, after=True), PROMOTED,
         note="unpend-5xx-after"),
    Case("aws UpdateSecretVersionStage", "cas", hook("readback_ok", World.write_aws),
         ROLLED_BACK, CAS),
    Case("aws UpdateSecretVersionStage", "cas", hook("readback_ok", World.write_aws),
         ROLLED_BACK, CAS, dests="aws"),
]
# fmt: on


# -- running the matrix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    """What every case shares: the session's OpenBao and moto, and one proxy in front of each."""

    openbao: OpenBaoEnv
    moto: MotoEnv
    vault: FaultProxy
    aws: FaultProxy


@dataclass(frozen=True)
class CaseRun:
    """How one case went: ``failure`` is what it raised (None: as the table says)."""

    failure: Exception | None
    seconds: float


ELAPSED: dict[str, float] = {}
"""Seconds per case id, for the printed table."""


@dataclass(frozen=True)
class Lent:
    """One stand-in of the pool: its handle and a client for ``GET /v1/models``."""

    standin: StandinHandle
    models: httpx.Client


class StandinPool:
    """Stand-ins on free loopback ports, lent out one per case (Mistral faults are per server)."""

    def __init__(self, size: int) -> None:
        self._servers = [StandinServer(host="127.0.0.1", port=0) for _ in range(size)]
        self._lent: list[Lent] = []
        self._free: asyncio.Queue[Lent] | None = None

    def __enter__(self) -> StandinPool:
        for server in self._servers:
            server.start()
            handle = StandinHandle(
                url=server.url,
                admin_key=DEFAULT_ADMIN_KEY,
                control=StandinControl(server.url),
                user_id=SEED_USER_ID,
                workspace_id=DEFAULT_WORKSPACE_ID,
            )
            self._lent.append(Lent(handle, httpx.Client(base_url=server.url, timeout=10)))
        return self

    def __exit__(self, *exc: object) -> None:
        for lent in self._lent:
            lent.standin.control.close()
            lent.models.close()
        for server in self._servers:
            server.stop()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Lent]:
        """A stand-in for one case, reset to its seed organization; back to the pool after."""
        if self._free is None:
            self._free = asyncio.Queue()
            for lent in self._lent:
                self._free.put_nowait(lent)
        lent = await self._free.get()
        try:
            await asyncio.to_thread(lent.standin.control.reset)
            yield lent
        finally:
            self._free.put_nowait(lent)


def faulty_config(stack: Stack, state_url: str, servers: Servers) -> Config:
    """The stack's configuration with its stores behind the proxies and 1 s client timeouts."""
    raw = stack.config_dict(state_url=state_url, policy={"activation_timeout": ACTIVATION_TIMEOUT})
    raw["mistral"]["timeout"] = CLIENT_TIMEOUT
    raw["stores"]["vault"].update(url=servers.vault.url, timeout=CLIENT_TIMEOUT)
    raw["stores"]["aws"].update(endpoint_url=servers.aws.url, timeout=CLIENT_TIMEOUT)
    return parse_config(raw, source="fault-matrix")


async def run_matrix(
    cases: list[Case], servers: Servers, pool: StandinPool, workdir: Path
) -> dict[str, CaseRun]:
    """Every case, :data:`CONCURRENCY` at a time; a failing case does not stop the others."""

    async def one(number: int, case: Case) -> CaseRun:
        async with pool.lease() as lent:
            started = time.monotonic()
            try:
                await run_one(case, servers, lent, workdir / f"case-{number}")
            except Exception as exc:  # reported by the case's own test
                return CaseRun(exc, time.monotonic() - started)
            return CaseRun(None, time.monotonic() - started)

    slow_first = sorted(cases, key=lambda c: c.fault != "timeout")  # hangs take the longest
    runs = await asyncio.gather(*(one(n, c) for n, c in enumerate(slow_first)))
    return {case.id: run for case, run in zip(slow_first, runs, strict=True)}


async def run_one(case: Case, servers: Servers, lent: Lent, workdir: Path) -> None:
    """One row: seed, fault, rotate, check; clear, recover, rotate again, check."""
    await asyncio.to_thread(workdir.mkdir, parents=True)
    stack = QuickStack(lent.standin, servers.openbao, servers.moto, workdir, models=lent.models)
    spec = stack.add_target(BACKEND_SETS[case.dests])
    legacy = await asyncio.to_thread(stack.seed, spec)
    state_url = f"sqlite:///{workdir / 'state.db'}"
    clock = QuickClock()
    engine = await build_engine(faulty_config(stack, state_url, servers), clock=clock)
    store = HookedStore(engine.deps.store)
    engine.deps.store = cast("StateStore", store)
    world = World(stack, spec, legacy, servers.vault, servers.aws, store, clock)
    checker = InvariantChecker(stack, state_url)
    try:
        await run_case(case, world, engine)
        assert await violations(checker, after_recovery=case.expect != CLEANUP) == []
        await asyncio.to_thread(world.clear)
        await recover_and_follow_up(case, world, engine)
    finally:
        await asyncio.to_thread(world.clear)
        await engine.close()
    assert await violations(checker) == []


async def run_case(case: Case, world: World, engine: Engine) -> None:
    """Arm the fault, run the rotation (or revoke-due) and check its outcome."""
    if case.mode == "revoke_due":
        first = await engine.rotate(world.spec.name)
        assert first.outcome is Outcome.PROMOTED, first.error
        world.clock.offset += timedelta(hours=2)  # past the 1 h grace
        await asyncio.to_thread(case.arm, world)
        revoked = await engine.revoke_due()
        assert [(r.key_id, r.outcome) for r in revoked] == [(world.legacy, case.expect)]
        assert_one_line(revoked[0].detail or None, case.error)
        legacy = await asyncio.to_thread(world.control.key, world.legacy)
        assert legacy.deleted is (case.expect == REVOKED)
        return
    before = await asyncio.to_thread(world.served)
    await asyncio.to_thread(case.arm, world)
    result = await engine.rotate(world.spec.name, emergency=case.mode == "emergency")
    assert_one_line(result.error, case.error)
    await check_outcome(case, world, engine, result, before)


def assert_one_line(error: str | None, pattern: str | None) -> None:
    """``error`` is one line matching ``pattern`` (and None when no error is expected)."""
    if pattern is None:
        assert error is None, error
        return
    assert error is not None, f"expected an error matching {pattern!r}"
    assert "\n" not in error, error
    assert re.search(pattern, error), f"{error!r} does not match {pattern!r}"


async def check_outcome(
    case: Case, world: World, engine: Engine, result: RotationResult, before: dict[str, Any]
) -> None:
    """What consumers read, which keys live and which rotations stay open, per expectation."""
    served = await asyncio.to_thread(world.served)
    keys = await asyncio.to_thread(world.rotator_keys)
    legacy = await asyncio.to_thread(world.control.key, world.legacy)
    unchanged = {**before, **world.written}  # a concurrent writer's value must survive
    live = [k.key_id for k in keys if not k.deleted]
    still_open = [r.rotation_id for r in await engine.deps.store.open_rotations(world.spec.name)]
    assert legacy.deleted is (case.expect == ROTATED), "the old key goes only once replaced"
    match case.expect:
        case "not_started":
            assert (result.outcome, result.rotation_id) == (Outcome.ROLLED_BACK, None)
            assert keys == []
            assert served == before
        case "rolled_back":
            assert result.outcome is Outcome.ROLLED_BACK, result.error
            assert result.rotation_id is not None
            assert live == [], "the new key must be deleted"
            assert served == unchanged
            assert still_open == []
        case "cleanup_pending":
            assert result.outcome is Outcome.ROLLED_BACK, result.error
            assert served == before
            assert still_open == [result.rotation_id]
        case "stuck":
            assert result.outcome is Outcome.STUCK, result.error
            assert result.new_key_id in live, "a served key must stay valid"
            new = fingerprint_of_key(keys, result.new_key_id)
            assert new in served.values(), "stuck means the new key is served somewhere"
            assert set(served.values()) <= {new, *unchanged.values()}
            assert still_open == [result.rotation_id]
        case "in_doubt":
            assert result.outcome is Outcome.STUCK, result.error
            assert result.new_key_id in live, "a key that may be served must stay valid"
            assert served == unchanged
            assert still_open == [result.rotation_id]
        case "promoted" | "rotated":
            assert result.outcome is Outcome(case.expect), result.error
            assert live == [result.new_key_id]
            assert set(served.values()) == {fingerprint_of_key(keys, result.new_key_id)}
            assert still_open == []
        case _:
            raise AssertionError(f"{case.expect!r} is not a rotation outcome")


def fingerprint_of_key(keys: list[KeyFacts], key_id: str | None) -> str:
    [found] = [k for k in keys if k.key_id == key_id]
    return found.fingerprint


async def recover_and_follow_up(case: Case, world: World, engine: Engine) -> None:
    """With the fault cleared: recover, revoke what is due, rotate again."""
    results, orphans = await engine.recover()
    assert orphans == []
    assert [r.outcome for r in results] == ([case.recovered] if case.recovered else [])
    old_key_due = case.expect == DEFERRED or (case.mode == "emergency" and case.expect == PROMOTED)
    revoked = await engine.revoke_due()
    assert [(r.key_id, r.outcome) for r in revoked] == (
        [(world.legacy, "revoked")] if old_key_due else []
    )
    follow_up = await engine.rotate(world.spec.name)
    assert follow_up.outcome is case.follow_up, follow_up.error


async def violations(checker: InvariantChecker, *, after_recovery: bool = True) -> list[str]:
    """``checker.check()``, on a thread (it blocks)."""
    return await asyncio.to_thread(checker.check, after_recovery=after_recovery)


# -- the tests ------------------------------------------------------------------------------------


def _fast_dir(factory: pytest.TempPathFactory) -> Path:
    """Where the cases' state databases go: tmpfs when there is one (the store commits with
    ``synchronous=FULL``; a disk's fsync per journal step would dominate the run)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else factory.getbasetemp()


@pytest.fixture(scope="module")
def matrix_runs(
    request: pytest.FixtureRequest,
    openbao: OpenBaoEnv,
    moto: MotoEnv,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, CaseRun]:
    """Runs the selected cases of :data:`MATRIX` (all at once, see the module docstring)."""
    wanted = {
        cast("Case", item.callspec.params["case"]).id
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and item.originalname == "test_fault"
    }
    cases = [c for c in MATRIX if c.id in wanted]
    with (
        contextlib.closing(CachedAdminMoto.of(moto)) as cached,
        FaultProxy(openbao.url, flavour="vault") as vault,
        FaultProxy(moto.url, flavour="aws") as aws_,
        StandinPool(min(CONCURRENCY, len(cases) or 1)) as pool,
        pytest.MonkeyPatch.context() as env,
        tempfile.TemporaryDirectory(prefix="fault-matrix-", dir=_fast_dir(tmp_path_factory)) as d,
    ):
        rotator = moto.rotator
        env.setenv("AWS_ACCESS_KEY_ID", rotator.access_key_id)
        env.setenv("AWS_SECRET_ACCESS_KEY", rotator.secret_access_key)
        env.setenv("AWS_DEFAULT_REGION", AWS_REGION)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.delenv("AWS_PROFILE", raising=False)
        servers = Servers(openbao, cached, vault, aws_)
        runs = asyncio.run(run_matrix(cases, servers, pool, Path(d)))
    ELAPSED.update({k: v.seconds for k, v in runs.items()})
    return runs


@pytest.mark.timeout(MATRIX_TIMEOUT)  # the first selected case's set-up runs them all
@pytest.mark.parametrize("case", MATRIX, ids=[c.id for c in MATRIX])
def test_fault(case: Case, matrix_runs: dict[str, CaseRun]) -> None:
    """A rotation under this fault ends as the table says with I1-I6 intact, and once the fault
    is cleared, recovery and a follow-up rotation end as the table says with I1-I6 intact."""
    failure = matrix_runs[case.id].failure
    if failure is not None:
        raise failure


def test_matrix_table() -> None:
    """The table's rows are unique; it prints (``-s`` shows it) with its counts."""
    lines = [
        f"{c.operation:29} {c.fault:8} {c.dests:5} {c.note:24} -> {c.expect}"
        + (f"; recover: {c.recovered}" if c.recovered else "")
        + (f"; follow-up: {c.follow_up}" if c.follow_up is not Outcome.PROMOTED else "")
        + (f"  [{ELAPSED[c.id]:.1f}s]" if c.id in ELAPSED else "")
        for c in MATRIX
    ]
    kinds = sorted({c.fault for c in MATRIX})
    counts = ", ".join(f"{k}: {sum(c.fault == k for c in MATRIX)}" for k in kinds)
    print("\n".join(["", *lines, f"{len(MATRIX)} cases ({counts})"]))
    assert len({c.id for c in MATRIX}) == len(MATRIX)
