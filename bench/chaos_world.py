"""The resilience campaign's world: servers that outlive restarts, seeded targets, a config.

- Mistral: the stand-in (``rotator dev standin``, its own process; never restarted — it is
  Mistral, and it keeps its keys in memory).
- Vault: OpenBao with raft storage (:mod:`tests.support.openbao_raft`): restarted for real,
  unsealed again, every secret kept.
- AWS: moto (the test suite's launcher, IAM enforced). moto keeps its state in memory only, so
  moto itself stays up; rotator and the consumers reach it through a
  :class:`~tests.support.faultproxy.FaultProxy`, the "AWS endpoint", whose restarts are modelled
  as outages (:mod:`chaos_actors`). The checker reads moto directly.

Each target has one Vault and one AWS destination, seeded with a working key rotator did not
create (adopted at its first rotation) and other fields beside it (I6).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from world import start_standin

from rotator_dev.standin import (
    DEFAULT_ADMIN_KEY,
    DEFAULT_WORKSPACE_ID,
    SEED_USER_ID,
    StandinControl,
    StandinHandle,
)
from tests.support.faultproxy import FaultProxy
from tests.support.harness import MotoEnv
from tests.support.openbao_raft import PersistentOpenBao, PersistentOpenBaoEnv
from tests.support.servers import ServerProcess, start_moto
from tests.support.stack import Stack, TargetSpec

ROTATOR = str(Path(sys.executable).with_name("rotator"))
ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "chaos-admin-token"  # a throwaway world's daemon API token


@dataclass(frozen=True)
class Policy:
    """The targets' policy: rotations every few seconds, grace above the consumers' refresh."""

    every: float = 2.0
    grace: float = 5.0
    max_grace: float = 12.0
    jitter: float = 1.0
    drain_share: float = 0.25
    """Share of targets with ``drain: true`` (their old key goes at ``max_grace``: in use)."""
    concurrency: int = 8

    def defaults(self) -> dict[str, str]:
        return {
            "schedule": f"every {self.every:g}s",
            "max_age": "1h",
            "grace": f"{self.grace:g}s",
            "max_grace": f"{self.max_grace:g}s",
            "key_expiration": "45d",
            "activation_timeout": "5s",
            "jitter": f"{self.jitter:g}s",
        }


@dataclass
class World:
    """The servers, the seeded targets and the files of one campaign."""

    workdir: Path
    standin: ServerProcess
    openbao: PersistentOpenBao
    moto: ServerProcess
    aws_endpoint: FaultProxy
    stack: Stack
    """The checker's view: moto reached directly."""
    policy: Policy
    config: Path
    state_url: str

    @property
    def control(self) -> StandinControl:
        return self.stack.standin.control

    @property
    def vault_env(self) -> PersistentOpenBaoEnv:
        env = self.stack.openbao
        assert isinstance(env, PersistentOpenBaoEnv)
        return env

    @property
    def targets(self) -> list[TargetSpec]:
        return self.stack.targets

    @property
    def drained(self) -> set[str]:
        """The targets configured with ``drain: true`` (see :func:`config_dict`)."""
        return {t.name for t in self.targets[: drained_count(len(self.targets), self.policy)]}

    def rotator_env(self) -> dict[str, str]:
        """rotator's process environment: its AWS identity and nothing else of ours; the code
        is this checkout's (the campaign may run from another worktree than the install's)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
        return env | self.stack.aws_env() | {"PYTHONPATH": str(ROOT)}

    def rotator(self, *args: str) -> list[str]:
        """The argv of a rotator command on this world's configuration."""
        return [ROTATOR, "--log-format", "json", *args, "-c", str(self.config)]

    @classmethod
    @contextlib.contextmanager
    def running(cls, workdir: Path, *, targets: int, policy: Policy) -> Iterator[World]:
        """Start everything (the three servers at once), seed ``targets`` targets and write the
        configuration."""
        workdir.mkdir(parents=True, exist_ok=True)
        openbao = PersistentOpenBao(workdir / "openbao")
        with ThreadPoolExecutor(max_workers=3) as pool:
            standin_started = pool.submit(start_standin, workdir / "standin")
            moto_started = pool.submit(
                start_moto, workdir / "moto", initial_no_auth_actions=MotoEnv.SETUP_REQUESTS
            )
            openbao_started = pool.submit(openbao.start)
        with contextlib.ExitStack() as stop:
            stop.callback(openbao.stop)
            for future in (standin_started, moto_started):
                if future.exception() is None:
                    stop.callback(future.result().stop)
            openbao_started.result()
            standin, moto = standin_started.result(), moto_started.result()
            proxy = FaultProxy(moto.url, flavour="aws").start()
            stop.callback(proxy.stop)
            control = StandinControl(standin.url)
            stop.callback(control.close)
            control.set_activation_delay(0.3)
            handle = StandinHandle(
                standin.url, DEFAULT_ADMIN_KEY, control, SEED_USER_ID, DEFAULT_WORKSPACE_ID
            )
            stack = Stack(handle, openbao.prepare(), MotoEnv.prepare(moto.url), workdir)
            for _ in range(targets):
                stack.seed(stack.add_target(("vault", "aws")))
            state_url = f"sqlite:///{workdir / 'state.db'}"
            config = workdir / "rotator.yaml"
            config.write_text(
                yaml.safe_dump(config_dict(stack, state_url, policy, aws_url=proxy.url))
            )
            yield cls(workdir, standin, openbao, moto, proxy, stack, policy, config, state_url)


def config_dict(stack: Stack, state_url: str, policy: Policy, *, aws_url: str) -> dict[str, Any]:
    """The stack's configuration with rotator's AWS calls through ``aws_url``, the daemon API
    on a free port, and ``drain`` on a share of the targets."""
    data = stack.config_dict(state_url=state_url, policy=policy.defaults())
    data["stores"]["aws"]["endpoint_url"] = aws_url
    data["engine"] = {"concurrency": policy.concurrency}
    data["server"] = {"listen": "127.0.0.1:0", "admin_token": ADMIN_TOKEN}
    for target in data["targets"][: drained_count(len(data["targets"]), policy)]:
        target["drain"] = True
    return data


def drained_count(targets: int, policy: Policy) -> int:
    """How many targets (the first ones) drain."""
    return round(targets * policy.drain_share)


def through(moto: MotoEnv, url: str) -> MotoEnv:
    """``moto`` as seen at ``url`` (the AWS endpoint in front of it)."""
    return dataclasses.replace(moto, url=url)
