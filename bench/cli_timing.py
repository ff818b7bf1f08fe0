"""CLI start-up: ``rotator --version`` and ``rotator status`` over N targets, wall time per run.

First the bytecode is compiled (``python -m compileall -q`` over the virtualenv's
site-packages and the repository's ``rotator/`` and ``rotator_dev/``; the share of modules with
bytecode before and after is recorded; ``--no-compile`` skips it). Then each command runs
``--runs`` times as a process of its own, after one warm-up run: wall time (from the start to
``wait4``) and its CPU; the median is reported. The same is measured without bytecode, for
information: ``PYTHONDONTWRITEBYTECODE=1`` with ``PYTHONPYCACHEPREFIX`` an empty folder, so no
``.pyc`` is read or written, the standard library's included. ``status`` reads a configuration
of N targets (a Vault and an AWS destination each) and a state database holding a current key
for each; it reaches no server, so every URL of the configuration points at a closed port
(a call would fail the command, and this benchmark). If ``hyperfine`` is installed it times the
compiled commands too, as a cross-check. Results: ``bench/results/<name>.json`` and ``.md``.

Usage: ``python bench/cli_timing.py [--quick] [--targets 1000] [--runs 15] [--warmup 1]``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import budget
from world import (
    DUMMY_AWS,
    ROOT,
    ROTATOR,
    SITE_PACKAGES,
    bytecode,
    config_dict,
    finish,
    idle_fleet,
    loadavg,
    machine,
    section,
    seed_state,
    write_yaml,
)
from world import parser as bench_parser


def compile_all() -> dict[str, Any]:
    """Compile every module's bytecode once; what was there before and after, and how long."""
    before = bytecode()
    started = time.monotonic()
    folders = [SITE_PACKAGES, ROOT / "rotator", ROOT / "rotator_dev"]
    done = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *map(str, folders)],
        check=False,
        capture_output=True,
        text=True,
    )
    return {
        "before": before,
        "after": bytecode(),
        "seconds": round(time.monotonic() - started, 1),
        "returncode": done.returncode,  # some packages ship files that do not compile
    }


def timed(
    argv: Sequence[str], env: dict[str, str], runs: int, warmup: int, log: Path
) -> dict[str, Any]:
    """``argv`` run ``runs`` times after ``warmup`` runs: median, min and max wall seconds,
    median CPU."""
    walls, cpus = [], []
    load = loadavg()
    for i in range(warmup + runs):
        with log.open("wb") as stderr:
            started = time.perf_counter()
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{log.read_text()[-2000:]}")
        if i >= warmup:
            walls.append(wall)
            cpus.append(usage.ru_utime + usage.ru_stime)
    return {
        "median_s": round(statistics.median(walls), 3),
        "min_s": round(min(walls), 3),
        "max_s": round(max(walls), 3),
        "cpu_median_s": round(statistics.median(cpus), 3),
        "runs": runs,
        "load_before": load,
    }


def hyperfine(
    commands: dict[str, list[str]], env: dict[str, str], runs: int, warmup: int, work: Path
) -> dict[str, float]:
    """hyperfine's median per command, if hyperfine is installed."""
    tool = shutil.which("hyperfine")
    if tool is None:
        return {}
    out = work / "hyperfine.json"
    argv = [tool, "-N", "--warmup", str(warmup), "--runs", str(runs), "--export-json", str(out)]
    subprocess.run(
        [*argv, *(" ".join(c) for c in commands.values())],
        check=True,
        env=env,
        capture_output=True,
    )
    results = json.loads(out.read_text())["results"]
    return {name: round(r["median"], 3) for name, r in zip(commands, results, strict=True)}


def markdown(data: dict[str, Any]) -> str:
    rows = [
        [
            f"`rotator {'--version' if r['command'] == 'version' else 'status'}`",
            ("compiled" if data["compiled"] else "as found") if r["compiled"] else "none (info)",
            r["median_s"],
            r["min_s"],
            r["max_s"],
            r["cpu_median_s"],
            data.get("hyperfine", {}).get(r["command"], "-") if r["compiled"] else "-",
            r.get("load_before", ["-"])[0],
        ]
        for r in data["rows"]
    ]
    headers = ["command", "bytecode", "median s", "min s", "max s", "CPU s (median)", "hyperfine"]
    headers.append("load (1 min)")
    title = f"CLI timings ({data['label']}; status over {data['targets_n']} targets)"
    compiled = data["compiled"]
    note = f"Runs: {data['runs']} each after {data.get('warmup', 1)} untimed. "
    if compiled:
        note += (
            f"Bytecode before compiling: {compiled['before']}; after: {compiled['after']} "
            f"(compileall took {compiled['seconds']} s)."
        )
    else:
        note += f"Not compiled first; bytecode: {data['machine']['bytecode']}."
    return "\n".join([section(title, headers, rows, data["targets"]), "", note])


def main() -> None:
    parser = bench_parser(__doc__, "cli_timing", "5 runs each, compiled only")
    parser.add_argument("--targets", type=int, default=1000, help="targets `status` reads")
    parser.add_argument("--runs", type=int, help="timed runs of each command (15; quick: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    parser.add_argument("--no-compile", action="store_true", help="time the bytecode as it is")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 15)
    started = time.monotonic()
    data: dict[str, Any] = {
        "name": args.name,
        "label": args.label,
        "targets_n": args.targets,
        "runs": runs,
        "warmup": args.warmup,
        "compiled": None if args.no_compile else compile_all(),
    }
    data["machine"] = machine()
    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
        work, empty = Path(tmp), Path(tmp, "no-bytecode")
        empty.mkdir()
        fleet = idle_fleet(args.targets)
        state_url = f"sqlite:///{work / 'state.db'}"
        seed_state(state_url, fleet)
        cfg = write_yaml(work / "rotator.yaml", config_dict(None, fleet, state_url=state_url))
        commands = {
            "version": [ROTATOR, "--version"],
            "status": [ROTATOR, "status", "-c", str(cfg)],
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
        env |= DUMMY_AWS
        plain = env | {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(empty)}
        data["rows"] = [
            {"command": name, "compiled": compiled}
            | timed(argv, env if compiled else plain, runs, args.warmup, work / name)
            for compiled in (True, False)[: 1 if args.quick else 2]
            for name, argv in commands.items()
        ]
        data["hyperfine"] = hyperfine(commands, env, runs, args.warmup, work)
    data["targets"] = budget.goals("cli_timing", data)
    finish(data, started, markdown, args.results)


if __name__ == "__main__":
    main()
