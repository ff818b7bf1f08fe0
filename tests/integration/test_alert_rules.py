"""The shipped alert rules, checked and unit-tested by Prometheus' own tool, promtool.

``deploy/prometheus/rotator-rules.yaml`` is the PrometheusRule's ``spec`` as a plain Prometheus
rules file (for a Prometheus without the operator, and for promtool). It is generated: the first
test regenerates it and compares, so it cannot drift from the PrometheusRule. Regenerate it with
``python -m tests.integration.test_alert_rules``.

``deploy/prometheus/rotator-rules*.test.yaml`` hold the input series and expected alerts; promtool
evaluates the rules over them. The tests here also prove that those files test something: every
alert has a case where it fires and one where it does not, the suite fails when any rule is made
to never fire or to always fire, and every input series is one rotator exports, with its labels.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.config import parse_config
from rotator.contracts import ManagedKey, TargetState
from rotator.daemon.metrics import Metrics
from rotator.engine.engine import TargetStatus

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES_FILE = RULES_DIR / "rotator-rules.yaml"
TEST_FILES = sorted(RULES_DIR.glob("rotator-rules*.test.yaml"))
SCRAPE_LABELS = {"job", "namespace", "instance", "pod"}
"""Labels Prometheus adds when it scrapes a pod (the ServiceMonitor's relabelling)."""

HEADER = """\
# GENERATED from deploy/kubernetes/base/prometheusrule.yaml (its spec): do not edit, regenerate
# with `python -m tests.integration.test_alert_rules` (a test compares the two).
# rotator's alert rules as a plain Prometheus rules file: `rule_files:` of a Prometheus without
# the operator, and what `promtool check rules` / `promtool test rules` read.
"""


def render_rules() -> str:
    """The rules file: the PrometheusRule's ``spec:`` block, dedented, comments kept."""
    lines = PROMETHEUS_RULE.read_text().splitlines()
    start = lines.index("spec:") + 1
    body = []
    for line in lines[start:]:
        if line and not line.startswith("  "):
            raise ValueError(f"unexpected top-level line after spec: {line!r}")
        body.append(line[2:])
    return HEADER + "\n".join(body).strip("\n") + "\n"


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: scripts/ensure-tools installs it (Debian: prometheus)")
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def shipped_alerts() -> dict[str, dict[str, Any]]:
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    return {r["alert"]: r for group in spec["groups"] for r in group["rules"]}


def test_rules_file_is_generated_from_the_prometheusrule() -> None:
    assert RULES_FILE.read_text() == render_rules(), (
        "deploy/prometheus/rotator-rules.yaml differs from the PrometheusRule's spec:"
        " regenerate it with `python -m tests.integration.test_alert_rules`"
    )
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    assert yaml.safe_load(RULES_FILE.read_text()) == spec


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(shipped_alerts())} rules found" in result.stdout
    assert len(shipped_alerts()) == 11


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *(f.name for f in TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES) == 2


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == set(shipped_alerts())
    assert quiet == set(shipped_alerts())


@pytest.mark.parametrize(
    ("expr", "checked_by"),
    [("vector(1) == 0", "a firing case"), ("vector(1)", "a quiet case")],
    ids=["never-fires", "always-fires"],
)
def test_the_unit_tests_fail_when_a_rule_is_broken(
    tmp_path: Path, expr: str, checked_by: str
) -> None:
    """Every rule replaced by one that never (or always) fires makes promtool fail, and its
    failures name every alert: each one's expectations are really checked."""
    spec = yaml.safe_load(RULES_FILE.read_text())
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule["expr"] = expr
    (tmp_path / RULES_FILE.name).write_text(yaml.safe_dump(spec))
    for path in TEST_FILES:
        shutil.copy(path, tmp_path / path.name)
    result = promtool("test", "rules", *(f.name for f in TEST_FILES), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = set(re.findall(r"alertname: (\w+),", result.stdout + result.stderr))
    assert failed == set(shipped_alerts()), f"alerts without {checked_by}"


def exported_samples() -> dict[str, set[str]]:
    """Sample name → label names, as a leading rotator with one target exports them."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cfg = parse_config(
        {
            "mistral": {
                "admin_key": "sk-admin-test",
                "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce",
            },
            "stores": {"aws": {"type": "aws_secrets_manager", "region": "eu-west-1"}},
            "targets": [
                {
                    "name": "prod-backend",
                    "workspace_id": "019b2bd7-96e7-7219-8c0b-45a73da50088",
                    "destinations": [{"store": "aws", "secret_id": "mistral/prod-backend"}],
                }
            ],
        },
        env={},
    )
    metrics = Metrics()
    metrics.set_leader(True)
    key = ManagedKey("k1", "0123456789ab", now, None, "r1")
    state = TargetState("prod-backend", key, (), None, now, 0, None, now)
    status = TargetStatus(
        target="prod-backend",
        state="idle",
        key_id="k1",
        last_rotated_at=now,
        next_due_at=now + timedelta(days=7),
        revoke_due_at=None,
        compliant=True,
        reason="",
    )
    metrics.refresh(cfg, [status], [state], now=now)
    samples: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


SERIES = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}$")


def test_input_series_are_what_rotator_exports() -> None:
    """Each input series names a sample rotator exports (or Prometheus' ``up``), with exactly
    its labels plus the scrape's: the tests cannot pass on series rotator never exports."""
    exported = exported_samples()
    exported["up"] = set()
    seen = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for item in case["input_series"]:
                match = SERIES.match(item["series"].replace(" ", ""))
                assert match, item["series"]
                name = match["name"]
                labels = {pair.split("=", 1)[0] for pair in match["labels"].split(",")}
                assert name in exported, f"{path.name}: rotator exports no {name}"
                assert labels == exported[name] | SCRAPE_LABELS, f"{path.name}: {item['series']}"
                seen.add(name)
    used = {
        name
        for rule in shipped_alerts().values()
        for name in re.findall(r"\b(rotator_\w+|up)\{", rule["expr"])
    }
    assert used <= seen, f"series the rules read but no test feeds: {used - seen}"


if __name__ == "__main__":
    RULES_FILE.write_text(render_rules())
    print(f"wrote {RULES_FILE.relative_to(ROOT)}", file=sys.stderr)
