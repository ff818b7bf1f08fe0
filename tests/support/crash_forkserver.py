"""A fork-server for crash tests: imports rotator once, then ``os.fork()``s one child per job.

A fresh interpreter spends most of a second importing rotator and its SDKs; a forked child of
this process starts with all of it imported in a few milliseconds. The server starts no threads
(forking a threaded process can copy a held lock) and no event loop; each child builds its own.

Protocol, one JSON object per line: stdin carries ``{"id": N, "job": {...}}`` (a
:class:`tests.support.crash_child.Job`); stdout answers ``{"id": N, "pid": P, "status": S}``
when that child has ended, ``S`` as :func:`os.waitstatus_to_exitcode` gives it (``-9``: killed
by SIGKILL), with ``"cpu"``: the child's user + system seconds. Jobs run concurrently. The
server exits when stdin closes and its children have ended.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import threading
from typing import Any

from tests.support.crash_child import Job, child_main

PRELOAD = (
    "rotator.cli",
    "rotator.app.wiring",
    "rotator.destinations.aws.destination",
    "rotator.destinations.aws.api",
    "rotator.destinations.vault.destination",
    "rotator.destinations.vault.api",
    "rotator.render",
    "boto3",
    "botocore.session",
    "hvac",
    "httpx",
    "httpcore",
    "httpcore._backends.anyio",
    "anyio._backends._asyncio",
    "h11",
    "netrc",
    "rotator.state",
    "pydantic.type_adapter",
    "typer._click.decorators",
)
"""What every child imports anyway (the CLI and httpx import most of it lazily)."""


class ForkServer:
    """The select loop: reads jobs, forks children, reports each child's end."""

    def __init__(self, requests: int, replies: int) -> None:
        self.requests = requests
        self.replies = replies
        self.running: dict[int, int] = {}  # pid -> job id
        self.buffer = b""
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda _signo, _frame: None)
        open_ = True
        while open_ or self.running:
            watched = [self.wake_r, self.requests] if open_ else [self.wake_r]
            ready, _, _ = select.select(watched, [], [], 1.0)
            if self.wake_r in ready:
                while _drain(self.wake_r):
                    pass
            if self.requests in ready:
                open_ = self._read_requests()
            self._reap()

    def _read_requests(self) -> bool:
        data = os.read(self.requests, 1 << 16)
        if not data:
            return False
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            request: dict[str, Any] = json.loads(line)
            pid = self._fork(Job.from_dict(request["job"]))
            self.running[pid] = int(request["id"])
        return True

    def _fork(self, job: Job) -> int:
        pid = os.fork()
        if pid == 0:  # the child: forget the server's signal plumbing, then run the job
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (self.wake_r, self.wake_w):
                os.close(fd)
            child_main(job)
        return pid

    def _reap(self) -> None:
        while self.running:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job_id = self.running.pop(pid)
            reply = {
                "id": job_id,
                "pid": pid,
                "status": os.waitstatus_to_exitcode(status),
                "cpu": round(usage.ru_utime + usage.ru_stime, 3),
            }
            _write_all(self.replies, (json.dumps(reply) + "\n").encode())


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def main() -> None:
    for module in PRELOAD:
        importlib.import_module(module)
    if threading.active_count() != 1:
        raise RuntimeError(f"{threading.active_count()} threads after the imports; cannot fork")
    # Keep the imported objects out of the children's garbage collections: a collection would
    # touch (and so copy) every page the server's heap shares with them.
    gc.collect()
    gc.freeze()
    ForkServer(requests=0, replies=1).serve()


if __name__ == "__main__":
    main()
