"""The benchmark scripts still run: each in its smallest configuration, writing well-formed JSON.

The benchmarks run side by side (each starts its own stand-in, OpenBao and moto), into a
temporary results folder, then ``bench/results.py`` assembles a page from them. Figures are not
judged (no timed assertions): only that every run completed and reported what it measured.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"
GUARD = 120.0
"""Seconds a tiny benchmark may take before the test gives up (a hang guard, not a timing)."""


def budget_lines() -> Any:
    """``bench/budget.py``'s lines (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_budget", BENCH / "budget.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.LINES


def run_all(commands: dict[str, list[str]], results: Path) -> dict[str, dict[str, Any]]:
    """Run the benchmark scripts at once; every one must exit 0. Their JSON, by name."""
    started = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), *argv, "--results", str(results)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, argv in commands.items()
    }
    for name, process in started.items():
        output, _ = process.communicate(timeout=GUARD)
        assert process.returncode == 0, f"{name} failed:\n{output.decode(errors='replace')}"
    return {name: json.loads((results / f"{name}.json").read_text()) for name in commands}


def test_every_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """Fleet (with its baseline), footprint, verification latency, calls, the CPU split and the
    CLI timings each complete on two targets, and results.py assembles their fragments into one
    page whose Targets table has every budget line."""
    runs = run_all(
        {
            "fleet": ["--sizes", "2", "--latencies-ms", "0"],
            "footprint": ["--sizes", "2", "--idle", "1"],
            "verify_latency": ["--delays", "0", "--targets", "2"],
            "calls": ["--targets", "2"],
            "cpu_split": ["--targets", "2", "--latency-ms", "0"],
            "cli_timing": [
                "--targets",
                "2",
                "--runs",
                "1",
                "--warmup",
                "0",
                "--quick",
                "--no-compile",
            ],
        },
        tmp_path,
    )

    (fleet,) = runs["fleet"]["rows"]
    assert fleet["rotator"]["rotated"] == 2
    assert fleet["baseline"]["rotated"] == 2
    assert fleet["derived"]["rotator_cpu_ms_per_rotation"] > 0
    (idle,) = runs["footprint"]["rows"]
    assert "error" not in idle
    assert idle["idle_rss_mb"] > 0
    assert idle["ready_s"] > 0
    (verify,) = runs["verify_latency"]["rows"]
    assert len(verify["samples"]) == 2
    assert verify["outcomes"] == ["rotated"]
    calls = runs["calls"]["per_rotation"]
    assert calls["rotator"]["aws"] > 0
    assert calls["rotator"]["vault"] > 0
    assert calls["rotator"]["models"] > 0
    assert calls["rotator"]["writes"] > 0, "the state store's transactions are counted"
    assert calls["baseline"]["all"] > 0
    assert calls["baseline"]["writes"] == 0
    split = runs["cpu_split"]
    assert split["profiled"]["rotated"] == split["unprofiled"]["rotated"] == 2
    assert split["buckets"]["AWS SDK"] > 0
    assert split["buckets"]["rotator's own"] > 0
    assert {(r["command"], r["compiled"]) for r in runs["cli_timing"]["rows"]} == {
        ("version", True),
        ("status", True),
    }
    for data in runs.values():
        assert data["targets"], "each benchmark judges its budget lines"
        assert {"date", "commit", "loadavg"} <= set(data["machine"])

    page = tmp_path / "RESULTS.md"
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "results.py"),
            "--results",
            str(tmp_path),
            "--page",
            str(page),
        ],
        check=True,
        timeout=GUARD,
    )
    text = page.read_text()
    for heading in (
        "## Targets",
        "Fleet rotation",
        "Footprint",
        "Verification latency",
        "Calls per rotation",
        "CPU per rotation by bucket",
        "CLI timings",
    ):
        assert heading in text
    assert all(line.what in text for line in budget_lines())
