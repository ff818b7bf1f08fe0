"""The budget of issue 14 ("Lean rotation path"), one line per figure, judged on results files.

Each :class:`Line` names the benchmark whose results measure it (``fleet``, ``footprint``,
``verify_latency``, ``calls``, ``cpu_split``, ``cli_timing``) and reads its figure from that
benchmark's JSON. The benchmarks list their own lines in their fragments; ``bench/results.py``
puts every line in the Targets table, before (``<name>-before14``) beside after (``<name>``).
A line whose exact setting was not measured (a ``--quick`` run: N = 100 instead of 1000) shows
the figure at the setting measured and no verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Judged = tuple[str, bool | None]
"""The figure as shown, and whether the budget is met (None: not measured as the budget says)."""


@dataclass(frozen=True)
class Line:
    what: str
    source: str
    judge: Callable[[dict[str, Any]], Judged | None]
    """The figure in one results file of ``source``, or None if that file lacks it."""


def _fleet_row(data: dict[str, Any], n: int, latency_ms: int) -> tuple[dict[str, Any], str] | None:
    """The fleet row at (n, latency), else the largest N at that latency with a note."""
    rows = [r for r in data.get("rows", []) if round(r["latency_s"] * 1000) == latency_ms]
    if not rows:
        return None
    row = max(rows, key=lambda r: (r["n"] == n, r["n"]))
    note = "" if row["n"] == n else f"at N={row['n']}: "
    if row["rotator"]["rotated"] != row["n"]:
        note += f"({row['rotator']['rotated']}/{row['n']} rotated) "
    return row, note


def _load(row: dict[str, Any]) -> str:
    """The 1-minute load average when the row was measured, if recorded."""
    load = row.get("load_before")
    return f"load {load[0]:.1f}" if load else "load ?"


def _exact(row: dict[str, Any], n: int, ok: bool) -> bool | None:
    return ok if row["n"] == n and row["rotator"]["rotated"] == n else None


def fleet_cpu(limit_ms: float) -> Callable[[dict[str, Any]], Judged | None]:
    def judge(data: dict[str, Any]) -> Judged | None:
        found = _fleet_row(data, 1000, 20)
        if found is None:
            return None
        row, note = found
        ms = row["derived"]["rotator_cpu_ms_per_rotation"]
        return f"{note}{ms:.1f} ms ({_load(row)})", _exact(row, 1000, ms <= limit_ms)

    return judge


def speedup(latency_ms: int, factor: float) -> Callable[[dict[str, Any]], Judged | None]:
    def judge(data: dict[str, Any]) -> Judged | None:
        found = _fleet_row(data, 1000, latency_ms)
        if found is None or found[0]["derived"].get("speedup") is None:
            return None
        row, note = found
        speedup = row["derived"]["speedup"]
        walls = (
            f"{row['rotator']['wall_s']:.0f} s vs {row['baseline']['wall_s']:.0f} s, {_load(row)}"
        )
        return f"{note}{speedup:.2f}x ({walls})", _exact(row, 1000, speedup >= factor)

    return judge


def fleet_peak_rss(limit_mb: float) -> Callable[[dict[str, Any]], Judged | None]:
    def judge(data: dict[str, Any]) -> Judged | None:
        rows = [r for r in data.get("rows", []) if r["rotator"].get("peak_rss_mb")]
        if not rows:
            return None
        n = 1000 if any(r["n"] == 1000 for r in rows) else max(r["n"] for r in rows)
        mb = max(r["rotator"]["peak_rss_mb"] for r in rows if r["n"] == n)
        if n != 1000:
            return f"at N={n}: {mb:.0f} MB", None
        return f"{mb:.0f} MB", mb <= limit_mb

    return judge


def footprint(n: int, field: str, limit: float) -> Callable[[dict[str, Any]], Judged | None]:
    def judge(data: dict[str, Any]) -> Judged | None:
        rows = data.get("rows", [])
        if not rows:
            return None
        row = next((r for r in rows if r["n"] == n), None) or max(rows, key=lambda r: r["n"])
        if row["n"] != n:  # not measured at this size: the largest one's figure, no verdict
            ok = None
            note = f"at N={row['n']}: "
        else:
            ok, note = "error" not in row and row[field] <= limit, ""
        if "error" in row:
            return f"{note}did not run: {row['error']}", ok
        shown = f"{row[field]:.0f} MB"
        if field == "ready_s":
            cpu = f"CPU {row['ready_cpu_s']:.2f} s, " if "ready_cpu_s" in row else ""
            shown = f"{row[field]:.2f} s ({cpu}{_load(row)})"
        return f"{note}{shown}", ok

    return judge


def seen(limit_s: float) -> Callable[[dict[str, Any]], Judged | None]:
    def judge(data: dict[str, Any]) -> Judged | None:
        rows = data.get("rows", [])
        if not rows:
            return None
        worst = max(r["lag_max_s"] or 0.0 for r in rows)
        delays = ", ".join(f"{r['delay_s']:g}" for r in rows)
        complete = all(r["samples"] and len(r["samples"]) == r["rotations"] for r in rows)
        loads = [r["load_before"][0] for r in rows if r.get("load_before")]
        shown = f"{worst:.2f} s (D = {delays} s" + (f", load ≤ {max(loads):.1f})" if loads else ")")
        if not complete:
            return shown + ", some rotations unmeasured", False
        return shown, worst <= limit_s if any(r["delay_s"] == 0 for r in rows) else None

    return judge


def calls(backend: str, limit: float) -> Callable[[dict[str, Any]], Judged | None]:
    def judge(data: dict[str, Any]) -> Judged | None:
        per = data.get("per_rotation", {}).get("rotator")
        if per is None:
            return None
        value = per[backend]
        return f"{value:.2f} (N={data['n']})", value <= limit

    return judge


def cpu_split(data: dict[str, Any]) -> Judged | None:
    scaled = data.get("scaled")
    if scaled is None:
        return None
    split = data["split"]
    sdks = ", ".join(
        f"{b} {scaled.get(b, 0):.1f}" for b in ("AWS SDK", "Vault SDK", "HTTP (httpx)")
    )
    store = scaled.get("state store", 0.0)
    return (
        f"of {sum(scaled.values()):.1f} ms: SDKs {split['sdk_ms']:.1f} ms ({sdks}), "
        f"rotator's own {split['own_ms']:.1f} ms, state store {store:.1f} ms, "
        f"rest {split['rest_ms'] - store:.1f} ms (N={data['n']}, {_load(data)})"
    ), None


def cli(command: str, limit_s: float) -> Callable[[dict[str, Any]], Judged | None]:
    def judge(data: dict[str, Any]) -> Judged | None:
        rows = data.get("rows", [])
        row = next((r for r in rows if r["command"] == command and r["compiled"]), None)
        if row is None:
            return None
        shown = f"{row['median_s']:.3f} s (CPU {row['cpu_median_s']:.3f} s, {_load(row)})"
        ok = row["median_s"] <= limit_s
        if command == "status" and data["targets_n"] != 1000:
            return f"at N={data['targets_n']}: {shown}", None
        if not data.get("compiled"):  # timed as found (--no-compile)
            return f"not compiled first: {shown}", None
        return shown, ok

    return judge


LINES: tuple[Line, ...] = (
    Line("calls per Vault+AWS rotation ≤ 16", "calls", calls("all", 16)),
    Line("AWS calls per rotation ≤ 8", "calls", calls("aws", 8)),
    Line("Vault calls per rotation ≤ 4", "calls", calls("vault", 4)),
    Line("Mistral calls per rotation ≤ 4", "calls", calls("mistral", 4)),
    Line("durable (state-store write) transactions per rotation ≤ 8", "calls", calls("writes", 8)),
    Line("rotator CPU per rotation ≤ 25 ms (N=1000, L=20 ms)", "fleet", fleet_cpu(25)),
    Line("CPU per rotation split: SDKs vs rotator's own (L=20 ms)", "cpu_split", cpu_split),
    Line("≥ 5x faster than the sequential baseline (N=1000, L=20 ms)", "fleet", speedup(20, 5)),
    Line("≥ 2x faster than the sequential baseline (N=1000, L=0)", "fleet", speedup(0, 2)),
    Line("idle RSS ≤ 80 MB with 1000 targets", "footprint", footprint(1000, "idle_rss_mb", 80)),
    Line("idle RSS ≤ 120 MB with 10000 targets", "footprint", footprint(10000, "idle_rss_mb", 120)),
    Line("ready ≤ 1 s with 1000 targets (/readyz)", "footprint", footprint(1000, "ready_s", 1)),
    Line("ready ≤ 3 s with 10000 targets (/readyz)", "footprint", footprint(10000, "ready_s", 3)),
    Line("peak RSS during `rotate --all` of 1000 ≤ 150 MB", "fleet", fleet_peak_rss(150)),
    Line("`rotator --version` ≤ 0.15 s (compiled bytecode)", "cli_timing", cli("version", 0.15)),
    Line("`rotator status` over 1000 targets ≤ 0.6 s (compiled)", "cli_timing", cli("status", 0.6)),
    Line("activation noticed ≤ 1 s after it happens, every D incl. 0", "verify_latency", seen(1)),
)


def goals(source: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The budget lines ``source`` measures, judged on ``data`` (a benchmark's results)."""
    out = []
    for line in LINES:
        judged = line.judge(data) if line.source == source else None
        if judged is not None:
            out.append({"what": line.what, "value": judged[0], "ok": judged[1]})
    return out
