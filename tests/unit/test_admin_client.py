"""MistralAdminClient against an httpx.MockTransport: requests, mappings, paging, create safety."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any, TypeVar

import httpx
import pytest
from structlog.testing import capture_logs

from rotator.clock import FakeClock
from rotator.errors import AmbiguousCreate, AuthError, BackendError, PermanentError, TransientError
from rotator.keys import ApiKey
from rotator.mistral.admin import AuthHeader, MistralAdminClient
from rotator.retry import RetryPolicy
from rotator.secret import Secret

ADMIN_KEY = "adminCanaryAAAABBBBCCCCDDDDEEEE1"
PLAINTEXT = "keyCanaryZZZZYYYYXXXXWWWWVVVVUU9"
WS = "6f1c2b9e-0d3a-4c55-9b7e-1a2b3c4d5e6f"
OTHER_WS = "0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
USER = "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce"
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records every request and delegates to ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def sent(self, method: str, path_end: str = "") -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path.endswith(path_end)]


def key_json(key_id: str, name: str | None, workspace_id: str | None = WS, **extra: Any) -> Any:
    return {
        "key_id": key_id,
        "key": None,
        "name": name,
        "hidden_key": "abcd...wxyz",
        "created_at": "2026-02-01T10:00:00Z",
        "expiration_date": "2026-04-01",
        "last_used": None,
        "workspace_id": workspace_id,
        "workspace_name": "prod",
        "created_by": USER,
        "product": "API",
        "can_delete": True,
        "actions": {"delete": {"status": "available"}},
        **extra,
    }


def created_json(key_id: str = "k-new", name: str = "svc-1") -> Any:
    return {
        "key_id": key_id,
        "key": PLAINTEXT,
        "name": name,
        "hidden_key": "keyC...UU9",
        "created_at": "2026-03-01T12:00:00.123456Z",
        "expiration_date": "2026-03-31",
        "actions": {},
    }


def make_client(
    recorder: Recorder,
    *,
    clock: FakeClock | None = None,
    attempts: int = 3,
    **kwargs: Any,
) -> MistralAdminClient:
    return MistralAdminClient(
        base_url="https://admin.test",
        admin_key=Secret(ADMIN_KEY),
        transport=httpx.MockTransport(recorder),
        clock=clock or FakeClock(),
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.1, max_delay=1, max_elapsed=30),
        **kwargs,
    )


@pytest.fixture
def canary_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log event of the test; fails it if a canary plaintext appears in any of them."""
    with capture_logs() as logs:
        yield logs
    rendered = json.dumps(logs, default=repr)
    assert ADMIN_KEY not in rendered
    assert PLAINTEXT not in rendered


def assert_clean(error: BaseException) -> None:
    """Neither canary appears in the error, its repr, or anything chained to it."""
    node: BaseException | None = error
    while node is not None:
        for text in (str(node), repr(node), repr(node.args)):
            assert ADMIN_KEY not in text
            assert PLAINTEXT not in text
        node = node.__cause__ or node.__context__


# -- requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth_header", "prefix", "path"),
    [
        ("bearer", "/v1/admin", "/v1/admin/api-keys"),
        ("x-api-key", "/api/admin", "/api/admin/api-keys"),
        ("bearer", "api/admin/", "/api/admin/api-keys"),
    ],
)
async def test_auth_header_and_prefix_shape_the_request(
    auth_header: AuthHeader, prefix: str, path: str
) -> None:
    """Both header styles and both path prefixes produce the documented request."""
    recorder = Recorder(lambda r: httpx.Response(200, json={"keys": []}))
    async with make_client(recorder, auth_header=auth_header, path_prefix=prefix) as client:
        await client.list_keys()
    (request,) = recorder.requests
    assert request.url.path == path
    assert request.url.host == "admin.test"
    if auth_header == "bearer":
        assert request.headers["authorization"] == f"Bearer {ADMIN_KEY}"
        assert "x-api-key" not in request.headers
    else:
        assert request.headers["x-api-key"] == ADMIN_KEY
        assert "authorization" not in request.headers
    assert request.headers["user-agent"].startswith("rotator/")


def test_unknown_auth_header_is_refused() -> None:
    """An auth_header other than bearer or x-api-key is a construction error."""
    with pytest.raises(ValueError, match="auth_header"):
        MistralAdminClient(
            base_url="https://admin.test",
            admin_key=Secret(ADMIN_KEY),
            auth_header="basic",  # type: ignore[arg-type]
        )


# -- listing keys -------------------------------------------------------------------------------


def paged_keys(total: int) -> Handler:
    """A list endpoint serving ``total`` keys with limit/offset."""
    keys = [key_json(f"k{i}", f"svc-{i}") for i in range(total)]

    def handler(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params["limit"])
        offset = int(request.url.params["offset"])
        return httpx.Response(200, json={"keys": keys[offset : offset + limit]})

    return handler


async def test_list_keys_pages_until_a_short_page() -> None:
    """Keys are read page by page with limit/offset until a page is shorter than the limit."""
    recorder = Recorder(paged_keys(5))
    async with make_client(recorder, page_size=2) as client:
        keys = await client.list_keys()
    assert [k.key_id for k in keys] == ["k0", "k1", "k2", "k3", "k4"]
    assert [(r.url.params["limit"], r.url.params["offset"]) for r in recorder.requests] == [
        ("2", "0"),
        ("2", "2"),
        ("2", "4"),
    ]


async def test_list_keys_stops_on_an_empty_page_after_full_ones() -> None:
    """When the count is a multiple of the limit, an empty page ends the listing."""
    recorder = Recorder(paged_keys(4))
    async with make_client(recorder, page_size=2) as client:
        keys = await client.list_keys()
    assert len(keys) == 4
    assert len(recorder.requests) == 3


async def test_list_keys_filters_workspace_client_side() -> None:
    """The workspace filter is applied locally; no workspace parameter is sent."""
    keys = [key_json("a", "x"), key_json("b", "y", OTHER_WS), key_json("c", "z", None)]
    recorder = Recorder(lambda r: httpx.Response(200, json={"keys": keys}))
    async with make_client(recorder) as client:
        mine = await client.list_keys(workspace_id=WS)
    assert [k.key_id for k in mine] == ["a"]
    assert set(recorder.requests[0].url.params) == {"limit", "offset"}


async def test_list_keys_by_name_keeps_exact_matches() -> None:
    """``name`` is sent as the server's substring filter and then matched exactly."""
    keys = [key_json("a", "svc-1"), key_json("b", "svc-10"), key_json("c", "other-svc-1")]
    recorder = Recorder(lambda r: httpx.Response(200, json={"keys": keys}))
    async with make_client(recorder) as client:
        found = await client.list_keys(name="svc-1")
    assert [k.key_id for k in found] == ["a"]
    assert recorder.requests[0].url.params["name"] == "svc-1"


async def test_keys_seen_twice_across_pages_are_returned_once() -> None:
    """A key that shifts into the next page while listing is not duplicated."""
    pages = [[key_json("a", "1"), key_json("b", "2")], [key_json("b", "2")]]
    recorder = Recorder(lambda r: httpx.Response(200, json={"keys": pages.pop(0)}))
    async with make_client(recorder, page_size=2) as client:
        keys = await client.list_keys()
    assert [k.key_id for k in keys] == ["a", "b"]


async def test_key_fields_are_parsed_leniently() -> None:
    """Dates parse from ISO (Z) and YYYY-MM-DD; unknown fields are ignored; absent ones None."""
    full = key_json("a", "svc", last_used="2026-02-20", brand_new_field={"x": 1})
    bare = {"key_id": "b"}
    odd = key_json("c", "svc", created_at="yesterday", expiration_date="2026-13-45")
    recorder = Recorder(lambda r: httpx.Response(200, json={"keys": [full, bare, odd]}))
    async with make_client(recorder) as client:
        a, b, c = await client.list_keys()
    assert a == ApiKey(
        key_id="a",
        name="svc",
        hidden_key="abcd...wxyz",
        workspace_id=WS,
        created_at=datetime(2026, 2, 1, 10, 0, tzinfo=UTC),
        expiration_date=date(2026, 4, 1),
        last_used=date(2026, 2, 20),
        created_by=USER,
        product="API",
        can_delete=True,
    )
    assert b == ApiKey("b", None, None, None, None, None, None)
    assert c.created_at is None
    assert c.expiration_date is None


@pytest.mark.parametrize(
    "body",
    [{"items": []}, {"keys": "nope"}, {"keys": [1, 2]}, {"keys": [{"name": "no id"}]}, [1]],
)
async def test_malformed_listing_is_permanent(body: Any) -> None:
    """An answer without a list of key objects (or a key without key_id) is a PermanentError."""
    recorder = Recorder(lambda r: httpx.Response(200, json=body))
    async with make_client(recorder) as client:
        with pytest.raises(PermanentError):
            await client.list_keys()
    assert len(recorder.requests) == 1


# -- status and transport mapping ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "calls"),
    [
        (401, AuthError, 1),
        (403, AuthError, 1),
        (404, PermanentError, 1),
        (400, PermanentError, 1),
        (409, PermanentError, 1),
        (422, PermanentError, 1),
        (302, PermanentError, 1),
        (429, TransientError, 3),
        (500, TransientError, 3),
        (502, TransientError, 3),
        (503, TransientError, 3),
        (504, TransientError, 3),
    ],
)
async def test_status_mapping_and_retries(
    status: int, error_type: type[BackendError], calls: int, canary_logs: list[Any]
) -> None:
    """Each status maps to its error; only 429/5xx are retried, up to max_attempts."""
    recorder = Recorder(lambda r: httpx.Response(status, json={"detail": "nope"}))
    async with make_client(recorder, attempts=3) as client:
        with pytest.raises(error_type) as caught:
            await client.list_keys()
    assert type(caught.value) is error_type
    assert caught.value.status == status
    assert caught.value.operation == "list_keys"
    assert len(recorder.requests) == calls
    assert_clean(caught.value)


@pytest.mark.parametrize(
    ("exc_type", "error_type", "calls"),
    [
        (httpx.ReadTimeout, TransientError, 3),
        (httpx.ConnectTimeout, TransientError, 3),
        (httpx.ConnectError, TransientError, 3),
        (httpx.ReadError, TransientError, 3),
        (httpx.RemoteProtocolError, TransientError, 3),
        (httpx.UnsupportedProtocol, PermanentError, 1),
    ],
)
async def test_transport_errors_map_to_backend_errors(
    exc_type: type[httpx.RequestError], error_type: type[BackendError], calls: int
) -> None:
    """Timeouts and connection failures are transient and retried; a bad URL is permanent."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"boom {ADMIN_KEY}", request=request)

    recorder = Recorder(handler)
    async with make_client(recorder) as client:
        with pytest.raises(error_type) as caught:
            await client.list_workspaces()
    assert len(recorder.requests) == calls
    assert caught.value.status is None
    assert caught.value.__context__ is None
    assert_clean(caught.value)


async def test_retry_after_seconds_is_carried_and_honoured() -> None:
    """A 429's Retry-After (seconds) is waited out before the retry that succeeds."""
    answers = [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json={})]
    answers[1] = httpx.Response(200, json={"keys": []})
    recorder = Recorder(lambda r: answers.pop(0))
    clock = FakeClock()
    async with make_client(recorder, clock=clock) as client:
        assert await client.list_keys() == []
    assert len(recorder.requests) == 2
    assert clock.monotonic() == pytest.approx(7.0)


async def test_retry_after_http_date_is_parsed_against_the_clock() -> None:
    """A Retry-After given as an HTTP date becomes seconds from the injected clock's now."""
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    when = format_datetime(clock.now() + timedelta(seconds=45), usegmt=True)
    recorder = Recorder(lambda r: httpx.Response(503, headers={"Retry-After": when}))
    async with make_client(recorder, clock=clock, attempts=1) as client:
        with pytest.raises(TransientError) as caught:
            await client.delete_key("k1")
    assert caught.value.retry_after == pytest.approx(45.0)


async def test_retries_stop_at_a_permanent_error() -> None:
    """A 503 is retried, and the 401 that follows ends the retrying."""
    answers = [httpx.Response(503), httpx.Response(401), httpx.Response(200, json={"keys": []})]
    recorder = Recorder(lambda r: answers.pop(0))
    async with make_client(recorder, attempts=5) as client:
        with pytest.raises(AuthError):
            await client.list_keys()
    assert len(recorder.requests) == 2


async def test_503_then_success_is_retried_to_success() -> None:
    """An idempotent call that meets a 503 succeeds on the retry."""
    answers = [httpx.Response(503), httpx.Response(200, json={"keys": [key_json("a", "x")]})]
    recorder = Recorder(lambda r: answers.pop(0))
    async with make_client(recorder) as client:
        keys = await client.list_keys()
    assert [k.key_id for k in keys] == ["a"]


# -- create -------------------------------------------------------------------------------------


async def test_create_sends_the_documented_body_and_wraps_the_plaintext(
    canary_logs: list[Any],
) -> None:
    """Create posts workspace_uuid/user_id/name/expiration and returns the key inside a Secret."""
    recorder = Recorder(lambda r: httpx.Response(200, json=created_json()))
    async with make_client(recorder) as client:
        created = await client.create_key(
            workspace_id=WS, user_id=USER, name="svc-1", expiration=date(2026, 4, 30)
        )
    (request,) = recorder.requests
    assert request.method == "POST"
    assert request.url.path == "/v1/admin/api-keys"
    assert json.loads(request.content) == {
        "workspace_uuid": WS,
        "user_id": USER,
        "name": "svc-1",
        "expiration": "2026-04-30",
    }
    assert isinstance(created.secret, Secret)
    assert created.secret.reveal() == PLAINTEXT
    assert created.info.key_id == "k-new"
    assert created.info.expiration_date == date(2026, 3, 31)  # what Mistral granted
    assert created.info.workspace_id == WS
    assert created.info.created_at == datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert PLAINTEXT not in repr(created)
    assert any(e["event"] == "mistral.key_created" for e in canary_logs)


async def test_create_without_expiration_sends_null() -> None:
    """No expiration is sent as null."""
    recorder = Recorder(lambda r: httpx.Response(200, json=created_json()))
    async with make_client(recorder) as client:
        await client.create_key(workspace_id=WS, user_id=USER, name="svc-1", expiration=None)
    assert json.loads(recorder.requests[0].content)["expiration"] is None


def create_then_list(create: Callable[[httpx.Request], httpx.Response], keys: list[Any]) -> Handler:
    """POST answers with ``create``; GET lists ``keys`` (filtered by the name substring)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return create(request)
        name = request.url.params.get("name", "")
        return httpx.Response(200, json={"keys": [k for k in keys if name in (k["name"] or "")]})

    return handler


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


E = TypeVar("E", bound=BaseException)


async def create_failing(recorder: Recorder, expected: type[E], **client_kwargs: Any) -> E:
    """One create of a key named ``svc-1`` in WS, which must raise ``expected``; the error."""
    async with make_client(recorder, **client_kwargs) as client:
        with pytest.raises(expected) as caught:
            await client.create_key(workspace_id=WS, user_id=USER, name="svc-1", expiration=None)
    return caught.value


async def test_ambiguous_create_with_the_key_found_names_it(canary_logs: list[Any]) -> None:
    """A timeout after sending, then exactly one key with the name: AmbiguousCreate(key_id)."""
    keys = [key_json("k-orphan", "svc-1"), key_json("k-old", "svc-10")]
    recorder = Recorder(create_then_list(read_timeout, keys))
    error = await create_failing(recorder, AmbiguousCreate)
    assert error.key_id == "k-orphan"
    assert error.name == "svc-1"
    assert "k-orphan" in str(error)
    assert len(recorder.sent("POST")) == 1
    assert recorder.sent("GET")[0].url.params["name"] == "svc-1"
    assert_clean(error)


async def test_timeout_and_no_key_found_stays_ambiguous() -> None:
    """A timeout after sending and no key with the name yet: still ambiguous (the server may
    create it after the lookup), so AmbiguousCreate without a key id, never "safe to retry"."""
    recorder = Recorder(create_then_list(read_timeout, [key_json("k-x", "svc-10")]))
    error = await create_failing(recorder, AmbiguousCreate)
    assert isinstance(error, AmbiguousCreate)
    assert error.key_id is None
    assert len(recorder.sent("POST")) == 1
    assert len(recorder.sent("GET")) == 1


async def test_ambiguous_create_with_two_keys_found_is_permanent() -> None:
    """A timeout after sending and two keys with the exact name: PermanentError naming both."""
    keys = [key_json("k-1", "svc-1"), key_json("k-2", "svc-1")]
    recorder = Recorder(create_then_list(read_timeout, keys))
    error = await create_failing(recorder, PermanentError)
    assert "k-1" in str(error)
    assert "k-2" in str(error)
    assert len(recorder.sent("POST")) == 1


async def test_a_same_named_key_in_another_workspace_is_not_ours() -> None:
    """Only keys in the target workspace (or without one) count in the lookup."""
    recorder = Recorder(create_then_list(read_timeout, [key_json("k-1", "svc-1", OTHER_WS)]))
    error = await create_failing(recorder, AmbiguousCreate)
    assert isinstance(error, AmbiguousCreate)
    assert error.key_id is None


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_create_5xx_is_ambiguous(status: int) -> None:
    """A 5xx on create is resolved by the lookup, and the POST is not repeated."""
    keys = [key_json("k-orphan", "svc-1")]
    recorder = Recorder(create_then_list(lambda r: httpx.Response(status), keys))
    error = await create_failing(recorder, AmbiguousCreate, attempts=5)
    assert error.key_id == "k-orphan"
    assert error.status == status
    assert len(recorder.sent("POST")) == 1


async def test_create_dropped_connection_is_ambiguous() -> None:
    """A connection dropped after sending is resolved by the lookup."""

    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected", request=request)

    recorder = Recorder(create_then_list(dropped, [key_json("k-orphan", "svc-1")]))
    error = await create_failing(recorder, AmbiguousCreate)
    assert error.key_id == "k-orphan"


async def test_create_lookup_failure_leaves_the_outcome_unknown() -> None:
    """When the lookup fails too, AmbiguousCreate carries no key_id: look again before creating."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502 if request.method == "POST" else 503)

    recorder = Recorder(handler)
    error = await create_failing(recorder, AmbiguousCreate)
    assert error.key_id is None
    assert len(recorder.sent("POST")) == 1


@pytest.mark.parametrize(
    "fail",
    [
        lambda r: httpx.Response(429, headers={"Retry-After": "3"}),
        refused,
    ],
    ids=["429", "connect-error"],
)
async def test_create_refused_before_acting_is_transient_without_lookup(
    fail: Handler,
) -> None:
    """A 429 or a connection that never opened created nothing: TransientError, no lookup."""
    recorder = Recorder(create_then_list(fail, [key_json("k-1", "svc-1")]))
    error = await create_failing(recorder, TransientError)
    assert not isinstance(error, AmbiguousCreate)
    assert recorder.sent("GET") == []
    assert len(recorder.sent("POST")) == 1


@pytest.mark.parametrize(("status", "error_type"), [(400, PermanentError), (403, AuthError)])
async def test_create_clear_4xx_is_permanent(status: int, error_type: type[BackendError]) -> None:
    """A clear 4xx on create is permanent, sent once and not looked up."""
    recorder = Recorder(create_then_list(lambda r: httpx.Response(status), []))
    error = await create_failing(recorder, error_type)
    assert type(error) is error_type
    assert len(recorder.requests) == 1


async def test_422_summary_has_locations_and_messages_but_no_values() -> None:
    """A 422 is summarised as loc: msg, without the submitted values FastAPI echoes in input."""
    detail = [
        {
            "loc": ["body", "workspace_uuid"],
            "msg": "Input should be a valid UUID",
            "type": "uuid_parsing",
            "input": "SUBMITTED-VALUE-1",
        },
        {
            "loc": ["body", "name"],
            "msg": "String should have at most 255 characters",
            "type": "string_too_long",
            "input": "SUBMITTED-VALUE-2",
            "ctx": {"max_length": 255, "value": "SUBMITTED-VALUE-3"},
        },
    ]
    recorder = Recorder(lambda r: httpx.Response(422, json={"detail": detail}))
    async with make_client(recorder) as client:
        with pytest.raises(PermanentError) as caught:
            await client.create_key(
                workspace_id="SUBMITTED-VALUE-1", user_id=USER, name="n", expiration=None
            )
    message = str(caught.value)
    assert "body.workspace_uuid: Input should be a valid UUID" in message
    assert "body.name: String should have at most 255 characters" in message
    assert "SUBMITTED-VALUE" not in message
    assert "\n" not in message
    assert len(recorder.requests) == 1


async def test_create_answer_without_plaintext_names_the_key_to_delete() -> None:
    """A create answer that lacks the plaintext still created a key: AmbiguousCreate names it."""
    body = {**created_json(), "key": None}
    recorder = Recorder(lambda r: httpx.Response(200, json=body))
    error = await create_failing(recorder, AmbiguousCreate)
    assert error.key_id == "k-new"


async def test_unreadable_create_answer_is_resolved_by_name() -> None:
    """A 200 whose body cannot be read still may have created a key: the lookup names it."""

    def create(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"key": PLAINTEXT, "name": "svc-1"})

    recorder = Recorder(create_then_list(create, [key_json("k-orphan", "svc-1")]))
    error = await create_failing(recorder, AmbiguousCreate)
    assert error.key_id == "k-orphan"
    assert len(recorder.sent("POST")) == 1
    assert_clean(error)


# -- delete -------------------------------------------------------------------------------------


async def test_delete_returns_true_then_false_when_already_gone() -> None:
    """Delete is True on 200 and False on 404 (already gone); the key id is in the path."""
    answers = [httpx.Response(200, json={"detail": "API key deleted successfully"})]
    answers.append(httpx.Response(404, json={"detail": "Not found"}))
    recorder = Recorder(lambda r: answers.pop(0))
    async with make_client(recorder) as client:
        assert await client.delete_key("k/1") is True
        assert await client.delete_key("k/1") is False
    assert recorder.requests[0].method == "DELETE"
    assert recorder.requests[0].url.raw_path == b"/v1/admin/api-keys/k%2F1"


async def test_delete_is_retried_on_5xx() -> None:
    """Delete is idempotent, so a 503 is retried."""
    answers = [httpx.Response(503), httpx.Response(200, json={})]
    recorder = Recorder(lambda r: answers.pop(0))
    async with make_client(recorder) as client:
        assert await client.delete_key("k1") is True
    assert len(recorder.requests) == 2


async def test_delete_refuses_an_empty_id() -> None:
    """An empty key id would address the collection: refused before any request."""
    recorder = Recorder(lambda r: httpx.Response(200))
    async with make_client(recorder) as client:
        with pytest.raises(ValueError, match="key_id"):
            await client.delete_key("")
    assert recorder.requests == []


# -- workspaces, users, spend limit ------------------------------------------------------------


def numbered(field: str, items: list[Any], first_page: int = 1) -> Handler:
    """A page/page_size listing of ``items`` whose pages are numbered from ``first_page``."""

    def handler(request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["page_size"])
        page = int(request.url.params.get("page", first_page))
        start = (page - first_page) * size
        body = {"total": len(items), field: items[start : start + size]}
        return httpx.Response(200, json={**body, "page": page, "page_size": size})

    return handler


@pytest.mark.parametrize("first_page", [0, 1])
async def test_list_workspaces_pages_until_total(first_page: int) -> None:
    """Workspaces are read page by page until ``total``, following the server's numbering."""
    items = [{"uuid": f"w{i}", "name": f"ws {i}", "is_default": i == 0} for i in range(5)]
    items[3]["is_archived"] = True
    recorder = Recorder(numbered("items", items, first_page))
    async with make_client(recorder, page_size=2) as client:
        workspaces = await client.list_workspaces()
    assert [w.uuid for w in workspaces] == ["w0", "w1", "w2", "w3", "w4"]
    assert [w.is_archived for w in workspaces] == [False, False, False, True, False]
    assert workspaces[1].name == "ws 1"
    pages = [r.url.params.get("page") for r in recorder.requests]
    assert pages == [None, str(first_page + 1), str(first_page + 2)]
    assert recorder.requests[0].url.path == "/v1/admin/workspaces"


async def test_list_workspaces_ends_when_the_server_ignores_page() -> None:
    """A server that repeats the same page does not make the listing loop forever."""
    items = [{"uuid": "w0", "name": "a"}, {"uuid": "w1", "name": "b"}]
    recorder = Recorder(lambda r: httpx.Response(200, json={"total": 9, "items": items}))
    async with make_client(recorder, page_size=2) as client:
        workspaces = await client.list_workspaces()
    assert len(workspaces) == 2
    assert len(recorder.requests) == 2


async def test_find_user_by_email_uses_the_server_filter() -> None:
    """By e-mail, the users endpoint is filtered server-side and matched case-insensitively."""
    members = [{"uuid": USER, "email": "Ops@Example.org", "name": "Ops", "role": "admin"}]
    recorder = Recorder(numbered("members", members))
    async with make_client(recorder) as client:
        user = await client.find_user(email="ops@example.org")
    assert user is not None
    assert (user.uuid, user.email, user.name) == (USER, "Ops@Example.org", "Ops")
    assert recorder.requests[0].url.params["email"] == "ops@example.org"
    assert recorder.requests[0].url.path == "/v1/admin/users"


async def test_find_user_by_uuid_pages_through_members() -> None:
    """By uuid, member pages are read until the member is found; an unknown uuid is None."""
    members = [{"uuid": f"u{i}", "email": f"u{i}@x.org"} for i in range(5)]
    recorder = Recorder(numbered("members", members))
    async with make_client(recorder, page_size=2) as client:
        user = await client.find_user(user_id="u4")
        missing = await client.find_user(user_id="nobody")
    assert user is not None
    assert user.email == "u4@x.org"
    assert user.name is None
    assert missing is None


async def test_find_user_needs_an_id_or_email() -> None:
    """find_user with neither uuid nor e-mail is a programming error."""
    async with make_client(Recorder(lambda r: httpx.Response(200))) as client:
        with pytest.raises(ValueError, match="user_id or email"):
            await client.find_user()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            httpx.Response(200, json={"limits": {"completion": {"monthly_limit_reached": True}}}),
            True,
        ),
        (
            httpx.Response(200, json={"limits": {"completion": {"monthly_limit_reached": False}}}),
            False,
        ),
        (httpx.Response(200, json={"limits": {}}), None),
        (
            httpx.Response(200, json={"limits": {"completion": {"monthly_limit_reached": "yes"}}}),
            None,
        ),
        (httpx.Response(200, text="not json"), None),
        (httpx.Response(500), None),
        (httpx.Response(401), None),
    ],
)
async def test_spend_limit_reached(answer: httpx.Response, expected: bool | None) -> None:
    """The monthly-limit flag is read when present; absent, malformed or failing gives None."""
    recorder = Recorder(lambda r: answer)
    async with make_client(recorder) as client:
        assert await client.spend_limit_reached() is expected
    assert recorder.requests[0].url.path == "/v1/admin/spend-limit"


# -- accounting and logging ---------------------------------------------------------------------


async def test_every_attempt_reaches_the_on_call_hook_and_the_debug_log(
    canary_logs: list[MutableMapping[str, Any]],
) -> None:
    """Each HTTP attempt is reported once with backend, operation, status and duration."""
    calls: list[tuple[str, str, str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if len(recorder.requests) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json={"keys": []})

    recorder = Recorder(handler)
    async with make_client(recorder, on_call=lambda *a: calls.append(a)) as client:
        await client.list_keys()
    assert [c[:3] for c in calls] == [
        ("mistral", "list_keys", "timeout"),
        ("mistral", "list_keys", "200"),
    ]
    assert all(c[3] >= 0 for c in calls)
    events = [e for e in canary_logs if e["event"] == "mistral.call"]
    assert [(e["operation"], e["status"], e["log_level"]) for e in events] == [
        ("list_keys", "timeout", "debug"),
        ("list_keys", "200", "debug"),
    ]
    assert not any("admin.test" in json.dumps(e, default=str) for e in canary_logs)


async def test_a_failing_hook_does_not_break_the_call() -> None:
    """An exception in the metrics hook is logged, not propagated."""

    def broken(*_: object) -> None:
        raise RuntimeError("metrics down")

    recorder = Recorder(lambda r: httpx.Response(200, json={"keys": []}))
    async with make_client(recorder, on_call=broken) as client:
        assert await client.list_keys() == []


async def test_canary_never_leaks_through_errors(canary_logs: list[Any]) -> None:
    """Across failing paths, neither the admin key nor a created plaintext reaches an error."""
    errors: list[BaseException] = []
    scenarios: list[Handler] = [
        lambda r: httpx.Response(401, json={"detail": f"bad key {ADMIN_KEY}"}),
        lambda r: httpx.Response(
            422, json={"detail": [{"loc": ["body"], "msg": "x", "input": PLAINTEXT}]}
        ),
        lambda r: httpx.Response(500, text=PLAINTEXT),
        read_timeout,
        lambda r: httpx.Response(200, json={"keys": "x", "key": PLAINTEXT}),
    ]
    for scenario in scenarios:
        async with make_client(Recorder(scenario), attempts=2) as client:
            for call in (
                client.list_keys(),
                client.create_key(workspace_id=WS, user_id=USER, name="n", expiration=None),
                client.delete_key("k"),
            ):
                try:
                    await call
                except BackendError as error:
                    errors.append(error)
    assert len(errors) == 14  # the last scenario's delete succeeds
    for caught in errors:
        assert_clean(caught)
