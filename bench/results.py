"""Assembles ``bench/RESULTS.md`` from the fragments in ``bench/results/``.

Each benchmark writes ``bench/results/<name>.json`` and ``<name>.md``. This script puts them in
one page: where and when they were measured, every line of issue 14's budget (``budget.py``)
measured before (``<name>-before14.json``, the figures at the issue's start) and after
(``<name>.json``) with its verdicts, the findings (``notes.md``, written by hand from the
profiles), a detailed before/after comparison, then each fragment as it was written (the chaos
campaign's ``chaos.md`` included when present). Earlier pages, kept with their results in a
folder of ``bench/results/`` each (``2026-11-27/``), are linked.

Usage: ``python bench/results.py`` (reads and writes files only; takes a second).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import budget
from world import RESULTS, machine, table, verdict

PAGE = RESULTS.parent / "RESULTS.md"
ORDER = ("fleet", "footprint", "verify_latency", "calls", "cpu_split", "cli_timing", "chaos")
BEFORE = "-before14"
"""The suffix of the results taken at the start of issue 14, the "before" of its budget."""


def order(name: str) -> tuple[int, int, str]:
    """Benchmarks in :data:`ORDER` (others last), each: after, before, then any other run."""
    base = next((b for b in ORDER if name == b or name.startswith(f"{b}-")), None)
    kind = 0 if name == base else 1 if name == f"{base}{BEFORE}" else 2
    return (ORDER.index(base) if base else len(ORDER), kind, name)


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fragment(results: Path, name: str) -> str | None:
    path = results / f"{name}.md"
    return path.read_text().strip() if path.exists() else None


def where(runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, data in runs.items():
        m = data.get("machine", {})
        load_avg = ", ".join(f"{x:.1f}" for x in m.get("loadavg", []))
        code = m.get("bytecode", {})
        rows.append(
            [
                f"`{name}`",
                m.get("date", "?"),
                m.get("commit", "?"),
                m.get("rotator_commit", "-"),
                data.get("label", ""),
                load_avg,
                f"{code.get('rotator', '?')}, {code.get('site-packages', '?')}" if code else "-",
                data.get("elapsed_s") or "-",
            ]
        )
    headers = [
        "results",
        "measured (UTC)",
        "commit",
        "rotator/ at",
        "run",
        "load 1/5/15 min",
        "bytecode (rotator, site-packages)",
        "took s",
    ]
    return table(headers, rows)


def targets(runs: dict[str, dict[str, Any]]) -> str:
    """Every budget line: the figure and verdict before and after, and where they come from."""
    rows = []
    for line in budget.LINES:
        cells: list[object] = [line.what]
        sources = []
        for name in (f"{line.source}{BEFORE}", line.source):
            data = runs.get(name)
            judged = line.judge(data) if data is not None else None
            if judged is None:
                cells += ["-", "-"]
                continue
            cells += [judged[0], f"**{verdict(judged[1])}**"]
            sources.append(f"`{name}`")
        rows.append([*cells, ", ".join(sources) or "-"])
    headers = ["budget line", "before (issue 14 start)", "verdict", "after", "verdict", "from"]
    return table(headers, rows)


def archives(results: Path) -> list[str]:
    """Links to the pages kept with earlier results, one folder each."""
    return [
        f"- [{page.parent.name}](results/{page.parent.name}/RESULTS.md)"
        for page in sorted(results.glob("*/RESULTS.md"))
    ]


def fleet_change(before: dict[str, Any], after: dict[str, Any]) -> list[list[object]]:
    old = {(r["n"], r["latency_s"]): r for r in before["rows"]}
    rows: list[list[object]] = []
    for row in after["rows"]:
        was = old.get((row["n"], row["latency_s"]))
        if was is None:
            continue
        d, w = row["derived"], was["derived"]
        rows.append(
            [
                f"fleet N={row['n']} L={int(row['latency_s'] * 1000)} ms",
                (
                    f"CPU {w['rotator_cpu_ms_per_rotation']:.0f} → "
                    f"{d['rotator_cpu_ms_per_rotation']:.0f} ms/rotation; "
                    f"{w['rotator_per_s']} → {d['rotator_per_s']} rotations/s; "
                    f"vs baseline {w.get('speedup', '-')}x → {d.get('speedup', '-')}x"
                ),
            ]
        )
    return rows


def footprint_change(before: dict[str, Any], after: dict[str, Any]) -> list[list[object]]:
    old = {r["n"]: r for r in before["rows"]}
    rows: list[list[object]] = []
    for row in after["rows"]:
        was = old.get(row["n"])
        if was is None:
            continue
        if "error" in was or "error" in row:
            rows.append(
                [
                    f"footprint {row['n']} targets",
                    (
                        f"{was.get('error', 'ok')} → "
                        f"{row.get('error', 'ready in {}s'.format(row.get('ready_s')))}"
                    ),
                ]
            )
            continue
        rows.append(
            [
                f"footprint {row['n']} targets",
                (
                    f"ready {was['ready_s']} → {row['ready_s']} s; all planned "
                    f"{was['all_planned_s']} → {row['all_planned_s']} s; idle RSS "
                    f"{was['idle_rss_mb']} → {row['idle_rss_mb']} MB; idle CPU "
                    f"{was['idle_cpu_percent']} → {row['idle_cpu_percent']} %"
                ),
            ]
        )
    return rows


def verify_change(before: dict[str, Any], after: dict[str, Any]) -> list[list[object]]:
    old = {r["delay_s"]: r for r in before["rows"]}
    return [
        [
            f"verification D={row['delay_s']:.0f} s",
            (
                f"max lag to the journal {old[row['delay_s']]['lag_max_s']} → "
                f"{row.get('journaled_max_s', row['lag_max_s'])} s "
                f"(seen active: {row['lag_max_s']} s)"
            ),
        ]
        for row in after["rows"]
        if row["delay_s"] in old
    ]


def changes(runs: dict[str, dict[str, Any]]) -> str | None:
    compare = {
        "fleet": fleet_change,
        "footprint": footprint_change,
        "verify_latency": verify_change,
    }
    rows: list[list[object]] = []
    for name, diff in compare.items():
        before, after = runs.get(f"{name}{BEFORE}"), runs.get(name)
        if before is not None and after is not None:
            rows += diff(before, after)
    return table(["measure", "before → after"], rows) if rows else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the fragments' folder")
    parser.add_argument("--page", type=Path, default=PAGE, help="the page to write")
    args = parser.parse_args()
    names = sorted((p.stem for p in args.results.glob("*.json")), key=order)
    runs = {n: d for n in names if (d := load(args.results, n)) is not None}
    here = machine(with_bytecode=False)
    parts = [
        "# rotator benchmarks",
        "",
        (
            "Measured on one machine by the scripts in `bench/` (see `bench/README.md`); the "
            "servers (Mistral stand-in, OpenBao dev server, moto) run on the same machine, so "
            "wall times include their CPU; CPU and memory figures are rotator's process alone. "
            "Other work shared the cores: the load averages are part of each figure."
        ),
        "",
        (
            f"Machine: {here['platform']}, {here['cpus']} CPUs, Python {here['python']}. "
            f"Page assembled {here['date']} at commit {here['commit']}."
        ),
        "",
        "## Runs",
        "",
        where(runs),
        "",
        "## Targets (issue 14 budget)",
        "",
        (
            "On this 2-core machine, shared with other work (load averages above); "
            '"before" is rotator as it was when issue 14 started, "after" the latest run. '
            "A figure at a smaller N than the line names has no verdict (n/a)."
        ),
        "",
        targets(runs),
        "",
    ]
    notes = fragment(args.results, "notes")
    if notes is not None:
        parts += ["## Findings", "", notes, ""]
    diff = changes(runs)
    if diff is not None:
        parts += ["## Before and after, in detail", "", diff, ""]
    parts += ["## Results", ""]
    for name in names:
        text = fragment(args.results, name)
        if text is not None:
            parts += [text, ""]
    earlier = archives(args.results)
    if earlier:
        parts += ["## Earlier results", "", *earlier, ""]
    args.page.write_text("\n".join(parts).rstrip() + "\n")
    print(f"wrote {args.page} from {len(runs)} result files")


if __name__ == "__main__":
    main()
