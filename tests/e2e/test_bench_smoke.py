"""The benchmark scripts still run: each in its smallest configuration, writing well-formed JSON.

The three benchmarks run side by side (each starts its own stand-in, OpenBao and moto), into a
temporary results folder, then ``bench/results.py`` assembles a page from them. Figures are not
judged (no timed assertions): only that every run completed and reported what it measured.
"""

from __future__ import annotations

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
    """Fleet (with its baseline), footprint and verification latency each complete on two
    targets, and results.py assembles their fragments into one page."""
    runs = run_all(
        {
            "fleet": ["--sizes", "2", "--latencies-ms", "0"],
            "footprint": ["--sizes", "2", "--idle", "1"],
            "verify_latency": ["--delays", "0", "--targets", "2"],
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
    for data in runs.values():
        assert data["targets"], "each benchmark judges its targets"
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
    for heading in ("## Targets", "Fleet rotation", "Footprint", "Verification latency"):
        assert heading in text
