"""Footprint: start-up time, idle memory and idle CPU of ``rotator run`` with N targets.

For each N, a configuration of N targets (each with a Vault and an AWS destination; none due:
the schedule is 30 days and nothing was ever rotated) is served by ``rotator run``. Measured:
seconds from the process start to ``/readyz`` answering 200 and to systemd's ``READY=1`` (a
``$NOTIFY_SOCKET`` this script listens on); seconds until every target's first fire is planned
(the start-up work after readiness: recovery, orphan scan, one registration per target); then,
over an idle window, the resident memory (RSS) and the CPU the daemon uses. The daemon is
stopped with SIGTERM. Results: ``bench/results/<name>.json`` and ``.md``.

Usage: ``python bench/footprint.py [--quick] [--sizes 10,1000,10000] [--idle 30]``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import budget
import httpx
from world import (
    ROTATOR,
    World,
    config_dict,
    finish,
    idle_fleet,
    loadavg,
    machine,
    section,
    write_yaml,
)
from world import parser as bench_parser

GUARD_S = 600.0


def planned(log: Path) -> int:
    """How many ``rotation_planned`` lines the daemon logged so far."""
    with log.open("rb") as lines:
        return sum(1 for line in lines if b'"rotation_planned"' in line)


def port_of(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        if '"daemon_started"' in line:
            port: int = json.loads(line)["port"]
            return port
    return None


def measure(world: World, n: int, idle: float) -> dict[str, Any]:
    work = world.workdir / f"footprint-{n}"
    work.mkdir()
    cfg = write_yaml(
        work / "rotator.yaml",
        config_dict(
            world,
            idle_fleet(n),
            state_url=f"sqlite:///{work / 'state.db'}",
            listen="127.0.0.1:0",
        ),
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(work / "notify.sock"))
    notify.settimeout(0.01)
    env = world.child_env() | {"NOTIFY_SOCKET": str(work / "notify.sock")}
    log = work / "daemon.log"
    row: dict[str, Any] = {"n": n, "load_before": loadavg()}
    with log.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(
            [ROTATOR, "--log-format", "json", "run", "-c", str(cfg)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + GUARD_S
        port: int | None = None
        while "ready_s" not in row or "ready_notify_s" not in row:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rotator run ended or hung:\n{log.read_text()[-2000:]}")
            try:
                if b"READY=1" in notify.recv(4096):
                    row.setdefault("ready_notify_s", round(time.perf_counter() - started, 3))
            except TimeoutError:
                pass
            port = port or port_of(log)
            if port is not None and "ready_s" not in row:
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    if answer.status_code == 200:
                        row["ready_s"] = round(time.perf_counter() - started, 3)
                        row["ready_cpu_s"] = round(_cpu_s(process.pid), 3)
                except httpx.HTTPError:
                    pass
        while planned(log) < n:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rotator run never planned every target:\n{log.read_text()}")
            time.sleep(0.5)
        row["all_planned_s"] = round(time.perf_counter() - started, 3)
        time.sleep(min(2.0, idle))  # the metrics refresh that follows the take-over pass
        cpu_before = _cpu_s(process.pid)
        idle_started = time.perf_counter()
        rss: list[float] = []
        while time.perf_counter() - idle_started < idle:
            rss.append(_status_mb(process.pid, "VmRSS"))
            time.sleep(0.5)
        spent = _cpu_s(process.pid) - cpu_before
        window = time.perf_counter() - idle_started
        row["idle_window_s"] = round(window, 1)
        row["idle_cpu_percent"] = round(100 * spent / window, 2)
        row["idle_rss_mb"] = round(max(rss), 1)
        row["peak_rss_mb"] = round(_status_mb(process.pid, "VmHWM"), 1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            row["exit_status"] = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            row["exit_status"] = process.wait()
        notify.close()
    return row


def attempt(world: World, n: int, idle: float) -> dict[str, Any]:
    """:func:`measure`, or the reason ``rotator run`` could not serve N targets."""
    try:
        return measure(world, n, idle)
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines()[1:] if line.strip()]
        reason = lines[-1] if lines else str(exc)
        return {"n": n, "error": reason.replace(str(world.workdir) + "/", "")[:200]}


def _status_mb(pid: int, field: str) -> float:
    """A memory figure of ``/proc/<pid>/status``: VmRSS (resident now), VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process (all its threads), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def markdown(data: dict[str, Any]) -> str:
    rows = [
        [r["n"], f"did not run: {r['error']}", *["-"] * 8]
        if "error" in r
        else [
            r["n"],
            r["ready_s"],
            r.get("ready_cpu_s", "-"),
            r["ready_notify_s"],
            r["all_planned_s"],
            r["idle_rss_mb"],
            r["peak_rss_mb"],
            r["idle_cpu_percent"],
            r["idle_window_s"],
            r.get("load_before", ["-"])[0],
        ]
        for r in data["rows"]
    ]
    headers = [
        "targets",
        "/readyz s",
        "CPU to /readyz s",
        "READY=1 s",
        "all planned s",
        "idle RSS MB",
        "peak RSS MB",
        "idle CPU %",
        "idle window s",
        "load (1 min)",
    ]
    return section(f"Footprint of `rotator run` ({data['label']})", headers, rows, data["targets"])


def main() -> None:
    parser = bench_parser(__doc__, "footprint", "10 and 1000 targets, 8 s idle")
    parser.add_argument("--sizes", default="10,1000,10000", help="target counts (comma-separated)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    idle = args.idle
    if args.quick:
        sizes, idle = [s for s in sizes if s <= 1000] or [10], min(idle, 8.0)
    started = time.monotonic()
    data: dict[str, Any] = {"name": args.name, "label": args.label, "machine": machine()}
    data["rows"] = []
    with World.temporary() as world:
        for n in sizes:
            data["rows"].append(attempt(world, n, idle))
            data["targets"] = budget.goals("footprint", data)
            finish(data, started, markdown, args.results)  # so far: a crash keeps these
    finish(data, started, markdown, args.results)


if __name__ == "__main__":
    main()
