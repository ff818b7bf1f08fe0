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
from pathlib import Path
from typing import Any

from world import (
    AWS_REGION,
    FIELD,
    ROOT_TOKEN,
    ROTATOR,
    Measured,
    World,
    config_dict,
    finish,
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
TARGET_SPEEDUP = 5.0
TARGET_CPU_MS = 10.0


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
) -> dict[str, Any]:
    fleet = seed_fleet(world, n, f"r{n}")
    state_url = f"sqlite:///{workdir / f'rotator-{n}-{latency}.db'}"
    seed_state(state_url, fleet)
    cfg = write_yaml(
        workdir / f"rotator-{n}-{latency}.yaml",
        config_dict(world, fleet, state_url=state_url, concurrency=concurrency),
    )
    command = [ROTATOR, "rotate", "--all", "--json", "-c", str(cfg)]
    if profile is not None:  # the same command under pyinstrument (its figures then inflate)
        report = profile.with_name(f"{profile.stem}-{n}-{int(latency * 1000)}ms.txt")
        pyinstrument = str(Path(sys.executable).with_name("pyinstrument"))
        command = [pyinstrument, "-r", "text", "--show-all", "-o", str(report), *command]
    measured = at_latency(world, latency, command, workdir / f"rotator-{n}-{latency}.log", timeout)
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
    world: World, n: int, latency: float, workdir: Path, *, timeout: float
) -> dict[str, Any]:
    fleet = seed_fleet(world, n, f"b{n}")
    spec = {
        "standin_url": world.standin.url,
        "admin_key": DEFAULT_ADMIN_KEY,
        "user_id": SEED_USER_ID,
        "workspace_id": DEFAULT_WORKSPACE_ID,
        "vault_url": world.openbao.url,
        "vault_token": ROOT_TOKEN,
        "aws_url": world.moto.url,
        "aws_region": AWS_REGION,
        "field": FIELD,
        "targets": [{"name": t.name, "path": t.path, "key_id": t.key_id} for t in fleet],
    }
    spec_path = workdir / f"baseline-{n}-{latency}.json"
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, str(BASELINE), str(spec_path)]
    measured = at_latency(world, latency, command, workdir / f"baseline-{n}-{latency}.log", timeout)
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


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, judged on the N = 1000, L = 20 ms row (the largest measured)."""
    if not rows:
        return []
    row = max(rows, key=lambda r: (r["latency_s"], r["n"]))
    d = row["derived"]
    at = f"N={row['n']}, L={int(row['latency_s'] * 1000)} ms"
    out = [
        {
            "what": f"rotator CPU per rotation ≤ {TARGET_CPU_MS:.0f} ms ({at})",
            "value": f"{d['rotator_cpu_ms_per_rotation']:.1f} ms",
            "ok": d["rotator_cpu_ms_per_rotation"] <= TARGET_CPU_MS,
        },
        {
            "what": f"all rotations succeed ({at})",
            "value": f"{row['rotator']['rotated']}/{row['n']}",
            "ok": row["rotator"]["rotated"] == row["n"],
        },
    ]
    if "speedup" in d:
        out.insert(
            0,
            {
                "what": f"≥ {TARGET_SPEEDUP:.0f}x faster than the sequential baseline ({at})",
                "value": f"{d['speedup']:.1f}x",
                "ok": d["speedup"] is not None and d["speedup"] >= TARGET_SPEEDUP,
            },
        )
    return out


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
                row["load_before"] = list(machine()["loadavg"])
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
                data["targets"] = goals(data["rows"])
                finish(data, started, markdown, args.results)  # so far: a crash keeps these
    data["targets"] = goals(data["rows"])
    finish(data, started, markdown, args.results)


if __name__ == "__main__":
    main()
