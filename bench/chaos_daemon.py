"""One ``rotator run`` of the campaign: started, watched through its JSON log, SIGKILLed.

:class:`DaemonProcess` reads the log as it grows (each line is flushed as written, so a SIGKILL
loses at most a partial last line). :class:`DaemonTally` sums what the runs logged: rotation
results, recovered rotations, revocations, orphans, unexpected exceptions.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

Event = dict[str, Any]

RECOVERED = "rotation_planned"
"""The first plan is logged once the start's recovery has run (the leader's takeover:
:class:`rotator.daemon.takeover.Takeover`)."""


class DaemonProcess:
    """A started ``rotator run`` whose stdout (JSON lines) goes to ``log``."""

    def __init__(self, argv: list[str], *, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        self.events: list[Event] = []
        self._offset = 0
        self._kill_lock = threading.Lock()
        self.killed_at: float | None = None
        self.cpu_s = 0.0
        self.exit_code: int | None = None

    def poll(self) -> list[Event]:
        """Parse the complete lines written since the last call; every event so far."""
        with self.log.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.append(event)
        return self.events

    def wait_for(self, match: Callable[[Event], bool], timeout: float) -> Event | None:
        """The first event matching, waiting up to ``timeout`` s; None if it never came or the
        process ended first."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            events = self.poll()
            found = next((e for e in events[seen:] if match(e)), None)
            seen = len(events)
            if found is not None:
                return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    @property
    def url(self) -> str | None:
        started = next((e for e in self.events if e.get("event") == "daemon_started"), None)
        return None if started is None else f"http://127.0.0.1:{started['port']}"

    def kill(self) -> None:
        """SIGKILL (once), remembering when."""
        with self._kill_lock:
            if self.killed_at is None and self.proc.poll() is None:
                self.killed_at = time.monotonic()
                self.proc.send_signal(signal.SIGKILL)

    def reap(self) -> int:
        """Wait for the process; its exit status and CPU seconds (``wait4``)."""
        if self.exit_code is None:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.exit_code = os.waitstatus_to_exitcode(status)
            self.proc.returncode = self.exit_code
            self.cpu_s = usage.ru_utime + usage.ru_stime
            self.poll()
        return self.exit_code


def is_recovered(event: Event) -> bool:
    return event.get("event") == RECOVERED


@dataclass
class DaemonTally:
    """What every run logged, summed."""

    counts: Counter[str] = field(default_factory=Counter)
    recovered_ids: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0

    def add(self, daemon: DaemonProcess) -> None:
        self.cpu_s += daemon.cpu_s
        for event in daemon.events:
            name = str(event.get("event"))
            if name == "rotation_result":
                self.counts[f"rotation result: {event.get('outcome')}"] += 1
            elif name == "recovering_rotation":
                self.recovered_ids.add(str(event.get("rotation_id")))
                self.counts[f"recovery of a rotation at: {event.get('state')}"] += 1
            elif name == "key_revocation":
                self.counts[f"revocation: {event.get('outcome')}"] += 1
            elif name == "orphan_key":
                self.counts[f"orphan key: {event.get('why')}"] += 1
            if event.get("level") in ("error", "critical") or "exception" in event:
                self.errors[name] += 1


def api_calls(
    url: str, token: str, rng: random.Random
) -> tuple[Counter[str], list[tuple[str, str]]]:
    """As an operator would: list the targets and ask for a rotation of each failing one, in a
    random order (a failed attempt waits an hour otherwise). Returns the answers by status and
    every response text (for I4)."""
    answers: Counter[str] = Counter()
    texts: list[tuple[str, str]] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=5, headers=headers) as client:
        try:
            rows = client.get("/api/v1/targets")
            texts.append(("GET /api/v1/targets", rows.text))
            metrics = client.get("/metrics")
            texts.append(("GET /metrics", metrics.text))
            failing = [
                row["target"]
                for row in (rows.json() if rows.status_code == 200 else [])
                if row["state"] in ("failing", "stuck")
            ]
            for target in rng.sample(failing, len(failing)):
                answer = client.post(f"/api/v1/targets/{target}/rotate")
                texts.append(("POST rotate", answer.text))
                answers[f"POST rotate {answer.status_code}"] += 1
        except httpx.HTTPError as exc:  # the daemon was killed meanwhile
            answers[f"api unreachable: {type(exc).__name__}"] += 1
    return answers, texts
