"""The retry policy: full-jitter backoff, Retry-After, attempt and time bounds, only transients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from rotator.clock import FakeClock
from rotator.errors import AuthError, PermanentError, TransientError
from rotator.retry import RetryPolicy, parse_retry_after, retry_async

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def failing(
    errors: list[Exception], result: str = "done"
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An operation that raises ``errors`` in turn, then returns ``result``; counts calls."""
    calls: list[int] = []

    async def operation() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return operation, calls


def transient(retry_after: float | None = None) -> TransientError:
    return TransientError("test", "op", "flaky", status=503, retry_after=retry_after)


async def test_first_success_does_not_sleep() -> None:
    """A call that succeeds at once returns its value without waiting."""
    clock = FakeClock()
    operation, calls = failing([])
    assert await retry_async(operation, policy=RetryPolicy(), clock=clock) == "done"
    assert len(calls) == 1
    assert clock.monotonic() == 0


async def test_transient_errors_are_retried_with_exponential_ceiling() -> None:
    """Transient failures are retried; with maximal jitter the waits double from base_delay."""
    clock = FakeClock()
    operation, calls = failing([transient(), transient()])
    policy = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=10)
    assert await retry_async(operation, policy=policy, clock=clock, rand=lambda: 1.0) == "done"
    assert len(calls) == 3
    assert clock.monotonic() == pytest.approx(0.5 + 1.0)


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    """When every attempt fails, the last TransientError is raised after max_attempts calls."""
    errors: list[Exception] = [transient(), transient(), transient(retry_after=0.0)]
    operation, calls = failing([*errors, transient()])
    with pytest.raises(TransientError) as caught:
        await retry_async(operation, policy=RetryPolicy(max_attempts=3), clock=FakeClock())
    assert caught.value is errors[2]
    assert len(calls) == 3


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("test", "op", "bad request", status=400),
        AuthError("test", "op", "denied", status=401),
        ValueError("a bug"),
    ],
)
async def test_non_transient_errors_are_not_retried(error: Exception) -> None:
    """PermanentError (AuthError included) and other exceptions propagate on the first call."""
    operation, calls = failing([error])
    with pytest.raises(type(error)):
        await retry_async(operation, policy=RetryPolicy(max_attempts=5), clock=FakeClock())
    assert len(calls) == 1


async def test_retry_stops_when_a_permanent_error_follows_transients() -> None:
    """A permanent error after transient ones ends the retrying at once."""
    operation, calls = failing([transient(), PermanentError("test", "op", "gone"), transient()])
    with pytest.raises(PermanentError):
        await retry_async(operation, policy=RetryPolicy(max_attempts=5), clock=FakeClock())
    assert len(calls) == 2


async def test_retry_after_is_the_minimum_wait() -> None:
    """A retry_after carried by the error is waited out even when the jitter draws zero."""
    clock = FakeClock()
    operation, _ = failing([transient(retry_after=3.0)])
    await retry_async(operation, policy=RetryPolicy(), clock=clock, rand=lambda: 0.0)
    assert clock.monotonic() == pytest.approx(3.0)


async def test_retry_after_beyond_the_budget_raises_without_waiting() -> None:
    """A Retry-After longer than the remaining time budget gives up at once, keeping the hint."""
    clock = FakeClock()
    operation, calls = failing([transient(retry_after=120.0)])
    with pytest.raises(TransientError) as caught:
        await retry_async(operation, policy=RetryPolicy(max_elapsed=30), clock=clock)
    assert caught.value.retry_after == 120.0
    assert len(calls) == 1
    assert clock.monotonic() == 0


async def test_total_time_is_bounded() -> None:
    """No wait starts that would end after max_elapsed, however many attempts remain."""
    clock = FakeClock()
    operation, calls = failing([transient()] * 50)
    policy = RetryPolicy(max_attempts=50, base_delay=1, max_delay=4, max_elapsed=10)
    with pytest.raises(TransientError):
        await retry_async(operation, policy=policy, clock=clock, rand=lambda: 1.0)
    # waits 1, 2, 4 (= 7); the next 4 would end at 11 > 10
    assert len(calls) == 4
    assert clock.monotonic() == pytest.approx(7)


def test_delay_is_capped_and_fully_jittered() -> None:
    """The wait is drawn from [0, min(cap, base * 2**(n-1))]."""
    policy = RetryPolicy(base_delay=0.25, max_delay=8)
    assert policy.delay(1, retry_after=None, rand=lambda: 1.0) == 0.25
    assert policy.delay(3, retry_after=None, rand=lambda: 1.0) == 1.0
    assert policy.delay(30, retry_after=None, rand=lambda: 1.0) == 8
    assert policy.delay(30, retry_after=None, rand=lambda: 0.0) == 0
    assert policy.delay(1, retry_after=2.5, rand=lambda: 1.0) == 2.5


async def test_never_tries_once() -> None:
    """RetryPolicy.never() makes a single attempt."""
    operation, calls = failing([transient()])
    with pytest.raises(TransientError):
        await retry_async(operation, policy=RetryPolicy.never(), clock=FakeClock())
    assert len(calls) == 1


def test_invalid_policies_are_rejected() -> None:
    """Zero attempts or negative delays are refused at construction."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_delay=-1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-4", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
        ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0),
        ("soon", None),
        ("", None),
        ("inf", None),
        ("nan", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Retry-After is read as delta-seconds or an HTTP date relative to now; junk is None."""
    assert parse_retry_after(header, now=NOW) == expected
