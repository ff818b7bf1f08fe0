"""The daemon's publication of the audit trail's head: log lines and metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from structlog.testing import capture_logs

from rotator.clock import FakeClock
from rotator.daemon.audit_head import AuditHeadPublisher
from rotator.daemon.metrics import Metrics
from rotator.secret import Secret
from rotator.state import SqlStateStore

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HMAC_KEY = Secret("audit-hmac-key-for-tests-0123456789abcdef")


async def test_the_head_is_logged_when_it_changes_and_hourly(tmp_path: Path) -> None:
    """`audit_head` (rows, full head hash) is logged at the first publication, again as soon as
    a row is appended, and hourly while nothing changes; the metrics always show the head, one
    head series at a time. The HMAC key chains the rows but never appears."""
    clock = FakeClock(START)
    store = SqlStateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=clock, audit_key=HMAC_KEY)
    await store.migrate()
    metrics = Metrics()
    publisher = AuditHeadPublisher(metrics, clock)
    try:
        with capture_logs() as logs:
            first = await publisher.publish(store)
            clock.advance(59 * 60)
            await publisher.publish(store)
            event = await store.append_audit("test.event", facts={"n": 1})
            second = await publisher.publish(store)
            clock.advance(59 * 60)
            await publisher.publish(store)
            clock.advance(60)
            await publisher.publish(store)
    finally:
        await store.close()
    assert (first.rows, second.rows, second.head_hash) == (0, 1, event.hash)
    assert [(e["event"], e["rows"], e["head"]) for e in logs] == [
        ("audit_head", 0, first.head_hash),
        ("audit_head", 1, event.hash),
        ("audit_head", 1, event.hash),
    ]
    assert metrics.sample("rotator_audit_rows") == 1.0
    assert metrics.sample("rotator_audit_head_info", {"head": event.hash}) == 1.0
    assert metrics.sample("rotator_audit_head_info", {"head": first.head_hash}) is None
    exported = repr(logs) + "".join(str(f.samples) for f in metrics.registry.collect())
    assert HMAC_KEY.reveal() not in exported
