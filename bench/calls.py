"""Calls and durable transactions per rotation: by backend and operation, rotator vs the baseline.

A fleet of N targets (the fleet benchmark's: one Vault and one AWS destination each, a working
key recorded as current, grace 0 so each rotation also revokes the key it replaced, no injected
latency) is rotated by ``rotator rotate --all``, then another by the sequential baseline, and
every request each server receives is counted:

- Mistral: the stand-in's own request counter per operation (``GET /_standin/requests``), read
  before and after; ``models`` is ``GET /v1/models``, the others are the Admin API;
- Vault and AWS: each client talks to its server through a counting loopback proxy
  (``tests/support/faultproxy.py`` with no fault armed), which records every request: Vault's
  by method and path (the secret's path shown as ``{path}``), AWS's by its ``X-Amz-Target``;
- the state store (rotator only): ``bench/inproc.py`` runs the same command in process with the
  engine's store wrapped in a counter of every method call. Writes are every method but the
  reads (``get_``, ``list_`` …), the lifecycle (``migrate``, ``close``) and the per-target lock
  (``try_lock_target``, ``unlock_target``: an ``flock`` or an advisory lock, no transaction); by
  the ``StateStore`` contract each write is one transaction, so writes per rotation are the
  durable transactions.

Counts are divided by N: a call made once per command (start-up) shows as 1/N.
Results: ``bench/results/<name>.json`` and ``.md``.

Usage: ``python bench/calls.py [--quick] [--targets 20]``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import budget
from fleet import baseline_run, rotator_run
from world import World, finish, machine, section, table
from world import parser as bench_parser

from tests.support.faultproxy import FaultProxy

INPROC = Path(__file__).with_name("inproc.py")
LIFECYCLE = {"migrate", "close"}
LOCKS = {"try_lock_target", "unlock_target"}
READS = ("get_", "list_", "open_", "read_", "find_", "journal", "audit_", "verify_", "probe")
READ_NAMES = {"revocations_due"}
BACKENDS = ("mistral", "vault", "aws")


def store_kind(method: str) -> str:
    """``read``, ``lifecycle``, ``lock`` or ``write`` (a durable transaction): by the method's
    name, so a method added to the store later is counted as a write unless it reads by its
    name."""
    if method in LIFECYCLE:
        return "lifecycle"
    if method in LOCKS:
        return "lock"
    if method.startswith(READS) or method in READ_NAMES:
        return "read"
    return "write"


def vault_operation(method: str, target: str) -> str:
    """``GET /v1/secret/data/{path}?version=…`` for a request to a fleet secret."""
    path = re.sub(r"bench/[^?]+", "{path}", target)
    return f"{method} " + re.sub(r"=[^&]*", "=…", path)


class CallCounter:
    """Every request the three servers receive between :meth:`start` and :meth:`stop`."""

    def __init__(self, world: World, proxies: dict[str, FaultProxy]) -> None:
        self.world, self.proxies = world, proxies
        self.before: dict[str, int] = {}

    def start(self) -> None:
        self.before = self.world.control.requests()
        for proxy in self.proxies.values():
            proxy.seen.clear()

    def stop(self) -> dict[str, dict[str, int]]:
        """The requests by backend and operation."""
        after, before = self.world.control.requests(), self.before
        mistral = {
            ("GET /v1/models" if op == "models" else f"Admin API {op}"): count - before.get(op, 0)
            for op, count in after.items()
            if count > before.get(op, 0)
        }
        vault = Counter(vault_operation(s.method, s.target) for s in self.proxies["vault"].seen)
        aws = Counter((s.amz_target or "?").rsplit(".", 1)[-1] for s in self.proxies["aws"].seen)
        return {"mistral": mistral, "vault": dict(vault), "aws": dict(aws)}


def per_rotation(run: dict[str, Any], n: int) -> dict[str, float]:
    """Calls per backend (and in all), store writes and reads, each per rotation."""
    out = {b: round(sum(run["calls"][b].values()) / n, 2) for b in BACKENDS}
    out["all"] = round(sum(out[b] for b in BACKENDS), 2)
    mistral = run["calls"]["mistral"]
    out["models"] = round(mistral.get("GET /v1/models", 0) / n, 2)
    out["admin"] = round(out["mistral"] - out["models"], 2)
    store = run.get("store")
    for kind in ("write", "read"):
        value = sum(c for m, c in store.items() if store_kind(m) == kind) if store else 0
        out[f"{kind}s"] = round(value / n, 2)
    return out


def markdown(data: dict[str, Any]) -> str:
    n, per, runs = data["n"], data["per_rotation"], data["runs"]
    rot, base = per["rotator"], per["baseline"]
    summary = [
        [
            "Mistral (Admin API + /v1/models)",
            f"{rot['mistral']} ({rot['admin']} + {rot['models']})",
            f"{base['mistral']} ({base['admin']} + {base['models']})",
        ],
        ["Vault", rot["vault"], base["vault"]],
        ["AWS", rot["aws"], base["aws"]],
        ["**all calls**", f"**{rot['all']}**", f"**{base['all']}**"],
        ["state-store write transactions", rot["writes"], "none (no state)"],
        ["state-store reads", rot["reads"], "-"],
    ]
    ops = []
    for backend in BACKENDS:
        seen = [runs[who]["calls"][backend] for who in ("rotator", "baseline")]
        ops += [
            [backend, f"`{op}`", *(f"{calls.get(op, 0) / n:.2f}" for calls in seen)]
            for op in sorted(set(seen[0]) | set(seen[1]))
        ]
    store = runs["rotator"].get("store") or {}
    methods = [
        [f"`{m}`", store_kind(m), f"{c / n:.2f}"]
        for m, c in sorted(store.items(), key=lambda kv: (store_kind(kv[0]), -kv[1]))
    ]
    parts = [
        section(
            f"Calls per rotation ({data['label']}; N={n}, grace 0, L=0)",
            ["per rotation", "rotator", "baseline"],
            summary,
            data["targets"],
        ),
        "",
        "Per operation (requests each server received, per rotation):",
        "",
        table(["backend", "operation", "rotator", "baseline"], ops),
        "",
        "State-store calls per rotation (rotator; each write is one transaction):",
        "",
        table(["method", "kind", "per rotation"], methods),
    ]
    return "\n".join(parts)


def main() -> None:
    parser = bench_parser(__doc__, "calls", "5 targets")
    parser.add_argument("--targets", type=int, default=20, help="targets per fleet (N)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measured run")
    args = parser.parse_args()
    n = 5 if args.quick else args.targets
    started = time.monotonic()
    data: dict[str, Any] = {"name": args.name, "label": args.label, "machine": machine(), "n": n}
    with World.temporary() as world:
        proxies = {
            "vault": FaultProxy(world.openbao.url, flavour="vault").start(),
            "aws": FaultProxy(world.moto.url, flavour="aws").start(),
        }
        via = {name: proxy.url for name, proxy in proxies.items()}
        counter = CallCounter(world, proxies)
        try:
            store_calls = world.workdir / "store-calls.json"
            runner = (sys.executable, str(INPROC), "--count-store", str(store_calls), "--")
            rotator = rotator_run(
                world,
                n,
                0,
                world.workdir,
                concurrency=None,
                timeout=args.timeout,
                runner=runner,
                via=via,
                seeded=counter.start,
            )
            rotator["calls"] = counter.stop()
            rotator["store"] = json.loads(store_calls.read_text())
            if rotator["rotated"] and not rotator["store"]:  # the store was not where expected
                raise RuntimeError("no state-store call was counted: see bench/inproc.py")
            baseline = baseline_run(
                world, n, 0, world.workdir, timeout=args.timeout, via=via, seeded=counter.start
            )
            baseline["calls"] = counter.stop()
        finally:
            for proxy in proxies.values():
                proxy.stop()
    data["runs"] = {"rotator": rotator, "baseline": baseline}
    data["per_rotation"] = {who: per_rotation(run, n) for who, run in data["runs"].items()}
    data["targets"] = budget.goals("calls", data)
    finish(data, started, markdown, args.results)


if __name__ == "__main__":
    main()
