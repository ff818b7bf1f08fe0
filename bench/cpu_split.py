"""Where rotator's CPU goes during ``rotate --all``: the SDKs, the HTTP client, the store, rotator.

A fleet of N targets (the fleet benchmark's, Mistral latency L) is rotated twice, each time a
fresh fleet: once by ``rotator rotate --all`` unprofiled (its CPU from ``wait4``, as the fleet
benchmark measures it), once by the same command run in process under ``bench/inproc.py
--profile`` (one ``cProfile`` per thread, CPU time; the pool threads run the SDKs and the
store). Each function's self time goes to the bucket of its module:

| bucket | modules |
| --- | --- |
| AWS SDK | boto3, botocore, s3transfer, jmespath |
| Vault SDK | hvac, requests |
| HTTP (httpx) | httpx, httpcore, h11, anyio, sniffio, ssl |
| state store | sqlalchemy, sqlite3 |
| event loop & pool | asyncio, concurrent, threading, selectors, queue |
| logging | logging, structlog |
| config | pydantic, pydantic_core, yaml |
| imports (start-up) | the import system and every module's top-level code |
| rotator's own | rotator.* |
| other | everything else, by module in the detail table |

Built-in functions, the rest of the standard library (``socket``, ``http.client``, ``json``,
``re`` …) and libraries two SDKs share (``urllib3``, used by botocore and by requests) have no
bucket of their own: their time goes to whoever called them, split by the profile's caller
edges (self time by caller for the first step, then cumulative time). cProfile's overhead is
per call, so the profiled figures are inflated (the overhead factor is printed), more where
calls are many and short; the "scaled" column spreads the unprofiled CPU per rotation over the
buckets by their profiled shares. Results: ``bench/results/<name>.json`` and ``.md``.

Usage: ``python bench/cpu_split.py [--quick] [--targets 200] [--latency-ms 20]``.
"""

from __future__ import annotations

import pstats
import shutil
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import Any

import budget
from fleet import rotator_run
from world import ROOT, World, finish, loadavg, machine, section, table
from world import parser as bench_parser

INPROC = Path(__file__).with_name("inproc.py")
SDK = ("AWS SDK", "Vault SDK", "HTTP (httpx)")
OWN = "rotator's own"
BUCKETS = {
    "AWS SDK": ("boto3", "botocore", "s3transfer", "jmespath"),
    "Vault SDK": ("hvac", "requests"),
    "HTTP (httpx)": ("httpx", "httpcore", "h11", "anyio", "sniffio", "ssl"),
    "state store": ("sqlalchemy", "sqlite3"),
    "event loop & pool": ("asyncio", "concurrent", "threading", "selectors", "queue"),
    "logging": ("logging", "structlog"),
    "config": ("pydantic", "pydantic_core", "yaml"),
    "imports (start-up)": ("importlib",),
    OWN: ("rotator",),
}
BUCKET_OF = {module: bucket for bucket, modules in BUCKETS.items() for module in modules}
SHARED = {
    "urllib3",
    "certifi",
    "idna",
    "charset_normalizer",
    "dateutil",
    "six",
    "typing_extensions",
}
"""Third-party libraries with no bucket: their time goes to their callers."""
Func = tuple[str, int, str]


class Attribution:
    """Self time of every profiled function, given to a module (``botocore``,
    ``rotator.state`` …): its own, or its callers' for the functions without one."""

    def __init__(self, stats: dict[Func, Any]) -> None:
        self.stats = stats
        self.stdlib = {Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
        self.roots = sorted(
            {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")} | {ROOT},
            key=lambda p: -len(p.parts),
        )
        self._spread: dict[Func, Counter[str]] = {}
        self._active: set[Func] = set()

    def module(self, func: Func) -> str | None:
        """The module a function is charged to, None when its callers are."""
        filename, _, name = func
        if name == "<module>" or filename.startswith("<frozen importlib"):
            return "importlib"
        if filename.startswith(("~", "<")):
            return None
        path = Path(filename)
        for root in self.roots:
            if path.is_relative_to(root):
                parts = path.relative_to(root).with_suffix("").parts
                top = parts[0]
                if top == "rotator":
                    return ".".join(parts[:2])
                return None if top in SHARED else top
        for root in self.stdlib:
            if path.is_relative_to(root):
                top = path.relative_to(root).with_suffix("").parts[0]
                return top if top in BUCKET_OF else None
        return None

    def by_module(self) -> Counter[str]:
        """Seconds of CPU by module, every function's self time given to one or more."""
        out: Counter[str] = Counter()
        for func, (_, _, self_time, _, callers) in self.stats.items():
            if self_time <= 0:
                continue
            owner = self.module(func)
            if owner is not None:
                out[owner] += self_time
                continue
            edges = {caller: edge[2] for caller, edge in callers.items()}  # self time by caller
            for module, share in self._split(edges, func).items():
                out[module] += self_time * share
        return out

    def _split(self, edges: dict[Func, float], func: Func) -> Counter[str]:
        total = sum(edges.values())
        if total <= 0:
            return Counter({f"other: {func[2]}" if func[0] == "~" else "other": 1.0})
        out: Counter[str] = Counter()
        for caller, weight in edges.items():
            for module, share in self._owners(caller).items():
                out[module] += share * weight / total
        return out

    def _owners(self, func: Func) -> Counter[str]:
        """Where time spent in ``func`` belongs: its module, or its callers' by cumulative time
        (leaving out the callers it was reached from: recursion)."""
        owner = self.module(func)
        if owner is not None:
            return Counter({owner: 1.0})
        if func not in self._spread:
            self._active.add(func)
            callers = self.stats[func][4] if func in self.stats else {}
            edges = {c: e[3] for c, e in callers.items() if c not in self._active}
            self._spread[func] = self._split(edges, func)
            self._active.discard(func)
        return self._spread[func]


def bucket(module: str) -> str:
    return BUCKET_OF.get(module.split(".", maxsplit=1)[0], "other")


def analyse(profile: Path, n: int, unprofiled_cpu_s: float) -> dict[str, Any]:
    """Buckets and modules in ms per rotation, profiled and scaled to the unprofiled CPU."""
    sys.setrecursionlimit(10_000)
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    modules = Attribution(stats).by_module()
    total = sum(modules.values())
    scale = unprofiled_cpu_s / total if total else 0.0
    buckets: Counter[str] = Counter()
    for module, seconds in modules.items():
        buckets[bucket(module)] += seconds

    def ms(seconds: float) -> float:
        return round(seconds * 1000 / n, 2)

    return {
        "profiled_cpu_s": round(total, 3),
        "overhead_factor": round(1 / scale, 2) if scale else None,
        "buckets": {b: ms(s) for b, s in buckets.most_common()},
        "scaled": {b: ms(s * scale) for b, s in buckets.most_common()},
        "modules": {m: ms(s) for m, s in modules.most_common(25)},
        "split": {
            "sdk_ms": ms(sum(buckets[b] for b in SDK) * scale),
            "own_ms": ms(buckets[OWN] * scale),
            "rest_ms": ms((total - sum(buckets[b] for b in (*SDK, OWN))) * scale),
        },
    }


def markdown(data: dict[str, Any]) -> str:
    n, plain = data["n"], data["unprofiled"]
    cpu_ms = plain["cpu_s"] * 1000 / n
    total = sum(data["buckets"].values())
    rows = [
        [b, f"{ms:.1f}", f"{100 * ms / total:.1f} %", f"{data['scaled'][b]:.1f}"]
        for b, ms in data["buckets"].items()
    ]
    rows.append(["**all**", f"**{total:.1f}**", "100 %", f"**{cpu_ms:.1f}**"])
    split = data["split"]
    detail = [[f"`{m}`", bucket(m), f"{ms:.2f}"] for m, ms in data["modules"].items()]
    return "\n".join(
        [
            section(
                f"CPU per rotation by bucket ({data['label']}; N={n}, L={data['latency_ms']} ms)",
                ["bucket", "profiled ms/rotation", "share", "scaled ms/rotation"],
                rows,
                data["targets"],
            ),
            "",
            (
                f"Unprofiled: {cpu_ms:.1f} ms CPU per rotation ({plain['rotated']}/{n} rotated, "
                f"wall {plain['wall_s']:.1f} s); profiled: {total:.1f} ms "
                f"({data['profiled']['rotated']}/{n} rotated), cProfile's overhead "
                f"x{data['overhead_factor']}. Scaled: SDKs and HTTP {split['sdk_ms']:.1f} ms, "
                f"rotator's own code {split['own_ms']:.1f} ms, the rest {split['rest_ms']:.1f} ms."
            ),
            "",
            "The 25 modules that took most (profiled ms per rotation, start-up included):",
            "",
            table(["module", "bucket", "ms/rotation"], detail),
        ]
    )


def main() -> None:
    parser = bench_parser(__doc__, "cpu_split", "20 targets")
    parser.add_argument("--targets", type=int, default=200, help="targets per fleet (N)")
    parser.add_argument("--latency-ms", type=int, default=20, help="injected Mistral latency")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measured run")
    parser.add_argument("--save-profile", type=Path, help="keep the merged profile (pstats) here")
    args = parser.parse_args()
    n = 20 if args.quick else args.targets
    latency = args.latency_ms / 1000
    started = time.monotonic()
    data: dict[str, Any] = {
        "name": args.name,
        "label": args.label,
        "machine": machine(),
        "n": n,
        "latency_ms": args.latency_ms,
        "load_before": loadavg(),
    }
    with World.temporary() as world:
        work = world.workdir
        data["unprofiled"] = rotator_run(
            world, n, latency, work, concurrency=None, timeout=args.timeout, tag="plain"
        )
        profile = work / "rotate.pstats"
        runner = (sys.executable, str(INPROC), "--profile", str(profile), "--")
        data["profiled"] = rotator_run(
            world, n, latency, work, concurrency=None, timeout=args.timeout, runner=runner
        )
        data |= analyse(profile, n, data["unprofiled"]["cpu_s"])
        if args.save_profile:
            shutil.copyfile(profile, args.save_profile)
    data["targets"] = budget.goals("cpu_split", data)
    finish(data, started, markdown, args.results)


if __name__ == "__main__":
    main()
