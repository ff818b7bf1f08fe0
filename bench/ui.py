"""The status page's weight and server time for N targets (default 100 and 1000).

For each N, a configuration of N targets in every state (``tests/support/ui_world.py``: stuck,
failing, overdue, rotating, draining, idle) is rendered by the daemon's real ``/ui/`` app
(:class:`rotator.daemon.ui.app.StatusPage` mounted by :func:`rotator.daemon.http.build_app`),
called as ASGI in process: no socket, no browser. Printed, per N:

- **weight**: the bytes of the overview's HTML and of its stylesheet (the page loads nothing
  else but its 0.4 kB script);
- **server time**: from the request entering the app to its last body byte, for the overview
  and a target's page (median and 95th percentile of ``--runs`` requests after a warm-up);
  the facts come from memory here, so this is the page's own cost;
- **state read**: ``Engine.list_targets`` and ``Engine.status`` on a SQLite state database
  holding N registered targets (what the daemon's feed reads for an overview), wall and CPU
  time (the store works on a thread of its own: its CPU time counts, its waits do not).

The machine's load average is printed beside: the figures are CPU time on a shared 2-core
machine. Usage: ``.venv/bin/python bench/ui.py [--sizes 100,1000] [--runs 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the synthetic world lives in tests/support
    sys.path.insert(0, str(ROOT))

from rotator.app.wiring import build_engine  # noqa: E402
from rotator.daemon.control import Health  # noqa: E402
from rotator.daemon.http import build_app  # noqa: E402
from rotator.daemon.metrics import Metrics  # noqa: E402
from rotator.daemon.ui.app import StatusPage  # noqa: E402
from rotator.logs import configure_logging  # noqa: E402
from tests.support.ui_world import FakeSource, config, fleet, name_of  # noqa: E402

BUDGET_BYTES = 50 * 1024
"""HTML + CSS of the overview for 100 targets (issue 16)."""
BUDGET_MS = 50.0
"""Server time of the overview for 1000 targets (issue 16)."""


class _Control:
    health = Health()


async def request(app: Any, path: str) -> tuple[float, int, bytes]:
    """One GET through the ASGI app: (seconds to the last body byte, status, body)."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1:9402")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9402),
    }
    body = bytearray()
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    started, cpu = time.perf_counter(), time.process_time()
    await app(scope, receive, send)
    CPU.append(time.process_time() - cpu)
    return time.perf_counter() - started, status, bytes(body)


CPU: list[float] = []
"""The CPU time of each request, in the order made (wall time includes waiting for a core)."""


def summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{statistics.median(ms):.1f} ms (p95 {p95:.1f})"


async def page_figures(n: int, runs: int) -> dict[str, str]:
    page = StatusPage(FakeSource(fleet(n)))
    ui = page.app(admin_token=None, loopback=True)
    app = build_app(_Control(), admin_token=None, registry=Metrics().registry, ui=ui)
    _, status, html = await request(app, "/ui/")
    assert status == 200, status
    _, _, css = await request(app, "/ui/ui.css")
    overview, target, cpu = [], [], []
    for _ in range(runs):
        overview.append((await request(app, "/ui/"))[0])
        cpu.append(CPU[-1])
        target.append((await request(app, f"/ui/targets/{name_of(0)}"))[0])
    return {
        "html": f"{len(html) / 1024:.1f} kB",
        "css": f"{len(css) / 1024:.1f} kB",
        "weight": f"{(len(html) + len(css)) / 1024:.1f} kB",
        "weight_bytes": str(len(html) + len(css)),
        "overview": summary(overview),
        "overview_cpu": f"{statistics.median(cpu) * 1000:.1f} ms",
        "overview_ms": f"{statistics.median(overview) * 1000:.1f}",
        "target": summary(target),
    }


async def store_figures(n: int, runs: int) -> str:
    """list_targets + status on a SQLite store of ``n`` registered targets."""
    with tempfile.TemporaryDirectory() as work:
        cfg = config([name_of(i) for i in range(n)])
        state = cfg.state.model_copy(update={"url": f"sqlite:///{work}/state.db"})
        cfg = cfg.model_copy(update={"state": state})
        engine = await build_engine(cfg)
        try:
            for target in cfg.targets:
                await engine.register_target(target.name)
            await engine.status(await engine.list_targets())
            seconds, cpu = [], []
            for _ in range(runs):
                started, cpu_started = time.perf_counter(), time.process_time()
                await engine.status(await engine.list_targets())
                seconds.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
            return f"{summary(seconds)}, CPU {statistics.median(cpu) * 1000:.1f} ms"
        finally:
            await engine.close()


async def main() -> None:
    configure_logging(level="WARNING", fmt="console", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-store", action="store_true", help="skip the state read")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(
        "| targets | HTML | CSS | HTML+CSS | overview: server time | its CPU time"
        " | target page | state read |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sizes:
        figures = await page_figures(n, args.runs)
        store = "-" if args.no_store else await store_figures(n, min(args.runs, 10))
        print(
            f"| {n} | {figures['html']} | {figures['css']} | {figures['weight']} "
            f"| {figures['overview']} | {figures['overview_cpu']} | {figures['target']} | {store} |"
        )
        if n == 100 and int(figures["weight_bytes"]) > BUDGET_BYTES:
            print(f"  over budget: {figures['weight_bytes']} bytes > {BUDGET_BYTES}")
        if n == 1000 and float(figures["overview_ms"]) > BUDGET_MS:
            print(f"  over budget: {figures['overview_ms']} ms > {BUDGET_MS:g} ms")
    print()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
