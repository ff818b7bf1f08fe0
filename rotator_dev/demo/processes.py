"""The demo's child processes: started, waited for, stopped, never left behind.

Each child runs in its own process group, so a Ctrl-C on the terminal reaches the demo alone,
which then stops its children in order (the daemon first, so a rotation in flight finishes
against live stand-ins). Its output goes to a log file. :meth:`Child.stop` sends SIGTERM, then
SIGKILL after a bound or at once when ``hurry`` is set (a second Ctrl-C). On Linux every child
also gets SIGTERM from the kernel if the demo dies without stopping it (``PR_SET_PDEATHSIG``).
:class:`LogTail` follows a child's JSON log (the daemon's) line by line.
"""

from __future__ import annotations

import ctypes
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class StartError(RuntimeError):
    """A child could not be started or never became ready (one line, naming its log)."""


@dataclass
class Child:
    """A started child process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    _terminated: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM (once)."""
        if self.running() and not self._terminated:
            self._terminated = True
            self.process.terminate()

    def stop(self, *, timeout: float, hurry: threading.Event) -> int:
        """SIGTERM (unless sent already), then SIGKILL after ``timeout`` seconds or once
        ``hurry`` is set; waits for the exit and returns its status."""
        self.terminate()
        deadline = time.monotonic() + timeout
        while self.running() and not hurry.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running():
            self.process.kill()
        return self.process.wait()

    def last_line(self) -> str:
        """The last non-empty line of the log (why a child failed to start)."""
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


def spawn(name: str, argv: Sequence[str], log: Path, *, env: Mapping[str, str]) -> Child:
    """Start ``argv`` in its own process group, stdout and stderr to ``log``.

    Call it before the demo starts any thread: the parent-death hook runs between fork and exec,
    which is only safe in a single-threaded process."""
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the demo's own commands
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            process_group=0,
            preexec_fn=_die_with_parent if _prctl is not None else None,  # noqa: PLW1509
        )
    return Child(name, process, log)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def wait_ready(child: Child, url: str, *, cancel: threading.Event, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers below 500; raise :class:`StartError` if the child exits or
    ``timeout`` passes. Returns early (silently) once ``cancel`` is set."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as http:
        while not cancel.is_set():
            if not child.running():
                raise StartError(f"{child.name} exited: {child.last_line()} (log: {child.log})")
            try:
                if http.get(url).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StartError(f"{child.name} not ready after {timeout:.0f}s (log: {child.log})")
            cancel.wait(0.1)


@dataclass
class LogTail:
    """The complete JSON lines added to a log file since the last call."""

    path: Path
    offset: int = 0
    partial: bytes = b""
    raw: list[str] = field(default_factory=list)
    """Lines that were not JSON events (a startup error, a traceback), the last few."""

    def events(self) -> list[dict[str, object]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        found = []
        for raw in complete:
            text = raw.decode(errors="replace").strip()
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if isinstance(event, dict):
                found.append(event)
            elif text:
                self.raw = [*self.raw[-4:], text]
        return found
