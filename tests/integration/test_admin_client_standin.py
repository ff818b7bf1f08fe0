"""MistralAdminClient against the Mistral stand-in over real sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from rotator.clock import FakeClock
from rotator.errors import AmbiguousCreate, AuthError, PermanentError, TransientError
from rotator.mistral.admin import AuthHeader, MistralAdminClient
from rotator.retry import RetryPolicy
from rotator.secret import Secret
from rotator_dev.standin import (
    ARCHIVED_WORKSPACE_ID,
    SEED_USER_EMAIL,
    FaultKind,
    FaultWhen,
    Operation,
    StandinHandle,
)

pytestmark = pytest.mark.integration

ClientFactory = Callable[..., MistralAdminClient]


@pytest.fixture
async def clients(standin: StandinHandle) -> AsyncIterator[ClientFactory]:
    """Builds admin clients for the stand-in (fake clock: retry waits are instant); closes them."""
    made: list[MistralAdminClient] = []

    def make(
        *,
        auth_header: AuthHeader = "bearer",
        path_prefix: str = "/v1/admin",
        admin_key: str | None = None,
        clock: FakeClock | None = None,
        page_size: int = 100,
        timeout: float = 5.0,
    ) -> MistralAdminClient:
        client = MistralAdminClient(
            base_url=standin.url,
            admin_key=Secret(admin_key or standin.admin_key),
            auth_header=auth_header,
            path_prefix=path_prefix,
            timeout=timeout,
            retry=RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=1, max_elapsed=30),
            clock=clock or FakeClock(),
            page_size=page_size,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.mark.parametrize(
    ("auth_header", "prefix"), [("bearer", "/v1/admin"), ("x-api-key", "/api/admin")]
)
async def test_create_list_delete_round_trip(
    standin: StandinHandle, clients: ClientFactory, auth_header: AuthHeader, prefix: str
) -> None:
    """Create, list, delete, delete again (False) work with both header styles and prefixes."""
    admin = clients(auth_header=auth_header, path_prefix=prefix)
    created = await admin.create_key(
        workspace_id=standin.workspace_id,
        user_id=standin.user_id,
        name="round-trip-1",
        expiration=None,
    )
    facts = standin.control.key(created.info.key_id)
    assert facts.fingerprint == created.secret.fingerprint
    assert created.info.workspace_id == standin.workspace_id
    assert created.info.name == "round-trip-1"

    listed = await admin.list_keys(workspace_id=standin.workspace_id)
    assert [k.key_id for k in listed] == [created.info.key_id]
    assert listed[0].hidden_key == facts.hidden_key
    assert listed[0].created_at == created.info.created_at

    assert await admin.delete_key(created.info.key_id) is True
    assert await admin.delete_key(created.info.key_id) is False
    assert await admin.list_keys(workspace_id=standin.workspace_id) == []
    assert standin.control.key(created.info.key_id).deleted


async def test_listing_many_keys_pages_with_a_short_last_page(
    standin: StandinHandle, clients: ClientFactory
) -> None:
    """12 keys listed five at a time take three requests and come back complete and once each."""
    admin = clients(page_size=5)
    ids = [
        (
            await admin.create_key(
                workspace_id=standin.workspace_id,
                user_id=standin.user_id,
                name=f"page-{i:02d}",
                expiration=None,
            )
        ).info.key_id
        for i in range(12)
    ]
    before = standin.control.requests().get(Operation.LIST_KEYS, 0)
    listed = await admin.list_keys()
    assert [k.key_id for k in listed] == ids
    assert standin.control.requests()[Operation.LIST_KEYS] - before == 3


async def test_name_lookup_is_exact(standin: StandinHandle, clients: ClientFactory) -> None:
    """The stand-in's substring filter is narrowed to the exact name by the client."""
    admin = clients()
    for name in ("svc-1", "svc-10", "old-svc-1"):
        await admin.create_key(
            workspace_id=standin.workspace_id, user_id=standin.user_id, name=name, expiration=None
        )
    assert [k.name for k in await admin.list_keys(name="svc-1")] == ["svc-1"]


@pytest.mark.parametrize(
    ("auth_header", "prefix"), [("bearer", "/v1/admin"), ("x-api-key", "/api/admin")]
)
async def test_a_wrong_admin_key_is_an_auth_error(
    standin: StandinHandle, clients: ClientFactory, auth_header: AuthHeader, prefix: str
) -> None:
    """A wrong admin key gets AuthError (401), in either auth style, without retries."""
    admin = clients(auth_header=auth_header, path_prefix=prefix, admin_key="not-the-admin-key")
    with pytest.raises(AuthError) as caught:
        await admin.list_keys()
    assert caught.value.status == 401
    assert standin.control.requests()[Operation.LIST_KEYS] == 1


@pytest.mark.parametrize("fault", [FaultKind.DROP, FaultKind.HANG])
async def test_failure_after_create_names_the_created_key(
    standin: StandinHandle, clients: ClientFactory, fault: FaultKind
) -> None:
    """A connection dropped, or timed out, after the key was made gives AmbiguousCreate(key_id)."""
    admin = clients(timeout=0.5)
    standin.control.inject(Operation.CREATE_KEY, fault, when=FaultWhen.AFTER)
    with pytest.raises(AmbiguousCreate) as caught:
        await admin.create_key(
            workspace_id=standin.workspace_id,
            user_id=standin.user_id,
            name="orphan-1",
            expiration=None,
        )
    (orphan,) = standin.control.key_facts()
    assert orphan.name == "orphan-1"
    assert caught.value.key_id == orphan.key_id
    assert standin.control.requests()[Operation.CREATE_KEY] == 1
    assert await admin.delete_key(orphan.key_id) is True


async def test_503_before_create_is_safe_to_retry(
    standin: StandinHandle, clients: ClientFactory
) -> None:
    """A 503 that created nothing gives a plain TransientError after one POST and a lookup."""
    admin = clients()
    standin.control.fail(Operation.CREATE_KEY, 503)
    with pytest.raises(TransientError) as caught:
        await admin.create_key(
            workspace_id=standin.workspace_id, user_id=standin.user_id, name="n-1", expiration=None
        )
    assert type(caught.value) is TransientError
    assert standin.control.key_facts() == []
    assert standin.control.requests()[Operation.CREATE_KEY] == 1
    assert standin.control.requests()[Operation.LIST_KEYS] == 1


async def test_503_on_list_is_retried_to_success(
    standin: StandinHandle, clients: ClientFactory
) -> None:
    """Two 503s on the list are retried and the third attempt succeeds."""
    admin = clients()
    standin.control.fail(Operation.LIST_KEYS, 503, count=2)
    assert await admin.list_keys() == []
    assert standin.control.requests()[Operation.LIST_KEYS] == 3


async def test_429_retry_after_is_honoured(standin: StandinHandle, clients: ClientFactory) -> None:
    """A 429 with Retry-After: 3 makes the client wait three seconds (on its clock) and retry."""
    clock = FakeClock()
    admin = clients(clock=clock)
    standin.control.fail(Operation.LIST_WORKSPACES, 429, retry_after=3)
    assert await admin.list_workspaces()
    assert clock.monotonic() == pytest.approx(3.0)
    assert standin.control.requests()[Operation.LIST_WORKSPACES] == 2


async def test_past_expiration_is_a_422_summarised(
    standin: StandinHandle, clients: ClientFactory
) -> None:
    """The stand-in's 422 for a past expiration becomes a PermanentError naming the field only."""
    admin = clients()
    past = standin.control.now().date() - timedelta(days=3)
    with pytest.raises(PermanentError) as caught:
        await admin.create_key(
            workspace_id=standin.workspace_id, user_id=standin.user_id, name="n", expiration=past
        )
    assert caught.value.status == 422
    assert "body.expiration" in str(caught.value)
    assert past.isoformat() not in str(caught.value)


async def test_granted_expiration_is_read_back(
    standin: StandinHandle, clients: ClientFactory
) -> None:
    """An organization policy that shortens the expiration shows in the created key's info."""
    admin = clients()
    standin.control.set_max_expiration_days(10)
    today = standin.control.now().date()
    created = await admin.create_key(
        workspace_id=standin.workspace_id,
        user_id=standin.user_id,
        name="policy-1",
        expiration=today + timedelta(days=90),
    )
    assert created.info.expiration_date == today + timedelta(days=10)


async def test_workspaces_users_and_spend_limit(
    standin: StandinHandle, clients: ClientFactory
) -> None:
    """Workspaces page fully with the archived one flagged; users resolve; the flag reads back."""
    admin = clients(page_size=2)
    workspaces = {w.uuid: w for w in await admin.list_workspaces()}
    assert len(workspaces) >= 4
    assert workspaces[ARCHIVED_WORKSPACE_ID].is_archived
    assert not workspaces[standin.workspace_id].is_archived

    by_email = await admin.find_user(email=SEED_USER_EMAIL.upper())
    assert by_email is not None
    assert by_email.uuid == standin.user_id
    by_id = await admin.find_user(user_id=standin.user_id)
    assert by_id == by_email
    assert await admin.find_user(email="nobody@example.com") is None

    assert await admin.spend_limit_reached() is False
    standin.control.set_spend_limit(standin.workspace_id, True)
    assert await admin.spend_limit_reached() is True


async def test_many_members_are_paged_to_find_one(
    standin: StandinHandle, clients: ClientFactory
) -> None:
    """Finding a member by uuid reads the member pages until it appears."""
    ids = [standin.control.add_user(f"user{i}@example.com") for i in range(7)]
    admin = clients(page_size=3)
    found = await admin.find_user(user_id=ids[-1])
    assert found is not None
    assert found.email == "user6@example.com"
