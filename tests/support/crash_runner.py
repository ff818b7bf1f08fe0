"""Runs rotator in separate OS processes for crash tests, and kills them where asked.

:class:`CrashRunner` is what tests use: :meth:`CrashRunner.engine` runs a real rotation (or
``revoke-due``) through the engine of a configuration file, its state store and key issuer
wrapped by :class:`tests.support.crash_seam.CrashingProxy`, and kills the process with SIGKILL at
a :class:`tests.support.crash_seam.CrashPoint`; :meth:`CrashRunner.cli` runs ``rotator <argv>``.

Two launchers start the processes:

- :class:`ForkServerLauncher` (the default): children forked from a helper process that imported
  rotator once (:mod:`tests.support.crash_forkserver`); a few milliseconds each.
- :class:`ExecLauncher`: a fresh interpreter per job (``python -m rotator …`` for commands), the
  way an operator runs rotator; it pays the imports, most of a second, every time. Chosen with
  ``ROTATOR_CRASH_LAUNCHER=exec``.

Every process gets the environment of the tests minus any AWS settings, plus the job's own
(rotator's AWS identity), so a child never acts with credentials it was not given.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from tests.support.crash_child import Action, Job
from tests.support.crash_seam import CrashPoint

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT = 60.0
"""Seconds a child may run; it is killed after that (a hang is a failure, not a crash test)."""


def base_env() -> dict[str, str]:
    """The tests' environment without AWS settings, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Launcher(Protocol):
    """Starts one job in a new process and waits for it; safe to call from several threads."""

    name: str

    def run(self, job: Job) -> int:
        """The child's exit status; negative when a signal ended it (``-9``: SIGKILL)."""
        ...

    def close(self) -> None: ...


class ExecLauncher:
    """A fresh interpreter per job: ``python -m rotator`` for commands, else the child module."""

    name = "exec"

    def run(self, job: Job) -> int:
        if job.kind == "cli":
            argv = [sys.executable, "-m", "rotator", *job.argv]
        else:
            argv = [sys.executable, "-m", "tests.support.crash_child", json.dumps(job.to_dict())]
        with Path(job.stdout).open("wb") as out, Path(job.stderr).open("wb") as err:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=REPO,
                env={**base_env(), **job.env},
            )
            try:
                return process.wait(timeout=JOB_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise

    def close(self) -> None:
        pass


class ForkServerLauncher:
    """Jobs forked from one :mod:`tests.support.crash_forkserver` process."""

    name = "fork-server"

    def __init__(self, log: Path) -> None:
        self._log = log.open("ab")
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.support.crash_forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO,
            env=base_env(),
        )
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[int]] = {}
        self.child_cpu: list[float] = []
        """CPU seconds (user + system) of each child that ended, in the order they ended."""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="crash-forkserver", daemon=True)
        self._reader.start()

    def run(self, job: Job) -> int:
        done: Future[int] = Future()
        with self._lock:
            job_id = next(self._ids)
            self._waiting[job_id] = done
            assert self._server.stdin is not None
            line = json.dumps({"id": job_id, "job": job.to_dict()}) + "\n"
            self._server.stdin.write(line.encode())
            self._server.stdin.flush()
        return done.result(timeout=JOB_TIMEOUT)

    def _read(self) -> None:
        stdout: IO[bytes] | None = self._server.stdout
        assert stdout is not None
        for raw in stdout:
            reply: dict[str, Any] = json.loads(raw)
            with self._lock:
                done = self._waiting.pop(int(reply["id"]))
                self.child_cpu.append(float(reply["cpu"]))
            done.set_result(int(reply["status"]))
        with self._lock:  # the server died: nobody will answer the others
            for done in self._waiting.values():
                done.set_exception(RuntimeError("the crash fork-server exited"))
            self._waiting.clear()

    def close(self) -> None:
        """Close the server's input (it exits after its children) and wait for it."""
        if self._server.stdin is not None:
            self._server.stdin.close()
        try:
            self._server.wait(timeout=JOB_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()
        self._reader.join(timeout=5)
        if self._server.stdout is not None:
            self._server.stdout.close()
        self._log.close()


def make_launcher(workdir: Path) -> Launcher:
    """The launcher ``ROTATOR_CRASH_LAUNCHER`` names (``fork-server`` unless ``exec``)."""
    if os.environ.get("ROTATOR_CRASH_LAUNCHER", "fork-server") == "exec":
        return ExecLauncher()
    return ForkServerLauncher(workdir / "crash-forkserver.log")


@dataclass(frozen=True)
class ChildRun:
    """How a child ended and what it wrote."""

    what: str
    status: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        """Ended by SIGKILL (the crash point was reached)."""
        return self.status == -signal.SIGKILL

    def json(self) -> Any:
        return json.loads(self.stdout)

    def describe(self) -> str:
        """One line for a failure message: what ran, its status and the tail of its stderr."""
        tail = " | ".join(self.stderr.strip().splitlines()[-3:])
        return f"{self.what}: status {self.status}: {tail[-600:]}"


class CrashRunner:
    """Runs engine actions and CLI commands for one test case in separate processes.

    ``env`` is added to every child's environment (rotator's AWS identity); every child writes
    its output to numbered files under ``workdir``, kept for a failing test's report.
    """

    def __init__(self, launcher: Launcher, workdir: Path, env: dict[str, str]) -> None:
        self.launcher = launcher
        self.workdir = workdir
        self.env = env
        self._seq = itertools.count(1)
        self.runs: list[ChildRun] = []

    def engine(
        self,
        config: Path,
        action: Action,
        *,
        target: str = "",
        crash: CrashPoint | None = None,
        rotations_before: int = 0,
        pause: float = 0.0,
    ) -> ChildRun:
        """``action`` through the engine of ``config`` (after ``rotations_before`` uncrashed
        rotations of ``target`` and ``pause`` seconds); killed at ``crash`` if it is reached.
        A run that ends normally prints ``{"calls": …, "before": …, "results": …}``."""
        what = f"engine {action} {target}".strip() + (f" crashing {crash}" if crash else "")
        return self._run(
            what,
            kind="engine",
            config=str(config),
            action=action,
            target=target,
            crash=crash,
            rotations_before=rotations_before,
            pause=pause,
        )

    def cli(self, *argv: str) -> ChildRun:
        """``rotator <argv>`` in its own process (JSON logs on its stderr)."""
        return self._run(
            f"rotator {' '.join(argv)}", kind="cli", argv=("--log-format", "json", *argv)
        )

    def _run(self, what: str, **job: Any) -> ChildRun:
        n = next(self._seq)
        out, err = self.workdir / f"{n:02d}.out", self.workdir / f"{n:02d}.err"
        status = self.launcher.run(Job(stdout=str(out), stderr=str(err), env=self.env, **job))
        run = ChildRun(
            what, status, out.read_text(errors="replace"), err.read_text(errors="replace")
        )
        self.runs.append(run)
        return run

    def logs(self) -> str:
        """Everything every child of this runner wrote (for the I4 leak check)."""
        return "\n".join(r.stdout + r.stderr for r in self.runs)
