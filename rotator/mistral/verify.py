"""``GET /v1/models`` as the proof that a key works: the :class:`rotator.contracts.KeyVerifier`.

The verdict depends on the HTTP status only, never on the body (live bodies vary)::

    200              OK
    401 / 403        UNAUTHORIZED       unknown, revoked, expired, or not active yet
    402              PAYMENT_REQUIRED   billing inactive on the organization
    429              SPEND_LIMITED      if the spend-limit probe says the monthly limit is reached
                     RATE_LIMITED       otherwise
    5xx, timeout,    UNAVAILABLE
    network, other

:meth:`MistralVerifier.wait_active` polls inside an activation window with jittered exponential
backoff (0.1 s doubling to about 1 s), waits out a ``Retry-After`` on 429 when the window allows,
and stops at once on PAYMENT_REQUIRED or SPEND_LIMITED, which a few seconds will not cure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import httpx
import structlog

from rotator.clock import Clock, SystemClock
from rotator.contracts import OnCall
from rotator.errors import BackendError
from rotator.keys import VerifyOutcome, VerifyResult
from rotator.mistral._http import (
    USER_AGENT,
    HttpBackend,
    transport_reason,
)
from rotator.retry import parse_retry_after, uniform01
from rotator.secret import Secret

SpendLimitProbe = Callable[[], Awaitable[bool | None]]
"""Answers whether the monthly spending limit is reached (normally
:meth:`rotator.mistral.admin.MistralAdminClient.spend_limit_reached`); None = unknown."""

FINAL = frozenset({VerifyOutcome.OK, VerifyOutcome.PAYMENT_REQUIRED, VerifyOutcome.SPEND_LIMITED})
"""Outcomes that end :meth:`MistralVerifier.wait_active` at once."""

log = structlog.get_logger(__name__)


class MistralVerifier(HttpBackend):
    """Checks keys against ``{api_url}/v1/models``; ``transport`` is the test seam."""

    def __init__(
        self,
        *,
        api_url: str,
        timeout: float = 10.0,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        spend_limit_probe: SpendLimitProbe | None = None,
        on_call: OnCall | None = None,
        user_agent: str = USER_AGENT,
        first_delay: float = 0.1,
        max_delay: float = 1.0,
        rand: Callable[[], float] = uniform01,
    ) -> None:
        self._probe = spend_limit_probe
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._rand = rand
        super().__init__(
            base_url=api_url,
            timeout=timeout,
            user_agent=user_agent,
            transport=transport,
            clock=clock or SystemClock(),
            on_call=on_call,
        )

    async def check(self, secret: Secret) -> VerifyResult:
        """As :meth:`KeyVerifier.check`: one call, ``attempts`` = 1."""
        result, _ = await self._check(secret)
        return result

    async def wait_active(self, secret: Secret, *, timeout: float) -> VerifyResult:
        """As :meth:`KeyVerifier.wait_active`.

        Checks at once, then after waits drawn from ``[d/2, d]`` with ``d`` doubling from
        ``first_delay`` up to ``max_delay``; after a 429 the wait is at least its
        ``Retry-After``. No wait runs past the window; a last check is made at its end.
        ``elapsed`` is measured on the injected clock from the start of the first check.
        """
        started = self._clock.monotonic()
        attempts = 0
        ceiling = self._first_delay
        while True:
            result, retry_after = await self._check(secret)
            attempts += 1
            remaining = timeout - (self._clock.monotonic() - started)
            if result.outcome in FINAL or remaining <= 0:
                break
            wait = ceiling * (0.5 + 0.5 * self._rand())
            if retry_after is not None:
                wait = max(wait, retry_after)
            ceiling = min(self._max_delay, ceiling * 2)
            await self._clock.sleep(min(wait, remaining))
        final = dataclasses.replace(
            result, attempts=attempts, elapsed=self._clock.monotonic() - started
        )
        log.info(
            "mistral.key_verified" if final.ok else "mistral.key_not_verified",
            fingerprint=final.fingerprint,
            outcome=final.outcome.value,
            status=final.status,
            attempts=final.attempts,
            elapsed=final.elapsed,
        )
        return final

    async def _check(self, secret: Secret) -> tuple[VerifyResult, float | None]:
        """One classified call, and the ``Retry-After`` of a 429 (None otherwise)."""
        started = self._clock.monotonic()
        request = self._http.build_request(
            "GET", "/v1/models", headers={"authorization": f"Bearer {secret.reveal()}"}
        )
        status: int | None = None
        retry_after: float | None = None
        try:
            response = await self._send(request, "verify")
        except httpx.HTTPError as exc:
            outcome, detail = VerifyOutcome.UNAVAILABLE, transport_reason(exc)
        else:
            status = response.status_code
            outcome = await self._classify(status)
            detail = f"HTTP {status}"
            if status == 429:
                now = self._clock.now()
                retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
        result = VerifyResult(
            outcome=outcome,
            fingerprint=secret.fingerprint,
            status=status,
            attempts=1,
            elapsed=self._clock.monotonic() - started,
            detail=detail,
        )
        return result, retry_after

    async def _classify(self, status: int) -> VerifyOutcome:
        if status == 200:
            return VerifyOutcome.OK
        if status in (401, 403):
            return VerifyOutcome.UNAUTHORIZED
        if status == 402:
            return VerifyOutcome.PAYMENT_REQUIRED
        if status == 429:
            return (
                VerifyOutcome.SPEND_LIMITED
                if await self._spend_limit_reached()
                else VerifyOutcome.RATE_LIMITED
            )
        return VerifyOutcome.UNAVAILABLE

    async def _spend_limit_reached(self) -> bool:
        if self._probe is None:
            return False
        try:
            return await self._probe() is True
        except BackendError as error:
            log.warning("mistral.spend_limit_probe_failed", error=str(error))
            return False
