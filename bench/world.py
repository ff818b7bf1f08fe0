"""What every benchmark shares: the servers, a seeded fleet, a measured child process, results.

:class:`World` starts the Mistral stand-in (``rotator dev standin``, its own process), an OpenBao
dev server and moto on free loopback ports (the test suite's starters, see
``tests/support/servers.py``). :func:`seed_fleet` creates N targets the way an operator's world
looks before a rotation: a working key per target, written with other fields beside it to one
Vault KV v2 secret and one AWS secret. :func:`seed_state` records each seeded key as the target's
current managed key (as if rotator had rotated it once), so the measured rotation is a
steady-state one that also revokes the key it replaces. :func:`run_measured` runs a child and
reads its own CPU time (``wait4``) and peak RSS (``/proc``): the servers' are never counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import httpx
import hvac
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the test suite's server starters live in tests/support
    sys.path.insert(0, str(ROOT))

from rotator.contracts import ManagedKey  # noqa: E402
from rotator.logs import configure_logging  # noqa: E402
from rotator.secret import fingerprint_of  # noqa: E402
from rotator.state import SqlStateStore  # noqa: E402
from rotator_dev.standin import (  # noqa: E402
    DEFAULT_ADMIN_KEY,
    DEFAULT_WORKSPACE_ID,
    SEED_USER_ID,
    Operation,
    StandinControl,
)
from tests.support import servers  # noqa: E402
from tests.support.servers import ServerProcess  # noqa: E402

AWS_REGION = servers.AWS_REGION
ROOT_TOKEN = servers.ROOT_TOKEN
DUMMY_AWS = servers.DUMMY_AWS
RESULTS = ROOT / "bench" / "results"
ROTATOR = str(Path(sys.executable).with_name("rotator"))
FIELD = "api_key"
OTHER_FIELDS = {"owner": "team-payments", "note": "do not remove"}
SEED_THREADS = 4
NOWHERE = "http://127.0.0.1:9"
"""A URL nothing answers (the discard port, closed): a call there fails at once."""
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


# -- servers -------------------------------------------------------------------------------------


def start_standin(workdir: Path) -> ServerProcess:
    """``rotator dev standin`` on a free loopback port, in a process of its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = servers.free_port()
    log = workdir / "standin.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ROTATOR, "--log-level", "WARNING", "dev", "standin", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = ServerProcess("standin", f"http://{servers.HOST}:{port}", process, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(server.url + "/_standin/settings", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the stand-in did not start:\n{server.log_tail()}")
        time.sleep(0.1)


@dataclass
class World:
    """The stand-in, OpenBao and moto, started once per benchmark run."""

    workdir: Path
    standin: ServerProcess
    openbao: ServerProcess
    moto: ServerProcess
    control: StandinControl = field(init=False)

    def __post_init__(self) -> None:
        self.control = StandinControl(self.standin.url)

    @classmethod
    @contextlib.contextmanager
    def running(cls, workdir: Path) -> Iterator[World]:
        started: list[ServerProcess] = []
        try:
            for start in (start_standin, servers.start_openbao, servers.start_moto):
                started.append(start(workdir / f"srv-{len(started)}"))
            world = cls(workdir, *started)
            yield world
            world.control.close()
        finally:
            for server in reversed(started):
                server.stop()

    @classmethod
    @contextlib.contextmanager
    def temporary(cls) -> Iterator[World]:
        """A world in a temporary directory, removed afterwards with the servers' files."""
        with (
            tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp,
            cls.running(Path(tmp)) as world,
        ):
            yield world

    def set_latency(self, seconds: float) -> None:
        """Every Mistral call (Admin API and ``/v1/models``) answered ``seconds`` later."""
        self.control.clear_faults()
        if seconds > 0:
            for operation in Operation:
                self.control.add_latency(operation, seconds)

    def vault(self) -> hvac.Client:
        return hvac.Client(url=self.openbao.url, token=ROOT_TOKEN)

    def aws(self) -> Any:
        """A Secrets Manager client for seeding: moto under load answers 500 now and then."""
        return boto3.session.Session(
            aws_access_key_id=DUMMY_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_REGION,
        ).client(
            "secretsmanager",
            endpoint_url=self.moto.url,
            config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 10}),
        )

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.standin.url,
            headers={"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}"},
            timeout=30,
        )

    def child_env(self) -> dict[str, str]:
        """The environment of a measured child: dummy AWS credentials, nothing of ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
        return {**env, **DUMMY_AWS}


# -- the fleet -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetTarget:
    """One seeded target: where its secrets live and the key they serve (never its plaintext)."""

    name: str
    path: str
    key_id: str
    fingerprint: str


def seed_fleet(world: World, n: int, tag: str) -> list[FleetTarget]:
    """N targets named ``<tag>-<i>``, each with a working key in a Vault and an AWS secret."""
    run = f"{tag}-{uuid.uuid4().hex[:6]}"
    vault, aws = world.vault(), world.aws()

    def seed(i: int) -> FleetTarget:
        name = f"{run}-{i:05d}"
        with world.admin() as admin:
            answer = admin.post(
                "/v1/admin/api-keys",
                json={
                    "workspace_uuid": DEFAULT_WORKSPACE_ID,
                    "user_id": SEED_USER_ID,
                    "name": f"legacy-{name}",
                },
            )
        answer.raise_for_status()
        created = answer.json()
        path = f"bench/{name}"
        data = {**OTHER_FIELDS, FIELD: created["key"]}
        written = vault.secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, mount_point="secret"
        )
        # The marks rotator's last promotion leaves (rotator/destinations/_common.py marks_for):
        # the secret as one earlier rotation left it, so what is measured is the steady state.
        marks = {
            "managed-by": "rotator",
            "key_id": created["key_id"],
            "fingerprint": fingerprint_of(created["key"]),
            "version": str(written["data"]["version"]),
        }
        vault.secrets.kv.v2.update_metadata(path=path, custom_metadata=marks, mount_point="secret")
        aws.create_secret(Name=path, SecretString=json.dumps(data))
        return FleetTarget(name, path, created["key_id"], fingerprint_of(created["key"]))

    with ThreadPoolExecutor(SEED_THREADS) as pool:
        return list(pool.map(seed, range(n)))


def idle_fleet(n: int, tag: str = "idle") -> list[FleetTarget]:
    """N configured targets whose secrets and keys need not exist (for a fleet nothing reads):
    each with a made-up key id and fingerprint, for :func:`seed_state`."""
    return [
        FleetTarget(
            f"{tag}-{i:05d}",
            f"bench/{tag}/{n}/{i:05d}",
            f"{tag}-key-{i:05d}",
            fingerprint_of(f"{tag}-not-a-key-{i:05d}"),
        )
        for i in range(n)
    ]


def seed_state(state_url: str, fleet: Sequence[FleetTarget]) -> None:
    """Record each target's seeded key as its current managed key (one earlier rotation)."""

    configure_logging(level="WARNING", fmt="console", stream=sys.stderr)

    async def record() -> None:
        store = SqlStateStore(state_url)
        await store.migrate()
        try:
            for t in fleet:
                key = ManagedKey(t.key_id, t.fingerprint, created_at=None, expiration=None)
                await store.record_promotion(t.name, key)
        finally:
            await store.close()

    asyncio.run(record())


def config_dict(
    world: World | None,
    fleet: Sequence[FleetTarget],
    *,
    state_url: str,
    policy: dict[str, str] | None = None,
    concurrency: int | None = None,
    listen: str | None = None,
    via: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A rotator configuration for ``fleet`` (grace 0 by default: the old key goes at once);
    ``via`` gives other URLs for the ``vault`` and ``aws`` stores (a counting proxy). Without a
    world, every URL is :data:`NOWHERE`: for commands that must reach no server."""
    urls = {"mistral": NOWHERE, "vault": NOWHERE, "aws": NOWHERE}
    if world is not None:
        urls = {"mistral": world.standin.url, "vault": world.openbao.url, "aws": world.moto.url}
    urls |= via or {}
    defaults = {
        "schedule": "every 30d",
        "max_age": "30d",
        "grace": "0s",
        "max_grace": "7d",
        "key_expiration": "45d",
        "activation_timeout": "30s",
        "jitter": "0s",
    } | (policy or {})
    cfg: dict[str, Any] = {
        "mistral": {
            "admin_url": urls["mistral"],
            "api_url": urls["mistral"],
            "admin_key": DEFAULT_ADMIN_KEY,
            "user_id": SEED_USER_ID,
            "timeout": "30s",
        },
        "state": {"url": state_url},
        "stores": {
            "vault": {
                "type": "vault",
                "url": urls["vault"],
                "auth": {"method": "token", "token": ROOT_TOKEN},
                "timeout": "30s",
            },
            "aws": {
                "type": "aws_secrets_manager",
                "region": AWS_REGION,
                "endpoint_url": urls["aws"],
                "timeout": "30s",
            },
        },
        "defaults": defaults,
        "targets": [
            {
                "name": t.name,
                "workspace_id": DEFAULT_WORKSPACE_ID,
                "destinations": [
                    {"store": "vault", "path": t.path, "field": FIELD},
                    {"store": "aws", "secret_id": t.path, "field": FIELD},
                ],
            }
            for t in fleet
        ],
    }
    if concurrency is not None:
        cfg["engine"] = {"concurrency": concurrency}
    if listen is not None:
        cfg["server"] = {"listen": listen}
    return cfg


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- measuring a child ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A finished child: wall seconds, its own CPU seconds (user + system, from ``wait4``) and
    peak RSS (VmHWM sampled every 20 ms)."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str


def run_measured(
    argv: Sequence[str], *, env: dict[str, str], log: Path, timeout: float
) -> Measured:
    """Run ``argv`` to its end (killed after ``timeout`` seconds) and measure it with wait4."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.with_suffix(".out")
    with out.open("wb") as stdout, log.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=stdout, stderr=stderr, env=env)
        deadline = time.monotonic() + timeout
        peak_kb = 0
        try:
            while True:
                peak_kb = max(peak_kb, _hwm_kb(process.pid))
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    process.kill()
                    pid, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:  # interrupted: the child must not outlive the benchmark
            process.kill()
            os.wait4(process.pid, 0)
            raise
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        returncode=process.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak_kb / 1024,
        stdout=out.read_text(errors="replace"),
    )


def _hwm_kb(pid: int) -> int:
    """The child's peak resident memory so far (VmHWM), sampled while it runs: ``wait4``'s
    ``ru_maxrss`` would also count this process's own size at the fork."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- results -------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], check=False, cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def machine(*, with_bytecode: bool = True) -> dict[str, Any]:
    """Where and when the figures were taken (load averages: other work shares the cores), the
    last commit that changed the measured code (``rotator/``) and its :func:`bytecode`."""
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "rotator_commit": _git("log", "-1", "--format=%h", "--", "rotator"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": loadavg(),
    }
    return out | ({"bytecode": bytecode()} if with_bytecode else {})


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bytecode() -> dict[str, str]:
    """How many of rotator's and the virtualenv's modules have compiled bytecode (a ``.pyc``),
    as "compiled/all". A child started with ``PYTHONDONTWRITEBYTECODE`` (set on this machine)
    compiles every module without one again at each start, which costs start-up CPU."""
    out = {}
    for name, folder in (("rotator", ROOT / "rotator"), ("site-packages", SITE_PACKAGES)):
        files = list(folder.rglob("*.py"))
        have = sum(1 for f in files if Path(importlib.util.cache_from_source(str(f))).exists())
        out[name] = f"{have}/{len(files)}"
    out["PYTHONDONTWRITEBYTECODE"] = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    return out


def finish(
    data: dict[str, Any],
    started: float,
    render: Callable[[dict[str, Any]], str],
    results: Path = RESULTS,
) -> None:
    """Stamp the elapsed time, write ``<results>/<name>.json`` and the fragment ``<name>.md``
    (what ``bench/results.py`` assembles), and print the fragment."""
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    text = render(data)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{data['name']}.json").write_text(json.dumps(data, indent=2) + "\n")
    (results / f"{data['name']}.md").write_text(text.rstrip() + "\n")
    print(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    """A budget line's verdict; None: not measured as the budget says (a smaller N)."""
    if ok is None:
        return "n/a"
    return "met" if ok else "MISSED"


def section(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    goals: Sequence[dict[str, Any]],
) -> str:
    """A results fragment: a heading, the table, then each target with its verdict."""
    lines = [f"### {title}", "", table(headers, rows), ""]
    lines += [f"- {g['what']}: {g['value']} — **{verdict(g['ok'])}**" for g in goals]
    return "\n".join(lines)


def parser(doc: str | None, name: str, quick: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--name`` and ``--label``."""
    out = argparse.ArgumentParser(description=(doc or name).splitlines()[0])
    out.add_argument("--quick", action="store_true", help=quick)
    out.add_argument("--name", default=name, help="results file name (in bench/results/)")
    out.add_argument("--label", default="published run", help="what this run is")
    out.add_argument("--results", type=Path, default=RESULTS, help="where to write the results")
    return out
