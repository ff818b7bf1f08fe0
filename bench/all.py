"""Runs every benchmark of issue 14's budget in turn, then assembles ``bench/RESULTS.md``.

Order: ``cli_timing`` first (it compiles the bytecode, so every later benchmark starts with it),
then ``calls``, ``cpu_split``, ``verify_latency``, ``footprint`` and ``fleet`` (the longest).
Each runs as its own process, one after the other (they would compete for the two cores), with
``--name <script><suffix>``; a failed one is reported and the others still run.

Usage: ``python bench/all.py [--quick] [--suffix=-before14] [--label TEXT] [--only a,b]``.
Full: 25-30 min on this machine (the fleet alone 11-15 min); ``--quick``: about 3.5 min.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from world import RESULTS

BENCH = Path(__file__).parent
SCRIPTS = ("cli_timing", "calls", "cpu_split", "verify_latency", "footprint", "fleet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="each benchmark's --quick")
    parser.add_argument("--suffix", default="", help="appended to each results name")
    parser.add_argument("--label", default="published run", help="what this run is")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write")
    parser.add_argument("--only", help="these benchmarks only (comma-separated)")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(SCRIPTS)
    failed, took = [], {}
    for script in (s for s in SCRIPTS if s in chosen):
        argv = [sys.executable, str(BENCH / f"{script}.py"), "--name", f"{script}{args.suffix}"]
        argv += ["--label", args.label, "--results", str(args.results)]
        argv += ["--quick"] if args.quick else []
        print(f"==> {script}", flush=True)
        started = time.monotonic()
        if subprocess.run(argv, check=False).returncode != 0:
            failed.append(script)
        took[script] = round(time.monotonic() - started)
    page = [] if args.results == RESULTS else ["--page", str(args.results / "RESULTS.md")]
    subprocess.run(
        [sys.executable, str(BENCH / "results.py"), "--results", str(args.results), *page],
        check=True,
    )
    print("took (s): " + ", ".join(f"{s} {t}" for s, t in took.items()))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
