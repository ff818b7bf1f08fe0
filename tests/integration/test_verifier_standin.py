"""MistralVerifier against the Mistral stand-in's /v1/models over real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from rotator.clock import Clock, FakeClock, SystemClock
from rotator.keys import CreatedKey, VerifyOutcome
from rotator.mistral.admin import MistralAdminClient
from rotator.mistral.verify import MistralVerifier, SpendLimitProbe
from rotator.secret import Secret
from rotator_dev.standin import Operation, StandinHandle

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(standin: StandinHandle) -> AsyncIterator[MistralAdminClient]:
    """An admin client for the stand-in, to create keys and to serve as the spend-limit probe."""
    async with MistralAdminClient(
        base_url=standin.url, admin_key=Secret(standin.admin_key), timeout=5
    ) as client:
        yield client


async def new_key(standin: StandinHandle, admin: MistralAdminClient, name: str) -> CreatedKey:
    return await admin.create_key(
        workspace_id=standin.workspace_id,
        user_id=standin.user_id,
        name=name,
        expiration=standin.control.now().date() + timedelta(days=1),
    )


def verifier_for(
    url: str, *, clock: Clock | None = None, probe: SpendLimitProbe | None = None
) -> MistralVerifier:
    return MistralVerifier(
        api_url=url, timeout=5, clock=clock or SystemClock(), spend_limit_probe=probe
    )


async def test_a_fresh_key_is_ok_and_an_unknown_one_unauthorized(
    standin: StandinHandle, admin: MistralAdminClient
) -> None:
    """A just-created key passes at once; a key the stand-in never issued gets UNAUTHORIZED."""
    created = await new_key(standin, admin, "fresh-1")
    async with verifier_for(standin.url) as verifier:
        good = await verifier.check(created.secret)
        unknown = await verifier.check(Secret("x" * 32))
    assert good.outcome is VerifyOutcome.OK
    assert good.status == 200
    assert good.fingerprint == created.secret.fingerprint
    assert unknown.outcome is VerifyOutcome.UNAUTHORIZED
    assert standin.control.key(created.info.key_id).models_ok == 1


async def test_activation_delay_is_waited_out(
    standin: StandinHandle, admin: MistralAdminClient
) -> None:
    """A key inactive for its first second is polled until it works; attempts and time show it."""
    standin.control.set_activation_delay(1.0)
    created = await new_key(standin, admin, "slow-start-1")
    started = standin.control.now()
    async with verifier_for(standin.url) as verifier:
        result = await verifier.wait_active(created.secret, timeout=20)
    assert result.outcome is VerifyOutcome.OK
    assert result.attempts > 1
    facts = standin.control.key(created.info.key_id)
    assert facts.models_calls == result.attempts
    assert facts.models_ok == 1
    # The key cannot pass before its activation instant (stand-in and client share real time).
    assert result.elapsed >= (facts.active_at - started).total_seconds() - 0.05


async def test_an_expired_key_is_unauthorized(
    standin: StandinHandle, admin: MistralAdminClient
) -> None:
    """Moving the stand-in's clock past the expiration date turns OK into UNAUTHORIZED."""
    created = await new_key(standin, admin, "expiring-1")
    async with verifier_for(standin.url) as verifier:
        assert (await verifier.check(created.secret)).ok
        standin.control.advance(days=2)
        result = await verifier.check(created.secret)
    assert result.outcome is VerifyOutcome.UNAUTHORIZED
    assert result.status == 401


async def test_a_deleted_key_is_unauthorized(
    standin: StandinHandle, admin: MistralAdminClient
) -> None:
    """A key deleted through the Admin API no longer passes."""
    created = await new_key(standin, admin, "deleted-1")
    assert await admin.delete_key(created.info.key_id)
    async with verifier_for(standin.url) as verifier:
        result = await verifier.check(created.secret)
    assert result.outcome is VerifyOutcome.UNAUTHORIZED


async def test_inactive_billing_is_payment_required_and_ends_the_wait(
    standin: StandinHandle, admin: MistralAdminClient
) -> None:
    """With billing off, the key gets PAYMENT_REQUIRED and wait_active stops at the first answer."""
    created = await new_key(standin, admin, "billing-1")
    standin.control.set_billing_active(False)
    async with verifier_for(standin.url) as verifier:
        result = await verifier.wait_active(created.secret, timeout=30)
    assert result.outcome is VerifyOutcome.PAYMENT_REQUIRED
    assert result.status == 402
    assert result.attempts == 1


async def test_spend_limit_429_is_spend_limited_through_the_admin_probe(
    standin: StandinHandle, admin: MistralAdminClient
) -> None:
    """A 429 while the workspace's spending limit is reached is SPEND_LIMITED and final."""
    created = await new_key(standin, admin, "spend-1")
    standin.control.set_spend_limit(standin.workspace_id, True)
    async with verifier_for(standin.url, probe=admin.spend_limit_reached) as verifier:
        result = await verifier.wait_active(created.secret, timeout=30)
    assert result.outcome is VerifyOutcome.SPEND_LIMITED
    assert result.status == 429
    assert result.attempts == 1
    assert standin.control.requests()[Operation.SPEND_LIMIT] == 1


async def test_rate_limit_429_is_rate_limited_and_retry_after_is_honoured(
    standin: StandinHandle, admin: MistralAdminClient
) -> None:
    """An ordinary 429 is RATE_LIMITED; the wait then honours its Retry-After and succeeds."""
    created = await new_key(standin, admin, "rate-1")
    probe = admin.spend_limit_reached
    standin.control.fail(Operation.MODELS, 429, retry_after=2)
    async with verifier_for(standin.url, probe=probe) as verifier:
        limited = await verifier.check(created.secret)
    assert limited.outcome is VerifyOutcome.RATE_LIMITED

    clock = FakeClock()
    standin.control.fail(Operation.MODELS, 429, retry_after=2)
    async with verifier_for(standin.url, clock=clock, probe=probe) as verifier:
        result = await verifier.wait_active(created.secret, timeout=30)
    assert result.ok
    assert result.attempts == 2
    assert result.elapsed == pytest.approx(2.0)  # on the fake clock: exactly the Retry-After


async def test_an_unreachable_server_is_unavailable() -> None:
    """Nothing listening on the port gives UNAVAILABLE, not an exception."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with verifier_for(f"http://127.0.0.1:{port}") as verifier:
        result = await verifier.check(Secret("y" * 32))
    assert result.outcome is VerifyOutcome.UNAVAILABLE
    assert result.status is None
