"""One crash-test job, run in its own process: a rotator command, or an engine action whose
state store and key issuer sit behind :class:`tests.support.crash_seam.CrashingProxy`.

A job is a plain JSON document so that both launchers can carry it: the fork-server hands it to
a forked child (:func:`child_main`), and ``python -m tests.support.crash_child JOB`` runs it in a
fresh interpreter. Either way the child writes its stdout and stderr to the job's files and exits
with the command's status, or dies of SIGKILL at its crash point.

An ``engine`` job prints one JSON document on stdout: ``{"calls": {"store.write": n, …},
"before": [...], "results": [...]}`` with the calls counted on both seams and what the action
returned. It may first rotate its target uncrashed (``rotations_before``, reported in
``before``), in the same engine as a daemon would, and wait (``pause``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

from tests.support.crash_seam import CallLog, CrashingProxy, CrashPoint, store_writes

Kind = Literal["engine", "cli"]
Action = Literal["rotate", "revoke_due"]
INTERNAL_ERROR = 70
"""Exit status of a child whose harness code (not rotator) failed."""


@dataclass(frozen=True)
class Job:
    """What one child does. ``cli``: ``rotator <argv>``; ``engine``: ``action`` on ``target``
    through the engine built from ``config``, crashing at ``crash`` if given."""

    kind: Kind
    stdout: str
    stderr: str
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    config: str = ""
    action: Action = "rotate"
    target: str = ""
    crash: CrashPoint | None = None
    rotations_before: int = 0
    """``engine``: uncrashed rotations of ``target`` first, before the seams are wrapped."""
    pause: float = 0.0
    """``engine``: seconds to wait after those rotations (for a grace period to pass)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "env": self.env,
            "argv": list(self.argv),
            "config": self.config,
            "action": self.action,
            "target": self.target,
            "crash": self.crash.as_dict() if self.crash else None,
            "rotations_before": self.rotations_before,
            "pause": self.pause,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        crash = data.get("crash")
        return cls(
            kind=data["kind"],
            stdout=data["stdout"],
            stderr=data["stderr"],
            env=dict(data.get("env") or {}),
            argv=tuple(data.get("argv") or ()),
            config=data.get("config", ""),
            action=data.get("action", "rotate"),
            target=data.get("target", ""),
            crash=CrashPoint.from_dict(crash) if crash else None,
            rotations_before=int(data.get("rotations_before", 0)),
            pause=float(data.get("pause", 0.0)),
        )


def run_job(job: Job) -> int:
    """Run ``job`` in this process and return its exit status (never returns if it crashes)."""
    os.environ.update(job.env)
    if job.kind == "cli":
        from rotator.cli import main

        try:
            main(list(job.argv))
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return 0
    from rotator.logs import configure_logging

    configure_logging(level="INFO", fmt="json", stream=sys.stderr)
    report = asyncio.run(_engine_job(job))
    print(json.dumps(report))
    return 0


async def _engine_job(job: Job) -> dict[str, Any]:
    from rotator.app.wiring import build_engine
    from rotator.config import load_config
    from rotator.contracts import Destination, KeyIssuer, StateStore
    from rotator.engine.context import TargetContext

    engine = await build_engine(load_config(Path(job.config)))
    before = [await engine.rotate(job.target) for _ in range(job.rotations_before)]
    failed = [r for r in before if str(r.outcome) not in {"promoted", "rotated"}]
    if failed:
        raise RuntimeError(f"rotation before the action: {failed[0].outcome}: {failed[0].error}")
    await asyncio.sleep(job.pause)
    calls = CallLog(crash=job.crash)
    # The seams the engine already receives as Protocols; the proxies forward every call. Every
    # store write also counts as ``store.write`` (a journal boundary, whatever its method).
    store = CrashingProxy(engine.deps.store, "store", calls, groups=store_writes)
    engine.deps.store = cast("StateStore", store)
    engine.deps.issuer = cast("KeyIssuer", CrashingProxy(engine.deps.issuer, "issuer", calls))
    for name, ctx in engine.contexts.items():
        dests = tuple(
            cast("Destination", CrashingProxy(d, "dest", calls)) for d in ctx.destinations
        )
        engine.contexts[name] = TargetContext(ctx.target, dests)
    try:
        if job.action == "rotate":
            results: list[dict[str, object]] = [(await engine.rotate(job.target)).as_dict()]
        else:
            results = [dict(r.as_dict()) for r in await engine.revoke_due()]
    finally:
        await engine.close()
    return {
        "calls": dict(calls.calls),
        "before": [r.as_dict() for r in before],
        "results": results,
    }


def child_main(job: Job) -> NoReturn:
    """In a new process: point fds 0-2 at /dev/null and the job's files, run it, exit."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(job.stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(job.stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((devnull, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    try:
        code = run_job(job)
    except BaseException:
        traceback.print_exc()
        code = INTERNAL_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    child_main(Job.from_dict(json.loads(sys.argv[1])))
