"""The campaign's actors besides rotator: consumers, the Mistral fault injector, the restarts.

- :class:`Consumer` (one thread per target) reads its key the way applications do — Vault KV v2
  latest version, AWS ``GetSecretValue`` with no stage, both through the endpoints rotator uses —
  every ``refresh`` seconds and calls ``GET /v1/models`` with each value it holds every ``tick``
  seconds. A 401 is a *failure* (rotator broke a consumer) when the call ended less than
  ``grace`` after the read began: the key had to stay valid that long. It is *stale* (counted
  apart) when the call began more than ``grace`` after the read ended: the consumer held the
  value that long because refreshing it failed during an injected outage; in between it cannot
  be told (``edge of grace``). Unreadable destinations and ``/v1/models`` answers that say
  nothing about the key (5xx, timeouts, dropped connections: injected faults) are counted apart.
- :class:`MistralFaults` arms one random fault at a time at the stand-in (5xx, 5xx after acting,
  latency, hang, dropped connection) on one operation for a short window, then clears it.
- :class:`Restarts` restarts OpenBao for real (SIGTERM or SIGKILL, down a few seconds, started
  and unsealed again: raft storage keeps every secret) and, alternately, takes the AWS endpoint
  down: answers of requests in flight are lost (their effect kept) for 0.3 s, then every request
  is cut unanswered for a few seconds, then service resumes.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import botocore.config
import botocore.exceptions
import httpx
import hvac
import hvac.exceptions
import requests
from chaos_world import World, through

from rotator.secret import fingerprint_of
from rotator_dev.standin import FaultKind, FaultWhen, Operation
from tests.support.faultproxy import Match
from tests.support.stack import FIELD, TargetSpec

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

KEEP_LINES = 20
"""Failure lines kept verbatim for the report."""


@dataclass
class Tally:
    """Thread-safe counters of one kind of actor, plus a few verbatim lines."""

    counts: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *names: str, line: str | None = None) -> None:
        with self._lock:
            self.counts.update(names)
            if line is not None and len(self.lines) < KEEP_LINES:
                self.lines.append(line)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))


class Stoppable(threading.Thread):
    """A daemon thread with a stop event."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)


# -- consumers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerTiming:
    refresh: float = 2.0
    tick: float = 1.0
    grace: float = 5.0

    def __post_init__(self) -> None:
        if self.grace < self.refresh:
            raise ValueError("the targets' grace must be at least the consumers' refresh")


class Consumer(Stoppable):
    """An application using one target's key from both destinations (module docstring)."""

    def __init__(
        self,
        spec: TargetSpec,
        *,
        world: World,
        aws: SecretsManagerClient,
        models: httpx.Client,
        timing: ConsumerTiming,
        tally: Tally,
    ) -> None:
        super().__init__(f"consumer {spec.name}")
        self.spec = spec
        env = world.vault_env
        self.vault = hvac.Client(url=env.url, token=env.consumer_token, timeout=3)
        self.aws = aws
        self.models = models
        self.timing = timing
        self.tally = tally
        self.held: dict[str, tuple[str, float, float]] = {}
        """backend -> (value, when its read began, when it ended), monotonic"""

    def run(self) -> None:
        next_refresh = 0.0
        self.stopping.wait(random.uniform(0, self.timing.tick))  # spread the threads
        while not self.stopping.is_set():
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + self.timing.refresh
                self._refresh()
            for backend, held in list(self.held.items()):
                self._use(backend, *held)
            self.stopping.wait(self.timing.tick)

    def _refresh(self) -> None:
        for backend, read in (("vault", self._read_vault), ("aws", self._read_aws)):
            started = time.monotonic()
            try:
                value = read()
            except (
                hvac.exceptions.VaultError,
                requests.RequestException,
                botocore.exceptions.BotoCoreError,
                botocore.exceptions.ClientError,
            ):
                self.tally.add(f"{backend} read unavailable")
                continue
            self.tally.add(f"{backend} reads")
            self.held[backend] = (value, started, time.monotonic())

    def _read_vault(self) -> str:
        answer = self.vault.secrets.kv.v2.read_secret_version(
            path=self.spec.vault_path, mount_point="secret", raise_on_deleted_version=True
        )
        return str(answer["data"]["data"][FIELD])

    def _read_aws(self) -> str:
        answer = self.aws.get_secret_value(SecretId=self.spec.aws_secret_id)
        return str(json.loads(answer["SecretString"])[FIELD])

    def _use(self, backend: str, value: str, read_began: float, read_ended: float) -> None:
        began = time.monotonic()
        try:
            answer = self.models.get("/v1/models", headers={"Authorization": f"Bearer {value}"})
            status: int | None = answer.status_code
        except httpx.HTTPError:
            status = None
        ended = time.monotonic()
        self.tally.add("calls")
        grace = self.timing.grace
        if status == 200:
            self.tally.add("ok")
        elif status == 401 and ended - read_began <= grace:
            self.tally.add(
                "failures",
                line=f"{self.spec.name} {backend}: key {fingerprint_of(value)} refused "
                f"{ended - read_began:.1f}s after it was read",
            )
        elif status == 401 and began - read_ended > grace:
            self.tally.add("stale refused (held past grace: refresh failed in an outage)")
        elif status == 401:
            self.tally.add("refused at the edge of grace (undecidable)")
        else:
            self.tally.add("/v1/models unavailable (injected fault)")


class Consumers:
    """One :class:`Consumer` per target, sharing an AWS client and an HTTP client."""

    def __init__(self, world: World, timing: ConsumerTiming) -> None:
        self.tally = Tally()
        moto = through(world.stack.moto, world.aws_endpoint.url)
        config = botocore.config.Config(
            retries={"total_max_attempts": 1},
            connect_timeout=2,
            read_timeout=3,
            max_pool_connections=64,
        )
        self.aws: SecretsManagerClient = moto.admin.session().client(
            "secretsmanager", endpoint_url=moto.url, config=config
        )
        self.models = httpx.Client(
            base_url=world.stack.standin.url,
            timeout=3,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.threads = [
            Consumer(
                spec,
                world=world,
                aws=self.aws,
                models=self.models,
                timing=timing,
                tally=self.tally,
            )
            for spec in world.targets
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        for thread in self.threads:
            thread.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.models.close()
        self.aws.close()


# -- Mistral faults ------------------------------------------------------------------------------

FAULT_OPERATIONS = (
    Operation.CREATE_KEY,
    Operation.DELETE_KEY,
    Operation.LIST_KEYS,
    Operation.MODELS,
)


class MistralFaults(Stoppable):
    """One random fault at a time at the stand-in, for ``window`` seconds, then cleared."""

    def __init__(
        self,
        world: World,
        *,
        rng: random.Random,
        gap: tuple[float, float] = (1.0, 4.0),
        window: tuple[float, float] = (0.5, 3.0),
    ) -> None:
        super().__init__("mistral faults")
        self.control = world.control
        self.rng = rng
        self.gap = gap
        self.window = window
        self.tally = Tally()

    def run(self) -> None:
        while not self.stopping.wait(self.rng.uniform(*self.gap)):
            operation = self.rng.choice(FAULT_OPERATIONS)
            kind, arm = self._pick(operation)
            try:
                self.control.inject(operation, count=None, **arm)
            except Exception as exc:  # noqa: BLE001 - the stand-in is never down; report it
                self.tally.add("inject failed", line=f"{type(exc).__name__}: {exc}")
                continue
            self.tally.add(kind, f"{kind} on {operation}")
            self.stopping.wait(self.rng.uniform(*self.window))
            self.control.clear_faults(operation)
        self.control.clear_faults()

    def _pick(self, operation: Operation) -> tuple[str, dict[str, Any]]:
        """A fault kind (its report label) and the arguments arming it."""
        choices: list[tuple[str, dict[str, Any]]] = [
            ("5xx", {"kind": FaultKind.STATUS, "status": self.rng.choice((500, 502, 503))}),
            ("latency spike", {"kind": FaultKind.LATENCY, "seconds": self.rng.uniform(0.3, 2.5)}),
            ("hang", {"kind": FaultKind.HANG, "seconds": None}),
            ("dropped connection", {"kind": FaultKind.DROP}),
        ]
        if operation in (Operation.CREATE_KEY, Operation.DELETE_KEY):
            after = {"kind": FaultKind.STATUS, "status": 503, "when": FaultWhen.AFTER}
            choices.append(("5xx after acting", after))
        return self.rng.choice(choices)


# -- restarts ------------------------------------------------------------------------------------


class Restarts(Stoppable):
    """Every ``every`` seconds, alternately: an OpenBao restart or an AWS endpoint outage."""

    def __init__(
        self,
        world: World,
        *,
        rng: random.Random,
        every: tuple[float, float] = (30.0, 60.0),
        down: tuple[float, float] = (0.5, 3.0),
    ) -> None:
        super().__init__("restarts")
        self.world = world
        self.rng = rng
        self.every = every
        self.down = down
        self.tally = Tally()
        self.downtime: dict[str, float] = {}

    def run(self) -> None:
        vault_next = self.rng.random() < 0.5
        while not self.stopping.wait(self.rng.uniform(*self.every)):
            down_for = self.rng.uniform(*self.down)
            started = time.monotonic()
            try:
                if vault_next:
                    self.restart_openbao(down_for)
                else:
                    self.aws_outage(down_for)
            except Exception as exc:  # noqa: BLE001 - reported; the next round tries again
                self.tally.add("restart failed", line=f"{type(exc).__name__}: {exc}")
            what = "openbao" if vault_next else "aws endpoint"
            self.downtime[what] = self.downtime.get(what, 0.0) + time.monotonic() - started
            vault_next = not vault_next

    def restart_openbao(self, down_for: float) -> None:
        crash = self.rng.random() < 0.5
        self.tally.add(f"openbao restarts ({'SIGKILL' if crash else 'SIGTERM'})")
        for attempt in range(3):
            try:
                self.world.openbao.restart(crash=crash, down_for=down_for if attempt == 0 else 1)
            except RuntimeError as exc:
                self.tally.add("openbao restart retried", line=str(exc).splitlines()[0])
            else:
                return
        raise RuntimeError("OpenBao did not come back after 3 restarts")

    def aws_outage(self, down_for: float) -> None:
        proxy = self.world.aws_endpoint
        self.tally.add("aws endpoint outages")
        lost = proxy.drop(Match(), count=None, after=True)
        self.stopping.wait(0.3)
        cut = proxy.drop(Match(), count=None)
        proxy.remove(lost)
        time.sleep(down_for)
        proxy.remove(cut)

    def stop(self) -> None:
        super().stop()
        self.world.aws_endpoint.clear()
