"""The Mistral stand-in, checked over real sockets against Mistral's documentation.

Every call here is a raw ``httpx`` request written from Mistral's public OpenAPI spec and admin
guides (as the stand-in's module docstring says), never rotator's own client, so a client bug
cannot hide behind a matching stand-in bug.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from rotator.secret import fingerprint_of
from rotator_dev.standin import (
    ARCHIVED_WORKSPACE_ID,
    BATCH_WORKSPACE_ID,
    SEED_USER_EMAIL,
    StandinControlError,
    StandinHandle,
)

pytestmark = pytest.mark.integration

KEYS = "/v1/admin/api-keys"
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
APIKEY_FIELDS = {
    "key_id",
    "key",
    "name",
    "hidden_key",
    "created_at",
    "expiration_date",
    "last_used",
    "workspace_id",
    "workspace_name",
    "created_by",
    "product",
    "can_delete",
    "actions",
}
CREATED_FIELDS = {"key_id", "key", "name", "hidden_key", "created_at", "expiration_date", "actions"}
AVAILABLE = {"rotate": {"status": "available"}, "delete": {"status": "available"}}


@pytest.fixture
def http(standin: StandinHandle) -> Iterator[httpx.Client]:
    """A plain HTTP client on the stand-in, authenticated as the organization's admin."""
    headers = {"Authorization": f"Bearer {standin.admin_key}"}
    with httpx.Client(base_url=standin.url, headers=headers, timeout=10) as client:
        yield client


def create(
    http: httpx.Client,
    standin: StandinHandle,
    name: str | None = "rot-test",
    *,
    workspace: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Create a key through the documented body; return the 200 answer."""
    body: dict[str, Any] = {
        "workspace_uuid": workspace or standin.workspace_id,
        "user_id": standin.user_id,
        "name": name,
        **extra,
    }
    response = http.post(KEYS, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def models(http: httpx.Client, key: str) -> httpx.Response:
    return http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})


def listed(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = http.get(KEYS, params=params)
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()["keys"]
    return keys


def assert_fastapi_422(response: httpx.Response, where: str, field: str | None) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail
    for error in detail:
        assert {"loc", "msg", "type"} <= set(error)
    locs = [error["loc"] for error in detail]
    assert any(loc[0] == where and (field is None or field in loc) for loc in locs), locs


# -- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/v1/admin", "/api/admin"])
@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_admin_api_answers_on_both_prefixes_with_both_headers(
    standin: StandinHandle, prefix: str, header: str
) -> None:
    """The Admin API serves /v1/admin and /api/admin, with the key as Bearer or x-api-key."""
    headers = (
        {"Authorization": f"Bearer {standin.admin_key}"}
        if header == "bearer"
        else {"x-api-key": standin.admin_key}
    )
    with httpx.Client(base_url=standin.url, headers=headers) as client:
        assert client.get(f"{prefix}/api-keys").json() == {"keys": []}
        body = {"workspace_uuid": standin.workspace_id, "user_id": standin.user_id, "name": "p"}
        created = client.post(f"{prefix}/api-keys", json=body)
        assert created.status_code == 200
        assert client.get(f"{prefix}/workspaces").status_code == 200
        assert client.get(f"{prefix}/users").status_code == 200
        assert client.get(f"{prefix}/spend-limit").status_code == 200
        deleted = client.delete(f"{prefix}/api-keys/{created.json()['key_id']}")
        assert deleted.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-the-admin-key"},
        {"x-api-key": "not-the-admin-key"},
        {"Authorization": "Basic c3RhbmRpbi1hZG1pbi1rZXk="},
    ],
    ids=["missing", "wrong-bearer", "wrong-x-api-key", "wrong-scheme"],
)
def test_admin_api_rejects_a_missing_or_wrong_admin_key(
    standin: StandinHandle, headers: dict[str, str]
) -> None:
    """Without the admin key every admin endpoint answers 401 {"detail": "..."}."""
    with httpx.Client(base_url=standin.url, headers=headers) as client:
        for method, path in [
            ("GET", KEYS),
            ("POST", KEYS),
            ("DELETE", f"{KEYS}/00000000-0000-0000-0000-000000000000"),
            ("GET", "/v1/admin/workspaces"),
            ("GET", "/v1/admin/users"),
            ("GET", "/v1/admin/spend-limit"),
        ]:
            response = client.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 401, (method, path)
            assert isinstance(response.json()["detail"], str)


def test_admin_api_rejects_a_workspace_key(http: httpx.Client, standin: StandinHandle) -> None:
    """A working workspace key is not an admin key: 401 on the Admin API."""
    key = create(http, standin)["key"]
    assert models(http, key).status_code == 200
    for headers in ({"Authorization": f"Bearer {key}"}, {"x-api-key": key}):
        response = httpx.get(f"{standin.url}{KEYS}", headers=headers)
        assert response.status_code == 401
        assert isinstance(response.json()["detail"], str)


# -- list ------------------------------------------------------------------------------------


def test_listed_key_carries_every_documented_field(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """A listed APIKey has all documented fields in their documented formats, key null."""
    standin.control.set_now(NOON, frozen=True)
    created = create(http, standin, "fields", expiration="2026-04-01")
    (key,) = listed(http)
    assert set(key) >= APIKEY_FIELDS
    assert key["key"] is None
    assert key["key_id"] == created["key_id"]
    assert key["name"] == "fields"
    assert key["hidden_key"] == f"{created['key'][:4]}...{created['key'][-4:]}"
    assert datetime.fromisoformat(key["created_at"]) == NOON
    assert key["expiration_date"] == "2026-04-01"
    assert key["last_used"] is None
    assert key["workspace_id"] == standin.workspace_id
    assert key["workspace_name"] == "Default Workspace"
    assert key["created_by"] == standin.user_id
    assert key["product"] == "API"
    assert key["can_delete"] is True
    assert key["actions"] == AVAILABLE


def test_list_covers_the_whole_organization(http: httpx.Client, standin: StandinHandle) -> None:
    """The list has no workspace filter: keys of every workspace come back together."""
    create(http, standin, "in-default")
    create(http, standin, "in-batch", workspace=BATCH_WORKSPACE_ID)
    by_name = {k["name"]: k for k in listed(http)}
    assert by_name["in-default"]["workspace_id"] == standin.workspace_id
    assert by_name["in-batch"]["workspace_id"] == BATCH_WORKSPACE_ID
    assert by_name["in-batch"]["workspace_name"] == "batch"


def test_list_pages_with_limit_and_offset_in_creation_order(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """limit/offset pages are stable, oldest first; the last page is shorter than limit."""
    names = [f"page-{i}" for i in range(5)]
    for name in names:
        create(http, standin, name)
    pages = [[k["name"] for k in listed(http, limit=2, offset=offset)] for offset in (0, 2, 4)]
    assert pages == [names[0:2], names[2:4], names[4:5]]
    assert listed(http, limit=2, offset=6) == []
    assert [k["name"] for k in listed(http)] == names  # default limit 100, offset 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
    ],
)
def test_list_validates_limit_and_offset(
    http: httpx.Client, params: dict[str, Any], field: str
) -> None:
    """limit must be 1..1000 and offset >= 0, else a FastAPI-shaped 422 on the query."""
    assert_fastapi_422(http.get(KEYS, params=params), "query", field)


def test_list_accepts_the_limit_bounds(http: httpx.Client, standin: StandinHandle) -> None:
    """limit=1 and limit=1000 are both valid."""
    create(http, standin)
    assert len(listed(http, limit=1)) == 1
    assert len(listed(http, limit=1000)) == 1


def test_name_filter_matches_a_substring_or_the_last_four(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """name= keeps keys whose name contains it, or whose key ends with it."""
    alpha = create(http, standin, "alpha-one")
    beta = create(http, standin, "beta-two")
    assert [k["key_id"] for k in listed(http, name="ALPHA")] == [alpha["key_id"]]
    assert [k["key_id"] for k in listed(http, name="a-tw")] == [beta["key_id"]]
    by_suffix = [k["key_id"] for k in listed(http, name=beta["key"][-4:])]
    assert beta["key_id"] in by_suffix
    assert listed(http, name="gamma-zzz-nothing") == []


# -- create ----------------------------------------------------------------------------------


def test_create_returns_the_plaintext_only_in_its_answer(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """Create answers 200 with a 32-alphanumeric key; no other answer ever carries it."""
    response = http.post(
        KEYS,
        json={"workspace_uuid": standin.workspace_id, "user_id": standin.user_id, "name": "once"},
    )
    assert response.status_code == 200
    created = response.json()
    assert set(created) == CREATED_FIELDS
    plaintext = created["key"]
    assert len(plaintext) == 32
    assert set(plaintext) <= set(string.ascii_letters + string.digits)
    assert created["hidden_key"] == f"{plaintext[:4]}...{plaintext[-4:]}"
    assert created["name"] == "once"
    assert created["expiration_date"] is None
    assert created["actions"] == AVAILABLE
    assert models(http, plaintext).status_code == 200
    for path in (KEYS, "/v1/admin/workspaces", "/v1/admin/users", "/_standin/keys"):
        assert plaintext not in http.get(path).text
    (facts,) = standin.control.key_facts()
    assert facts.fingerprint == fingerprint_of(plaintext)


BAD_BODIES: dict[str, tuple[Callable[[StandinHandle], Any], str | None]] = {
    "missing-workspace": (lambda s: {"user_id": s.user_id}, "workspace_uuid"),
    "missing-user": (lambda s: {"workspace_uuid": s.workspace_id}, "user_id"),
    "bad-uuid": (lambda s: {"workspace_uuid": "ws-1", "user_id": s.user_id}, "workspace_uuid"),
    "bad-date": (
        lambda s: {
            "workspace_uuid": s.workspace_id,
            "user_id": s.user_id,
            "expiration": "2026-13-01",
        },
        "expiration",
    ),
    "name-too-long": (
        lambda s: {"workspace_uuid": s.workspace_id, "user_id": s.user_id, "name": "n" * 256},
        "name",
    ),
    "expiration-in-past": (
        lambda s: {
            "workspace_uuid": s.workspace_id,
            "user_id": s.user_id,
            "expiration": "2026-03-09",
        },
        "expiration",
    ),
    "not-an-object": (lambda s: ["workspace_uuid"], None),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_create_rejects_bad_bodies_with_a_fastapi_422(
    http: httpx.Client, standin: StandinHandle, case: str
) -> None:
    """Missing fields, bad uuids or dates, long names, past expirations: 422 on the body."""
    standin.control.set_now(NOON, frozen=True)
    make_body, field = BAD_BODIES[case]
    assert_fastapi_422(http.post(KEYS, json=make_body(standin)), "body", field)
    assert standin.control.key_facts() == []


@pytest.mark.parametrize("raw", [b"", b"{not json"], ids=["empty", "malformed"])
def test_create_rejects_an_empty_or_malformed_body(http: httpx.Client, raw: bytes) -> None:
    """A body that is absent or not JSON is a 422 located at the body."""
    response = http.post(KEYS, content=raw, headers={"Content-Type": "application/json"})
    assert_fastapi_422(response, "body", None)


def test_create_accepts_a_255_character_name_and_today(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """The limits are inclusive: a 255-character name and an expiration of today pass."""
    standin.control.set_now(NOON, frozen=True)
    created = create(http, standin, "n" * 255, expiration="2026-03-10")
    assert created["expiration_date"] == "2026-03-10"


@pytest.mark.parametrize(
    ("workspace", "user", "status"),
    [
        ("0190a000-0000-7000-8000-000000000000", None, 404),
        (ARCHIVED_WORKSPACE_ID, None, 400),
        (None, "0190a000-0000-7000-8000-000000000001", 404),
    ],
    ids=["unknown-workspace", "archived-workspace", "unknown-user"],
)
def test_create_refuses_unknown_or_archived_workspaces_and_strangers(
    http: httpx.Client, standin: StandinHandle, workspace: str | None, user: str | None, status: int
) -> None:
    """The workspace must exist and be live, the user must be a member; nothing is created."""
    body = {
        "workspace_uuid": workspace or standin.workspace_id,
        "user_id": user or standin.user_id,
        "name": "refused",
    }
    response = http.post(KEYS, json=body)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)
    assert standin.control.key_facts() == []


def test_create_allows_duplicate_names(http: httpx.Client, standin: StandinHandle) -> None:
    """Names are not unique: two creates with one name make two keys."""
    first = create(http, standin, "same")
    second = create(http, standin, "same")
    assert first["key_id"] != second["key_id"]
    assert first["key"] != second["key"]
    assert [k["key_id"] for k in listed(http, name="same")] == [first["key_id"], second["key_id"]]


def test_create_keeps_the_requested_expiration_without_a_policy(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """Without an organization policy the granted expiration is the requested one."""
    standin.control.set_now(NOON, frozen=True)
    assert create(http, standin, expiration="2027-01-01")["expiration_date"] == "2027-01-01"
    assert create(http, standin, expiration=None)["expiration_date"] is None


def test_expiration_policy_shortens_or_imposes_the_expiration(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """With max_expiration_days, a later or absent expiration silently becomes the ceiling."""
    standin.control.set_now(NOON, frozen=True)
    standin.control.set_max_expiration_days(30)
    ceiling = (NOON.date() + timedelta(days=30)).isoformat()
    assert create(http, standin, "late", expiration="2026-12-31")["expiration_date"] == ceiling
    assert create(http, standin, "none", expiration=None)["expiration_date"] == ceiling
    assert create(http, standin, "early", expiration="2026-03-20")["expiration_date"] == (
        "2026-03-20"
    )
    by_name = {k["name"]: k["expiration_date"] for k in listed(http)}
    assert by_name == {"late": ceiling, "none": ceiling, "early": "2026-03-20"}


# -- delete ----------------------------------------------------------------------------------


def test_delete_answers_200_then_404_when_repeated_or_unknown(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """Delete is 200 with the documented detail; a deleted or unknown key_id is 404."""
    key_id = create(http, standin)["key_id"]
    response = http.delete(f"{KEYS}/{key_id}")
    assert response.status_code == 200
    assert response.json() == {"detail": "API key deleted successfully"}
    again = http.delete(f"{KEYS}/{key_id}")
    assert again.status_code == 404
    assert isinstance(again.json()["detail"], str)
    unknown = http.delete(f"{KEYS}/0190a000-0000-7000-8000-00000000dead")
    assert unknown.status_code == 404
    assert isinstance(unknown.json()["detail"], str)


def test_deleted_keys_leave_the_list_unless_list_deleted(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """Deleted keys are not listed by default; with list_deleted they are, not deletable."""
    kept = create(http, standin, "kept")
    gone = create(http, standin, "gone")
    assert http.delete(f"{KEYS}/{gone['key_id']}").status_code == 200
    assert [k["key_id"] for k in listed(http)] == [kept["key_id"]]
    standin.control.set_list_deleted(True)
    shown = {k["key_id"]: k for k in listed(http)}
    assert shown[gone["key_id"]]["can_delete"] is False
    assert shown[gone["key_id"]]["actions"]["delete"]["status"] == "unavailable"
    assert shown[kept["key_id"]]["can_delete"] is True


def test_deleted_key_is_refused_by_models(http: httpx.Client, standin: StandinHandle) -> None:
    """Once deleted, a key gets 401 from /v1/models."""
    created = create(http, standin)
    assert models(http, created["key"]).status_code == 200
    http.delete(f"{KEYS}/{created['key_id']}")
    assert models(http, created["key"]).status_code == 401


def test_revocation_delay_keeps_a_deleted_key_working_for_a_while(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """With a revocation delay, a deleted key passes /v1/models until the delay is over."""
    standin.control.set_now(NOON, frozen=True)
    standin.control.set_revocation_delay(60)
    created = create(http, standin)
    http.delete(f"{KEYS}/{created['key_id']}")
    assert models(http, created["key"]).status_code == 200
    standin.control.advance(61)
    assert models(http, created["key"]).status_code == 401


# -- workspaces, users, spend limit ----------------------------------------------------------


def test_workspaces_listing_has_the_documented_shape(http: httpx.Client) -> None:
    """GET workspaces is {total, items, page, page_size} with the seeded workspaces."""
    body = http.get("/v1/admin/workspaces").json()
    assert set(body) == {"total", "items", "page", "page_size"}
    assert body["total"] == 4
    assert body["page"] == 1
    item = body["items"][0]
    assert {"uuid", "name", "description", "icon", "is_default", "is_archived"} <= set(item)
    by_name = {w["name"]: w for w in body["items"]}
    assert by_name["Default Workspace"]["is_default"] is True
    assert by_name["old"]["is_archived"] is True
    assert by_name["old"]["uuid"] == ARCHIVED_WORKSPACE_ID


def test_workspaces_filter_and_page(http: httpx.Client, standin: StandinHandle) -> None:
    """search, is_archived, page and page_size narrow the workspace listing."""
    added = standin.control.add_workspace("batch-eu")

    def names(**params: str) -> list[str]:
        body = http.get("/v1/admin/workspaces", params=params).json()
        return [w["name"] for w in body["items"]]

    assert names(search="BATCH") == ["batch", "batch-eu"]
    assert names(is_archived="true") == ["old"]
    assert "old" not in names(is_archived="false")
    page2 = http.get("/v1/admin/workspaces", params={"page": 2, "page_size": 2}).json()
    assert page2["total"] == 5
    assert [w["name"] for w in page2["items"]] == ["analytics", "old"]
    standin.control.archive_workspace(added)
    assert names(is_archived="true") == ["old", "batch-eu"]
    assert_fastapi_422(http.get("/v1/admin/workspaces", params={"page": 0}), "query", "page")


def test_users_listing_has_members_and_filters_by_email(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """GET users is {members, total, page, page_size}; email= narrows by address."""
    added = standin.control.add_user("ops@example.com", name="Ops")
    body = http.get("/v1/admin/users").json()
    assert set(body) >= {"members", "total", "page", "page_size"}
    assert body["total"] == 2
    seed = body["members"][0]
    assert seed == {
        "uuid": standin.user_id,
        "email": SEED_USER_EMAIL,
        "name": "Rotator",
        "role": "admin",
    }
    filtered = http.get("/v1/admin/users", params={"email": "ops@"}).json()
    assert [m["uuid"] for m in filtered["members"]] == [added]
    assert filtered["total"] == 1
    body = {"workspace_uuid": standin.workspace_id, "user_id": added, "name": "for-ops"}
    assert http.post(KEYS, json=body).status_code == 200


def test_spend_limit_reflects_the_workspace_switches(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """monthly_limit_reached is true when any workspace (or the queried one) hit its limit."""

    def reached(**params: str) -> bool:
        body = http.get("/v1/admin/spend-limit", params=params).json()
        value: bool = body["limits"]["completion"]["monthly_limit_reached"]
        return value

    assert reached() is False
    standin.control.set_spend_limit(BATCH_WORKSPACE_ID, True)
    assert reached() is True
    assert reached(workspace_id=BATCH_WORKSPACE_ID) is True
    assert reached(workspace_id=standin.workspace_id) is False
    standin.control.set_spend_limit(BATCH_WORKSPACE_ID, False)
    assert reached() is False


# -- /v1/models ------------------------------------------------------------------------------


def test_models_lists_models_for_a_working_key(http: httpx.Client, standin: StandinHandle) -> None:
    """A valid key gets the documented model list, mistral-small-latest included."""
    response = models(http, create(http, standin)["key"])
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "mistral-small-latest" in ids
    for card in body["data"]:
        assert card["object"] == "model"
        assert isinstance(card["created"], int)
        assert card["owned_by"] == "mistralai"
        assert isinstance(card["capabilities"], dict)


def test_models_refuses_missing_and_unknown_keys_with_401(standin: StandinHandle) -> None:
    """No key or an unknown key is 401, with the gateway's {message, request_id} body."""
    for headers in ({}, {"Authorization": "Bearer AAAAbbbbCCCCddddEEEEffffGGGGhhhh"}):
        response = httpx.get(f"{standin.url}/v1/models", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["message"] == "Unauthorized"
        assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])


def test_models_401_bodies_vary_by_cause(http: httpx.Client, standin: StandinHandle) -> None:
    """A known but dead key gets {"detail": "Unauthorized"}, an unknown one {"message": ...}."""
    created = create(http, standin)
    http.delete(f"{KEYS}/{created['key_id']}")
    dead = models(http, created["key"])
    unknown = models(http, "x" * 32)
    assert (dead.status_code, unknown.status_code) == (401, 401)
    assert dead.json() == {"detail": "Unauthorized"}
    assert set(unknown.json()) == {"message", "request_id"}


def test_last_used_is_a_utc_day_that_follows_the_clock(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """last_used is set by a 200 on /v1/models to the stand-in's UTC date, day granular."""
    standin.control.set_now(datetime(2026, 3, 10, 23, 59, tzinfo=UTC), frozen=True)
    key = create(http, standin)["key"]
    assert listed(http)[0]["last_used"] is None
    assert models(http, key).status_code == 200
    assert listed(http)[0]["last_used"] == "2026-03-10"
    standin.control.advance(30)
    assert listed(http)[0]["last_used"] == "2026-03-10"
    standin.control.advance(60)
    assert models(http, key).status_code == 200
    assert listed(http)[0]["last_used"] == "2026-03-11"


def test_last_used_ignores_refused_calls(http: httpx.Client, standin: StandinHandle) -> None:
    """A call that is not a 200 does not count as a use."""
    key = create(http, standin)["key"]
    standin.control.set_billing_active(False)
    assert models(http, key).status_code == 402
    assert listed(http)[0]["last_used"] is None


def test_key_expires_the_day_after_its_expiration_date(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """A key works through its expiration_date (UTC) and is 401 from the next day on."""
    standin.control.set_now(NOON, frozen=True)
    key = create(http, standin, expiration="2026-03-11")["key"]
    assert models(http, key).status_code == 200
    standin.control.set_now(datetime(2026, 3, 11, 23, 59, 59, tzinfo=UTC), frozen=True)
    assert models(http, key).status_code == 200
    standin.control.advance(1)
    response = models(http, key)
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}


def test_activation_delay_keeps_a_new_key_unauthorized_until_it_passes(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """A fresh key is 401 on /v1/models until the activation delay has elapsed."""
    standin.control.set_now(NOON, frozen=True)
    standin.control.set_activation_delay(30)
    key = create(http, standin)["key"]
    assert models(http, key).status_code == 401
    standin.control.advance(29)
    assert models(http, key).status_code == 401
    standin.control.advance(1)
    assert models(http, key).status_code == 200


def test_activation_delay_follows_the_running_clock(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """With the clock running (not frozen), the activation delay is measured on it: a fresh key
    is 401 until the running clock has passed the delay, then 200. The delay is an hour, so no
    real time that passes during the test can end it early."""
    standin.control.set_activation_delay(3600)
    key = create(http, standin)["key"]
    assert models(http, key).status_code == 401
    standin.control.advance(3600)
    assert models(http, key).status_code == 200


def test_inactive_billing_gives_402(http: httpx.Client, standin: StandinHandle) -> None:
    """With billing inactive every valid key gets 402; re-activated, 200 again."""
    key = create(http, standin)["key"]
    standin.control.set_billing_active(False)
    assert models(http, key).status_code == 402
    standin.control.set_billing_active(True)
    assert models(http, key).status_code == 200


def test_spend_limit_gives_429_with_retry_after_to_the_next_month(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """A workspace over its monthly limit gets 429 + Retry-After; other workspaces do not."""
    standin.control.set_now(datetime(2026, 3, 31, 23, 0, tzinfo=UTC), frozen=True)
    limited = create(http, standin, "limited")["key"]
    other = create(http, standin, "other", workspace=BATCH_WORKSPACE_ID)["key"]
    standin.control.set_spend_limit(standin.workspace_id, True)
    response = models(http, limited)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3600"
    assert models(http, other).status_code == 200
    standin.control.set_spend_limit(standin.workspace_id, False)
    assert models(http, limited).status_code == 200


def test_models_calls_are_counted_per_key(http: httpx.Client, standin: StandinHandle) -> None:
    """The control view counts every /v1/models call presenting a key, and its 200s."""
    first = create(http, standin, "first")
    second = create(http, standin, "second")
    models(http, first["key"])
    models(http, first["key"])
    standin.control.set_billing_active(False)
    models(http, first["key"])
    facts = {f.name: f for f in standin.control.key_facts()}
    assert (facts["first"].models_calls, facts["first"].models_ok) == (3, 2)
    assert (facts["second"].models_calls, facts["second"].models_ok) == (0, 0)
    assert facts["first"].key_id == first["key_id"]
    assert facts["second"].key_id == second["key_id"]


def test_concurrent_creates_and_checks_stay_consistent(standin: StandinHandle) -> None:
    """Parallel clients get distinct keys, and every call is counted exactly once."""
    headers = {"Authorization": f"Bearer {standin.admin_key}"}
    body = {"workspace_uuid": standin.workspace_id, "user_id": standin.user_id, "name": "par"}

    def worker(_: int) -> list[str]:
        with httpx.Client(base_url=standin.url, headers=headers, timeout=10) as client:
            keys = [client.post(KEYS, json=body).json()["key"] for _ in range(5)]
            for key in keys:
                ok = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
                assert ok.status_code == 200
            return keys

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = [key for batch in pool.map(worker, range(8)) for key in batch]
    assert len(set(keys)) == 40
    facts = standin.control.key_facts()
    assert len({f.key_id for f in facts}) == 40
    assert {(f.models_calls, f.models_ok) for f in facts} == {(1, 1)}
    counts = standin.control.requests()
    assert (counts["create_key"], counts["models"]) == (40, 40)


# -- faults ----------------------------------------------------------------------------------

OPERATION_CALLS: dict[str, Callable[[httpx.Client, StandinHandle], httpx.Response]] = {
    "list_keys": lambda h, s: h.get(KEYS),
    "create_key": lambda h, s: h.post(
        KEYS, json={"workspace_uuid": s.workspace_id, "user_id": s.user_id, "name": "f"}
    ),
    "delete_key": lambda h, s: h.delete(f"{KEYS}/0190a000-0000-7000-8000-00000000dead"),
    "list_workspaces": lambda h, s: h.get("/v1/admin/workspaces"),
    "list_users": lambda h, s: h.get("/v1/admin/users"),
    "spend_limit": lambda h, s: h.get("/v1/admin/spend-limit"),
    "models": lambda h, s: h.get("/v1/models"),
}


@pytest.mark.parametrize("operation", sorted(OPERATION_CALLS))
def test_status_fault_hits_each_operation(
    http: httpx.Client, standin: StandinHandle, operation: str
) -> None:
    """A status fault on an operation replaces its next answer, then it behaves again."""
    call = OPERATION_CALLS[operation]
    normal = call(http, standin).status_code
    standin.control.fail(operation, 503)
    assert call(http, standin).status_code == 503
    assert call(http, standin).status_code == normal
    assert standin.control.requests()[operation] == 3


def test_status_fault_sends_retry_after_for_count_calls(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """A 429 fault with retry_after answers the next `count` calls with Retry-After."""
    standin.control.fail("list_keys", 429, retry_after=7, count=2)
    for _ in range(2):
        response = http.get(KEYS)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
    assert http.get(KEYS).status_code == 200


def test_status_fault_without_count_lasts_until_cleared(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """count=None keeps a fault armed until it is cleared."""
    standin.control.fail("spend_limit", 500, count=None)
    assert [http.get("/v1/admin/spend-limit").status_code for _ in range(3)] == [500] * 3
    assert standin.control.faults()["spend_limit"][0]["remaining"] is None
    standin.control.clear_faults("spend_limit")
    assert http.get("/v1/admin/spend-limit").status_code == 200


def test_a_status_fault_before_create_creates_nothing(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """A fault in the default 'before' mode fails the call without doing the operation."""
    standin.control.fail("create_key", 500)
    assert OPERATION_CALLS["create_key"](http, standin).status_code == 500
    assert standin.control.key_facts() == []


def test_drop_fault_closes_the_connection_without_an_answer(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """A drop fault closes the socket: httpx sees a protocol or read error, not a status."""
    standin.control.drop("list_keys")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get(KEYS)
    assert http.get(KEYS).status_code == 200


def test_drop_fault_on_models(http: httpx.Client, standin: StandinHandle) -> None:
    """The inference endpoint can drop connections too, without counting a key use."""
    created = create(http, standin)
    standin.control.drop("models")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        models(http, created["key"])
    assert standin.control.key(created["key_id"]).models_calls == 0
    assert models(http, created["key"]).status_code == 200


def test_hang_fault_outlasts_a_short_client_timeout(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """A hang longer than the client's timeout makes the client time out."""
    standin.control.hang("list_workspaces", 5)
    with pytest.raises(httpx.ReadTimeout):
        http.get("/v1/admin/workspaces", timeout=0.3)
    assert http.get("/v1/admin/workspaces").status_code == 200


def test_hang_fault_with_seconds_then_answers(http: httpx.Client, standin: StandinHandle) -> None:
    """A finite hang ends with the real answer for a patient client."""
    standin.control.hang("list_users", 0.2)
    response = http.get("/v1/admin/users", timeout=10)
    assert response.status_code == 200
    assert response.json()["total"] == 1


def test_endless_hang_lasts_until_the_client_gives_up(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """An endless hang before create never answers and never creates the key."""
    standin.control.hang("create_key", None)
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            KEYS,
            json={"workspace_uuid": standin.workspace_id, "user_id": standin.user_id},
            timeout=0.3,
        )
    assert standin.control.key_facts() == []
    assert create(http, standin)["key"]


def test_latency_fault_delays_every_call_until_cleared(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """Latency applies to every call while armed and combines with other faults."""
    standin.control.add_latency("list_keys", 5)
    for _ in range(2):
        with pytest.raises(httpx.ReadTimeout):
            http.get(KEYS, timeout=0.3)
    standin.control.clear_faults("list_keys")
    standin.control.add_latency("list_keys", 0.05)
    standin.control.fail("list_keys", 502)
    assert http.get(KEYS).status_code == 502
    assert http.get(KEYS).status_code == 200
    assert standin.control.faults()["list_keys"][0]["kind"] == "latency"


@pytest.mark.parametrize(
    ("arm", "errors"),
    [
        (lambda c: c.fail("create_key", 500, when="after"), ()),
        (
            lambda c: c.drop("create_key", when="after"),
            (httpx.RemoteProtocolError, httpx.ReadError),
        ),
        (lambda c: c.hang("create_key", None, when="after"), (httpx.ReadTimeout,)),
    ],
    ids=["status", "drop", "hang"],
)
def test_create_after_mode_creates_the_key_then_fails(
    http: httpx.Client,
    standin: StandinHandle,
    arm: Callable[[Any], None],
    errors: tuple[type[Exception], ...],
) -> None:
    """In 'after' mode create happens, then the answer is lost; the key is found by name."""
    arm(standin.control)
    body = {"workspace_uuid": standin.workspace_id, "user_id": standin.user_id, "name": "lost-1"}
    if errors:
        with pytest.raises(errors):
            http.post(KEYS, json=body, timeout=0.5)
    else:
        assert http.post(KEYS, json=body).status_code == 500
    (found,) = listed(http, name="lost-1")
    assert found["name"] == "lost-1"
    assert found["key"] is None
    assert [k.key_id for k in standin.control.key_facts()] == [found["key_id"]]


def test_delete_after_mode_deletes_then_fails(http: httpx.Client, standin: StandinHandle) -> None:
    """A 5xx after a delete leaves the key deleted: the retry gets 404."""
    key_id = create(http, standin)["key_id"]
    standin.control.fail("delete_key", 502, when="after")
    assert http.delete(f"{KEYS}/{key_id}").status_code == 502
    assert http.delete(f"{KEYS}/{key_id}").status_code == 404


@pytest.mark.parametrize(
    "fault",
    [
        {"operation": "list_keys", "kind": "latency"},
        {"operation": "list_keys", "kind": "latency", "seconds": 1, "when": "after"},
        {"operation": "list_keys", "kind": "status", "status": 99},
        {"operation": "list_keys", "kind": "status", "count": 0},
        {"operation": "rotate", "kind": "status"},
        {"operation": "list_keys", "kind": "explode"},
    ],
)
def test_meaningless_faults_are_refused(standin: StandinHandle, fault: dict[str, Any]) -> None:
    """The control API refuses a fault it could not carry out, with a 422."""
    response = httpx.post(f"{standin.url}/_standin/faults", json=fault)
    assert response.status_code == 422
    assert standin.control.faults() == {}


@pytest.mark.parametrize(
    "change",
    [
        {"activation_delay_seconds": -1},
        {"max_expiration_days": 0},
        {"billing_active": None},
        {"no_such_switch": True},
    ],
)
def test_meaningless_settings_are_refused(standin: StandinHandle, change: dict[str, Any]) -> None:
    """The control API refuses a setting it does not know or that is out of range, with 422."""
    before = standin.control.settings()
    response = httpx.post(f"{standin.url}/_standin/settings", json=change)
    assert response.status_code == 422
    assert standin.control.settings() == before


def test_faults_clear_per_operation_and_on_reset(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """Clearing one operation leaves the others armed; reset clears everything."""
    standin.control.fail("list_keys", 500, count=None)
    standin.control.fail("list_users", 500, count=None)
    standin.control.clear_faults("list_keys")
    assert set(standin.control.faults()) == {"list_users"}
    assert http.get(KEYS).status_code == 200
    standin.control.reset()
    assert standin.control.faults() == {}
    assert http.get("/v1/admin/users").status_code == 200


def test_requests_are_counted_per_operation(http: httpx.Client, standin: StandinHandle) -> None:
    """Every Mistral-facing request counts once for its operation, faulted or refused."""
    standin.control.fail("list_keys", 500)
    http.get(KEYS)
    http.get(KEYS)
    httpx.get(f"{standin.url}/api/admin/api-keys")  # 401, still counted
    http.get("/v1/models")
    counts = standin.control.requests()
    assert counts["list_keys"] == 3
    assert counts["models"] == 1
    assert counts["create_key"] == 0
    standin.control.reset()
    assert set(standin.control.requests().values()) == {0}


# -- control API -----------------------------------------------------------------------------


def test_clock_can_be_set_frozen_advanced_and_left_running(standin: StandinHandle) -> None:
    """set_now freezes or restarts the clock at a time; advance moves it by days."""
    assert standin.control.set_now(NOON, frozen=True) == NOON
    assert standin.control.now() == NOON
    assert standin.control.advance(days=2) == NOON + timedelta(days=2)
    standin.control.set_now(NOON)
    running = standin.control.now()
    assert running >= NOON
    assert running < NOON + timedelta(hours=1)
    standin.control.reset()
    assert abs(standin.control.now() - datetime.now(UTC)) < timedelta(minutes=5)


def test_control_keys_view_includes_deleted_keys(
    http: httpx.Client, standin: StandinHandle
) -> None:
    """/_standin/keys shows every key with non-secret facts, deleted ones included."""
    standin.control.set_now(NOON, frozen=True)
    created = create(http, standin, "viewed", expiration="2026-04-01")
    http.delete(f"{KEYS}/{created['key_id']}")
    facts = standin.control.key(created["key_id"])
    assert facts.deleted
    assert facts.deleted_at == NOON
    assert facts.fingerprint == fingerprint_of(created["key"])
    assert facts.expiration_date == date(2026, 4, 1)
    assert facts.hidden_key == created["hidden_key"]
    raw = httpx.get(f"{standin.url}/_standin/keys").json()["keys"][0]
    assert "key" not in raw


def test_reset_restores_the_seed_organization(http: httpx.Client, standin: StandinHandle) -> None:
    """Reset forgets keys, added users and workspaces, switches and archived flags."""
    create(http, standin)
    standin.control.add_user("extra@example.com")
    standin.control.add_workspace("extra")
    standin.control.archive_workspace(BATCH_WORKSPACE_ID)
    standin.control.set_billing_active(False)
    standin.control.set_max_expiration_days(5)
    standin.control.reset()
    assert listed(http) == []
    assert http.get("/v1/admin/users").json()["total"] == 1
    workspaces = http.get("/v1/admin/workspaces").json()
    assert workspaces["total"] == 4
    assert {w["uuid"]: w["is_archived"] for w in workspaces["items"]}[BATCH_WORKSPACE_ID] is False
    settings = standin.control.settings()
    assert settings.billing_active is True
    assert settings.max_expiration_days is None


def test_control_refuses_duplicate_and_unknown_objects(standin: StandinHandle) -> None:
    """Adding an existing workspace or archiving an unknown one is refused."""
    with pytest.raises(StandinControlError) as duplicate:
        standin.control.add_workspace("again", workspace_id=BATCH_WORKSPACE_ID)
    assert duplicate.value.status == 409
    with pytest.raises(StandinControlError) as unknown:
        standin.control.archive_workspace("0190a000-0000-7000-8000-000000000000")
    assert unknown.value.status == 404


def test_unknown_paths_answer_json_404(standin: StandinHandle) -> None:
    """A path the stand-in does not serve is a FastAPI-style JSON 404."""
    response = httpx.get(f"{standin.url}/v1/admin/api-keys-v2")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
