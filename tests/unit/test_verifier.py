"""MistralVerifier against an httpx.MockTransport: classification and the activation window."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from rotator.clock import FakeClock
from rotator.errors import TransientError
from rotator.keys import VerifyOutcome, VerifyResult
from rotator.mistral.verify import MistralVerifier, SpendLimitProbe
from rotator.secret import Secret

PLAINTEXT = "verifyCanaryQQQQRRRRSSSSTTTTUU77"
KEY = Secret(PLAINTEXT)
Handler = Callable[[httpx.Request], httpx.Response]
MODELS = {"object": "list", "data": [{"id": "mistral-small-latest", "object": "model"}]}


class Script:
    """A MockTransport handler answering from a list (the last answer repeats); it records
    the request times on the fake clock."""

    def __init__(self, clock: FakeClock, *answers: httpx.Response | type[httpx.RequestError]):
        self.clock = clock
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(self.clock.monotonic())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, httpx.Response):
            return answer
        raise answer("no answer", request=request)


def verifier(
    handler: Handler,
    clock: FakeClock,
    *,
    probe: SpendLimitProbe | None = None,
    rand: float = 1.0,
) -> MistralVerifier:
    return MistralVerifier(
        api_url="https://api.test",
        clock=clock,
        transport=httpx.MockTransport(handler),
        spend_limit_probe=probe,
        rand=lambda: rand,
    )


def probe_answering(answer: bool | None) -> tuple[SpendLimitProbe, list[int]]:
    calls: list[int] = []

    async def probe() -> bool | None:
        calls.append(1)
        return answer

    return probe, calls


@pytest.fixture
def canary_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log event of the test; fails it if the key's plaintext appears in any of them."""
    with capture_logs() as logs:
        yield logs
    assert PLAINTEXT not in json.dumps(logs, default=repr)


# -- check ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (httpx.Response(200, json=MODELS), VerifyOutcome.OK),
        (httpx.Response(200, json={"detail": "Unauthorized"}), VerifyOutcome.OK),
        (httpx.Response(401, json={"detail": "Unauthorized"}), VerifyOutcome.UNAUTHORIZED),
        (httpx.Response(401, json=MODELS), VerifyOutcome.UNAUTHORIZED),
        (httpx.Response(403, text="forbidden"), VerifyOutcome.UNAUTHORIZED),
        (
            httpx.Response(402, json={"message": "No payment method"}),
            VerifyOutcome.PAYMENT_REQUIRED,
        ),
        (httpx.Response(429, json={"message": "monthly limit"}), VerifyOutcome.RATE_LIMITED),
        (httpx.Response(500), VerifyOutcome.UNAVAILABLE),
        (httpx.Response(502, text="<html>bad gateway</html>"), VerifyOutcome.UNAVAILABLE),
        (httpx.Response(503), VerifyOutcome.UNAVAILABLE),
        (httpx.Response(404), VerifyOutcome.UNAVAILABLE),
        (
            httpx.Response(301, headers={"location": "https://elsewhere.test/"}),
            VerifyOutcome.UNAVAILABLE,
        ),
    ],
)
async def test_check_classifies_by_status_only(
    answer: httpx.Response, outcome: VerifyOutcome
) -> None:
    """The outcome follows the status code whatever the body says."""
    clock = FakeClock()
    script = Script(clock, answer)
    async with verifier(script, clock) as v:
        result = await v.check(KEY)
    assert result.outcome is outcome
    assert result.status == answer.status_code
    assert result.attempts == 1
    assert result.fingerprint == KEY.fingerprint
    assert result.ok is (outcome is VerifyOutcome.OK)
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "exc_type",
    [
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.ReadTimeout,
        httpx.RemoteProtocolError,
        httpx.ReadError,
    ],
)
async def test_network_failures_are_unavailable(exc_type: type[httpx.RequestError]) -> None:
    """Timeouts and connection failures are UNAVAILABLE, never raised."""
    clock = FakeClock()
    async with verifier(Script(clock, exc_type), clock) as v:
        result = await v.check(KEY)
    assert result.outcome is VerifyOutcome.UNAVAILABLE
    assert result.status is None
    assert result.detail


async def test_check_sends_the_key_as_bearer_to_v1_models() -> None:
    """The check is GET {api_url}/v1/models with the key as a bearer token."""
    clock = FakeClock()
    script = Script(clock, httpx.Response(200, json=MODELS))
    async with verifier(script, clock) as v:
        await v.check(KEY)
    (request,) = script.requests
    assert request.method == "GET"
    assert str(request.url) == "https://api.test/v1/models"
    assert request.headers["authorization"] == f"Bearer {PLAINTEXT}"


@pytest.mark.parametrize(
    ("probe_answer", "outcome"),
    [
        (True, VerifyOutcome.SPEND_LIMITED),
        (False, VerifyOutcome.RATE_LIMITED),
        (None, VerifyOutcome.RATE_LIMITED),
    ],
)
async def test_429_asks_the_spend_limit_probe(
    probe_answer: bool | None, outcome: VerifyOutcome
) -> None:
    """A 429 is SPEND_LIMITED only when the probe says the monthly limit is reached."""
    clock = FakeClock()
    probe, calls = probe_answering(probe_answer)
    async with verifier(Script(clock, httpx.Response(429)), clock, probe=probe) as v:
        result = await v.check(KEY)
    assert result.outcome is outcome
    assert len(calls) == 1


async def test_the_probe_is_asked_only_on_429() -> None:
    """Other statuses never call the spend-limit probe."""
    clock = FakeClock()
    probe, calls = probe_answering(True)
    script = Script(clock, httpx.Response(401), httpx.Response(402), httpx.Response(200))
    async with verifier(script, clock, probe=probe) as v:
        for _ in range(3):
            await v.check(KEY)
    assert calls == []


async def test_a_failing_probe_means_rate_limited() -> None:
    """When the probe itself fails, a 429 counts as an ordinary rate limit."""

    async def probe() -> bool | None:
        raise TransientError("mistral", "spend_limit", "down", status=503)

    clock = FakeClock()
    async with verifier(Script(clock, httpx.Response(429)), clock, probe=probe) as v:
        assert (await v.check(KEY)).outcome is VerifyOutcome.RATE_LIMITED


# -- wait_active ----------------------------------------------------------------------------------


async def test_wait_active_succeeds_after_unauthorized_answers(canary_logs: list[Any]) -> None:
    """A key that is refused three times then accepted is OK, with attempts and elapsed reported."""
    clock = FakeClock()
    script = Script(clock, *[httpx.Response(401)] * 3, httpx.Response(200, json=MODELS))
    async with verifier(script, clock, rand=1.0) as v:
        result = await v.wait_active(KEY, timeout=30)
    assert result.outcome is VerifyOutcome.OK
    assert result.attempts == 4
    assert result.elapsed == pytest.approx(0.1 + 0.2 + 0.4)
    assert script.times == pytest.approx([0, 0.1, 0.3, 0.7])
    assert any(e["event"] == "mistral.key_verified" for e in canary_logs)


async def test_wait_active_gives_up_at_the_timeout() -> None:
    """A key never accepted ends at the window with the last outcome; the last wait is cut short."""
    clock = FakeClock()
    script = Script(clock, httpx.Response(401))
    async with verifier(script, clock, rand=1.0) as v:
        result = await v.wait_active(KEY, timeout=3.0)
    assert result.outcome is VerifyOutcome.UNAUTHORIZED
    assert result.elapsed == pytest.approx(3.0)
    # checks at 0, .1, .3, .7, 1.5, 2.5 and a last one at the deadline
    assert script.times == pytest.approx([0, 0.1, 0.3, 0.7, 1.5, 2.5, 3.0])
    assert result.attempts == 7


async def test_backoff_ceiling_is_about_one_second() -> None:
    """Waits double from 0.1 s, are jittered into [d/2, d] and never exceed 1 s."""
    clock = FakeClock()
    script = Script(clock, httpx.Response(503))
    async with verifier(script, clock, rand=0.0) as v:
        await v.wait_active(KEY, timeout=10.0)
    gaps = [b - a for a, b in zip(script.times, script.times[1:], strict=False)]
    assert gaps[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert max(gaps) == pytest.approx(0.5)  # the ceiling of 1 s, jittered to its lower half
    assert all(gap <= 1.0 for gap in gaps)


@pytest.mark.parametrize(
    ("answer", "outcome", "probe_answer"),
    [
        (httpx.Response(402), VerifyOutcome.PAYMENT_REQUIRED, None),
        (httpx.Response(429, headers={"Retry-After": "1"}), VerifyOutcome.SPEND_LIMITED, True),
    ],
)
async def test_wait_active_stops_early_on_billing_outcomes(
    answer: httpx.Response, outcome: VerifyOutcome, probe_answer: bool | None
) -> None:
    """PAYMENT_REQUIRED and SPEND_LIMITED end the wait at the first answer."""
    clock = FakeClock()
    probe, _ = probe_answering(probe_answer)
    script = Script(clock, answer, httpx.Response(200, json=MODELS))
    async with verifier(script, clock, probe=probe) as v:
        result = await v.wait_active(KEY, timeout=60)
    assert result.outcome is outcome
    assert result.attempts == 1
    assert result.elapsed == 0
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "first",
    [httpx.Response(503), httpx.Response(429), httpx.ReadTimeout],
    ids=["503", "429", "timeout"],
)
async def test_unavailable_and_rate_limited_are_retried_in_the_window(
    first: httpx.Response | type[httpx.RequestError],
) -> None:
    """UNAVAILABLE and RATE_LIMITED are retried until the key answers OK."""
    clock = FakeClock()
    script = Script(clock, first, first, httpx.Response(200, json=MODELS))
    async with verifier(script, clock) as v:
        result = await v.wait_active(KEY, timeout=10)
    assert result.ok
    assert result.attempts == 3


async def test_retry_after_is_honoured_on_429() -> None:
    """A 429's Retry-After sets the wait before the next check when it exceeds the backoff."""
    clock = FakeClock()
    script = Script(
        clock, httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200, json=MODELS)
    )
    async with verifier(script, clock, rand=0.0) as v:
        result = await v.wait_active(KEY, timeout=10)
    assert result.ok
    assert script.times == [0, 2.0]
    assert result.elapsed == 2.0


async def test_retry_after_is_capped_to_the_window() -> None:
    """A Retry-After longer than the window is cut to it, and the last check runs at the end."""
    clock = FakeClock()
    script = Script(clock, httpx.Response(429, headers={"Retry-After": "60"}))
    async with verifier(script, clock) as v:
        result = await v.wait_active(KEY, timeout=2.5)
    assert result.outcome is VerifyOutcome.RATE_LIMITED
    assert script.times == [0, 2.5]
    assert result.elapsed == 2.5
    assert result.attempts == 2


async def test_zero_window_checks_once() -> None:
    """With no window, wait_active is a single check."""
    clock = FakeClock()
    script = Script(clock, httpx.Response(401))
    async with verifier(script, clock) as v:
        result = await v.wait_active(KEY, timeout=0)
    assert result.attempts == 1
    assert result.outcome is VerifyOutcome.UNAUTHORIZED


async def test_every_check_is_reported_to_the_hook() -> None:
    """Each /v1/models call reaches on_call as a 'verify' operation."""
    clock = FakeClock()
    calls: list[tuple[str, str, str, float]] = []
    script = Script(clock, httpx.Response(401), httpx.ConnectError, httpx.Response(200))
    v = MistralVerifier(
        api_url="https://api.test",
        clock=clock,
        transport=httpx.MockTransport(script),
        on_call=lambda *a: calls.append(a),
    )
    async with v:
        await v.wait_active(KEY, timeout=5)
    assert [c[:3] for c in calls] == [
        ("mistral", "verify", "401"),
        ("mistral", "verify", "connect_error"),
        ("mistral", "verify", "200"),
    ]


async def test_canary_never_leaks_through_results(canary_logs: list[Any]) -> None:
    """No outcome, detail or repr of a result carries the key, even when the server echoes it."""
    clock = FakeClock()
    echo = {"detail": f"bad key {PLAINTEXT}"}
    answers: list[httpx.Response | type[httpx.RequestError]] = [
        httpx.Response(401, json=echo),
        httpx.Response(402, json=echo),
        httpx.Response(429, json=echo, headers={"Retry-After": PLAINTEXT}),
        httpx.Response(500, text=PLAINTEXT),
        httpx.ReadTimeout,
        httpx.Response(200, json=echo),
    ]
    results: list[VerifyResult] = []
    for answer in answers:
        async with verifier(Script(clock, answer), clock) as v:
            results.append(await v.check(KEY))
            results.append(await v.wait_active(KEY, timeout=1))
    for result in results:
        assert PLAINTEXT not in repr(result)
        assert PLAINTEXT not in result.detail
