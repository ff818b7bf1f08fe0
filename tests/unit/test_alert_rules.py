"""The shipped alert rules mean what they say: each rule's expression, evaluated over the series
rotator itself exports in typical situations, fires when an operator must act and stays quiet
in normal operation.

The series come from rotator's own code: a small simulated daemon plans each fire with
:func:`~rotator.daemon.scheduler.plan_fire` (what ``rotator run`` schedules and exports as the
next rotation), records failures with :func:`~rotator.engine.rotation.failure_backoff`, and
exports through :class:`~rotator.daemon.metrics.Metrics` (refresh, observe_rotation,
set_leader), every 5 minutes. The expressions are evaluated by :class:`PromQL` below, a small
evaluator of the PromQL subset the rules use (instant and range selectors, ``time()``,
``absent``, ``increase`` without extrapolation, ``max``/``sum`` with ``by``/``without``,
arithmetic, comparisons, ``and``, ``or``), with Prometheus' ``for:`` semantics. It refuses
anything else, so a rule written with a construct it does not know fails here rather than
passing unevaluated.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.config import Config, parse_config
from rotator.contracts import ManagedKey, RetiringKey, TargetState
from rotator.daemon.metrics import Metrics
from rotator.daemon.scheduler import plan_fire
from rotator.engine.due import compliant
from rotator.engine.engine import TargetStatus
from rotator.engine.rotation import RotationResult, failure_backoff
from rotator.engine.steps import Outcome

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"
STEP = timedelta(minutes=5)
"""How often the simulated Prometheus scrapes and evaluates the rules."""
TARGET = "prod-backend"
SCRAPE_LABELS = {"job": "rotator", "namespace": "rotator", "instance": "10.0.0.7:9402"}
SCRAPE_LABELS["pod"] = "rotator-6d9f-abcde"

# -- a PromQL subset ---------------------------------------------------------------------------

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
Value = float | Vector
History = list[tuple[float, Vector]]


class Series:
    """A scrape history (in time order) with the lookups evaluation needs."""

    def __init__(self, history: History) -> None:
        self.times = [t for t, _ in history]
        self.scrapes: list[dict[str, Vector]] = []
        for _, vector in history:
            by_name: dict[str, Vector] = {}
            for labels, value in vector.items():
                by_name.setdefault(dict(labels)["__name__"], {})[labels] = value
            self.scrapes.append(by_name)

    def at(self, when: float, name: str) -> Vector:
        """The series called ``name`` in the latest scrape at or before ``when``."""
        index = bisect.bisect_right(self.times, when)
        return self.scrapes[index - 1].get(name, {}) if index else {}

    def window(self, start: float, end: float, name: str) -> list[Vector]:
        """The series called ``name`` in each scrape in ``(start, end]``."""
        lo, hi = bisect.bisect_right(self.times, start), bisect.bisect_right(self.times, end)
        return [scrape.get(name, {}) for scrape in self.scrapes[lo:hi]]


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<dur>\[\d+[smhd]\])|(?P<str>\"[^\"]*\")"
    r"|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<op>==|!=|>=|<=|[-+*/<>(){},=]))"
)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}
_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}
_LEVELS = [["or"], ["and"], list(_COMPARE), ["+", "-"], ["*", "/"]]
_AGGREGATE: dict[str, Callable[[list[float]], float]] = {"max": max, "min": min, "sum": sum}


def _tokens(text: str) -> list[str]:
    found, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"PromQL subset: cannot read {text[pos : pos + 20]!r}")
        found.append(match.group(match.lastgroup or "op"))
        pos = match.end()
    return found


def _signature(labels: Labels) -> Labels:
    return frozenset((k, v) for k, v in labels if k != "__name__")


class PromQL:
    """One parsed expression: ``evaluate(series, at)`` gives its instant value at ``at``."""

    def __init__(self, text: str) -> None:
        self._tokens = _tokens(text)
        self._pos = 0
        self._tree = self._binary(0)
        if self._pos != len(self._tokens):
            raise ValueError(f"PromQL subset: unexpected {self._tokens[self._pos]!r}")

    # parsing: nested tuples ("num", x) ("time",) ("sel", name, matchers, range) ("call", f, arg)
    # ("agg", op, mode, labels, arg) ("bin", op, left, right)

    def _peek(self) -> str | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self._peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"PromQL subset: expected {expected or 'more'}, got {token!r}")
        self._pos += 1
        return token

    def _binary(self, level: int) -> tuple[Any, ...]:
        if level == len(_LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while self._peek() in _LEVELS[level]:
            op = self._take()
            left = ("bin", op, left, self._binary(level + 1))
        return left

    def _unary(self) -> tuple[Any, ...]:
        token = self._take()
        if token == "(":
            inner = self._binary(0)
            self._take(")")
            return inner
        if re.fullmatch(r"\d+(\.\d+)?", token):
            return ("num", float(token))
        if token in _AGGREGATE:
            mode, labels = self._grouping()
            self._take("(")
            arg = self._binary(0)
            self._take(")")
            if mode is None:
                mode, labels = self._grouping()
            return ("agg", token, mode, labels, arg)
        if token == "time":
            self._take("(")
            self._take(")")
            return ("time",)
        if token in {"absent", "increase"}:
            self._take("(")
            arg = self._binary(0)
            self._take(")")
            return ("call", token, arg)
        if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", token):
            raise ValueError(f"PromQL subset: unexpected {token!r}")
        matchers = [("__name__", token)]
        if self._peek() == "{":
            self._take("{")
            while self._peek() != "}":
                name = self._take()
                self._take("=")
                matchers.append((name, self._take().strip('"')))
                if self._peek() == ",":
                    self._take(",")
            self._take("}")
        window = None
        if (self._peek() or "").startswith("["):
            span = self._take()[1:-1]
            window = float(span[:-1]) * _UNIT[span[-1]]
        return ("sel", tuple(matchers), window)

    def _grouping(self) -> tuple[str | None, tuple[str, ...]]:
        if self._peek() not in {"by", "without"}:
            return None, ()
        mode = self._take()
        self._take("(")
        labels = []
        while self._peek() != ")":
            labels.append(self._take())
            if self._peek() == ",":
                self._take(",")
        self._take(")")
        return mode, tuple(labels)

    # evaluation

    def evaluate(self, series: Series, at: float) -> Value:
        return self._eval(self._tree, series, at)

    def _eval(self, node: tuple[Any, ...], series: Series, at: float) -> Value:
        kind = node[0]
        if kind == "num":
            return float(node[1])
        if kind == "time":
            return at
        if kind == "sel":
            return self._select(node[1], series, at)
        if kind == "call":
            return self._call(node[1], node[2], series, at)
        if kind == "agg":
            return self._aggregate(node[1], node[2], node[3], self._vector(node[4], series, at))
        left, right = (self._eval(side, series, at) for side in node[2:])
        return _binary(node[1], left, right)

    def _vector(self, node: tuple[Any, ...], series: Series, at: float) -> Vector:
        value = self._eval(node, series, at)
        assert isinstance(value, dict), f"a vector was expected: {node}"
        return value

    def _select(self, matchers: tuple[tuple[str, str], ...], series: Series, at: float) -> Vector:
        wanted = frozenset(matchers[1:])  # label="value" matchers: a subset of the labels
        return {k: v for k, v in series.at(at, matchers[0][1]).items() if wanted <= k}

    def metric_names(self) -> set[str]:
        """The metric names the expression selects."""
        return _names(self._tree)

    def _call(self, name: str, arg: tuple[Any, ...], series: Series, at: float) -> Vector:
        if name == "absent":
            if self._vector(arg, series, at):
                return {}
            assert arg[0] == "sel", "absent() of a selector only"
            return {frozenset((k, v) for k, v in arg[1] if k != "__name__"): 1.0}
        assert arg[0] == "sel", "increase() of a selector only"
        assert arg[2] is not None, "increase() needs a range selector"
        matchers, window = arg[1], arg[2]
        seen: dict[Labels, list[float]] = {}
        wanted = frozenset(matchers[1:])
        for samples in series.window(at - window, at, matchers[0][1]):
            for labels, value in samples.items():
                if wanted <= labels:
                    seen.setdefault(_signature(labels), []).append(value)
        return {k: v[-1] - v[0] for k, v in seen.items() if len(v) >= 2}

    @staticmethod
    def _aggregate(op: str, mode: str, labels: tuple[str, ...], vector: Vector) -> Vector:
        groups: dict[Labels, list[float]] = {}
        for key, value in vector.items():
            kept = frozenset(
                (k, v) for k, v in key if k != "__name__" and ((k in labels) == (mode == "by"))
            )
            groups.setdefault(kept, []).append(value)
        return {k: _AGGREGATE[op](v) for k, v in groups.items()}


def _names(node: tuple[Any, ...]) -> set[str]:
    kind = node[0]
    if kind == "sel":
        return {node[1][0][1]}
    children = {"call": node[2:3], "agg": node[4:5], "bin": node[2:4]}.get(kind, ())
    return set().union(*(_names(child) for child in children))


def _binary(op: str, left: Value, right: Value) -> Value:
    if op in {"and", "or"}:
        assert isinstance(left, dict), f"{op} joins vectors"
        assert isinstance(right, dict), f"{op} joins vectors"
        right_keys = {_signature(k) for k in right}
        if op == "and":
            return {k: v for k, v in left.items() if _signature(k) in right_keys}
        left_keys = {_signature(k) for k in left}
        return {**left, **{k: v for k, v in right.items() if _signature(k) not in left_keys}}
    if isinstance(left, float) and isinstance(right, float):
        assert op in _ARITH, "a scalar comparison needs bool, which the rules do not use"
        return _ARITH[op](left, right)
    pairs: list[tuple[Labels, float, float, float]] = []  # (labels, a, b, the kept value)
    if isinstance(left, float):
        assert isinstance(right, dict)
        pairs = [(key, left, value, value) for key, value in right.items()]
    elif isinstance(right, float):
        pairs = [(key, value, right, value) for key, value in left.items()]
    else:
        by_signature = {_signature(k): v for k, v in right.items()}
        pairs = [
            (key, value, by_signature[_signature(key)], value)
            for key, value in left.items()
            if _signature(key) in by_signature
        ]
    if op in _COMPARE:
        return {key: kept for key, a, b, kept in pairs if _COMPARE[op](a, b)}
    return {_signature(key): _ARITH[op](a, b) for key, a, b, _ in pairs}


@dataclass(frozen=True)
class Rule:
    name: str
    expr: PromQL
    hold: float
    severity: str


def parse_for(text: str | None) -> float:
    if text is None:
        return 0.0
    match = re.fullmatch(r"(\d+)([smhd])", text)
    assert match, f"unexpected for: {text!r}"
    return float(match.group(1)) * _UNIT[match.group(2)]


def shipped_rules() -> dict[str, Rule]:
    spec = yaml.safe_load(RULES.read_text())["spec"]
    return {
        r["alert"]: Rule(
            r["alert"], PromQL(r["expr"]), parse_for(r.get("for")), r["labels"]["severity"]
        )
        for group in spec["groups"]
        for r in group["rules"]
    }


RULES_BY_NAME = shipped_rules()
RULE_METRICS = sorted(set().union(*(r.expr.metric_names() for r in RULES_BY_NAME.values())))


def firing(rule: Rule, history: History | Series) -> list[tuple[float, Labels]]:
    """Each evaluation time and series at which ``rule`` fires (Prometheus' ``for:``: active at
    every evaluation for at least ``for``)."""
    active_since: dict[Labels, float] = {}
    fired = []
    series = history if isinstance(history, Series) else Series(history)
    for at in series.times:
        value = rule.expr.evaluate(series, at)
        assert isinstance(value, dict), f"{rule.name}: an alert expression must be a vector"
        active_since = {k: active_since.get(k, at) for k in map(_signature, value)}
        fired += [(at, k) for k, since in active_since.items() if at - since >= rule.hold]
    return fired


# -- a simulated daemon exporting rotator's metrics ---------------------------------------------

Attempt = Callable[[int], Outcome]
"""The outcome of the n-th attempt (0-based) of a scenario."""


def always(outcome: Outcome) -> Attempt:
    return lambda n: outcome


def config(policy: dict[str, str]) -> Config:
    return parse_config(
        {
            "mistral": {
                "admin_key": "sk-admin-test",
                "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce",
            },
            "stores": {"aws": {"type": "aws_secrets_manager", "region": "eu-west-1"}},
            "defaults": policy,
            "targets": [
                {
                    "name": TARGET,
                    "workspace_id": "019b2bd7-96e7-7219-8c0b-45a73da50088",
                    "destinations": [{"store": "aws", "secret_id": f"mistral/{TARGET}"}],
                }
            ],
        },
        env={},
    )


@dataclass
class Daemon:
    """One target under one leading (or standby) rotator, as the store and the metrics see it."""

    cfg: Config
    attempt: Attempt
    state: TargetState
    leading: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    attempts: int = 0
    stuck: bool = False
    rotated_at: list[datetime] = field(default_factory=list)

    @property
    def policy(self) -> Any:
        return self.cfg.targets[0].policy

    def tick(self, now: datetime) -> Vector:
        """Do what the daemon does at ``now`` (rotate when due, revoke when due), then scrape."""
        plan = plan_fire(TARGET, self.policy, self.state, now=now)
        if self.leading and plan.fire_at <= now:
            self._rotate(now, self.attempt(self.attempts))
            self.attempts += 1
        if self.leading:
            kept = tuple(k for k in self.state.retiring if k.revoke_due_at > now)
            self.state = replace(self.state, retiring=kept)
        self.metrics.set_leader(self.leading)
        self.metrics.refresh(self.cfg, [self._status(now)], [self.state], now=now)
        return self._scrape()

    def _rotate(self, now: datetime, outcome: Outcome) -> None:
        result = RotationResult(target=TARGET, rotation_id=f"r{self.attempts}", outcome=outcome)
        self.metrics.observe_rotation(result, 42.0)
        st = self.state
        if outcome is Outcome.PROMOTED:
            expiration = self.policy.key_expiration
            new = ManagedKey(
                f"k{self.attempts}",
                "0123456789ab",
                now,
                (now + expiration).date() if expiration is not None else None,
                f"r{self.attempts}",
            )
            retiring = st.retiring
            if st.current is not None:
                old = RetiringKey(TARGET, st.current.key_id, None, now + self.policy.grace)
                retiring = (*retiring, old)
            self.state = replace(
                st,
                current=new,
                retiring=retiring,
                last_rotated_at=now,
                consecutive_failures=0,
                backoff_until=None,
            )
            self.rotated_at.append(now)
            return
        failures = st.consecutive_failures + 1
        self.state = replace(
            st, consecutive_failures=failures, backoff_until=now + failure_backoff(failures)
        )
        self.stuck = outcome is Outcome.STUCK

    def _status(self, now: datetime) -> TargetStatus:
        """The row the engine reports (rotator/engine/engine.py ``status``), with the next
        rotation the daemon plans, as ``rotator run`` exports it."""
        st, last = self.state, self.state.last_rotated_at
        ok = compliant(self.policy, last_rotated_at=last, now=now)
        if self.stuck:
            state = "stuck"
        elif st.consecutive_failures:
            state = "failing"
        else:
            state = "draining" if st.retiring else "idle"
        return TargetStatus(
            target=TARGET,
            state=state,
            key_id=st.current.key_id if st.current else None,
            last_rotated_at=last,
            next_due_at=plan_fire(TARGET, self.policy, st, now=now).fire_at,
            revoke_due_at=st.retiring[0].revoke_due_at if st.retiring else None,
            compliant=ok,
            reason="",
        )

    def _scrape(self) -> Vector:
        """The series the rules read, labelled as Prometheus stores them."""
        samples: Vector = {}
        for family in self.metrics.registry.restricted_registry(RULE_METRICS).collect():
            for sample in family.samples:
                labels = {"__name__": sample.name, **SCRAPE_LABELS, **sample.labels}
                samples[frozenset(labels.items())] = float(sample.value)
        samples[frozenset({"__name__": "up", **SCRAPE_LABELS}.items())] = 1.0
        return samples


def rotated_state(
    last: datetime | None, first_seen: datetime, expiration: date | None
) -> TargetState:
    current = (
        None if last is None else ManagedKey("k-old", "0123456789ab", last, expiration, "r-old")
    )
    return TargetState(TARGET, current, (), None, last, 0, None, first_seen)


def simulate(daemon: Daemon, start: datetime, end: datetime) -> History:
    history: History = []
    now = start
    while now <= end:
        history.append((now.timestamp(), daemon.tick(now)))
        now += STEP
    return history


def alerts(history: History) -> dict[str, list[float]]:
    """Alert name → the evaluation times at which it fires (only alerts that fire)."""
    out, series = {}, Series(history)
    for name, rule in RULES_BY_NAME.items():
        times = [at for at, _ in firing(rule, series)]
        if times:
            out[name] = times
    return out


def scenario(
    policy: dict[str, str],
    *,
    last: datetime | None,
    start: datetime,
    days: float,
    attempt: Attempt | None = None,
    leading: bool = True,
) -> tuple[Daemon, History]:
    cfg = config(policy)
    expiration = cfg.targets[0].policy.key_expiration
    key_expiry = (last + expiration).date() if last and expiration else None
    attempt = attempt or always(Outcome.PROMOTED)
    daemon = Daemon(cfg, attempt, rotated_state(last, last or start, key_expiry), leading=leading)
    return daemon, simulate(daemon, start, start + timedelta(days=days))


def ts(when: datetime) -> float:
    return when.timestamp()


T0 = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
COMMON_POLICIES = {
    # name: (policy, when the two simulated days start); each includes a rotation
    "every 30d, max_age 30d": (
        {"schedule": "every 30d", "max_age": "30d"},
        T0 + timedelta(days=29),
    ),
    "monthly cron, max_age 30d": (
        {"schedule": "0 3 1 * *", "max_age": "30d"},
        T0 + timedelta(days=29),
    ),
    "every 1d": ({"schedule": "every 1d", "max_age": "30d"}, T0),
    "weekly default": ({}, T0 + timedelta(days=3)),
    "every 30d, grace 12h": (
        {"schedule": "every 30d", "max_age": "30d", "grace": "12h"},
        T0 + timedelta(days=29),
    ),
}


DEADLINE = T0 + timedelta(days=30)
"""The max_age deadline (and key expiry) of a key rotated at T0 under ``every 30d``/30d."""


def at_deadline(*, hours_before: float, days: float, **options: Any) -> tuple[Daemon, History]:
    """``every 30d`` with ``max_age: 30d``, from ``hours_before`` the deadline on."""
    policy = {"schedule": "every 30d", "max_age": "30d"}
    start = DEADLINE - timedelta(hours=hours_before)
    return scenario(policy, last=T0, start=start, days=days, **options)


# -- the evaluator itself -----------------------------------------------------------------------


def test_evaluator_reads_every_shipped_rule_and_refuses_unknown_constructs() -> None:
    """Every shipped expression parses in the subset, and a construct outside it is refused
    (so a rule the evaluator cannot read fails here instead of passing unevaluated)."""
    assert len(RULES_BY_NAME) >= 10
    for text in ("rate(x[5m])", "x offset 5m", 'x{a=~"b"}', "x unless y"):
        with pytest.raises((ValueError, AssertionError)):
            PromQL(text).evaluate(Series([(0.0, {})]), 0.0)


def test_evaluator_follows_promql_matching_and_for() -> None:
    """Aggregation drops the grouped-away labels, vector comparison filters by matching label
    sets, ``or`` adds unmatched right-hand series, and ``for:`` needs every evaluation active."""
    a = frozenset({"__name__": "m", "target": "a", "pod": "p1"}.items())
    b = frozenset({"__name__": "m", "target": "b", "pod": "p1"}.items())
    c = frozenset({"__name__": "n", "target": "b", "pod": "p1"}.items())
    history: History = [(0.0, {a: 5.0, b: 1.0, c: 3.0}), (60.0, {a: 5.0, b: 4.0, c: 3.0})]
    expr = PromQL("max without (pod) (m) > max without (pod) (n) or max without (pod) (m) > 4")
    only_a, only_b = frozenset({("target", "a")}), frozenset({("target", "b")})
    assert expr.evaluate(Series(history), 0.0) == {only_a: 5.0}
    assert expr.evaluate(Series(history), 60.0) == {only_b: 4.0, only_a: 5.0}
    held = Rule("x", PromQL("m > 2"), 60.0, "warning")
    assert {k for _, k in firing(held, history)} == {_signature(a)}


# -- normal operation ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMMON_POLICIES))
def test_normal_operation_fires_nothing(name: str) -> None:
    """With a common policy, a healthy leader rotating on schedule (or at the max_age deadline,
    which is also the key's expiry) through the grace period after it fires no alert."""
    policy, start = COMMON_POLICIES[name]
    daemon, history = scenario(policy, last=T0, start=start, days=2)
    assert daemon.rotated_at, "the scenario must include a rotation"
    assert alerts(history) == {}


def test_the_old_expiring_soon_rule_fired_in_normal_operation() -> None:
    """The rule shipped before (next rotation within an hour of the expiry) fired for two days
    before every rotation at the max_age deadline: the evaluator sees what the reviewer saw."""
    old = PromQL(
        "(max without (instance, pod) (rotator_key_expiration_timestamp_seconds)"
        " - time() < 2 * 86400) and ("
        "max without (instance, pod) (rotator_key_next_rotation_timestamp_seconds) < time() or"
        " max without (instance, pod) (rotator_key_next_rotation_timestamp_seconds)"
        " > max without (instance, pod) (rotator_key_expiration_timestamp_seconds) - 3600)"
    )
    policy, start = COMMON_POLICIES["every 30d, max_age 30d"]
    _, history = scenario(policy, last=T0, start=start, days=2)
    assert firing(Rule("old", old, 900.0, "warning"), history)


# -- failures -----------------------------------------------------------------------------------


def test_a_target_that_keeps_failing_alerts_until_it_succeeds() -> None:
    """Six failures from the max_age deadline on (backoff 1 h … 32 h): the warning fires
    within 20 minutes of the first and stays firing through every backoff, the critical one from
    the third failure on, the expiry and readiness alerts too; all clear once a retry succeeds."""
    daemon, history = at_deadline(
        hours_before=1, days=3, attempt=lambda n: Outcome.ROLLED_BACK if n < 6 else Outcome.PROMOTED
    )
    (recovered,) = daemon.rotated_at
    assert recovered - DEADLINE == timedelta(hours=1 + 2 + 4 + 8 + 16 + 32)
    fired = alerts(history)
    failed = set(fired["RotatorRotationFailed"])
    window = [at for at, _ in history if ts(DEADLINE) + 1200 <= at < ts(recovered)]
    assert set(window) <= failed, "RotatorRotationFailed must hold between retries"
    third = ts(DEADLINE + timedelta(hours=1 + 2))
    assert min(fired["RotatorRotationFailingRepeatedly"]) == third
    assert min(fired["RotatorKeyExpiringSoon"]) <= ts(DEADLINE) + 1200
    assert min(fired["RotatorKeyNotReady"]) <= ts(DEADLINE) + 1200
    assert all(at <= ts(recovered) for times in fired.values() for at in times)
    assert set(fired) == {
        "RotatorRotationFailed",
        "RotatorRotationFailingRepeatedly",
        "RotatorKeyExpiringSoon",
        "RotatorKeyNotReady",
    }


def test_one_failure_far_from_the_expiry_is_a_warning_only() -> None:
    """A daily rotation failing once (retried an hour later, successfully) fires only the
    warning, and the key's expiry, weeks away, raises nothing."""
    daemon, history = scenario(
        {"schedule": "every 1d", "max_age": "30d"},
        last=T0,
        start=T0 + timedelta(hours=23),
        days=1,
        attempt=lambda n: Outcome.ROLLED_BACK if n == 0 else Outcome.PROMOTED,
    )
    assert len(daemon.rotated_at) == 1
    assert set(alerts(history)) == {"RotatorRotationFailed"}


def test_a_stuck_rotation_is_critical() -> None:
    """A rotation that went stuck fires RotatorRotationStuck at once and RotatorKeyNotReady
    (ready False) after its 10 minutes, plus the failure warning."""
    start = T0 + timedelta(days=4) - timedelta(hours=1)  # the Monday 03:00 after T0
    _, history = scenario({}, last=T0, start=start, days=1, attempt=always(Outcome.STUCK))
    fired = alerts(history)
    assert {"RotatorRotationStuck", "RotatorKeyNotReady", "RotatorRotationFailed"} <= set(fired)
    assert RULES_BY_NAME["RotatorRotationStuck"].severity == "critical"


# -- never rotated, no leader, nothing scraped --------------------------------------------------


def test_a_target_never_rotated_waits_quietly_for_its_first_rotation() -> None:
    """A target rotator has never rotated (readiness Unknown, no expiry known) raises nothing
    while it waits for its first scheduled fire, nor when that first rotation succeeds."""
    daemon, history = scenario({"schedule": "every 2d"}, last=None, start=T0, days=3)
    assert len(daemon.rotated_at) == 1
    assert alerts(history) == {}


def test_a_never_rotated_target_whose_first_rotation_fails_is_reported() -> None:
    """The first rotation of a new target failing fires the failure warning."""
    _, history = scenario(
        {"schedule": "every 1d"}, last=None, start=T0, days=2, attempt=always(Outcome.ROLLED_BACK)
    )
    assert "RotatorRotationFailed" in alerts(history)


def test_without_a_leader_the_rotation_becomes_overdue_and_the_key_expiring() -> None:
    """With every instance a standby, RotatorNoLeader fires after 5 minutes, RotatorRotationOverdue
    an hour and a quarter past the due time, and RotatorKeyExpiringSoon once the key's expiry
    (the max_age deadline) has passed with no rotation."""
    daemon, history = at_deadline(hours_before=2, days=0.5, leading=False)
    assert daemon.rotated_at == []
    fired = alerts(history)
    assert min(fired["RotatorNoLeader"]) == history[0][0] + 300
    assert min(fired["RotatorRotationOverdue"]) == ts(DEADLINE) + 3600 + 900 + 300
    assert min(fired["RotatorKeyExpiringSoon"]) == ts(DEADLINE) + 900 + 900 + 300
    assert "RotatorRotationFailed" not in fired


def test_nothing_to_scrape_is_critical() -> None:
    """With no rotator series at all, RotatorAbsent fires after its 15 minutes."""
    history: History = [(float(t), {}) for t in range(0, 3600, 300)]
    assert next(at for at, _ in firing(RULES_BY_NAME["RotatorAbsent"], history)) == 900.0
