"""Prometheus metrics of the daemon (docs/http-api.md#metrics, cert-manager style).

:class:`Metrics` owns a private :class:`~prometheus_client.CollectorRegistry` (never the global
default one) holding:

* state-derived gauges (last/next rotation, expiration, ready status, keys pending revocation),
  served by a custom collector from a snapshot that the daemon's loop replaces with
  :meth:`Metrics.refresh`; a scrape only reads that snapshot, so it never waits on the state store;
* event counters and histograms fed by the runner (:meth:`Metrics.observe_rotation`), the backend
  clients (:meth:`Metrics.observe_call`: the ``on_call`` hook of the Mistral clients and of every
  destination), the HTTP app (:meth:`Metrics.observe_rejected`) and the leader
  elector (:meth:`Metrics.set_leader`);
* ``rotator_build_info{version}``.

Label values come from configuration and code only (target names, backend and operation names,
outcomes, steps), and the audit trail's head hash: never a key id, a rotation id, a fingerprint
or a key.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rotator import __version__
from rotator.config import Config
from rotator.contracts import JournalEntry, TargetState
from rotator.daemon.http import REJECTIONS
from rotator.engine.engine import TargetStatus
from rotator.engine.rotation import RotationResult
from rotator.engine.steps import Outcome, Step

CONDITIONS = ("True", "False", "Unknown")
"""Values of the ``condition`` label of ``rotator_key_ready_status`` (one of them is 1)."""

ROTATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Seconds: a rotation waits for key activation (minutes at worst) and may retry promotions."""

BACKEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_FAILED = frozenset({Outcome.ROLLED_BACK, Outcome.STUCK})
_COUNTED = tuple(str(o) for o in Outcome if o is not Outcome.PLANNED)
"""The outcomes ``rotator_rotations_total`` counts (a dry run's ``planned`` is never counted)."""

# The step a rotation was attempting, from the last forward state it journaled (rolling_back,
# rolled_back and stuck are not forward states: a recovered rotation may go on after stuck).
_ATTEMPTING = {
    Step.PLANNED: "create",
    Step.CREATED: "verify",
    Step.VERIFIED: "stage",
    Step.STAGED: "read_back",
    Step.READBACK_OK: "promote",
    Step.PROMOTING: "promote",
    Step.PROMOTED: "finish",
    Step.DONE: "finish",
}

# (phrase in an error line, reason label): first match wins. Error lines are built by rotator
# from fixed phrases (rotator/errors.py, rotator/mistral/_http.py), never from a key.
_REASONS = (
    ("failed verification", "verification_failed"),
    ("(HTTP 401)", "auth"),
    ("(HTTP 403)", "auth"),
    ("(HTTP 429)", "rate_limited"),
    ("(HTTP 5", "server_error"),
    ("timed out", "timeout"),
    ("could not connect", "unreachable"),
    ("connection dropped", "unreachable"),
    ("connection failed", "unreachable"),
    ("unreachable", "unreachable"),  # Vault's "server unreachable", AWS's "endpoint unreachable"
    ("managed by", "conflict"),
    ("someone else", "conflict"),
    ("in flight", "conflict"),
)


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """What the state-derived gauges show for one target, as of the last :meth:`Metrics.refresh`."""

    target: str
    last_rotated_at: datetime | None
    next_due_at: datetime
    expires_at: datetime | None
    """The earlier of ``last rotation + max_age`` and the served key's Mistral expiry."""
    ready: str
    """``True``, ``False`` or ``Unknown`` (see :func:`readiness`)."""
    pending_revocation: int
    consecutive_failures: int = 0
    """Failed attempts since the last success (0 when the last attempt succeeded)."""


def mistral_expiry(expiration: date | None) -> datetime | None:
    """When a key with this ``expiration_date`` stops working: Mistral refuses it once the UTC
    date is *past* the expiration date, i.e. at the next midnight UTC."""
    if expiration is None:
        return None
    return datetime.combine(expiration + timedelta(days=1), time(), tzinfo=UTC)


def readiness(status: TargetStatus, expires_at: datetime | None, now: datetime) -> str:
    """The ready condition (cert-manager's Certificate Ready): ``True`` when the served key is
    one rotator rotated, within ``max_age``, unexpired and no rotation is stuck; ``Unknown`` for a
    target rotator never rotated; ``False`` otherwise. A failed attempt that left the old key
    served and compliant stays ``True`` (``rotator_rotations_total`` tells of the failure)."""
    if status.state == "stuck":
        return "False"
    if status.last_rotated_at is None:
        return "Unknown"
    if not status.compliant or (expires_at is not None and expires_at <= now):
        return "False"
    return "True"


def snapshot(
    cfg: Config,
    statuses: Sequence[TargetStatus],
    states: Iterable[TargetState],
    *,
    now: datetime,
) -> tuple[TargetSnapshot, ...]:
    """The gauges' view of every configured target; targets absent from ``cfg`` are dropped."""
    max_age = {t.name: t.policy.max_age for t in cfg.targets}
    by_target = {s.target: s for s in states}
    rows = []
    for status in statuses:
        if status.target not in max_age:
            continue
        state = by_target.get(status.target)
        deadlines = []
        if status.last_rotated_at is not None:
            deadlines.append(status.last_rotated_at + max_age[status.target])
        if state is not None and state.current is not None:
            expiry = mistral_expiry(state.current.expiration)
            if expiry is not None:
                deadlines.append(expiry)
        expires_at = min(deadlines) if deadlines else None
        rows.append(
            TargetSnapshot(
                target=status.target,
                last_rotated_at=status.last_rotated_at,
                next_due_at=status.next_due_at,
                expires_at=expires_at,
                ready=readiness(status, expires_at, now),
                pending_revocation=len(state.retiring) if state is not None else 0,
                consecutive_failures=state.consecutive_failures if state is not None else 0,
            )
        )
    return tuple(rows)


def failed_step(journal: Sequence[JournalEntry]) -> str:
    """The step a failed rotation was attempting (``create``, ``verify``, ``stage``,
    ``read_back``, ``promote``, ``finish``), from its journal; ``plan`` with no journal."""
    attempting = "plan"
    for entry in journal:
        step, _, tag = entry.step.partition(":")
        if tag or step not in Step.__members__.values():
            continue
        attempting = _ATTEMPTING.get(Step(step), attempting)
    return attempting


def failure_reason(error: str | None) -> str:
    """A low-cardinality reason for a failed rotation's error line (``error`` when unknown)."""
    if error:
        for phrase, reason in _REASONS:
            if phrase in error:
                return reason
    return "error"


class _StateCollector(Collector):
    """Serves the state-derived gauges from the latest snapshot (no I/O at scrape time)."""

    def __init__(self) -> None:
        self.rows: tuple[TargetSnapshot, ...] = ()

    def describe(self) -> Iterable[Metric]:
        return self._families(())

    def collect(self) -> Iterable[Metric]:
        return self._families(self.rows)

    @staticmethod
    def _families(rows: tuple[TargetSnapshot, ...]) -> list[Metric]:
        last = GaugeMetricFamily(
            "rotator_key_last_rotation_timestamp_seconds",
            "When rotator last rotated the target's key (Unix seconds).",
            labels=["target"],
        )
        nxt = GaugeMetricFamily(
            "rotator_key_next_rotation_timestamp_seconds",
            "When the target is next due for rotation (Unix seconds; past = overdue).",
            labels=["target"],
        )
        expiry = GaugeMetricFamily(
            "rotator_key_expiration_timestamp_seconds",
            "When the served key stops being acceptable: the earlier of last rotation + max_age"
            " and its Mistral expiration (Unix seconds).",
            labels=["target"],
        )
        ready = GaugeMetricFamily(
            "rotator_key_ready_status",
            "The target's ready condition: 1 for the current condition, 0 for the others.",
            labels=["target", "condition"],
        )
        pending = GaugeMetricFamily(
            "rotator_previous_keys_pending_revocation",
            "Replaced keys still valid, waiting for their revocation.",
            labels=["target"],
        )
        failures = GaugeMetricFamily(
            "rotator_rotation_consecutive_failures",
            "Rotation attempts that failed since the target's last successful one (0 = healthy).",
            labels=["target"],
        )
        for row in rows:
            if row.last_rotated_at is not None:
                last.add_metric([row.target], row.last_rotated_at.timestamp())
            nxt.add_metric([row.target], row.next_due_at.timestamp())
            if row.expires_at is not None:
                expiry.add_metric([row.target], row.expires_at.timestamp())
            for condition in CONDITIONS:
                ready.add_metric([row.target, condition], 1.0 if row.ready == condition else 0.0)
            pending.add_metric([row.target], float(row.pending_revocation))
            failures.add_metric([row.target], float(row.consecutive_failures))
        return [last, nxt, expiry, ready, pending, failures]


class _RotationsCollector(Collector):
    """``rotator_rotations_total{target,outcome}``: a counter family served from one table.

    Every declared target shows each counted outcome, 0 until counted, without a counter object
    per series (five per target: 2.7 KB, 27 MB for 10 000 targets, by tracemalloc). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._declared: tuple[str, ...] = ()
        self._counts: dict[tuple[str, str], float] = {}

    def declare(self, names: Iterable[str]) -> None:
        """Show these targets (in this order) from 0; forget the counts of the targets declared
        before and not now."""
        wanted = tuple(dict.fromkeys(names))
        with self._lock:
            gone = set(self._declared) - set(wanted)
            if gone:
                self._counts = {k: v for k, v in self._counts.items() if k[0] not in gone}
            self._declared = wanted

    def inc(self, target: str, outcome: str) -> None:
        with self._lock:
            self._counts[target, outcome] = self._counts.get((target, outcome), 0.0) + 1.0

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        with self._lock:
            counts, declared = dict(self._counts), self._declared
        for target in declared:
            for outcome in _COUNTED:
                family.add_metric([target, outcome], counts.pop((target, outcome), 0.0))
        for (target, outcome), value in counts.items():  # counted, never declared
            family.add_metric([target, outcome], value)
        return [family]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "rotator_rotations",
            "Rotations finished, by outcome (rotated, promoted, rolled_back, stuck, skipped).",
            labels=["target", "outcome"],
        )


class Metrics:
    """The daemon's metric set on its own registry; every method is cheap and never raises for
    well-formed input. Thread-safe (backend calls are observed from the blocking pool too).

    Constructing one turns off prometheus_client's ``*_created`` series process-wide: the text
    format would show each as an extra gauge family outside the documented set.
    """

    def __init__(self, *, version: str = __version__) -> None:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self._state = _StateCollector()
        self.registry.register(self._state)
        self._rotations = _RotationsCollector()
        self.registry.register(self._rotations)
        self._step_failures = Counter(
            "rotator_rotation_step_failures",
            "Failed rotations, by the step they were attempting and a coarse reason.",
            ["target", "step", "reason"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "rotator_rotation_duration_seconds",
            "Wall-clock time of a rotation, recovery included.",
            ["target"],
            buckets=ROTATION_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "rotator_backend_requests",
            "Calls to Mistral, Vault and AWS, by status (HTTP code or outcome).",
            ["backend", "operation", "status"],
            registry=self.registry,
        )
        self._request_duration = Histogram(
            "rotator_backend_request_duration_seconds",
            "Duration of calls to Mistral, Vault and AWS.",
            ["backend", "operation", "status"],
            buckets=BACKEND_BUCKETS,
            registry=self.registry,
        )
        self._leader = Gauge(
            "rotator_leader",
            "1 while this instance is the leader (rotates), 0 on a standby.",
            registry=self.registry,
        )
        self._transitions = Counter(
            "rotator_leader_transitions",
            "Times this instance gained or lost leadership.",
            registry=self.registry,
        )
        self._rejected = Counter(
            "rotator_http_requests_rejected",
            "HTTP requests refused before any handler, by reason (unauthorized, not_found,"
            " method_not_allowed, other).",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECTIONS:
            self._rejected.labels(reason=reason)
        self._audit_rows = Gauge(
            "rotator_audit_rows",
            "Rows in the audit trail at its last published head (0 until the first).",
            registry=self.registry,
        )
        self._audit_head = Gauge(
            "rotator_audit_head_info",
            "Always 1; the head label is the audit trail's last hash, published to anchor it.",
            ["head"],
            registry=self.registry,
        )
        self._leading = False
        build = Gauge(
            "rotator_build_info",
            "Always 1; the version label names the running build.",
            ["version"],
            registry=self.registry,
        )
        build.labels(version=version).set(1)

    def refresh(
        self,
        cfg: Config,
        statuses: Sequence[TargetStatus],
        states: Iterable[TargetState],
        *,
        now: datetime,
    ) -> None:
        """Replace the snapshot the state-derived gauges show (see :func:`snapshot`), and make
        every configured target's rotation counters exist from 0 (see :meth:`declare_targets`)."""
        self._state.rows = snapshot(cfg, statuses, states, now=now)
        self.declare_targets(target.name for target in cfg.targets)

    def declare_targets(self, names: Iterable[str]) -> None:
        """Create ``rotator_rotations_total`` at 0 for each of ``names`` and every outcome a
        rotation can end with, and drop the series of targets no longer configured. A counter
        series that appears only at its first increment is invisible to ``increase()``, so
        without this the first failure of a target would never fire an alert. Idempotent."""
        self._rotations.declare(names)

    @property
    def targets(self) -> tuple[TargetSnapshot, ...]:
        """The current snapshot."""
        return self._state.rows

    def observe_rotation(
        self, result: RotationResult, seconds: float, *, journal: Sequence[JournalEntry] = ()
    ) -> None:
        """Count one finished rotation (or recovery) and its duration. For a rolled back or stuck
        one, also count a step failure labelled with :func:`failed_step` of ``journal`` (the
        rotation's journal, when the caller has it) and :func:`failure_reason` of its error."""
        self._rotations.inc(result.target, str(result.outcome))
        if math.isfinite(seconds) and seconds >= 0:
            self._duration.labels(target=result.target).observe(seconds)
        if result.outcome in _FAILED:
            self._step_failures.labels(
                target=result.target,
                step=failed_step(journal),
                reason=failure_reason(result.error),
            ).inc()

    def observe_call(self, backend: str, operation: str, status: str, seconds: float) -> None:
        """Count one backend call: the ``on_call`` hook (:data:`rotator.contracts.OnCall`) that
        ``build_engine`` gives the Mistral clients and every destination."""
        labels = {"backend": backend, "operation": operation, "status": status}
        self._requests.labels(**labels).inc()
        if math.isfinite(seconds) and seconds >= 0:
            self._request_duration.labels(**labels).observe(seconds)

    def observe_rejected(self, reason: str) -> None:
        """Count one HTTP request refused before any handler (the app's ``on_rejected`` hook)."""
        self._rejected.labels(reason=reason).inc()

    def set_leader(self, leading: bool) -> None:
        """Record leadership; a change of value counts one transition."""
        if leading != self._leading:
            self._transitions.inc()
            self._leading = leading
        self._leader.set(1.0 if leading else 0.0)

    def set_audit_head(self, rows: int, head: str) -> None:
        """Show the audit trail's head (:mod:`rotator.daemon.audit_head`): one head series."""
        self._audit_rows.set(rows)
        self._audit_head.clear()
        self._audit_head.labels(head=head).set(1)

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample's current value from the registry (None if absent): for tests and checks."""
        return self.registry.get_sample_value(name, dict(labels or {}))


__all__ = [
    "CONDITIONS",
    "Metrics",
    "TargetSnapshot",
    "failed_step",
    "failure_reason",
    "mistral_expiry",
    "readiness",
    "snapshot",
]
