"""``scripts/demo`` as a newcomer runs it: a real process on free ports, stopped by its duration
or by Ctrl-C (SIGINT to its process group).

Each run must show the first rotation (the key made before rotator replaced), the consumer must
see no failure, nothing the demo started may outlive it, and no key-shaped string may reach its
output, nor a mask (the demo scrubs what it prints: a mask means it tried to print a secret).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from rotator.logs import scrub
from rotator.secret import MASK
from rotator_dev.demo.processes import port_in_use
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo"
GUARD = 90.0
"""Seconds any awaited line may take before the test gives up (a hang guard, not a timing)."""
REAL_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
    "AWS_PROFILE": "rotator-demo-test-no-such-profile",
}
"""Credentials as AWS documents them (examples): what a developer's shell may hold."""
EXISTING = re.compile(r"demo-backend +existing +key ([0-9a-f]{12}) made before rotator")


def shell_env() -> dict[str, str]:
    """The environment of a fresh shell: no ROTATOR_* variable, no virtualenv on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "VIRTUAL_ENV"))}
    return env | {"PATH": path}


class DemoRun:
    """One ``scripts/demo`` process in its own session; its output collected line by line."""

    def __init__(self, tmp_path: Path, *args: str, ports: dict[str, int] | None = None) -> None:
        self.ports = ports or {name: free_port() for name in ("MISTRAL", "VAULT", "AWS", "HTTP")}
        self.directory = tmp_path / "demo"
        # The shell of someone with AWS credentials: none of them may reach moto or the env file.
        env = {k: v for k, v in shell_env().items() if not k.startswith("AWS_")} | REAL_AWS
        env |= {f"ROTATOR_DEMO_{name}_PORT": str(port) for name, port in self.ports.items()}
        env["ROTATOR_DEMO_DIR"] = str(self.directory)
        self.proc = subprocess.Popen(
            [str(DEMO), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.children: list[psutil.Process] = []
        self.names: list[str] = []

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for text in self.proc.stdout:
                self.lines.append(text.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, match: Callable[[str], bool], what: str) -> str:
        """The first output line ``match`` accepts, waiting for it within :data:`GUARD`."""
        deadline = time.monotonic() + GUARD
        while True:
            over = self.proc.poll() is not None or time.monotonic() > deadline
            if over:
                self._reader.join(timeout=5)
            found = next((text for text in list(self.lines) if match(text)), None)
            if found is not None:
                return found
            if over:
                raise AssertionError(f"never printed: {what}\n{self.output()}")
            time.sleep(0.1)

    def record_children(self) -> None:
        """Every process the demo started (call once it spawned the daemon)."""
        self.children = psutil.Process(self.proc.pid).children(recursive=True)
        self.names = [" ".join(child.cmdline()[1:4]) for child in self.children]

    def wait(self) -> int:
        code = self.proc.wait(timeout=GUARD)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for child in self.children:
            if child.is_running():
                child.kill()


@pytest.fixture
def runs() -> Iterator[list[DemoRun]]:
    """Started demos, killed at the end whatever happened."""
    started: list[DemoRun] = []
    yield started
    for run in started:
        run.kill()


def check_clean_exit(run: DemoRun, code: int, expected: int, *, calls: str = r"[1-9]\d*") -> None:
    """The exit status, the goodbye line, the consumer's record, nothing left, no key shown."""
    output = run.output()
    assert code == expected, output
    goodbye = run.lines[-1]
    assert goodbye.startswith("demo: stopped ("), output
    assert "everything it started stopped" in goodbye, output
    assert re.search(rf"consumer {calls} calls? with 0 failures", goodbye), output
    assert " FAILED " not in output
    assert len(run.children) >= 4, f"expected the stand-ins and the daemon, saw {run.names}"
    assert [c.pid for c in run.children if c.is_running()] == []
    assert [p for p in run.ports.values() if port_in_use(p)] == []
    assert scrub(output) == output, "a key-shaped string reached the demo's output"
    # The demo masks what it prints too: a mask would mean it tried to show a secret.
    assert MASK not in output


def check_env_file(path: Path) -> None:
    """Readable by its owner only; stand-in values only, none of the shell's AWS credentials."""
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert [v for v in REAL_AWS.values() if v in text] == []
    assert "unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN " in text
    assert "export AWS_ACCESS_KEY_ID=demo\nexport AWS_SECRET_ACCESS_KEY=demo\n" in text
    assert scrub(text) == text, "a key-shaped string in the env file"


def start(tmp_path: Path, runs: list[DemoRun], *args: str) -> tuple[DemoRun, str]:
    """A started demo, its children recorded, and the fingerprint of demo-backend's first key."""
    run = DemoRun(tmp_path, *args)
    runs.append(run)
    # Printed once the stand-ins are ready and the daemon is spawned: every child exists.
    run.wait_line(lambda text: text.startswith("demo: rotator run -c"), "the daemon started")
    run.record_children()
    found = run.wait_line(
        lambda text: EXISTING.search(text) is not None, "the key made before rotator"
    )
    legacy = EXISTING.search(found)
    assert legacy is not None
    return run, legacy.group(1)


def test_demo_stops_after_its_duration(tmp_path: Path, runs: list[DemoRun]) -> None:
    """With ``--for``, the demo first rotates demo-backend's key made by hand, then stops by
    itself with exit 0 and leaves no process and no listening port behind."""
    run, legacy = start(tmp_path, runs, "--for", "2")
    code = run.wait()
    promoted = [text for text in run.lines if "demo-backend" in text and " promoted " in text]
    assert promoted, run.output()
    served = re.search(rf"{legacy} -> [0-9a-f]{{12}} in ([a-z, -]+) \(", promoted[0])
    assert served is not None, promoted[0]
    assert sorted(served.group(1).split(", ")) == ["aws-demo", "vault-demo"]
    assert promoted[0].endswith("; old key kept 10s (grace)"), promoted[0]
    check_clean_exit(run, code, 0, calls=r"\d+")
    assert "(time is up)" in run.lines[-1]


def test_demo_revokes_after_grace_and_stops_on_ctrl_c(tmp_path: Path, runs: list[DemoRun]) -> None:
    """The old key is revoked once its grace is over while the consumer keeps working, and
    ``rotator check`` passes in a fresh shell that sourced the env file the demo printed; SIGINT
    to the demo's process group then stops everything and exits 130."""
    run, legacy = start(tmp_path, runs)
    hint = run.wait_line(lambda text: "in another shell: source" in text, "the env file hint")
    assert hint == (
        f"demo: in another shell: source {run.directory / 'env'},"
        " then rotator --config config/demo.yaml status"
    )
    check = subprocess.Popen(  # in the meantime: the daemon runs, the old key awaits its grace
        [
            "bash",
            "-c",
            'source "$1" && exec rotator check --config config/demo.yaml',
            "-",
            str(run.directory / "env"),
        ],
        cwd=DEMO.parents[1],
        env=shell_env() | REAL_AWS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run.wait_line(lambda text: f"revoked   old key {legacy}" in text, "the old key revoked")
    checked, _ = check.communicate(timeout=GUARD)
    assert check.returncode == 0, checked
    assert "FAIL" not in checked
    check_env_file(run.directory / "env")
    run.wait_line(lambda text: " consumer " in text and ", 0 failures" in text, "consumer")
    os.killpg(run.proc.pid, signal.SIGINT)
    check_clean_exit(run, run.wait(), 130)
    assert "(Ctrl-C)" in run.lines[-1]


def test_demo_refuses_a_port_in_use(tmp_path: Path, runs: list[DemoRun]) -> None:
    """A port in use stops the demo before it starts anything: exit 1, one line naming the port
    and its variable, and no mention of logs it never wrote."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ports = {"MISTRAL": free_port(), "VAULT": port, "AWS": free_port(), "HTTP": free_port()}
        run = DemoRun(tmp_path, ports=ports)
        runs.append(run)
        code = run.wait()
    output = run.output()
    assert code == 1, output
    assert (
        f"demo: port {port} is in use: stop what uses it or set ROTATOR_DEMO_VAULT_PORT" in output
    )
    assert run.lines[-1].startswith("demo: stopped (failed)"), output
    assert "logs" not in output
    assert not run.directory.exists()
