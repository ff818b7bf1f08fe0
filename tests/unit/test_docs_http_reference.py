"""docs/http-api.md lists exactly the daemon's routes and metrics.

Routes are the backticked first cells (``| `GET /livez` | …``) of tables whose header row starts
``| route |``; metrics those of tables whose header row starts ``| metric |``, with the type in
the second cell. The app is built by :func:`rotator.daemon.http.build_app` with an admin token
(so the API exists), the status page mounted, and a control and a source that are never
called; metric names come from a fresh
:class:`rotator.daemon.metrics.Metrics` registry (counters under their ``_total`` sample name).
The third cell lists each metric's labels; they are compared with the label names of a registry
fed through Metrics' public methods, so every family has samples. The outcomes and reasons the
rotation counters' rows list are :class:`~rotator.engine.steps.Outcome` (less ``planned``) and
:func:`~rotator.daemon.metrics.failure_reason`'s values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from starlette.routing import Mount, Route

from rotator.config import load_config
from rotator.daemon.control import Health
from rotator.daemon.http import BearerAuth, build_app
from rotator.daemon.metrics import _REASONS, Metrics
from rotator.daemon.ui.app import StatusPage
from rotator.daemon.ui.source import Snapshot, TargetHistory
from rotator.engine.engine import TargetStatus
from rotator.engine.rotation import RotationResult
from rotator.engine.steps import Outcome
from rotator.secret import Secret

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "http-api.md"
_FIRST_CELLS = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([^|]*?)\s*\|")
_HISTOGRAM_LABEL = "le"


@dataclass
class _UnusedControl:
    """Satisfies DaemonControl; building the app never calls it."""

    health: Health = field(default_factory=Health)

    def target_names(self) -> list[str]:
        raise AssertionError("not called")

    async def status(self) -> list[TargetStatus]:
        raise AssertionError("not called")

    def request_rotation(self, target: str, *, emergency: bool) -> str:
        raise AssertionError("not called")

    async def rotation_view(self, rotation_id: str) -> dict[str, object] | None:
        raise AssertionError("not called")


class _UnusedSource:
    """Satisfies StatusSource; building the status page never calls it."""

    async def snapshot(self) -> Snapshot:
        raise AssertionError("not called")

    async def history(self, target: str, *, rotations: int, audit: int) -> TargetHistory | None:
        raise AssertionError("not called")


def table_rows(markdown: str, header: str) -> dict[str, str]:
    """First cell (backticked) -> second cell, for the tables whose header starts ``header``."""
    rows: dict[str, str] = {}
    inside = False
    for line in markdown.splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        if re.match(rf"^\|\s*{header}\s*\|", line):
            inside = True
            continue
        found = _FIRST_CELLS.match(line)
        if inside and found:
            rows[found.group(1)] = found.group(2).strip("`")
    return rows


def app_routes() -> set[str]:
    """``METHOD /path`` of every route of the app, the API's included (HEAD left out)."""
    token = Secret("t0ken-for-docs")
    page = StatusPage(_UnusedSource())
    app = build_app(
        _UnusedControl(),
        admin_token=token,
        registry=Metrics().registry,
        ui=page.app(admin_token=token, loopback=True),
    )
    found: set[str] = set()

    def add(routes: list[object], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Route):
                found.update(
                    f"{m} {prefix}{route.path}" for m in route.methods or () if m != "HEAD"
                )
            elif isinstance(route, Mount):
                inner = route.app.app if isinstance(route.app, BearerAuth) else route.app
                add(list(getattr(inner, "routes", [])), prefix + route.path)

    add(list(app.routes), "")
    return found


def registry_metrics() -> dict[str, str]:
    """Exposed metric name -> type, from a fresh Metrics registry."""
    found: dict[str, str] = {}
    for family in Metrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        found[name] = family.type
    return found


def metric_cells(markdown: str) -> dict[str, list[str]]:
    """Metric name -> every cell of its row (type, labels, meaning), from the metric tables."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in markdown.splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        if re.match(r"^\|\s*metric\s*\|", line):
            inside = True
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([^`]+)`", cells[0])
        if inside and name:
            rows[name.group(1)] = cells[1:]
    return rows


def fed_registry_labels() -> dict[str, set[str]]:
    """Exposed metric name -> its label names, from a registry given one sample of everything
    through Metrics' public methods (the state gauges through a refresh of the demo config)."""
    metrics = Metrics()
    cfg = load_config(ROOT / "config" / "demo.yaml")
    now = datetime.now(UTC)
    status = TargetStatus(cfg.targets[0].name, "idle", "k", now, now, None, True, "")
    metrics.refresh(cfg, [status], [], now=now)
    metrics.observe_rotation(RotationResult(status.target, "r", Outcome.STUCK, error="x"), 1.0)
    metrics.observe_call("mistral", "create_key", "200", 0.1)
    metrics.set_leader(True)
    metrics.set_audit_head(3, "0" * 64)
    found: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        found[name] = {label for s in family.samples for label in s.labels} - {_HISTOGRAM_LABEL}
    return found


def documented_labels(markdown: str) -> dict[str, set[str]]:
    """Metric name -> the backticked label names of its labels cell (``—`` = none)."""
    return {
        name: set(re.findall(r"`([^`]+)`", cells[1]))
        for name, cells in metric_cells(markdown).items()
    }


def listed_after(cell: str, word: str) -> set[str]:
    """The backticked names in the parenthesis that follows ``word`` in a meaning cell."""
    found = re.search(rf"{word}[^(]*\(([^)]*)\)", cell) or re.search(rf"{word}: ([^|]*)", cell)
    assert found is not None, (word, cell)
    return set(re.findall(r"`([^`]+)`", found.group(1)))


def test_the_documented_labels_are_the_registrys_labels() -> None:
    """Each metric's labels column names exactly the label names its samples carry."""
    assert documented_labels(DOC.read_text(encoding="utf-8")) == fed_registry_labels()


def test_the_documented_outcomes_and_reasons_are_the_codes() -> None:
    """The rotation counter lists every counted outcome, the failure counter every reason."""
    cells = metric_cells(DOC.read_text(encoding="utf-8"))
    outcomes = listed_after(cells["rotator_rotations_total"][2], "by outcome")
    assert outcomes == {str(o) for o in Outcome} - {str(Outcome.PLANNED)}
    reasons = listed_after(cells["rotator_rotation_step_failures_total"][2], "coarse reason")
    assert reasons == {reason for _, reason in _REASONS} | {"error"}


def test_the_documented_routes_are_the_apps_routes() -> None:
    """Every route the daemon serves is documented, and every documented route exists."""
    documented = set(table_rows(DOC.read_text(encoding="utf-8"), "route"))
    assert documented == app_routes()


def test_the_documented_metrics_are_the_registrys_metrics_with_their_types() -> None:
    """Every metric of the registry is documented with its type, and no other metric is."""
    documented = table_rows(DOC.read_text(encoding="utf-8"), "metric")
    assert documented == registry_metrics()


def test_the_route_walk_reaches_inside_the_token_guarded_api() -> None:
    """The API routes behind the bearer-token wrapper are found with their prefix."""
    routes = app_routes()
    assert "POST /api/v1/targets/{name}/rotate" in routes
    assert "GET /ui/targets/{name}" in routes
    assert "GET /livez" in routes
    assert "HEAD /livez" not in routes


def test_a_missing_or_extra_row_changes_the_documented_set() -> None:
    """Rows outside a ``| metric |`` table are ignored; rows inside are read with their type."""
    doc = "| metric | type |\n| --- | --- |\n| `a_total` | counter |\n\n| `b` | gauge |\n"
    assert table_rows(doc, "metric") == {"a_total": "counter"}
