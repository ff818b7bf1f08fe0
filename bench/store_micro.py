"""The state store alone: CPU per method and per rotation, latency at concurrency 8, idle RSS.

Replays the store calls of one steady-state rotation as the engine makes them (recorded from a
real rotation of a target with a Vault and an AWS destination: lock, plan, 16 journal steps, an
update, the promotion that retires the old key, the finish, then the revocation pass; 28 store
calls, 26 of them transactions) against a SQLite file in a temporary folder, on the store of
this tree and, when SQLAlchemy is installed (the dev requirements), on the SQLAlchemy store it
replaced (``tests/support/legacy_state``), in the same run.

- Sequential: ``--rotations`` rotations of one target, one call at a time; each call's CPU is the
  whole process's user + system time across the ``await`` (the worker thread's share included),
  so per method it is what the store costs the process.
- Concurrent: 8 targets rotating at once, each store as the daemon runs it (the SQLAlchemy one
  on the shared :class:`rotator.pool.BlockingPool` of 8 workers, this one on its own threads);
  the wall time of an ``append_step`` and the CPU per rotation.
- RSS: a fresh interpreter's resident set after ``import`` of each store, and after it ran 20
  rotations.

Run: ``python bench/store_micro.py [--rotations 200] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the frozen SQLAlchemy store lives in tests/support
    sys.path.insert(0, str(ROOT))

from rotator.clock import FakeClock  # noqa: E402
from rotator.contracts import ManagedKey, RetiringKey  # noqa: E402
from rotator.pool import BlockingPool  # noqa: E402
from rotator.state import SqlStateStore  # noqa: E402
from rotator.state.locks import try_file_lock  # noqa: E402

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DESTS = {"d0228479e6": "vault-main:mistral/t#api_key", "86a239d3ec": "aws-main:mistral/t#api_key"}
CONCURRENCY = 8


def stdlib_store(url: str, *, clock: FakeClock, pool: BlockingPool) -> SqlStateStore:  # noqa: ARG001
    """This tree's store as the daemon builds it: on its own threads, not the shared pool."""
    return SqlStateStore(url, clock=clock)


def stores(*, legacy: bool = True) -> dict[str, Callable[..., Any]]:
    """The stores to compare: ``stdlib`` (this tree's), ``sqlalchemy`` when importable."""
    found: dict[str, Callable[..., Any]] = {"stdlib": stdlib_store}
    if not legacy:
        return found
    try:
        from tests.support.legacy_state import LegacyStateStore
    except ImportError:
        print("SQLAlchemy is not installed: measuring the stdlib store only", file=sys.stderr)
        return found

    class Legacy(LegacyStateStore):  # type: ignore[misc]
        """The frozen store, with the per-target file locks it had (the same flock), on the
        shared pool as the daemon ran it."""

        def __init__(self, url: str, *, clock: FakeClock, pool: BlockingPool) -> None:
            super().__init__(url, clock=clock, pool=pool)

        async def try_lock_target(self, target: str) -> Any:
            path = Path(self._engine.url.database or "")
            return await self._run(try_file_lock, path, target)

        async def unlock_target(self, lock: Any) -> None:
            await self._run(lock.release)

    return {"sqlalchemy": Legacy, **found}


class Meter:
    """CPU (process user + system) and wall time of each awaited call, by method."""

    def __init__(self) -> None:
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.on = True

    async def __call__(self, name: str, call: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        result = await call
        if self.on:
            self.cpu[name].append(time.process_time() - cpu)
            self.wall[name].append(time.perf_counter() - wall)
        return result


async def seed(store: Any, target: str) -> None:
    """The target serves a key rotator promoted before (a steady state)."""
    key = ManagedKey(str(uuid.uuid4()), "ffcc766ebb36", START, date(2026, 4, 1), None)
    await store.record_promotion(target, key)


async def rotation(store: Any, target: str, clock: FakeClock, m: Meter) -> None:
    """The store calls of one rotation and the revocation pass after it, as the engine makes
    them (facts shaped like the engine's)."""
    lock = await m("try_lock_target", store.try_lock_target(target))
    await m("open_rotations", store.open_rotations(target))
    state = await m("get_target", store.get_target(target))
    old = state.current
    rid = str(uuid.uuid4())
    name = f"rotator-{target}-20260302T120000Z-{rid[:8]}"
    await m(
        "start_rotation",
        store.start_rotation(target, rotation_id=rid, new_key_name=name, old_key_ids=[old.key_id]),
    )
    bases = {
        tag: {"destination": dest, "exists": True, "version": "2", "managed_by": "rotator"}
        for tag, dest in DESTS.items()
    }
    planned = {"key_name": name, "old_key_ids": [old.key_id], "emergency": False, "bases": bases}
    await m("append_step", store.append_step(rid, "planned", planned, state="planned"))
    new_id, fp = str(uuid.uuid4()), uuid.uuid4().hex[:12]
    await m(
        "update_rotation", store.update_rotation(rid, new_key_id=new_id, new_key_fingerprint=fp)
    )
    created = {"key_id": new_id, "fingerprint": fp, "expiration": "2026-04-16"}
    await m("append_step", store.append_step(rid, "created", created, state="created"))
    verified = {"attempts": 1, "elapsed_s": 0.4}
    await m("append_step", store.append_step(rid, "verified", verified, state="verified"))
    record = {"rotation_id": rid, "key_id": new_id, "fingerprint": fp, "base_version": "2"}
    for tag, dest in DESTS.items():
        await m("append_step", store.append_step(rid, f"staging:{tag}", {"destination": dest}))
        staged = {"destination": dest, **record, "version": None, "base_marks": {}}
        await m("append_step", store.append_step(rid, f"staged:{tag}", staged))
    for step in ("staged", "readback_ok", "promoting"):
        await m("append_step", store.append_step(rid, step, None, state=step))
    for tag, dest in DESTS.items():
        await m("append_step", store.append_step(rid, f"promoting:{tag}", {"destination": dest}))
        promoted = {"destination": dest, **record, "version": "3", "previous_version": "2"}
        await m("append_step", store.append_step(rid, f"promoted:{tag}", promoted))
    await m("append_step", store.append_step(rid, "promoted", None, state="promoted"))
    await m("get_target", store.get_target(target))
    retire = [RetiringKey(target, old.key_id, old.fingerprint, clock.now(), rid)]
    key = ManagedKey(new_id, fp, clock.now(), date(2026, 4, 16), rid)
    await m("record_promotion", store.record_promotion(target, key, retire=retire))
    await m("append_step", store.append_step(rid, "done", {"revoked": []}, state="done"))
    await m("finish_rotation", store.finish_rotation(rid, state="done", outcome="promoted"))
    await m("unlock_target", store.unlock_target(lock))
    due = await m("revocations_due", store.revocations_due())
    await m("get_target", store.get_target(target))
    for entry in due:
        if entry.target == target:
            await m("revocation_done", store.revocation_done(entry.target, entry.key_id))


async def measure(make: Callable[..., Any], rotations: int, folder: Path) -> dict[str, Any]:
    clock = FakeClock(START)
    with BlockingPool(CONCURRENCY) as pool:
        store = make(f"sqlite:///{folder}/state.db", clock=clock, pool=pool)
        await store.migrate()
        targets = [f"t{i}" for i in range(CONCURRENCY)]
        for target in targets:
            await seed(store, target)
        m = Meter()
        m.on = False
        for _ in range(5):  # warm-up: caches, prepared statements, the pool's threads
            await rotation(store, "t0", clock, m)
        m.on = True
        gc.collect()
        started, usage = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(rotations):
            await rotation(store, "t0", clock, m)
        sequential = (time.process_time() - started) / rotations
        after = resource.getrusage(resource.RUSAGE_SELF)
        user = (after.ru_utime - usage.ru_utime) / rotations
        system = (after.ru_stime - usage.ru_stime) / rotations
        per_method = {
            name: {
                "calls_per_rotation": len(values) / rotations,
                "cpu_us": statistics.fmean(values) * 1e6,
                "wall_us": statistics.fmean(m.wall[name]) * 1e6,
            }
            for name, values in sorted(m.cpu.items())
        }
        c = Meter()
        rounds = max(1, rotations // (2 * CONCURRENCY))
        started = time.process_time()
        for _ in range(rounds):
            await asyncio.gather(*(rotation(store, t, clock, c) for t in targets))
        concurrent_cpu = (time.process_time() - started) / (rounds * CONCURRENCY)
        await store.close()
    return {
        "per_method": per_method,
        "rotation_cpu_ms": sequential * 1e3,
        "rotation_user_ms": user * 1e3,
        "rotation_system_ms": system * 1e3,
        "calls_per_rotation": sum(v["calls_per_rotation"] for v in per_method.values()),
        "concurrent": {
            "rotation_cpu_ms": concurrent_cpu * 1e3,
            "append_step_wall_ms": statistics.fmean(c.wall["append_step"]) * 1e3,
            "append_step_wall_p95_ms": statistics.quantiles(c.wall["append_step"], n=20)[-1] * 1e3,
        },
    }


_RSS = """
import asyncio, sys, tempfile
sys.path.insert(0, {root!r})
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
base = rss()
{import_line}
imported = rss()
import logging, structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from bench.store_micro import measure, stores
Store = stores(legacy={name!r} == "sqlalchemy")[{name!r}]
with tempfile.TemporaryDirectory() as folder:
    from pathlib import Path
    asyncio.run(measure(Store, 20, Path(folder)))
print(base, imported, rss())
"""
_IMPORTS = {
    "stdlib": "import rotator.state",
    "sqlalchemy": "import tests.support.legacy_state",
}


def resident(name: str) -> dict[str, float]:
    """RSS (MiB) of a fresh interpreter: bare, after importing the store, after 20 rotations."""
    code = _RSS.format(root=str(ROOT), import_line=_IMPORTS[name], name=name)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    base, imported, used = map(float, out.stdout.split()[-3:])
    return {"bare": base, "import": imported - base, "after_use": used - base}


_SUMMARY = (
    ("store CPU per rotation, sequential (ms)", ("rotation_cpu_ms",), ".2f"),
    ("  of which user (ms)", ("rotation_user_ms",), ".2f"),
    ("  of which system: fsync, I/O (ms)", ("rotation_system_ms",), ".2f"),
    ("store CPU per rotation, 8 at once (ms)", ("concurrent", "rotation_cpu_ms"), ".2f"),
    ("append_step wall, 8 at once, mean (ms)", ("concurrent", "append_step_wall_ms"), ".2f"),
    ("append_step wall, 8 at once, p95 (ms)", ("concurrent", "append_step_wall_p95_ms"), ".2f"),
    ("RSS added by the import (MiB)", ("rss", "import"), ".1f"),
    ("RSS added after 20 rotations (MiB)", ("rss", "after_use"), ".1f"),
)


def report(results: dict[str, dict[str, Any]]) -> str:
    """Markdown tables: CPU per method, then the summary, one column per store."""
    names = list(results)
    lines = [
        "| method | calls/rotation | " + " | ".join(f"{n} CPU µs" for n in names) + " |",
        "| --- | --- |" + " --- |" * len(names),
    ]
    for method, stats in results[names[-1]]["per_method"].items():
        cells = [
            f"{r['per_method'].get(method, {}).get('cpu_us', 0):.0f}" for r in results.values()
        ]
        count = f"{stats['calls_per_rotation']:g}"
        lines.append(f"| `{method}` | {count} | " + " | ".join(cells) + " |")
    lines += ["", "| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for label, path, spec in _SUMMARY:
        cells = []
        for r in results.values():
            value: Any = r
            for key in path:
                value = value[key]
            cells.append(format(value, spec))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for name, make in stores().items():
        with tempfile.TemporaryDirectory() as folder:
            results[name] = asyncio.run(measure(make, args.rotations, Path(folder)))
        results[name]["rss"] = resident(name)
    environment = f"python {sys.version.split()[0]}, {os.cpu_count()} cores"
    print(f"# state store micro-benchmark ({args.rotations} rotations, {environment})\n")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
