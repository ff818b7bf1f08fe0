"""The daemon's metric set: names, types and labels as exposed, state gauges, counters, hooks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.config import Config, parse_config
from rotator.contracts import JournalEntry, ManagedKey, RetiringKey, TargetState
from rotator.daemon.metrics import (
    CONDITIONS,
    Metrics,
    failed_step,
    failure_reason,
    mistral_expiry,
)
from rotator.destinations._common import observed
from rotator.engine.engine import TargetStatus
from rotator.engine.rotation import RotationResult
from rotator.engine.steps import Outcome
from rotator.errors import ConflictError, PermanentError, TransientError
from rotator.secret import Secret

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WORKSPACE = "019b2bd7-96e7-7219-8c0b-45a73da50088"
ROTATION_ID = "5f0c8a52-8a4e-4d36-9a43-2f1f4b3c2d11"
KEY_ID = "7a1e7e1c-0b8e-4f59-a3d4-6c2a1f9f0e21"
PLAINTEXT = "Zq3vN8xR2mK7pL4wT9yB6cH1jF5dS0gA"  # shaped like a Mistral key; must never be exposed

# docs/http-api.md#metrics: family name (as the parser names it) → (type, labels).
EXPECTED = {
    "rotator_key_last_rotation_timestamp_seconds": ("gauge", {"target"}),
    "rotator_key_next_rotation_timestamp_seconds": ("gauge", {"target"}),
    "rotator_key_expiration_timestamp_seconds": ("gauge", {"target"}),
    "rotator_key_ready_status": ("gauge", {"target", "condition"}),
    "rotator_rotations": ("counter", {"target", "outcome"}),
    "rotator_rotation_step_failures": ("counter", {"target", "step", "reason"}),
    "rotator_rotation_duration_seconds": ("histogram", {"target"}),
    "rotator_backend_requests": ("counter", {"backend", "operation", "status"}),
    "rotator_backend_request_duration_seconds": ("histogram", {"backend", "operation", "status"}),
    "rotator_previous_keys_pending_revocation": ("gauge", {"target"}),
    "rotator_rotation_consecutive_failures": ("gauge", {"target"}),
    "rotator_http_requests_rejected": ("counter", {"reason"}),
    "rotator_leader": ("gauge", set()),
    "rotator_leader_transitions": ("counter", set()),
    "rotator_build_info": ("gauge", {"version"}),
    "rotator_audit_rows": ("gauge", set()),
    "rotator_audit_head_info": ("gauge", {"head"}),
}


def config(*names: str, max_age: str = "30d") -> Config:
    """A configuration with one Vault target per name."""
    return parse_config(
        {
            "mistral": {
                "admin_key": "sk-admin-test",
                "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce",
            },
            "stores": {
                "v": {
                    "type": "vault",
                    "url": "https://vault.test:8200",
                    "auth": {"method": "token", "token": "hvs.x"},
                }
            },
            "defaults": {"max_age": max_age},
            "targets": [
                {
                    "name": n,
                    "workspace_id": WORKSPACE,
                    "destinations": [{"store": "v", "path": f"p/{n}", "field": "api_key"}],
                }
                for n in names
            ],
        },
        env={},
    )


def status(
    target: str,
    *,
    last: datetime | None = NOW - timedelta(days=2),
    state: str = "idle",
    compliant: bool = True,
) -> TargetStatus:
    return TargetStatus(
        target=target,
        state=state,
        key_id=KEY_ID if last else None,
        last_rotated_at=last,
        next_due_at=NOW + timedelta(days=5),
        revoke_due_at=None,
        compliant=compliant,
        reason="",
    )


def target_state(
    target: str, *, expiration: date | None = None, retiring: int = 0, failures: int = 0
) -> TargetState:
    return TargetState(
        target=target,
        current=ManagedKey(
            KEY_ID, "0123456789ab", NOW - timedelta(days=2), expiration, ROTATION_ID
        ),
        retiring=tuple(
            RetiringKey(target, f"old-{i}", None, NOW + timedelta(hours=1)) for i in range(retiring)
        ),
        adopted_key_id=None,
        last_rotated_at=NOW - timedelta(days=2),
        consecutive_failures=failures,
        backoff_until=None,
    )


FORWARD = ["planned", "created", "verified", "staged", "readback_ok", "promoting", "promoted"]


def entry(step: str, seq: int = 0) -> JournalEntry:
    return JournalEntry(ROTATION_ID, seq, step, NOW, {})


def exposition(metrics: Metrics) -> str:
    return prometheus_client.generate_latest(metrics.registry).decode()


def families(metrics: Metrics) -> dict[str, tuple[str, set[str]]]:
    """Family name → (type, label names seen on its samples, ``le`` left out)."""
    out = {}
    for family in text_string_to_metric_families(exposition(metrics)):
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        out[family.name] = (family.type, labels)
    return out


def populated() -> Metrics:
    """A Metrics with every family holding at least one sample."""
    m = Metrics(version="9.9.9")
    m.refresh(config("a"), [status("a")], [target_state("a", retiring=1)], now=NOW)
    m.observe_rotation(
        RotationResult(
            "a", ROTATION_ID, Outcome.ROLLED_BACK, error="mistral create_key: timed out"
        ),
        3.5,
        journal=[entry("planned")],
    )
    m.observe_call("mistral", "create_key", "200", 0.2)
    m.set_leader(True)
    m.set_audit_head(7, "ab" * 32)
    return m


def test_exposed_families_have_the_documented_names_types_and_labels() -> None:
    """Every metric of docs/http-api.md is exposed with its type and labels, and nothing else
    (no _created)."""
    assert families(populated()) == EXPECTED


def test_counter_and_histogram_sample_names_follow_prometheus_conventions() -> None:
    """Counters end in _total; histograms expose _bucket, _count and _sum; no _created series."""
    names = {
        line.split("{")[0].split(" ")[0]
        for line in exposition(populated()).splitlines()
        if line and not line.startswith("#")
    }
    assert "rotator_rotations_total" in names
    assert "rotator_leader_transitions_total" in names
    assert "rotator_backend_requests_total" in names
    assert {
        "rotator_rotation_duration_seconds_bucket",
        "rotator_rotation_duration_seconds_count",
        "rotator_rotation_duration_seconds_sum",
    } <= names
    assert not [n for n in names if n.endswith("_created")]


def test_each_metrics_has_its_own_registry_not_the_global_one() -> None:
    """Two Metrics never share samples, and nothing is registered on the default registry."""
    first, second = Metrics(), Metrics()
    first.set_leader(True)
    assert first.sample("rotator_leader") == 1.0
    assert second.sample("rotator_leader") == 0.0
    assert prometheus_client.REGISTRY.get_sample_value("rotator_leader") is None


def test_build_info_names_the_version() -> None:
    """rotator_build_info is 1 with the running version as label."""
    assert Metrics(version="1.2.3").sample("rotator_build_info", {"version": "1.2.3"}) == 1.0


def test_state_gauges_show_the_refreshed_snapshot() -> None:
    """Last/next rotation and pending revocations come from the snapshot, in Unix seconds."""
    m = Metrics()
    m.refresh(config("a"), [status("a")], [target_state("a", retiring=2)], now=NOW)
    t = {"target": "a"}
    last = (NOW - timedelta(days=2)).timestamp()
    assert m.sample("rotator_key_last_rotation_timestamp_seconds", t) == last
    assert (
        m.sample("rotator_key_next_rotation_timestamp_seconds", t)
        == (NOW + timedelta(days=5)).timestamp()
    )
    assert m.sample("rotator_previous_keys_pending_revocation", t) == 2.0
    assert m.sample("rotator_rotation_consecutive_failures", t) == 0.0


def test_consecutive_failures_follow_the_state_and_clear_on_success() -> None:
    """The failures gauge shows the state's count of failed attempts since the last success (the
    signal for "keeps failing": the next-rotation gauge moves to the end of each backoff)."""
    m = Metrics()
    m.refresh(config("a"), [status("a")], [target_state("a", failures=3)], now=NOW)
    assert m.sample("rotator_rotation_consecutive_failures", {"target": "a"}) == 3.0
    m.refresh(config("a"), [status("a")], [target_state("a")], now=NOW)
    assert m.sample("rotator_rotation_consecutive_failures", {"target": "a"}) == 0.0


@pytest.mark.parametrize(
    ("expiration", "expected"),
    [
        (None, NOW - timedelta(days=2) + timedelta(days=30)),
        (date(2026, 4, 30), NOW - timedelta(days=2) + timedelta(days=30)),
        (date(2026, 3, 20), datetime(2026, 3, 21, tzinfo=UTC)),
    ],
)
def test_expiration_is_the_earlier_of_max_age_and_the_mistral_expiry(
    expiration: date | None, expected: datetime
) -> None:
    """The expiration gauge is min(last rotation + max_age, the key's Mistral expiry)."""
    m = Metrics()
    m.refresh(config("a"), [status("a")], [target_state("a", expiration=expiration)], now=NOW)
    assert (
        m.sample("rotator_key_expiration_timestamp_seconds", {"target": "a"})
        == expected.timestamp()
    )


def test_mistral_expiry_is_the_midnight_after_the_expiration_date() -> None:
    """Mistral refuses a key once the UTC date is past its expiration_date."""
    assert mistral_expiry(date(2026, 3, 20)) == datetime(2026, 3, 21, tzinfo=UTC)
    assert mistral_expiry(None) is None


def test_a_target_never_rotated_has_no_last_rotation_and_unknown_readiness() -> None:
    """No history: no last-rotation or expiration sample, a next-rotation one, Ready Unknown."""
    m = Metrics()
    m.refresh(config("new"), [status("new", last=None, compliant=False)], [], now=NOW)
    t = {"target": "new"}
    assert m.sample("rotator_key_last_rotation_timestamp_seconds", t) is None
    assert m.sample("rotator_key_expiration_timestamp_seconds", t) is None
    assert m.sample("rotator_key_next_rotation_timestamp_seconds", t) is not None
    assert m.sample("rotator_key_ready_status", {**t, "condition": "Unknown"}) == 1.0
    assert m.sample("rotator_previous_keys_pending_revocation", t) == 0.0


@pytest.mark.parametrize(
    ("row", "expiration", "ready"),
    [
        (status("a"), None, "True"),
        (status("a", state="draining"), None, "True"),
        (status("a", state="failing"), None, "True"),
        (status("a", state="stuck"), None, "False"),
        (status("a", compliant=False), None, "False"),
        (status("a"), date(2026, 3, 9), "False"),
    ],
    ids=["idle", "draining", "failing-but-compliant", "stuck", "older-than-max-age", "expired"],
)
def test_ready_status_has_exactly_one_condition_set(
    row: TargetStatus, expiration: date | None, ready: str
) -> None:
    """rotator_key_ready_status is 1 for the target's condition and 0 for the two others."""
    m = Metrics()
    m.refresh(config("a"), [row], [target_state("a", expiration=expiration)], now=NOW)
    values = {
        c: m.sample("rotator_key_ready_status", {"target": "a", "condition": c}) for c in CONDITIONS
    }
    assert values == {c: 1.0 if c == ready else 0.0 for c in CONDITIONS}


def test_refresh_replaces_the_snapshot_and_drops_unconfigured_targets() -> None:
    """A target that left the configuration disappears from the gauges at the next refresh."""
    m = Metrics()
    m.refresh(config("a", "b"), [status("a"), status("b")], [], now=NOW)
    assert m.sample("rotator_key_next_rotation_timestamp_seconds", {"target": "b"}) is not None
    m.refresh(config("a"), [status("a"), status("b")], [], now=NOW)
    assert m.sample("rotator_key_next_rotation_timestamp_seconds", {"target": "b"}) is None
    assert [row.target for row in m.targets] == ["a"]


def test_every_configured_target_has_its_rotation_counters_from_zero() -> None:
    """After a refresh each target shows rotations_total at 0 for every counted outcome (so the
    first failure is an increase an alert can see); a target that leaves loses its series."""
    m = Metrics()
    m.refresh(config("a", "b"), [status("a"), status("b")], [], now=NOW)
    for target in ("a", "b"):
        for outcome in ("rotated", "promoted", "rolled_back", "stuck", "skipped"):
            labels = {"target": target, "outcome": outcome}
            assert m.sample("rotator_rotations_total", labels) == 0.0
        assert m.sample("rotator_rotations_total", {"target": target, "outcome": "planned"}) is None
    m.observe_rotation(RotationResult("a", ROTATION_ID, Outcome.STUCK), 1.0)
    m.refresh(config("a"), [status("a")], [], now=NOW)
    assert m.sample("rotator_rotations_total", {"target": "a", "outcome": "stuck"}) == 1.0
    assert m.sample("rotator_rotations_total", {"target": "b", "outcome": "stuck"}) is None


def test_observe_rotation_counts_outcomes_and_durations() -> None:
    """Each finished rotation adds to rotations_total{outcome} and the duration histogram."""
    m = Metrics()
    m.observe_rotation(RotationResult("a", ROTATION_ID, Outcome.PROMOTED), 12.0)
    m.observe_rotation(RotationResult("a", ROTATION_ID, Outcome.ROTATED), 3.0)
    m.observe_rotation(RotationResult("a", None, Outcome.SKIPPED), 0.0)
    assert m.sample("rotator_rotations_total", {"target": "a", "outcome": "promoted"}) == 1.0
    assert m.sample("rotator_rotations_total", {"target": "a", "outcome": "skipped"}) == 1.0
    assert m.sample("rotator_rotation_duration_seconds_count", {"target": "a"}) == 3.0
    assert m.sample("rotator_rotation_duration_seconds_sum", {"target": "a"}) == 15.0
    assert "rotator_rotation_step_failures_total{" not in exposition(m)


def test_a_failed_rotation_counts_a_step_failure_from_its_journal() -> None:
    """A rolled back rotation after `created` failed in verify, with the error's reason."""
    m = Metrics()
    result = RotationResult(
        "a", ROTATION_ID, Outcome.ROLLED_BACK, error="key 0123456789ab failed verification: x: y"
    )
    m.observe_rotation(
        result, 4.0, journal=[entry("planned", 1), entry("created", 2), entry("rolling_back", 3)]
    )
    labels = {"target": "a", "step": "verify", "reason": "verification_failed"}
    assert m.sample("rotator_rotation_step_failures_total", labels) == 1.0


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], "plan"),
        (["planned"], "create"),
        (["planned", "created"], "verify"),
        ([*FORWARD[:3], "staging:abc", "staged:abc"], "stage"),
        (FORWARD[:4], "read_back"),
        (FORWARD[:5], "promote"),
        ([*FORWARD[:6], "promoting:abc", "stuck"], "promote"),
        ([*FORWARD, "stuck"], "finish"),
        (["planned", "created", "rolling_back", "rolled_back"], "verify"),
    ],
)
def test_failed_step_is_the_step_after_the_last_forward_state(
    steps: list[str], expected: str
) -> None:
    """The failed step is named after what the rotation was attempting when it failed."""
    assert failed_step([entry(s, i) for i, s in enumerate(steps)]) == expected


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (str(TransientError("mistral", "create_key", "timed out")), "timeout"),
        (str(TransientError("mistral", "create_key", "server error", status=503)), "server_error"),
        (str(PermanentError("vault", "write", "denied", status=403)), "auth"),
        (str(TransientError("aws", "PutSecretValue", "throttled", status=429)), "rate_limited"),
        (str(TransientError("mistral", "verify", "could not connect")), "unreachable"),
        (str(ConflictError("vault p/a: managed by 'eso', not 'rotator'")), "conflict"),
        ("key 0123456789ab failed verification: unauthorized: 401", "verification_failed"),
        ("something nobody planned for", "error"),
        (None, "error"),
    ],
)
def test_failure_reason_is_a_small_fixed_vocabulary(error: str | None, reason: str) -> None:
    """Error lines map to a handful of reason labels; anything else is `error`."""
    assert failure_reason(error) == reason


def test_leader_gauge_and_transitions() -> None:
    """rotator_leader follows set_leader; each change of value counts one transition."""
    m = Metrics()
    m.set_leader(False)
    assert (m.sample("rotator_leader"), m.sample("rotator_leader_transitions_total")) == (0.0, 0.0)
    m.set_leader(True)
    m.set_leader(True)
    assert (m.sample("rotator_leader"), m.sample("rotator_leader_transitions_total")) == (1.0, 1.0)
    m.set_leader(False)
    assert (m.sample("rotator_leader"), m.sample("rotator_leader_transitions_total")) == (0.0, 2.0)


def test_observe_call_counts_and_times_backend_calls() -> None:
    """observe_call (the Mistral on_call shape) feeds the request counter and histogram."""
    m = Metrics()
    m.observe_call("mistral", "verify", "401", 0.25)
    m.observe_call("mistral", "verify", "401", 0.5)
    labels = {"backend": "mistral", "operation": "verify", "status": "401"}
    assert m.sample("rotator_backend_requests_total", labels) == 2.0
    assert m.sample("rotator_backend_request_duration_seconds_count", labels) == 2.0
    assert m.sample("rotator_backend_request_duration_seconds_sum", labels) == 0.75


def test_destination_calls_reach_the_injected_on_call_hook() -> None:
    """Each destination SDK call is reported once with its outcome to the ``on_call`` its seam
    was built with; a seam built without one reports to nobody."""
    m = Metrics()
    with observed("vault", "read", "secret/data/p/a", m.observe_call):
        pass
    with pytest.raises(TransientError), observed("aws", "PutSecretValue", "p/a", m.observe_call):
        raise TransientError("aws", "PutSecretValue", "throttled", status=429)
    with pytest.raises(ConflictError), observed("vault", "write", "p/a", m.observe_call):
        raise ConflictError("cas mismatch")
    with observed("vault", "read", "secret/data/p/a", None):
        pass
    assert (
        m.sample(
            "rotator_backend_requests_total",
            {"backend": "vault", "operation": "read", "status": "ok"},
        )
        == 1.0
    )
    assert (
        m.sample(
            "rotator_backend_requests_total",
            {"backend": "aws", "operation": "PutSecretValue", "status": "transient"},
        )
        == 1.0
    )
    assert (
        m.sample(
            "rotator_backend_requests_total",
            {"backend": "vault", "operation": "write", "status": "conflict"},
        )
        == 1.0
    )
    assert "secret/data/p/a" not in exposition(m)


def test_a_failing_on_call_hook_does_not_break_the_destination_call() -> None:
    """A hook that raises is ignored: the call's own result is what the caller sees."""

    def broken(backend: str, operation: str, status: str, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    with observed("vault", "read", "p", broken):
        value = 42
    assert value == 42


def test_no_metric_carries_a_key_a_key_id_or_a_rotation_id() -> None:
    """Canary: a plaintext in an error line, key ids and rotation ids never reach the exposition."""
    secret = Secret(PLAINTEXT)
    m = Metrics()
    m.refresh(config("a"), [status("a")], [target_state("a", retiring=1)], now=NOW)
    m.observe_rotation(
        RotationResult(
            "a", ROTATION_ID, Outcome.STUCK, new_key_id=KEY_ID, error=f"boom {secret.reveal()}"
        ),
        1.0,
        journal=[entry("planned"), entry("created")],
    )
    m.observe_rotation(RotationResult("a", ROTATION_ID, Outcome.PROMOTED, new_key_id=KEY_ID), 1.0)
    text = exposition(m)
    assert "rotator_rotation_step_failures_total{" in text
    for forbidden in (PLAINTEXT, KEY_ID, ROTATION_ID, "0123456789ab", "old-0"):
        assert forbidden not in text
