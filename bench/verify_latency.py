"""Verification latency: how long after a new key becomes active rotator notices it.

For each activation delay D (the stand-in's ``activation_delay_seconds``: a new key answers 401
on ``GET /v1/models`` for D seconds), a small fleet is rotated with ``rotator rotate --all``.
For every rotation, the moment the key became active is the stand-in's ``active_at`` for that
key; the moment rotator noticed is the timestamp of its ``mistral.key_verified`` log line
(written as the accepting answer arrives), and the moment it recorded it is its ``verified``
journal step. The differences are the latencies (both clocks are this machine's). With D = 0
the key is active when created, so the lag is the time from creation to the first check
(the ``created`` step is journaled in between). Results: ``bench/results/<name>.json``, ``.md``.

Usage: ``python bench/verify_latency.py [--quick] [--delays 0,2,10] [--targets 4]``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import budget
from world import (
    ROTATOR,
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

from rotator.engine.steps import Step
from rotator.state import SqlStateStore


async def verified_at(state_url: str, rotation_ids: list[str]) -> dict[str, Any]:
    """Each rotation's ``verified`` journal time, by rotation id."""
    store = SqlStateStore(state_url)
    try:
        found = {}
        for rotation_id in rotation_ids:
            for entry in await store.journal(rotation_id):
                if entry.step == Step.VERIFIED:
                    found[rotation_id] = entry
        return found
    finally:
        await store.close()


def measure(world: World, delay: float, n: int, workdir: Path) -> dict[str, Any]:
    load = loadavg()
    fleet = seed_fleet(world, n, f"v{int(delay)}")
    state_url = f"sqlite:///{workdir / f'verify-{delay}.db'}"
    seed_state(state_url, fleet)
    cfg = write_yaml(
        workdir / f"verify-{delay}.yaml",
        config_dict(world, fleet, state_url=state_url, policy={"activation_timeout": "60s"}),
    )
    world.control.set_activation_delay(delay)
    try:
        measured = run_measured(
            [ROTATOR, "rotate", "--all", "--json", "-c", str(cfg)],
            env=world.child_env(),
            log=workdir / f"verify-{delay}.log",
            timeout=120 + delay,
        )
    finally:
        world.control.set_activation_delay(0)
    rows = json.loads(measured.stdout) if measured.stdout.strip() else []
    facts = {k.key_id: k for k in world.control.key_facts()}
    noticed = noticed_at(workdir / f"verify-{delay}.log")
    journal = asyncio.run(verified_at(state_url, [r["rotation_id"] for r in rows]))
    samples = []
    for row in rows:
        entry, key = journal.get(row["rotation_id"]), facts.get(row["new_key_id"])
        if entry is None or key is None or key.fingerprint not in noticed:
            continue
        samples.append(
            {
                "target": row["target"],
                "lag_s": round((noticed[key.fingerprint] - key.active_at).total_seconds(), 3),
                "journaled_s": round((entry.at - key.active_at).total_seconds(), 3),
                "attempts": entry.facts.get("attempts"),
                "elapsed_s": entry.facts.get("elapsed_s"),
            }
        )
    lags = [s["lag_s"] for s in samples]
    return {
        "delay_s": delay,
        "load_before": load,
        "rotations": len(rows),
        "outcomes": sorted({str(r["outcome"]) for r in rows}),
        "samples": samples,
        "lag_mean_s": round(statistics.fmean(lags), 3) if lags else None,
        "lag_max_s": round(max(lags), 3) if lags else None,
        "journaled_max_s": max((s["journaled_s"] for s in samples), default=None),
        "returncode": measured.returncode,
    }


def noticed_at(log: Path) -> dict[str, datetime]:
    """When rotator saw each key (by fingerprint) accepted: its ``mistral.key_verified`` lines."""
    seen = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "mistral.key_verified":
            seen[event["fingerprint"]] = datetime.fromisoformat(event["timestamp"])
    return seen


def markdown(data: dict[str, Any]) -> str:
    rows = [
        [
            r["delay_s"],
            len(r["samples"]),
            r["lag_mean_s"],
            r["lag_max_s"],
            r.get("journaled_max_s", "-"),
            max((s["attempts"] or 0 for s in r["samples"]), default="-"),
            r.get("load_before", ["-"])[0],
        ]
        for r in data["rows"]
    ]
    headers = [
        "activation delay s",
        "rotations",
        "mean lag s",
        "max lag s",
        "max lag to the journal s",
        "max polls",
        "load (1 min)",
    ]
    return section(f"Verification latency ({data['label']})", headers, rows, data["targets"])


def main() -> None:
    parser = bench_parser(__doc__, "verify_latency", "D = 0 and 2 only (~15 s)")
    parser.add_argument("--delays", default="0,2,10", help="activation delays D in seconds")
    parser.add_argument("--targets", type=int, default=8, help="rotations per delay")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    if args.quick:
        delays = [d for d in delays if d <= 2] or [0.0]
    started = time.monotonic()
    data: dict[str, Any] = {"name": args.name, "label": args.label, "machine": machine()}
    with World.temporary() as world:
        data["rows"] = [measure(world, d, args.targets, world.workdir) for d in delays]
    data["targets"] = budget.goals("verify_latency", data)
    finish(data, started, markdown, args.results)


if __name__ == "__main__":
    main()
