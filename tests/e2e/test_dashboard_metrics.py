"""Every metric the Grafana dashboard and the alert rules query exists in a live ``/metrics``.

A real ``rotator run`` (stand-in, OpenBao, moto) rotates one target and fails another, so every
labelled series has samples; its ``/metrics`` is then the reference. Each PromQL expression of
``deploy/grafana/rotator-dashboard.json`` and of the PrometheusRule is read by a small PromQL
lexer (:func:`promql_usage`): every metric it names must be a sample name of the live output
(so a histogram is queried as ``_bucket``/``_sum``/``_count``), and every label it matches or
groups by must be one those samples carry, or one Prometheus adds to a scraped target.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rotator.daemon.metrics import CONDITIONS
from rotator.engine.steps import Outcome
from tests.e2e.test_daemon_run import TOKEN, Daemon, daemons, wait_until, write_config
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e
__all__ = ["daemons"]  # the fixture, shared with test_daemon_run

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/rotator-dashboard.json"
RULES = ROOT / "deploy/kubernetes/base/prometheusrule.yaml"

TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
)
"""Labels Prometheus attaches to every series of a target discovered through a ServiceMonitor."""
SYNTHETIC: dict[str, frozenset[str]] = {"up": frozenset()}
"""Series Prometheus itself records for each target (with :data:`TARGET_LABELS` only)."""
LABEL_VALUES = {"outcome": frozenset(Outcome), "condition": frozenset(CONDITIONS)}
"""Every value rotator gives these labels (a live run shows only the outcomes that happened)."""

# --------------------------------------------------------------------------------------------
# A PromQL lexer: enough to find selectors, matchers and grouping labels, never fooled by
# strings, range durations or Grafana variables.
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![A-Za-z0-9_]))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[=<>+\-*/%^@,(){}])
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset(
    [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
    ]
)
_AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ]
)
"""Aggregation operators: ``sum by (x) (...)`` has no ``(`` right after the name."""
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})


@dataclass
class Usage:
    """What one expression uses: metric name → labels it matches on; labels it groups by; the
    values it compares labels to with ``=``."""

    matchers: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)
    equals: set[tuple[str, str]] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def promql_usage(expr: str) -> Usage:
    """The metrics, matcher labels and grouping labels of a PromQL expression."""
    tokens = _tokens(expr)
    usage = Usage()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in _GROUPING and following == "(":
            end = _closing(tokens, i + 1, "(", ")")
            usage.grouping.update(t for k, t in tokens[i + 2 : end] if k == "ident")
            i = end + 1
        elif kind == "ident" and following != "(" and text not in _KEYWORDS | _AGGREGATIONS:
            i = _selector(tokens, i + 1, text, usage)
        elif text == "{":
            i = _selector(tokens, i, None, usage)
        else:
            i += 1
    return usage


def _closing(tokens: list[tuple[str, str]], start: int, opening: str, closing: str) -> int:
    """Index of the token closing the bracket at ``start``."""
    depth = 0
    for index in range(start, len(tokens)):
        if tokens[index][1] == opening:
            depth += 1
        elif tokens[index][1] == closing:
            depth -= 1
            if depth == 0:
                return index
    raise ValueError(f"unbalanced {opening!r}")


def _selector(tokens: list[tuple[str, str]], i: int, name: str | None, usage: Usage) -> int:
    """Record the selector ``name{...}`` whose ``{`` (if any) is at ``i``; the index after it."""
    labels: set[str] = set()
    if i < len(tokens) and tokens[i][1] == "{":
        end = _closing(tokens, i, "{", "}")
        body = tokens[i + 1 : end]
        for j in range(0, len(body), 4):
            if len(body[j : j + 3]) < 3:
                raise ValueError(f"incomplete label matcher in {name}{{...}}")
            label, op, value = body[j : j + 3]
            if label[0] != "ident" or op[1] not in _MATCH_OPS or value[0] != "string":
                raise ValueError(f"not a label matcher: {label[1]} {op[1]} {value[1]}")
            if label[1] == "__name__" and op[1] == "=":
                name = value[1][1:-1]
            else:
                labels.add(label[1])
                if op[1] == "=":
                    usage.equals.add((label[1], value[1][1:-1]))
        i = end + 1
    if name is None:
        raise ValueError("a selector without a metric name")
    usage.matchers.setdefault(name, set()).update(labels)
    return i


def problems(expr: str, live: Mapping[str, frozenset[str]]) -> list[str]:
    """What ``expr`` asks of ``live`` (sample name → its label names) that is not there."""
    usage = promql_usage(expr)
    found: list[str] = []
    if not usage.matchers:
        found.append(f"no metric in {expr!r}")
    known: set[str] = set(TARGET_LABELS)
    for name, labels in usage.matchers.items():
        has = SYNTHETIC.get(name, live.get(name))
        if has is None:
            found.append(f"{name}: not in the live /metrics output")
            continue
        known |= has
        unknown = labels - has - TARGET_LABELS
        if unknown:
            found.append(f"{name}: no label {', '.join(sorted(unknown))}")
    for label, value in sorted(usage.equals):
        if label in LABEL_VALUES and value not in LABEL_VALUES[label]:
            found.append(f'{label}="{value}": not a value rotator gives {label}')
    ungrouped = usage.grouping - known
    if ungrouped:
        found.append(f"groups by {', '.join(sorted(ungrouped))}, which no metric here has")
    return found


_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?P<selector>.*),\s*(?P<label>[A-Za-z_]\w*)\s*\)\s*$"
)


def variable_problems(query: str, live: Mapping[str, frozenset[str]]) -> list[str]:
    """A Grafana ``label_values(selector, label)`` query: its selector, and the label's
    presence on the selected metric."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        return [f"not a label_values() query: {query!r}"]
    found = problems(match["selector"], live)
    label = match["label"]
    for name in promql_usage(match["selector"]).matchers:
        if label not in live.get(name, frozenset()) | TARGET_LABELS:
            found.append(f"{name}: no label {label} to list values of")
    return found


def live_labels(text: str) -> dict[str, frozenset[str]]:
    """Sample name → the label names its samples carry, from a Prometheus text exposition."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(names) for name, names in labels.items()}


def dashboard_queries() -> tuple[list[str], list[str]]:
    """(every panel target's expr, every query variable's query) of the dashboard."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    board = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in walk(board["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    variables = [var["definition"] for var in board["templating"]["list"] if var["type"] == "query"]
    return exprs, variables


def rule_exprs() -> list[str]:
    """Every ``expr`` of the PrometheusRule shipped with the Kubernetes manifests."""
    rule = yaml.safe_load(RULES.read_text())
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def family_of(sample: str, live: Mapping[str, frozenset[str]]) -> str:
    """The metric family of a sample name (histogram and counter suffixes removed)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and f"{sample[: -len(suffix)]}_bucket" in live:
            return sample[: -len(suffix)]
    return sample


# --------------------------------------------------------------------------------------------
# The checker itself, on a fixed exposition: it finds what it must find.
# --------------------------------------------------------------------------------------------

SAMPLE = """\
# HELP rotator_rotations_total Rotations.
# TYPE rotator_rotations_total counter
rotator_rotations_total{target="a",outcome="promoted"} 1.0
# HELP rotator_rotation_duration_seconds Duration.
# TYPE rotator_rotation_duration_seconds histogram
rotator_rotation_duration_seconds_bucket{target="a",le="1.0"} 0.0
rotator_rotation_duration_seconds_bucket{target="a",le="+Inf"} 1.0
rotator_rotation_duration_seconds_sum{target="a"} 3.0
rotator_rotation_duration_seconds_count{target="a"} 1.0
# HELP rotator_leader Leader.
# TYPE rotator_leader gauge
rotator_leader 1.0
"""


def test_checker_accepts_what_the_exposition_has() -> None:
    """Suffixed histogram samples, target labels, `le` grouping, strings holding braces, ranges
    and Grafana variables all pass on an exposition that has them."""
    live = live_labels(SAMPLE)
    ok = [
        'sum by (target, outcome) (increase(rotator_rotations_total{target=~"$target"}[5m]))',
        (
            "histogram_quantile(0.9, sum by (le) (rate(rotator_rotation_duration_seconds_bucket"
            '{job="x", target="}{"}[$__rate_interval])))'
        ),
        "rotator_leader offset 1h unless rotator_leader",
        'sum by (namespace, job) (rotator_leader{job="rotator"}) == 0',
        'absent(up{job="rotator"})',
        '{__name__="rotator_leader", pod!=""}',
    ]
    for expr in ok:
        assert problems(expr, live) == [], expr
    assert variable_problems("label_values(rotator_rotations_total, target)", live) == []


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(rotator_rotation_total[5m])", "rotator_rotation_total: not in the live"),
        ("rotator_rotations", "rotator_rotations: not in the live"),
        ("rotator_rotation_duration_seconds", "rotator_rotation_duration_seconds: not in"),
        ('rotator_leader{target="a"}', "rotator_leader: no label target"),
        ('rotator_rotations_total{outcom="stuck"}', "rotator_rotations_total: no label outcom"),
        ("sum by (step) (rotator_rotations_total)", "groups by step"),
        ('{__name__="rotator_leder"}', "rotator_leder: not in the live"),
        ("vector(1)", "no metric in"),
        ('rotator_rotations_total{outcome="failed"}', 'outcome="failed": not a value'),
    ],
)
def test_checker_reports_a_misspelled_metric_or_label(expr: str, expected: str) -> None:
    """A misspelled metric, a histogram queried without its suffix, a label the metric lacks
    and a grouping label nobody has are each reported."""
    found = problems(expr, live_labels(SAMPLE))
    assert any(expected in line for line in found), found


def test_checker_reports_a_variable_listing_a_missing_label() -> None:
    """A template variable listing values of a label its metric lacks is reported."""
    found = variable_problems("label_values(rotator_leader, target)", live_labels(SAMPLE))
    assert found == ["rotator_leader: no label target to list values of"]


def test_per_target_series_are_kept_apart_by_namespace() -> None:
    """Every dashboard query that groups per-target series ``by (…target…)`` keeps the namespace
    too, so two deployments' targets of the same name are never merged into one row or line."""
    exprs, _ = dashboard_queries()
    merged = [
        e
        for e in exprs
        for group in re.findall(r"\bby \(([^)]*)\)", e)
        if "target" in group.replace(" ", "").split(",")
        and "namespace" not in group.replace(" ", "").split(",")
    ]
    assert merged == []


def test_targets_table_tells_never_rotated_from_not_ready() -> None:
    """The Targets table's Ready column uses the state timeline's encoding (True * 2 + Unknown)
    and maps 0, 1 and 2 to False, Unknown and True: a target never rotated is not shown False."""
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    table, timeline = panels["Targets"], panels["Ready condition"]
    ready = next(t["expr"] for t in table["targets"] if t["refId"] == "A")
    assert ready == timeline["targets"][0]["expr"]
    (override,) = [
        o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Ready"
    ]
    (mapping,) = [p["value"] for p in override["properties"] if p["id"] == "mappings"]
    texts = {k: v["text"] for k, v in mapping[0]["options"].items()}
    assert texts == {"0": "False", "1": "Unknown", "2": "True"}


# --------------------------------------------------------------------------------------------
# Against a live daemon
# --------------------------------------------------------------------------------------------


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """Prometheus' own linter of the exposition format (naming, units, help, types)."""
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: scripts/ensure-tools installs it (Debian: prometheus)")
    return subprocess.run(
        [tool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_promtool_lint_reports_a_badly_named_metric() -> None:
    """The lint used on the live /metrics below does report problems."""
    bad = "# HELP rotator_x Rotations.\n# TYPE rotator_x counter\nrotator_x 1\n"
    result = promtool_check_metrics(bad)
    assert result.returncode == 3, result
    assert 'counter metrics should have "_total" suffix' in result.stdout + result.stderr


def _scrape_when_complete(url: str, ok: str, failing: str) -> str:
    """The daemon's /metrics once both rotations and their state gauges are shown."""

    def complete() -> str | None:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        live = {
            (s.name, s.labels.get("target"))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        wanted = {
            ("rotator_rotations_total", ok),
            ("rotator_rotations_total", failing),
            ("rotator_rotation_step_failures_total", failing),
            ("rotator_key_expiration_timestamp_seconds", ok),
            ("rotator_previous_keys_pending_revocation", ok),
        }
        return text if wanted <= live else None

    text: str = wait_until(complete, "both rotations and the refreshed gauges in /metrics")
    return text


def test_dashboard_and_alerts_query_only_live_metrics(
    stack: Stack, state_url: str, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """After a real daemon rotated one target and failed another, every metric and label in
    the dashboard's queries, its variables and every alert expression is in the live /metrics,
    and the dashboard shows every metric family rotator exports."""
    ok = stack.add_target(("vault", "aws"))
    stack.seed(ok)
    failing = stack.add_target(("aws",))  # never seeded: its secret does not exist
    policy = {"schedule": "every 30d", "grace": "1h", "jitter": "0s"}
    config = write_config(stack, tmp_path / "rotator.yaml", state_url=state_url, policy=policy)
    daemon = Daemon(stack, config, tmp_path / "daemon.log")
    daemons.append(daemon)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=daemon.url, timeout=10) as api:
        for spec in (ok, failing):
            answer = api.post(f"/api/v1/targets/{spec.name}/rotate", headers=auth)
            assert answer.status_code == 202, answer.text
    text = _scrape_when_complete(daemon.url, ok.name, failing.name)
    assert daemon.terminate() == 0
    lint = promtool_check_metrics(text)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout + lint.stderr == "", "promtool check metrics found problems"
    live = live_labels(text)

    exprs, variables = dashboard_queries()
    rules = rule_exprs()
    assert len(exprs) >= 20, "the dashboard's queries were not found"
    assert len(variables) == 3, "the dashboard's variables were not found"
    assert len(rules) >= 11, "the alert rules were not found"
    found = {
        f"{where}: {expr!r}: {problem}"
        for where, group in (("dashboard", exprs), ("rule", rules))
        for expr in group
        for problem in problems(expr, live)
    }
    found |= {f"variable {q!r}: {p}" for q in variables for p in variable_problems(q, live)}
    assert not found, "\n".join(sorted(found))

    shown = {family_of(name, live) for expr in exprs for name in promql_usage(expr).matchers}
    exported = {family_of(name, live) for name in live if name.startswith("rotator_")}
    assert exported - shown == set(), "metric families the dashboard does not show"
