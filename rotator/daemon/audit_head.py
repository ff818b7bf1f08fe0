"""Publishing the audit trail's head where the state database's writers cannot rewrite it.

The daemon's metrics loop calls :meth:`AuditHeadPublisher.publish` (every ``metrics_every``
seconds, and right after each rotation): it reads the recorded head (row count and last hash,
without walking the chain), sets ``rotator_audit_rows`` and ``rotator_audit_head_info{head}``,
and logs ``audit_head`` whenever the head changed and at least every :data:`PUBLISH_EVERY`. A head
kept from those lines is checked later with ``rotator history --expect-count N --expect-head H``
(docs/security.md, "The audit trail").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

import structlog

from rotator.clock import Clock
from rotator.contracts import AuditHead
from rotator.daemon.metrics import Metrics

log = structlog.get_logger(__name__)

PUBLISH_EVERY = timedelta(hours=1)
"""An unchanged head is logged again this often, so every log window holds one."""


class HeadSource(Protocol):
    """Where the head is read (the engine, or a ``StateStore``)."""

    async def audit_head(self) -> AuditHead: ...


class AuditHeadPublisher:
    """Remembers what it last logged, to log a head once per change and once per period."""

    def __init__(self, metrics: Metrics, clock: Clock, *, every: timedelta = PUBLISH_EVERY):
        self._metrics = metrics
        self._clock = clock
        self._every = every
        self._logged: tuple[AuditHead, datetime] | None = None

    async def publish(self, store: HeadSource) -> AuditHead:
        """Publish ``store``'s current head (metrics always, the log line when due)."""
        head = await store.audit_head()
        self._metrics.set_audit_head(head.rows, head.head_hash)
        now = self._clock.now()
        if self._logged is None or self._logged[0] != head or now - self._logged[1] >= self._every:
            log.info("audit_head", rows=head.rows, head=head.head_hash)
            self._logged = (head, now)
        return head
