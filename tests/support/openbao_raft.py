"""An OpenBao server that keeps its data across restarts: raft storage, initialised once.

``bao server -dev`` keeps everything in memory, so restarting it loses every secret. A
:class:`PersistentOpenBao` runs ``bao server -config`` with integrated (raft) storage in its own
directory on fixed loopback ports, is initialised once (one unseal key) and unsealed after every
start; :meth:`PersistentOpenBao.restart` stops it (SIGTERM, or SIGKILL for a crash) and starts it
again on the same address with the same data. :meth:`PersistentOpenBao.prepare` mounts KV v2 at
``secret/`` and returns a :class:`~tests.support.harness.OpenBaoEnv` holding tokens that outlive
restarts (they live in the storage too).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hvac

from tests.support.harness import VAULT_POLICY, OpenBaoEnv
from tests.support.servers import HOST, READY_TIMEOUT, _base_env, free_port, tool

CONSUMER_POLICY = 'path "secret/data/mistral/*" { capabilities = ["read"] }\n'
"""What an application reading its key holds."""
TOKEN_TTL = "12h"


@dataclass(frozen=True)
class PersistentOpenBaoEnv(OpenBaoEnv):
    """:class:`OpenBaoEnv` of a server initialised by ``bao operator init`` (its own root
    token), plus a read-only token for consumers."""

    root_token: str = ""
    consumer_token: str = ""

    def root(self) -> hvac.Client:
        return hvac.Client(url=self.url, token=self.root_token, timeout=10)


class PersistentOpenBao:
    """One OpenBao server with raft storage under ``workdir`` (see the module docstring)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.unseal_key = ""
        self.root_token = ""
        self.starts = 0

    def _config(self) -> Path:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "openbao.hcl"
        config.write_text(
            f'storage "raft" {{\n  path = "{data}"\n  node_id = "chaos"\n'
            "  performance_multiplier = 1\n}\n"
            f'listener "tcp" {{\n  address = "{HOST}:{self.port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.url}"\ncluster_addr = "http://{HOST}:{free_port()}"\n'
            "disable_mlock = true\n"
        )
        return config

    @property
    def log(self) -> Path:
        return self.workdir / "openbao.log"

    def start(self) -> None:
        """Start the server (initialising it the first time), unseal it and wait until it is
        the active node."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._config()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [tool("bao"), "server", f"-config={config}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_base_env(self.workdir),
                cwd=self.workdir,
            )
        self.starts += 1
        self._wait(lambda status: status is not None, "listening")
        if not self.root_token:
            self._init()
        self._call("PUT", "/v1/sys/unseal", {"key": self.unseal_key})
        self._wait(lambda status: status == 200, "active")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, crash: bool = False) -> None:
        """SIGTERM (or SIGKILL with ``crash``) and wait for the process."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self, *, crash: bool = False, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start and unseal again (same data)."""
        self.stop(crash=crash)
        time.sleep(down_for)
        self.start()

    def prepare(self) -> PersistentOpenBaoEnv:
        """KV v2 at ``secret/``, rotator's shipped policy and tokens: rotator's (that policy
        only) and a consumer's (read only)."""
        root = hvac.Client(url=self.url, token=self.root_token, timeout=10)
        if "secret/" not in root.sys.list_mounted_secrets_engines()["data"]:
            root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        root.sys.create_or_update_policy("rotator", VAULT_POLICY.read_text())
        root.sys.create_or_update_policy("consumer", CONSUMER_POLICY)

        def token(policy: str) -> str:
            answer = root.auth.token.create(
                policies=[policy], no_default_policy=True, ttl=TOKEN_TTL, renewable=True
            )
            return str(answer["auth"]["client_token"])

        return PersistentOpenBaoEnv(
            url=self.url,
            rotator_token=token("rotator"),
            read_only_token=token("consumer"),
            default_only_token="",
            role_id="",
            secret_id="",
            root_token=self.root_token,
            consumer_token=token("consumer"),
        )

    # -- wire ------------------------------------------------------------------------------------

    def _init(self) -> None:
        answer = self._call("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        keys = answer["keys_base64"]
        assert isinstance(keys, list)
        self.unseal_key = str(keys[0])
        self.root_token = str(answer["root_token"])

    def _call(self, method: str, path: str, body: dict[str, object]) -> dict[str, object]:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method=method
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            data: dict[str, object] = json.loads(answer.read() or b"{}")
            return data

    def _health(self) -> int | None:
        try:
            with urllib.request.urlopen(self.url + "/v1/sys/health", timeout=2) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def _wait(self, ready: Callable[[int | None], bool], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"openbao exited early:\n{self._tail()}")
            if ready(self._health()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"openbao not {what} after {READY_TIMEOUT}s:\n{self._tail()}")

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
