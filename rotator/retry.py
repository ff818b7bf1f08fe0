"""Retrying idempotent backend calls: capped exponential backoff with full jitter.

Only :class:`rotator.errors.TransientError` is retried; every other exception propagates at
once. A ``retry_after`` carried by the error (a server's ``Retry-After``) is honoured as the
minimum wait. The total time spent waiting is bounded: when the next wait would cross
``RetryPolicy.max_elapsed`` the last error is raised instead (it still carries ``retry_after``,
so a scheduler can come back later). Time is read and slept through an injected
:class:`rotator.clock.Clock`, so tests run instantly with ``FakeClock``.

Also here, because every HTTP backend needs it: :func:`parse_retry_after`.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import structlog

from rotator.clock import Clock
from rotator.errors import TransientError

T = TypeVar("T")

log = structlog.get_logger(__name__)

_system_random = secrets.SystemRandom()


def uniform01() -> float:
    """A uniform draw from [0, 1): the default source of jitter."""
    return _system_random.random()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry a transient failure.

    ``max_attempts`` counts the first try (1 = never retry). The n-th wait is drawn uniformly
    from ``[0, min(max_delay, base_delay * 2**(n-1))]`` ("full jitter"), raised to the error's
    ``retry_after`` when it carries one. No wait starts that would end after ``max_elapsed``
    seconds since the first attempt began.
    """

    max_attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_elapsed: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_elapsed < 0:
            raise ValueError("delays must not be negative")

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that tries once."""
        return cls(max_attempts=1)

    def delay(
        self, retry: int, *, retry_after: float | None, rand: Callable[[], float] = uniform01
    ) -> float:
        """The wait before retry number ``retry`` (1 = the wait after the first failure)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        wait = ceiling * rand()
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


async def retry_async(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    clock: Clock,
    describe: str = "",
    rand: Callable[[], float] = uniform01,
) -> T:
    """Await ``operation()`` until it returns, retrying on ``TransientError`` per ``policy``.

    Returns the first successful result. Raises the last ``TransientError`` when attempts or
    the time budget run out, and any other exception unchanged on its first occurrence.
    ``operation`` must be safe to repeat (idempotent).
    """
    started = clock.monotonic()
    attempt = 1
    while True:
        try:
            return await operation()
        except TransientError as error:
            if attempt >= policy.max_attempts:
                raise
            wait = policy.delay(attempt, retry_after=error.retry_after, rand=rand)
            if clock.monotonic() - started + wait > policy.max_elapsed:
                raise
            log.info(
                "retry.scheduled",
                call=describe,
                attempt=attempt,
                wait_seconds=wait,
                status=error.status,
                error=type(error).__name__,
            )
            await clock.sleep(wait)
            attempt += 1


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (delta-seconds or an HTTP date).

    ``None`` when absent or unparseable; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
