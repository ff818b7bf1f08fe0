"""The image, built by podman from the repository's Dockerfile and run as the container guide
and the restricted Kubernetes profile run it: ``--read-only``, ``--user 10001:10001``,
``--cap-drop ALL``, ``no-new-privileges``, configuration and secrets mounted read-only, a tmpfs
``/tmp``, a named volume for the state; against the Mistral stand-in, OpenBao and moto on
loopback (``--network host``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator import __version__
from tests.container.conftest import LIMITS, Timeline, podman
from tests.support.jsonlog import parse_events
from tests.support.stack import FIELD, Stack

pytestmark = pytest.mark.container

UID = 10001
TOKEN = "container-admin-token"
GUARD = 90.0
"""Seconds any awaited event may take (a hang guard, not a timing)."""
STOP_BOUND = 120.0
"""The documented stop timeout (docker stop -t 120, --stop-timeout 120)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_image(
    image: str, *command: str, entrypoint: str = "/bin/sh"
) -> subprocess.CompletedProcess[str]:
    """A command in a throwaway container of the image, read-only, as its user."""
    return podman(
        "run",
        "--rm",
        "--no-healthcheck",
        "--read-only",
        *LIMITS,
        "--entrypoint",
        entrypoint,
        image,
        *command,
        check=False,
    )


# -- the image itself ------------------------------------------------------------------------


def test_image_holds_the_app_and_nothing_to_build_with(image: str, timeline: Timeline) -> None:
    """No pip, no setuptools, no compiler; runs as 10001; the dev kit left out; its labels;
    its size and the app layer's; ``rotator --version`` and its start time."""
    inspect = json.loads(podman("image", "inspect", image).stdout)[0]
    assert inspect["Config"]["User"] == "10001:10001"
    labels = inspect["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.revision"] not in {"", "unknown"}
    assert inspect["Healthcheck"]["Test"] == [
        "CMD",
        "/opt/rotator/bin/python",
        "-m",
        "rotator.probe",
    ]

    ids = in_image(image, "-c", "id -u; id -g")
    assert ids.stdout.split() == [str(UID), str(UID)], ids

    tools = in_image(
        image,
        "-c",
        "for c in pip pip3 pip3.11 gcc cc c++ clang make ld as apt-get dpkg-buildpackage;"
        " do command -v $c; done; true",
    )
    found = tools.stdout.split()
    # apt-get is Debian's, in the base; it cannot run as uid 10001 on a read-only root
    assert [t for t in found if not t.endswith("apt-get")] == [], found

    python = "/opt/rotator/bin/python"
    for module in ("pip", "setuptools", "wheel", "rotator_dev"):
        probe = in_image(image, "-c", f"import {module}", entrypoint=python)
        assert "ModuleNotFoundError" in probe.stderr, (module, probe)
    system = in_image(image, "-c", "import pip", entrypoint="/usr/bin/python3.11")
    assert "ModuleNotFoundError" in system.stderr, system
    dev = in_image(image, "dev", "standin", entrypoint="/opt/rotator/bin/rotator")
    assert dev.returncode == 1
    assert dev.stderr.strip() == (
        "rotator: the dev kit (rotator_dev) is not installed here; it comes with a checkout"
        " of the repository, not with the wheel or the image"
    )

    # Bytecode compiled at the build (pip's default): the read-only virtualenv with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile every imported module at every start.
    uncompiled = in_image(
        image,
        "-c",
        "import importlib.util, pathlib\n"
        "for p in pathlib.Path('/opt/rotator').rglob('*.py'):\n"
        "    if not pathlib.Path(importlib.util.cache_from_source(str(p))).is_file():\n"
        "        print(p)",
        entrypoint=python,
    )
    assert uncompiled.returncode == 0, uncompiled
    assert uncompiled.stdout.split() == [], uncompiled.stdout[:2000]

    version = podman("run", "--rm", "--no-healthcheck", "--read-only", *LIMITS, image, "--version")
    assert version.stdout.strip() == f"rotator {__version__}"
    timed = in_image(
        image,
        "-c",
        "import subprocess, time\n"
        "best = []\n"
        "for _ in range(3):\n"
        "    t = time.perf_counter()\n"
        "    subprocess.run(['rotator', '--version'], check=True, capture_output=True)\n"
        "    best.append(time.perf_counter() - t)\n"
        "print(min(best))",
        entrypoint=python,
    )
    start = float(timed.stdout)
    assert start < 5.0, start

    size = int(inspect["Size"])
    layers = json.loads(podman("history", "--format", "json", image).stdout)
    *ours, base = layers  # newest first; the base image is one imported layer
    assert base["comment"] == "imported from tarball", base
    app = sum(int(layer["size"]) for layer in ours)
    copied = [
        int(x["size"])
        for x in ours
        if "COPY" in x["CreatedBy"] and "/opt/rotator" in x["CreatedBy"]
    ]
    timeline.add(
        f"image size {size / 1e6:.0f} MB: base {int(base['size']) / 1e6:.0f} MB, the Dockerfile's"
        f" layers {app / 1e6:.1f} MB (the /opt/rotator virtualenv {sum(copied) / 1e6:.1f} MB);"
        f" rotator --version inside it: {start * 1000:.0f} ms (best of 3); tools on PATH: {found}"
    )


# -- the image run as the guides run it ---------------------------------------------------------


class Container:
    """A detached ``podman run`` of the image; its JSON log lines read back as events."""

    def __init__(self, name: str) -> None:
        self.name = name

    def events(self) -> list[dict[str, Any]]:
        return parse_events(podman("logs", self.name, check=False).stdout)

    def state(self, field: str) -> str:
        return podman("inspect", "--format", f"{{{{.State.{field}}}}}", self.name).stdout.strip()

    def wait_event(self, match: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + GUARD
        while True:
            found = next((e for e in self.events() if match(e)), None)
            if found is not None:
                return found
            if self.state("Status") == "exited" or time.monotonic() > deadline:
                logs = podman("logs", self.name, check=False)
                raise AssertionError(f"never happened: {what}\n{logs.stdout}{logs.stderr}")
            time.sleep(0.2)


def event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())


def secret(directory: Path, name: str, value: str) -> None:
    path = directory / name
    path.write_text(value + "\n")
    os.chown(path, UID, UID)
    path.chmod(0o400)


def lay_out(stack: Stack, root: Path, port: int) -> tuple[Path, Path, Path]:
    """config/rotator.yaml (no secret in it), secrets/ (uid 10001, 0400), an --env-file."""
    config, secrets = root / "config", root / "secrets"
    config.mkdir(mode=0o755)
    secrets.mkdir(mode=0o755)
    data = stack.config_dict(state_url="unused", policy={"schedule": "every 30d"})
    del data["state"]  # the default: sqlite:////var/lib/rotator/state.db, on the volume
    secret(secrets, "mistral-admin-key", data["mistral"].pop("admin_key"))
    data["mistral"]["admin_key_file"] = "/run/secrets/mistral-admin-key"
    auth = data["stores"]["vault"]["auth"]
    secret(secrets, "vault-token", auth.pop("token"))
    auth["token_file"] = "/run/secrets/vault-token"
    secret(secrets, "admin-token", TOKEN)
    # --network host: loopback is the host's, so a free port rather than 9402 on all addresses
    data["server"] = {"listen": f"127.0.0.1:{port}", "admin_token_file": "/run/secrets/admin-token"}
    (config / "rotator.yaml").write_text(yaml.safe_dump(data))
    (config / "rotator.yaml").chmod(0o644)
    env = root / "aws.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in stack.aws_env().items()))
    return config, secrets, env


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A container and a volume name, both removed afterwards."""
    token = uuid.uuid4().hex[:8]
    name, volume = f"rotator-test-{token}", f"rotator-test-state-{token}"
    yield name, volume
    podman("rm", "--force", "--time", "0", name, check=False)
    podman("volume", "rm", "--force", volume, check=False)


@pytest.mark.timeout(300)
def test_image_rotates_is_healthy_drains_on_sigterm_and_restarts_on_its_volume(
    image: str, stack: Stack, tmp_path: Path, names: tuple[str, str], timeline: Timeline
) -> None:
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    before = (stack.vault_data(spec) or {})[FIELD]
    port = free_port()
    config, secrets, env = lay_out(stack, tmp_path, port)
    name, volume = names
    podman("volume", "create", volume)
    t0 = time.monotonic()

    def at() -> str:
        return f"{time.monotonic() - t0:6.1f}s"

    podman(
        "run", "--detach", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--stop-timeout", "120",
        *LIMITS,
        "--volume", f"{volume}:/var/lib/rotator",
        "--volume", f"{config}:/etc/rotator:ro",
        "--volume", f"{secrets}:/run/secrets:ro",
        "--env-file", str(env),
        image,
    )  # fmt: skip
    box = Container(name)
    lines = [f"container run ({image}):"]
    box.wait_event(event("daemon_started"), "daemon_started")
    lines.append(f"  {at()} daemon_started")
    assert box.state("Pid") != "0"

    api = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    with api:
        first = api.post(f"/api/v1/targets/{spec.name}/rotate")
        assert first.status_code == 202, first.text
        first_id = first.json()["rotation_id"]
        result = box.wait_event(event("rotation_result", rotation_id=first_id), "a rotation")
        assert result["outcome"] == "promoted", result
        lines.append(f"  {at()} rotation {first_id}: promoted")

        # verified from outside: every destination serves one new key, and it works
        served = {where: data[FIELD] for where, data in stack.consumer_reads(spec) if data}
        assert len(served) == 2, served
        (new_key,) = set(served.values())
        assert stack.key_works(new_key)
        assert new_key != before
        lines.append(f"  {at()} both destinations serve the new key, which authenticates")

        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        assert box.state("Health.Status") == "healthy"
        lines.append(f"  {at()} podman healthcheck run: healthy")

        # A second rotation held in its verify step (new keys work only when the test moves the
        # stand-in's clock), then SIGTERM: the daemon finishes it and exits 0.
        stack.standin.control.set_activation_delay(600)
        # (emergency: the on-demand API allows one ordinary rotation a minute per target)
        second = api.post(f"/api/v1/targets/{spec.name}/rotate", params={"emergency": "true"})
        assert second.status_code == 202, second.text
        second_id = second.json()["rotation_id"]
        box.wait_event(
            event("mistral.key_created", rotation_id=second_id), "the second key created"
        )
        lines.append(f"  {at()} rotation {second_id} in flight (key created, not yet active)")

    stopped_at = time.monotonic()
    stop = subprocess.Popen(
        ["podman", "stop", "--time", "120", name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stopping = box.wait_event(event("shutdown_requested"), "the SIGTERM received")
        assert stopping["in_flight"] == [spec.name]
        lines.append(f"  {at()} podman stop: SIGTERM received, in flight: {stopping['in_flight']}")
        time.sleep(2)
        status = box.state("Status")
        assert status in {"running", "stopping"}, f"{status}: it must wait for the rotation"
        stack.standin.control.advance(600)
        assert stop.wait(timeout=STOP_BOUND + 10) == 0
    finally:
        if stop.poll() is None:
            stop.kill()
        stop.communicate()
    took = time.monotonic() - stopped_at
    exit_code = box.state("ExitCode")
    events = box.events()
    finished = next(
        e
        for e in events
        if e.get("event") == "rotation_result" and e.get("rotation_id") == second_id
    )
    assert finished["outcome"] in {"promoted", "rotated"}, finished  # rotated: old key revoked
    assert events[-1]["event"] == "daemon_stopped", events[-1]
    assert exit_code == "0"
    assert took < STOP_BOUND
    lines.append(
        f"  {at()} rotation {second_id}: {finished['outcome']} after the SIGTERM; container exited"
        f" {exit_code}, {took:.1f}s after podman stop (bound {STOP_BOUND:.0f}s)"
    )

    # the same container (same volume) started again: the audit trail's hash chain holds
    podman("start", name)
    deadline = time.monotonic() + GUARD
    while sum(e.get("event") == "daemon_started" for e in box.events()) < 2:
        assert time.monotonic() < deadline, podman("logs", name, check=False).stdout
        assert box.state("Running") == "true", podman("logs", name, check=False).stdout
        time.sleep(0.2)
    lines.append(f"  {at()} restarted on the same volume: daemon_started")
    verify = podman("exec", name, "rotator", "history", "--verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert first_id in verify.stdout
    assert second_id in verify.stdout
    verdict = verify.stdout.strip().splitlines()[-1]
    lines.append(f"  {at()} rotator history --verify: exit 0, {verdict!r}")
    podman("stop", "--time", "120", name, timeout=STOP_BOUND + 10)
    assert box.state("ExitCode") == "0"
    lines.append(f"  {at()} stopped again: exit 0")
    for line in lines:
        timeline.add(line)
