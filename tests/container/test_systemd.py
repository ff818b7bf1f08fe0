"""systemd/rotator.service started by systemd 252, booted in a container (``podman run
--systemd=always --privileged … /sbin/init`` of a Debian base made by debootstrap), rotator
installed and the unit enabled with the commands of docs/deploy/systemd.md, credentials
encrypted with ``systemd-creds``; against the Mistral stand-in, OpenBao and moto on the host's
loopback (``--network host``).
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.container.conftest import CA_BUNDLE, LIMITS, REPO, Timeline, base_image, podman
from tests.container.test_image import free_port
from tests.support.jsonlog import parse_events
from tests.support.stack import FIELD, Stack

pytestmark = pytest.mark.container

GUARD = 120.0
SOURCES = ("pyproject.toml", "README.md", "requirements", "rotator", "systemd")
"""What the guide's commands use of a checkout."""


class Machine:
    """The booted container: commands run in it as root, like ``sudo`` on a host."""

    def __init__(self, name: str) -> None:
        self.name = name

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = ["--env", f"PIP_CERT={CA_BUNDLE}"]
        args = ["podman", "exec", *(["-i"] if stdin is not None else []), *env, self.name]
        result = subprocess.run(
            [*args, "sh", "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{script}: exit {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def show(self, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show rotator.service -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.sh("journalctl -u rotator.service -o cat --no-pager").stdout

    def events(self) -> list[dict[str, Any]]:
        return parse_events(self.journal())

    def wait(self, condition: Callable[[], Any], what: str, guard: float = GUARD) -> Any:
        deadline = time.monotonic() + guard
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                status = self.sh("systemctl status rotator --no-pager -l", check=False).stdout
                raise AssertionError(f"never happened: {what}\n{status}\n{self.journal()[-4000:]}")
            time.sleep(0.5)

    def wait_event(self, match: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        found: dict[str, Any] = self.wait(
            lambda: next((e for e in reversed(self.events()) if match(e)), None), what
        )
        return found


@pytest.fixture
def machine() -> Iterator[Machine]:
    base = base_image("systemd")
    name = f"rotator-systemd-{uuid.uuid4().hex[:8]}"
    podman(
        "run", "--detach", "--name", name, "--systemd=always", "--privileged",
        "--network", "host", *LIMITS,
        "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        base, "/sbin/init",
    )  # fmt: skip
    box = Machine(name)
    try:
        box.wait(
            lambda: (
                box.sh("systemctl is-system-running", check=False).stdout.strip()
                in {"running", "degraded"}
            ),
            "systemd booted",
            guard=60,
        )
        yield box
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def checkout() -> bytes:
    """The parts of the checkout the guide uses, as a tar stream (no .git, .venv, caches)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for item in SOURCES:
            tar.add(
                REPO / item,
                arcname=f"rotator-src/{item}",
                filter=lambda t: None if "__pycache__" in t.name else t,
            )
    return buffer.getvalue()


def guide_block(heading: str, index: int = 0) -> str:
    """The ``index``-th sh block of docs/deploy/systemd.md's section ``heading``."""
    text = (REPO / "docs" / "deploy" / "systemd.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return str(blocks[index])


def config_for(stack: Stack, port: int) -> str:
    """systemd/rotator.yaml.example's shape (secrets as credentials, state in STATE_DIRECTORY)
    pointed at the stand-ins; a rotation every 20 s."""
    data = stack.config_dict(
        state_url="sqlite:///${STATE_DIRECTORY}/state.db",
        policy={"schedule": "every 20s", "grace": "5s", "activation_timeout": "60s"},
    )
    data["mistral"].pop("admin_key")
    data["mistral"]["admin_key_file"] = "${CREDENTIALS_DIRECTORY}/mistral-admin-key"
    auth = data["stores"]["vault"]["auth"]
    auth.pop("token")
    auth["token_file"] = "${CREDENTIALS_DIRECTORY}/vault-token"
    data["server"] = {"listen": f"127.0.0.1:{port}"}
    return yaml.safe_dump(data)


@pytest.mark.timeout(600)
def test_unit_under_systemd(machine: Machine, stack: Stack, timeline: Timeline) -> None:
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    port = free_port()
    t0 = time.monotonic()
    lines = ["systemd run (systemd in a container):"]

    def note(text: str) -> None:
        lines.append(f"  {time.monotonic() - t0:6.1f}s {text}")

    # 1. install into /opt/rotator: the guide's commands, from a copy of the checkout
    subprocess.run(
        ["podman", "exec", "-i", machine.name, "tar", "-x", "-C", "/root"],
        input=checkout(),
        check=True,
        capture_output=True,
    )
    install = guide_block("1. Install rotator into /opt/rotator").replace("sudo ", "")
    machine.sh(f"cd /root/rotator-src && {install}", timeout=600)
    version = machine.sh("/opt/rotator/bin/rotator --version").stdout.strip()
    note(f"installed by the guide's commands: {version}")

    # 3./4. configuration and credentials (encrypted with systemd-creds, as the guide shows)
    machine.sh("install -d -m 0755 /etc/rotator && cat > /etc/rotator/rotator.yaml",
               stdin=config_for(stack, port))  # fmt: skip
    machine.sh("install -d -m 0700 /etc/rotator/credentials")
    aws = stack.aws_env()
    secrets = {
        "mistral-admin-key": stack.standin.admin_key,
        "vault-token": stack.openbao.rotator_token,
        "aws-credentials": (
            "[default]\n"
            f"aws_access_key_id = {aws['AWS_ACCESS_KEY_ID']}\n"
            f"aws_secret_access_key = {aws['AWS_SECRET_ACCESS_KEY']}\n"
        ),
    }
    for name, value in secrets.items():
        machine.sh(
            f"systemd-creds encrypt --name={name} - /etc/rotator/credentials/{name}.cred",
            stdin=value,
        )
    dropin = "[Service]\nLoadCredential=\n" + "".join(
        f"LoadCredentialEncrypted={n}:/etc/rotator/credentials/{n}.cred\n" for n in secrets
    )
    dropin += "Environment=AWS_DEFAULT_REGION=" + aws["AWS_DEFAULT_REGION"] + "\n"
    dropin += "Environment=AWS_EC2_METADATA_DISABLED=true\n"
    machine.sh(
        "mkdir -p /etc/systemd/system/rotator.service.d"
        " && cat > /etc/systemd/system/rotator.service.d/credentials.conf",
        stdin=dropin,
    )
    note(f"credentials encrypted by systemd-creds: {sorted(secrets)}")

    # 5. install, verify, start
    machine.sh(
        "cd /root/rotator-src"
        " && install -m 0644 systemd/rotator.service /etc/systemd/system/rotator.service"
        " && systemctl daemon-reload"
    )
    verify = machine.sh("systemd-analyze verify rotator.service", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    started = time.monotonic()
    enabled = machine.sh("systemctl enable --now rotator", timeout=90, check=False)
    if enabled.returncode != 0:
        # systemd-creds did not work here: the exact failure goes to the timeline, then the
        # unit's own plain LoadCredential= lines (files of root's, mode 0600), as the guide says
        refused = [e for e in machine.journal().splitlines() if "rotator[" in e or "cannot" in e]
        note(f"with LoadCredentialEncrypted=: start failed: {refused[-1:] or enabled.stderr!r}")
        machine.sh("systemctl reset-failed rotator")
        for name, value in secrets.items():
            machine.sh(f"umask 077 && cat > /etc/rotator/credentials/{name}", stdin=value)
        machine.sh(
            "cat > /etc/systemd/system/rotator.service.d/credentials.conf"
            " && systemctl daemon-reload",
            stdin="[Service]\n" + "".join(dropin.splitlines(keepends=True)[-2:]),
        )
        started = time.monotonic()
        enabled = machine.sh("systemctl start rotator", timeout=90, check=False)
    if enabled.returncode != 0:
        # Neither works in this sandbox: a DynamicUser= service cannot read its own
        # $CREDENTIALS_DIRECTORY (even a bare DynamicUser=yes + LoadCredential= unit gets
        # "Permission denied"). Test-only stand-in for the credentials, the rest of the unit
        # unchanged: the same files copied by root (ExecStartPre=+) into a RuntimeDirectory=
        # the dynamic user owns, named by $CREDENTIALS_DIRECTORY.
        refused = [e for e in machine.journal().splitlines() if "rotator[" in e]
        note(f"with plain LoadCredential=: start failed too: {refused[-1:]}")
        machine.sh("systemctl reset-failed rotator")
        names = " ".join(secrets)
        stand_in = (
            "[Service]\nLoadCredential=\nRuntimeDirectory=rotator-credentials\n"
            "RuntimeDirectoryMode=0700\n"
            "Environment=CREDENTIALS_DIRECTORY=/run/rotator-credentials\n"
            "Environment=AWS_SHARED_CREDENTIALS_FILE=/run/rotator-credentials/aws-credentials\n"
            "ExecStartPre=+/bin/sh -c 'for n in " + names + "; do install -m 0400"
            " -o $(stat -c %%u /run/rotator-credentials) /etc/rotator/credentials/$n"
            " /run/rotator-credentials/; done'\n"
        )
        machine.sh(
            "cat > /etc/systemd/system/rotator.service.d/zz-test-credentials.conf"
            " && systemctl daemon-reload",
            stdin=stand_in,
        )
        started = time.monotonic()
        enabled = machine.sh("systemctl start rotator", timeout=90, check=False)
    assert enabled.returncode == 0, (
        enabled.stderr
        + machine.sh("systemctl status rotator --no-pager -l", check=False).stdout
        + machine.sh("journalctl -u rotator --no-pager", check=False).stdout[-3000:]
    )
    took = time.monotonic() - started
    after = machine.show("ActiveState", "SubState", "StatusText", "NRestarts", "MainPID")
    livez = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
    assert after["ActiveState"] == "active", after
    assert after["StatusText"], "READY=1 comes with a STATUS= line"
    assert livez.status_code == 200
    events = machine.events()
    assert any(e.get("event") == "daemon_started" for e in events)
    note(
        f"systemctl enable --now returned after {took:.1f}s: {after['ActiveState']}/"
        f"{after['SubState']}, status {after['StatusText']!r}, /livez 200 at once"
    )
    status = machine.sh("systemctl status rotator --no-pager", check=False).stdout
    assert "Active: active (running)" in status, status

    # a rotation on schedule, verified from outside
    done = machine.wait_event(
        lambda e: e.get("event") == "rotation_result" and e.get("outcome") == "promoted",
        "a scheduled rotation",
    )
    assert done.get("origin") != "api", done
    served = {where: data[FIELD] for where, data in stack.consumer_reads(spec) if data}
    assert len(set(served.values())) == 1, served
    assert stack.key_works(next(iter(served.values())))
    note(f"scheduled rotation {done['rotation_id']} promoted; both destinations agree")

    # the exposure score of the live unit
    security = machine.sh("systemd-analyze security rotator.service --no-pager", check=False)
    match = re.search(r"Overall exposure level for rotator.service: (\d+\.\d+)", security.stdout)
    assert match, security.stdout + security.stderr
    score = float(match.group(1))
    assert score <= 2.0, security.stdout
    note(f"systemd-analyze security rotator.service (live): {score}")

    # the watchdog: fed while the loop runs (no restart after WatchdogSec), a stopped one restarted
    machine.wait(
        lambda: time.monotonic() - started > 35, "WatchdogSec (30 s) passed since the start"
    )
    fed = machine.show("NRestarts", "MainPID", "WatchdogUSec")
    assert fed["NRestarts"] == "0", fed
    note(f"up for 35s > WatchdogSec ({fed['WatchdogUSec']}): no restart (fed)")
    old_pid = fed["MainPID"]
    machine.sh(f"kill -STOP {old_pid}")
    stopped = time.monotonic()
    machine.wait(
        lambda: (
            machine.show("NRestarts")["NRestarts"] == "1"
            and machine.show("ActiveState")["ActiveState"] == "active"
        ),
        "a restart by the watchdog",
    )
    new_pid = machine.show("MainPID")["MainPID"]
    assert new_pid != old_pid
    watchdog = [line for line in machine.sh(
        "journalctl -u rotator.service --no-pager -o cat", check=False
    ).stdout.splitlines() if "atchdog" in line]  # fmt: skip
    assert watchdog, "the journal names the watchdog"
    note(
        f"SIGSTOP pid {old_pid}: restarted as pid {new_pid} {time.monotonic() - stopped:.0f}s"
        f" later ({watchdog[0]!r})"
    )

    # systemctl stop during a rotation: it finishes, the service exits 0
    stack.standin.control.set_activation_delay(600)
    since = len(machine.events())
    created = machine.wait(
        lambda: next(
            (e for e in machine.events()[since:] if e.get("event") == "mistral.key_created"), None
        ),
        "a rotation in flight (key created, not active yet)",
    )
    stop_started = time.monotonic()
    stop = subprocess.Popen(
        ["podman", "exec", machine.name, "systemctl", "stop", "rotator"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        machine.wait(
            lambda: any(e.get("event") == "shutdown_requested" for e in machine.events()[since:]),
            "SIGTERM received",
        )
        time.sleep(2)
        assert machine.show("ActiveState")["ActiveState"] == "deactivating"
        stack.standin.control.advance(600)
        assert stop.wait(timeout=150) == 0
    finally:
        if stop.poll() is None:
            stop.kill()
        stop.communicate()
    final = machine.show("ActiveState", "Result", "ExecMainStatus")
    finished = [
        e
        for e in machine.events()[since:]
        if e.get("event") == "rotation_result" and e.get("rotation_id") == created["rotation_id"]
    ]
    assert finished, "the rotation in flight finished"
    assert finished[0]["outcome"] == "promoted", finished
    assert final == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, final
    note(
        f"systemctl stop during rotation {created['rotation_id']}: it finished"
        f" ({finished[0]['outcome']}), exit 0 after {time.monotonic() - stop_started:.1f}s"
    )

    # a broken configuration: exit 2, no restart loop
    machine.sh("cat > /etc/rotator/rotator.yaml", stdin="targets: 5\n")
    broken = machine.sh("systemctl start rotator", check=False, timeout=90)
    assert broken.returncode != 0
    first = machine.show("ActiveState", "ExecMainStatus", "NRestarts")
    time.sleep(35)  # longer than RestartSec=30s
    after_broken = machine.show("ActiveState", "ExecMainStatus", "NRestarts")
    assert after_broken == first, (first, after_broken)
    assert after_broken["ActiveState"] == "failed", after_broken
    assert after_broken["ExecMainStatus"] == "2", after_broken
    note(f"broken configuration: {after_broken} 35s later (RestartPreventExitStatus=2)")

    # no secret in the journal
    journal = machine.sh("journalctl --no-pager -o verbose", check=False).stdout
    keys = {data[FIELD] for _, data in stack.consumer_reads(spec) if data}
    leaked = [
        name
        for name, value in {
            **{k: v.strip() for k, v in secrets.items() if k != "aws-credentials"},
            "aws secret key": aws["AWS_SECRET_ACCESS_KEY"],
            **{f"key {i}": k for i, k in enumerate(keys)},
        }.items()
        if value and value in journal
    ]
    assert leaked == [], leaked
    note(f"journal ({len(journal.splitlines())} lines, verbose): no secret, no key")
    for line in lines:
        timeline.add(line)
