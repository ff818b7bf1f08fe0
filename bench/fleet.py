"""Fleet rotation: ``rotator rotate --all`` against N targets, beside a sequential baseline.

For each fleet size N and injected Mistral latency L, two fresh fleets of N targets are seeded
(each target: one Vault and one AWS destination, a working key it serves, that key recorded as
the target's current managed key) and rotated: one by ``rotator rotate --all --json`` (grace 0,
so each rotation also revokes the key it replaced), the other by ``bench/baseline_sequential.py``.
Each runs as its own process and is measured alone: wall time, its own CPU seconds and peak RSS
(``wait4``); the servers' CPU is not counted. Results: ``bench/results/<name>.json`` and ``.md``.

Usage: ``python bench/fleet.py [--quick] [--sizes 10,100,1000] [--latencies-ms 0,20]``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import budget
from world import (
    AWS_REGION,
    FIELD,
    ROOT_TOKEN,
    ROTATOR,
    Measured,
    World,
    config_dict,
    finish,
    loadavg,
    machine,
    run_measured,
    section,
    seed_fleet,
    seed_state,
    write_yaml,
)
from world import parser as bench_parser

from rotator_dev.standin import DEFAULT_ADMIN_KEY, DEFAULT_WORKSPACE_ID, SEED_USER_ID

BASELINE = Path(__file__).with_name("baseline_sequential.py")


def at_latency(
    world: World, latency: float, command: list[str], log: Path, timeout: float
) -> Measured:
    """``command`` measured while every Mistral call is answered ``latency`` seconds late."""
    world.set_latency(latency)
    try:
        return run_measured(command, env=world.child_env(), log=log, timeout=timeout)
    finally:
        world.set_latency(0)


def rotator_run(
    world: World,
    n: int,
    latency: float,
    workdir: Path,
    *,
    concurrency: int | None,
    timeout: float,
    profile: Path | None = None,
    runner: Sequence[str] = (ROTATOR,),
    via: Mapping[str, str] | None = None,
    tag: str = "rotator",
    seeded: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Seed a fleet of N and rotate it with ``runner rotate --all --json`` (``runner``: the
    ``rotator`` script, or a command that runs it in process); ``via`` (see :func:`config_dict`)
    sends the destinations' calls elsewhere; ``seeded()`` is called once the fleet is seeded."""
    fleet = seed_fleet(world, n, f"r{n}")
    files = workdir / f"{tag}-{n}-{int(latency * 1000)}ms"
    state_url = f"sqlite:///{files}.db"
    seed_state(state_url, fleet)
    cfg = write_yaml(
        files.with_suffix(".yaml"),
        config_dict(world, fleet, state_url=state_url, concurrency=concurrency, via=via),
    )
    command = [*runner, "rotate", "--all", "--json", "-c", str(cfg)]
    if seeded is not None:
        seeded()
    if profile is not None:  # the same command under pyinstrument (its figures then inflate)
        report = profile.with_name(f"{profile.stem}-{n}-{int(latency * 1000)}ms.txt")
        pyinstrument = str(Path(sys.executable).with_name("pyinstrument"))
        command = [pyinstrument, "-r", "text", "--show-all", "-o", str(report), *command]
    measured = at_latency(world, latency, command, files.with_suffix(".log"), timeout)
    try:
        rows = json.loads(measured.stdout)
    except ValueError:
        rows = []
    outcomes = Counter(str(r.get("outcome")) for r in rows)
    return {
        "returncode": measured.returncode,
        "wall_s": round(measured.wall_s, 3),
        "cpu_s": round(measured.cpu_s, 3),
        "peak_rss_mb": round(measured.peak_rss_mb, 1),
        "outcomes": dict(outcomes),
        "rotated": outcomes.get("rotated", 0),
    }


def baseline_run(
    world: World,
    n: int,
    latency: float,
    workdir: Path,
    *,
    timeout: float,
    via: Mapping[str, str] | None = None,
    seeded: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Seed a fleet of N and rotate it with the sequential baseline (``via``, ``seeded``: as
    for :func:`rotator_run`)."""
    fleet = seed_fleet(world, n, f"b{n}")
    via = via or {}
    spec = {
        "standin_url": world.standin.url,
        "admin_key": DEFAULT_ADMIN_KEY,
        "user_id": SEED_USER_ID,
        "workspace_id": DEFAULT_WORKSPACE_ID,
        "vault_url": via.get("vault", world.openbao.url),
        "vault_token": ROOT_TOKEN,
        "aws_url": via.get("aws", world.moto.url),
        "aws_region": AWS_REGION,
        "field": FIELD,
        "targets": [{"name": t.name, "path": t.path, "key_id": t.key_id} for t in fleet],
    }
    files = workdir / f"baseline-{n}-{int(latency * 1000)}ms"
    spec_path = files.with_suffix(".json")
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, str(BASELINE), str(spec_path)]
    if seeded is not None:
        seeded()
    measured = at_latency(world, latency, command, files.with_suffix(".log"), timeout)
    try:
        summary = json.loads(measured.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {"rotated": 0, "calls": {}}
    return {
        "returncode": measured.returncode,
        "wall_s": round(measured.wall_s, 3),
        "cpu_s": round(measured.cpu_s, 3),
        "peak_rss_mb": round(measured.peak_rss_mb, 1),
        "rotated": summary["rotated"],
        "calls": summary["calls"],
    }


def derived(row: dict[str, Any]) -> dict[str, Any]:
    """Rates and ratios of one (N, L) row."""
    rot, base = row["rotator"], row["baseline"]
    n = row["n"]
    out = {
        "rotator_per_s": round(n / rot["wall_s"], 2) if rot["wall_s"] else None,
        "rotator_cpu_ms_per_rotation": round(rot["cpu_s"] * 1000 / n, 2),
    }
    if base is not None:
        out["baseline_per_s"] = round(n / base["wall_s"], 2) if base["wall_s"] else None
        out["baseline_cpu_ms_per_rotation"] = round(base["cpu_s"] * 1000 / n, 2)
        out["speedup"] = round(base["wall_s"] / rot["wall_s"], 2) if rot["wall_s"] else None
    return out


def shown(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(data: dict[str, Any]) -> str:
    rows = []
    for row in data["rows"]:
        rot, base, d = row["rotator"], row["baseline"], row["derived"]
        rows.append(
            [
                row["n"],
                int(row["latency_s"] * 1000),
                f"{rot['wall_s']:.1f}",
                d["rotator_per_s"],
                f"{d['rotator_cpu_ms_per_rotation']:.1f}",
                shown(rot["peak_rss_mb"], ".0f"),
                f"{rot['rotated']}/{row['n']}",
                f"{base['wall_s']:.1f}" if base else "-",
                f"{d['baseline_cpu_ms_per_rotation']:.1f}" if base else "-",
                f"{d['speedup']:.1f}x" if base else "-",
                shown(row["load_before"][0], ".1f"),
            ]
        )
    headers = [
        "N",
        "L ms",
        "rotator wall s",
        "rotations/s",
        "rotator CPU ms/rotation",
        "peak RSS MB",
        "rotated",
        "baseline wall s",
        "baseline CPU ms/rotation",
        "speedup",
        "load (1 min)",
    ]
    return section(f"Fleet rotation ({data['label']})", headers, rows, data["targets"])


def main() -> None:
    parser = bench_parser(__doc__, "fleet", "N = 10, 100 only (~1 minute)")
    parser.add_argument("--sizes", default="10,100,1000", help="fleet sizes N (comma-separated)")
    parser.add_argument("--latencies-ms", default="0,20", help="injected Mistral latencies")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline runs")
    parser.add_argument("--concurrency", type=int, help="engine.concurrency (default: rotator's)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measured run")
    parser.add_argument("--profile", type=Path, help="profile rotator with pyinstrument here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s <= 100] or [10]
    latencies = [int(x) / 1000 for x in args.latencies_ms.split(",")]
    started = time.monotonic()
    data: dict[str, Any] = {
        "name": args.name,
        "label": args.label,
        "machine": machine(),
        "concurrency": args.concurrency,
        "rows": [],
    }
    with World.temporary() as world:
        tmp = world.workdir
        for latency in latencies:
            for n in sizes:
                row: dict[str, Any] = {"n": n, "latency_s": latency}
                row["load_before"] = loadavg()
                row["rotator"] = rotator_run(
                    world,
                    n,
                    latency,
                    tmp,
                    concurrency=args.concurrency,
                    timeout=args.timeout,
                    profile=args.profile,
                )
                row["baseline"] = (
                    None
                    if args.no_baseline
                    else baseline_run(world, n, latency, tmp, timeout=args.timeout)
                )
                row["derived"] = derived(row)
                data["rows"].append(row)
                print(json.dumps({k: row[k] for k in ("n", "latency_s", "derived")}), flush=True)
                data["targets"] = budget.goals("fleet", data)
                finish(data, started, markdown, args.results)  # so far: a crash keeps these
    data["targets"] = budget.goals("fleet", data)
    finish(data, started, markdown, args.results)


if __name__ == "__main__":
    main()
