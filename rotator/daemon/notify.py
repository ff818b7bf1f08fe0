"""Webhook notifications: what an operator must hear about, posted in the background.

:class:`Notifier` is the engine's alert hook (``await notifier(alert)``, an ``AlertHook``) and
takes the events the daemon raises itself (:meth:`Notifier.notify`: overdue, succeeded). Each
notification goes to every webhook of ``notifications.webhooks`` subscribed to its event, as
generic JSON or as a Slack-compatible message. Delivery runs in background tasks and never
blocks a rotation: a failed post is retried with capped, jittered exponential backoff (5xx, 429
honouring ``Retry-After``, timeouts, refused connections), a 4xx other than 429 is not retried,
and the number of attempts and of deliveries in flight are bounded (beyond that a notification
is dropped and counted). A failure is logged and counted, never raised; the webhook is named
by its position in the configuration, never by its URL (URLs carry tokens: they are secrets).
Text is scrubbed (:func:`rotator.logs.scrub`), so nothing shaped like a key leaves.

Engine alerts and the configuration's event names (``notifications.webhooks[].events``):

=============================== ======================= ==================================
engine alert                    notification event      why
=============================== ======================= ==================================
``rotation_failed``             ``rotation_failed``     rolled back; the old key still served
``rollback_incomplete``         ``rotation_failed``     rolled back, a clean-up is pending
``rotation_stuck``              ``rotation_stuck``      failed after promotion; both keys valid
``old_key_in_use_at_max_grace`` ``old_key_in_use``      drain gave up: revoked while in use
``revocation_refused``          ``old_key_in_use``      an old key still served: not revoked
``revocation_deferred``         ``old_key_in_use``      an immediate (emergency, zero-grace)
                                                        revocation failed: revoke-due retries
``adoption_refused``            ``old_key_in_use``      the pre-rotator key cannot be told
                                                        apart: it will stay valid
anything else                   ``rotation_stuck``      unknown alerts need an operator
=============================== ======================= ==================================

``rotation_overdue`` and ``rotation_succeeded`` come from the daemon through :meth:`notify`.
The generic JSON body is ``{event, target, rotation_id, message, at, alert}`` (``alert``: the
engine alert it came from, or null); the Slack body is ``{"text": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import get_args
from urllib.parse import urlsplit

import httpx
import structlog

from rotator import __version__
from rotator.clock import Clock, SystemClock
from rotator.config import Config, NotifyEvent, Webhook
from rotator.engine.context import Alert
from rotator.errors import ConfigError
from rotator.logs import scrub
from rotator.retry import RetryPolicy, parse_retry_after

log = structlog.get_logger(__name__)

NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)

ALERT_EVENTS: Mapping[str, NotifyEvent] = {
    "rotation_failed": "rotation_failed",
    "rollback_incomplete": "rotation_failed",
    "rotation_stuck": "rotation_stuck",
    "old_key_in_use_at_max_grace": "old_key_in_use",
    "revocation_refused": "old_key_in_use",
    "revocation_deferred": "old_key_in_use",
    "adoption_refused": "old_key_in_use",
}
"""Engine alert → notification event (the table in the module docstring)."""

UNKNOWN_ALERT_EVENT: NotifyEvent = "rotation_stuck"

DEFAULT_RETRY = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=60.0, max_elapsed=600.0)
"""Up to 5 tries within 10 minutes (full-jitter backoff from 1 s, capped at 60 s)."""

MAX_MESSAGE = 1000
"""Characters of message text kept (a webhook is a pager, not a log)."""


def event_for(alert: str) -> NotifyEvent:
    """The notification event an engine alert is delivered as."""
    return ALERT_EVENTS.get(alert, UNKNOWN_ALERT_EVENT)


@dataclass(frozen=True, slots=True)
class Notification:
    """One thing to tell operators; every field is secret-free (scrubbed on creation)."""

    event: NotifyEvent
    target: str
    rotation_id: str | None
    message: str
    at: datetime
    alert: str | None = None

    def as_json(self) -> dict[str, str | None]:
        """The generic JSON body."""
        return {
            "event": self.event,
            "target": self.target,
            "rotation_id": self.rotation_id,
            "message": self.message,
            "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "alert": self.alert,
        }

    def as_slack(self) -> dict[str, str]:
        """A Slack incoming-webhook body (``&``, ``<`` and ``>`` escaped as Slack wants)."""
        rotation = f" (rotation {self.rotation_id})" if self.rotation_id else ""
        text = f"[rotator] {self.event}: {self.target}{rotation}: {self.message}"
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"text": escaped}

    def body(self, fmt: str) -> dict[str, str | None] | dict[str, str]:
        return self.as_slack() if fmt == "slack" else self.as_json()


class Notifier:
    """Posts notifications to the configured webhooks in the background.

    ``stats`` counts outcomes per delivery (one webhook, one notification): ``delivered``,
    ``failed`` (gave up: a 4xx, or retries exhausted) and ``dropped`` (too many in flight).
    :meth:`aclose` waits (bounded) for deliveries in flight, then cancels the rest.
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        *,
        clock: Clock | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_pending: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
        source: str = "<config>",
    ) -> None:
        for index, hook in enumerate(webhooks):
            parts = urlsplit(hook.url.reveal())
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ConfigError(
                    source, f"notifications.webhooks[{index}].url", "must be an http(s) URL"
                )
        self.webhooks = tuple(webhooks)
        self.clock: Clock = clock or SystemClock()
        self.retry = retry
        self.max_pending = max_pending
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": f"rotator/{__version__}"},
        )

    @classmethod
    def from_config(cls, cfg: Config, *, clock: Clock | None = None) -> Notifier:
        """The notifier of ``cfg.notifications`` (no webhooks = a notifier that sends nothing)."""
        return cls(cfg.notifications.webhooks, clock=clock, source=cfg.source)

    @property
    def pending(self) -> int:
        """Deliveries in flight (posting or waiting to retry)."""
        return len(self._tasks)

    async def __call__(self, alert: Alert) -> None:
        """The engine's alert hook: deliver ``alert`` as its notification event (returns at
        once; see the module docstring for the mapping)."""
        self.notify(
            event_for(alert.event),
            alert.target,
            rotation_id=alert.rotation_id,
            message=alert.message,
            alert=alert.event,
        )

    def notify(
        self,
        event: NotifyEvent,
        target: str,
        *,
        rotation_id: str | None = None,
        message: str = "",
        alert: str | None = None,
    ) -> int:
        """Start delivering ``event`` to every subscribed webhook; returns how many deliveries
        started. Never waits and never raises for a delivery problem; needs a running loop."""
        if event not in NOTIFY_EVENTS:
            raise ValueError(f"unknown notification event {event!r}")
        note = Notification(
            event=event,
            target=scrub(target),
            rotation_id=scrub(rotation_id) if rotation_id else None,
            message=_one_line(scrub(message)),
            at=self.clock.now(),
            alert=alert,
        )
        started = 0
        for index, hook in enumerate(self.webhooks):
            if event not in hook.events:
                continue
            if len(self._tasks) >= self.max_pending:
                self.stats["dropped"] += 1
                log.warning(
                    "notification_dropped", webhook=index, notify_event=event, target=target
                )
                continue
            task = asyncio.create_task(self._deliver(index, hook, note))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def _deliver(self, index: int, hook: Webhook, note: Notification) -> None:
        started = self.clock.monotonic()
        attempt = 0
        while True:
            attempt += 1
            status, retry_after, error = await self._post(hook, note)
            if status is not None and 200 <= status < 300:
                self.stats["delivered"] += 1
                log.info(
                    "notification_sent", webhook=index, notify_event=note.event, target=note.target
                )
                return
            retryable = status is None or status == 429 or status >= 500
            wait = self.retry.delay(attempt, retry_after=retry_after)
            out_of_time = self.clock.monotonic() - started + wait > self.retry.max_elapsed
            if not retryable or attempt >= self.retry.max_attempts or out_of_time:
                self.stats["failed"] += 1
                log.warning(
                    "notification_failed",
                    webhook=index,
                    notify_event=note.event,
                    target=note.target,
                    status=status,
                    error=error,
                    attempts=attempt,
                    retried=retryable,
                )
                return
            await self.clock.sleep(wait)

    async def _post(
        self, hook: Webhook, note: Notification
    ) -> tuple[int | None, float | None, str | None]:
        """One POST: (status or None, Retry-After seconds, error class name)."""
        try:
            answer = await self._http.post(
                hook.url.reveal(),
                json=note.body(hook.format),
                timeout=hook.timeout.total_seconds(),
            )
        except httpx.HTTPError as exc:
            return None, None, type(exc).__name__  # the text may quote the URL
        retry_after = parse_retry_after(answer.headers.get("retry-after"), now=self.clock.now())
        return answer.status_code, retry_after, None

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the deliveries in flight; True if none is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return not self._tasks

    async def aclose(self, timeout: float = 5.0) -> None:
        """Finish what is in flight (bounded by ``timeout``), cancel the rest, close the client.

        Idempotent. A cancelled delivery counts as ``failed``."""
        if not await self.drain(timeout):
            left = set(self._tasks)
            for task in left:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*left, return_exceptions=True)
            self.stats["failed"] += len(left)
            log.warning("notifications_abandoned", count=len(left))
        await self._http.aclose()


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 1] + "…"


__all__ = [
    "ALERT_EVENTS",
    "DEFAULT_RETRY",
    "Notification",
    "Notifier",
    "event_for",
]
