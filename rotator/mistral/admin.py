"""Mistral's Admin API over async httpx: the :class:`rotator.contracts.KeyIssuer` in production.

Answers map to the error tree the same way for every operation::

    2xx                         the result
    401 / 403                   AuthError          (the admin key is wrong or lacks a right)
    404                         per operation      (delete: False; elsewhere PermanentError)
    422                         PermanentError     (FastAPI ``detail`` summarised: loc + msg only)
    other 4xx, 1xx/3xx          PermanentError
    429 / 5xx                   TransientError     (``retry_after`` from ``Retry-After``)
    timeout, connect, dropped   TransientError

Idempotent calls are retried per the injected :class:`rotator.retry.RetryPolicy`. Create is
sent exactly once per call; an ambiguous failure is resolved by looking the key up by its
(unique) name, see :meth:`MistralAdminClient.create_key`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import structlog

from rotator.clock import Clock, SystemClock
from rotator.contracts import OnCall
from rotator.errors import (
    AmbiguousCreate,
    AuthError,
    BackendError,
    PermanentError,
    RequestNotSentError,
    TransientError,
)
from rotator.keys import ApiKey, CreatedKey, User, Workspace
from rotator.mistral._http import (
    BACKEND,
    USER_AGENT,
    HttpBackend,
    transport_error,
)
from rotator.retry import RetryPolicy, parse_retry_after, retry_async
from rotator.secret import Secret

AuthHeader = Literal["bearer", "x-api-key"]
Json = dict[str, Any]
_R = TypeVar("_R")

MAX_PAGES = 1000
"""A pager that has not ended after this many pages is treated as a malformed server."""

log = structlog.get_logger(__name__)


class MistralAdminClient(HttpBackend):
    """The Admin API: list, create and delete workspace keys; workspaces, users, spend limit.

    ``transport`` is the test seam (an ``httpx.MockTransport``); ``on_call`` receives every
    HTTP attempt (see :data:`rotator.contracts.OnCall`). Use as an async context manager
    or call :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        base_url: str,
        admin_key: Secret,
        path_prefix: str = "/v1/admin",
        auth_header: AuthHeader = "bearer",
        timeout: float = 10.0,
        user_agent: str = USER_AGENT,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_call: OnCall | None = None,
        page_size: int = 100,
    ) -> None:
        if auth_header not in ("bearer", "x-api-key"):
            raise ValueError(f"auth_header must be 'bearer' or 'x-api-key', not {auth_header!r}")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._admin_key = admin_key
        self._auth_header = auth_header
        self._prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self._retry = retry or RetryPolicy()
        self._page_size = page_size
        super().__init__(
            base_url=base_url,
            timeout=timeout,
            user_agent=user_agent,
            transport=transport,
            clock=clock or SystemClock(),
            on_call=on_call,
        )

    # -- keys ---------------------------------------------------------------------------------

    async def list_keys(
        self, *, workspace_id: str | None = None, name: str | None = None
    ) -> list[ApiKey]:
        """As :meth:`KeyIssuer.list_keys`; ``name`` keeps only keys with exactly that name.

        ``name`` is also sent as the server's (substring) filter to keep the listing short.
        Keys seen twice across pages (the listing moved under us) are returned once.
        """
        params: dict[str, str | int] = {} if name is None else {"name": name}
        keys = [
            _parse_key(item)
            for item in await self._offset_pages("list_keys", "/api-keys", "keys", params)
        ]
        return [
            key
            for key in _unique(keys, lambda k: k.key_id)
            if (workspace_id is None or key.workspace_id == workspace_id)
            and (name is None or key.name == name)
        ]

    async def create_key(
        self, *, workspace_id: str, user_id: str, name: str, expiration: date | None
    ) -> CreatedKey:
        """As :meth:`KeyIssuer.create_key`. The POST is sent once, never repeated.

        After an ambiguous failure (a timeout or a dropped connection once the request may have
        been sent, a 5xx, or a 2xx answer that cannot be read), keys named ``name`` are listed
        in ``workspace_id`` (a key listed without a workspace counts as a match): exactly one
        raises :class:`AmbiguousCreate` with its key_id; none raises a plain ``TransientError``
        (creating again with the same name is safe); several raise ``PermanentError``; a failed
        lookup raises ``AmbiguousCreate`` with ``key_id=None``. A 429 or a connection that
        never opened raises ``TransientError`` (nothing was created); 401/403 ``AuthError``;
        other 4xx ``PermanentError``.
        """
        body = {
            "workspace_uuid": workspace_id,
            "user_id": user_id,
            "name": name,
            "expiration": expiration.isoformat() if expiration is not None else None,
        }
        failure: BackendError
        try:
            response = await self._attempt("create_key", "POST", "/api-keys", body=body)
        except TransientError as error:
            if isinstance(error, RequestNotSentError) or error.status == 429:
                raise
            failure = await self._resolve_ambiguous_create(workspace_id, name, error)
        else:
            try:
                return self._parse_created(response, workspace_id, name)
            except PermanentError as error:  # a success we cannot read: a key may exist
                failure = await self._resolve_ambiguous_create(workspace_id, name, error)
        raise failure

    async def delete_key(self, key_id: str) -> bool:
        """As :meth:`KeyIssuer.delete_key`. Retried; a retry after a lost answer sees False."""
        if not key_id:
            raise ValueError("key_id must not be empty")
        path = f"/api-keys/{quote(key_id, safe='')}"
        response = await self._retried("delete_key", "DELETE", path, allow=frozenset({404}))
        deleted = response.status_code != 404
        log.info("mistral.key_deleted" if deleted else "mistral.key_already_gone", key_id=key_id)
        return deleted

    # -- organization -------------------------------------------------------------------------

    async def list_workspaces(self) -> list[Workspace]:
        """As :meth:`KeyIssuer.list_workspaces`; ``is_archived`` is False when not reported."""
        items = await self._numbered_pages("list_workspaces", "/workspaces", "items", {})
        return _unique([_parse_workspace(item) for item in items], lambda w: w.uuid)

    async def find_user(
        self, *, user_id: str | None = None, email: str | None = None
    ) -> User | None:
        """As :meth:`KeyIssuer.find_user`. With both, the member must match both.

        By e-mail the server filters (compared case-insensitively here); by uuid alone every
        page of members is read until it is found. Raises ValueError when given neither.
        """
        if user_id is None and email is None:
            raise ValueError("find_user needs user_id or email")
        params: dict[str, str | int] = {} if email is None else {"email": email}
        for item in await self._numbered_pages("list_users", "/users", "members", params):
            user = _parse_user(item)
            if user_id is not None and user.uuid != user_id:
                continue
            if email is not None and (user.email or "").casefold() != email.casefold():
                continue
            return user
        return None

    async def spend_limit_reached(self) -> bool | None:
        """As :meth:`KeyIssuer.spend_limit_reached`: never raises a ``BackendError``."""
        try:
            response = await self._retried("spend_limit", "GET", "/spend-limit")
            data = _response_object(response, "spend_limit")
        except BackendError as error:
            log.warning("mistral.spend_limit_unknown", error=str(error))
            return None
        limits = _dig(data, "limits", "completion")
        reached = limits.get("monthly_limit_reached") if limits is not None else None
        return reached if isinstance(reached, bool) else None

    # -- plumbing -----------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if self._auth_header == "bearer":
            return {"authorization": f"Bearer {self._admin_key.reveal()}"}
        return {"x-api-key": self._admin_key.reveal()}

    async def _attempt(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Json | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """One HTTP exchange: the response if 2xx or in ``allow``, else the mapped error.

        The error is raised outside the ``except`` block so that it holds no reference to the
        httpx exception (whose request carries the admin key header).
        """
        request = self._http.build_request(
            method, self._prefix + path, params=params, json=body, headers=self._auth()
        )
        failure: BackendError
        try:
            response = await self._send(request, operation)
        except httpx.HTTPError as exc:
            failure = transport_error(exc, operation)
        else:
            if response.is_success or response.status_code in allow:
                return response
            failure = self._status_error(operation, response)
        raise failure

    async def _retried(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """:meth:`_attempt` under the retry policy: only for idempotent calls."""
        return await retry_async(
            lambda: self._attempt(operation, method, path, params=params, allow=allow),
            policy=self._retry,
            clock=self._clock,
            describe=f"{BACKEND}.{operation}",
        )

    def _status_error(self, operation: str, response: httpx.Response) -> BackendError:
        status = response.status_code
        if status in (401, 403):
            return AuthError(BACKEND, operation, "admin key rejected", status=status)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), now=self._clock.now()
            )
            reason = "rate limited" if status == 429 else "server error"
            return TransientError(
                BACKEND, operation, reason, status=status, retry_after=retry_after
            )
        if status == 404:
            return PermanentError(
                BACKEND, operation, "not found (check admin_url and path prefix)", status=status
            )
        if status == 422:
            summary = summarise_validation(response)
            return PermanentError(BACKEND, operation, f"request rejected: {summary}", status=status)
        return PermanentError(BACKEND, operation, "unexpected answer", status=status)

    async def _offset_pages(
        self, operation: str, path: str, field: str, params: Mapping[str, str | int]
    ) -> list[Json]:
        """Every item of a ``limit``/``offset`` listing, until a page is shorter than the limit."""
        items: list[Json] = []
        offset = 0
        for _ in range(MAX_PAGES):
            query = {**params, "limit": self._page_size, "offset": offset}
            response = await self._retried(operation, "GET", path, params=query)
            page = _items(_response_object(response, operation), field, operation)
            items.extend(page)
            if len(page) < self._page_size:
                return items
            offset += len(page)
        raise PermanentError(BACKEND, operation, f"listing did not end after {MAX_PAGES} pages")

    async def _numbered_pages(
        self, operation: str, path: str, field: str, params: Mapping[str, str | int]
    ) -> list[Json]:
        """Every item of a ``page``/``page_size`` listing.

        The first page is asked without ``page`` (the server's default) and numbering follows
        the ``page`` it reports (1 if it does not). Ends when ``total`` items were read, on an
        empty page, on a short page when ``total`` is absent, or when a page brings nothing new.
        """
        items: list[Json] = []
        seen: set[str] = set()
        page: int | None = None
        for _ in range(MAX_PAGES):
            query = {**params, "page_size": self._page_size}
            if page is not None:
                query["page"] = page
            response = await self._retried(operation, "GET", path, params=query)
            data = _response_object(response, operation)
            batch = _items(data, field, operation)
            fresh = [item for item in batch if str(item.get("uuid")) not in seen]
            seen.update(str(item.get("uuid")) for item in fresh)
            items.extend(fresh)
            total = _int(data.get("total"))
            size = _int(data.get("page_size")) or self._page_size
            if not fresh or (total is not None and len(items) >= total):
                return items
            if total is None and len(batch) < size:
                return items
            current = _int(data.get("page"))
            page = (current if current is not None else (page or 1)) + 1
        raise PermanentError(BACKEND, operation, f"listing did not end after {MAX_PAGES} pages")

    async def _resolve_ambiguous_create(
        self, workspace_id: str, name: str, cause: BackendError
    ) -> BackendError:
        log.warning("mistral.create_ambiguous", name=name, status=cause.status, error=str(cause))
        try:
            found = await self.list_keys(name=name)
        except BackendError as error:
            log.warning("mistral.create_lookup_failed", name=name, error=str(error))
            return AmbiguousCreate(
                name=name, key_id=None, status=cause.status, retry_after=cause.retry_after
            )
        mine = [key for key in found if key.workspace_id in (workspace_id, None)]
        if len(mine) == 1:
            return AmbiguousCreate(
                name=name, key_id=mine[0].key_id, status=cause.status, retry_after=None
            )
        if not mine and cause.status is not None:
            # The server answered (5xx): it is done with the request and created nothing.
            return TransientError(
                BACKEND,
                "create_key",
                f"failed ambiguously, but no key named {name!r} exists; safe to retry",
                status=cause.status,
                retry_after=cause.retry_after,
            )
        if not mine:
            # No answer (timeout, dropped connection): a server still working on the request may
            # create the key after this lookup. The outcome stays unknown: the caller must never
            # reuse this name and must look for it again later (rotator's recovery deletes such
            # a late key by its unique name).
            return AmbiguousCreate(
                name=name, key_id=None, status=cause.status, retry_after=cause.retry_after
            )
        ids = ", ".join(key.key_id for key in mine)
        return PermanentError(
            BACKEND,
            "create_key",
            f"{len(mine)} keys are named {name!r} ({ids}); names must be unique",
        )

    def _parse_created(self, response: httpx.Response, workspace_id: str, name: str) -> CreatedKey:
        """The create answer; the plaintext goes straight into a Secret.

        An answer without a plaintext still created a key: :class:`AmbiguousCreate` names it.
        """
        data = _response_object(response, "create_key")
        plaintext = data.pop("key", None)
        secret = Secret(plaintext) if isinstance(plaintext, str) and plaintext else None
        if data.get("workspace_id") is None:
            data["workspace_id"] = workspace_id
        info = _parse_key(data)
        if secret is None:
            raise AmbiguousCreate(name=name, key_id=info.key_id, status=None, retry_after=None)
        log.info(
            "mistral.key_created",
            key_id=info.key_id,
            name=info.name,
            fingerprint=secret.fingerprint,
            expiration_date=info.expiration_date.isoformat() if info.expiration_date else None,
        )
        return CreatedKey(info=info, secret=secret)


# -- parsing (lenient: unknown fields ignored, missing optional fields are None) ----------------


def summarise_validation(response: httpx.Response) -> str:
    """FastAPI's 422 ``detail`` as ``loc: msg; ...``: never the submitted values (``input``)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return "invalid request"
    if not isinstance(detail, list):
        return "invalid request"
    parts: list[str] = []
    for entry in detail[:5]:
        if not isinstance(entry, dict):
            continue
        loc = entry.get("loc")
        where = ".".join(str(p) for p in loc) if isinstance(loc, list) else "?"
        msg = entry.get("msg")
        parts.append(f"{where}: {_clipped(msg) if isinstance(msg, str) else 'invalid'}")
    if len(detail) > 5:
        parts.append(f"and {len(detail) - 5} more")
    return "; ".join(parts) or "invalid request"


def _clipped(text: str, limit: int = 120) -> str:
    """``text`` with every run of whitespace (newlines too) made one space, cut to ``limit``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _response_object(response: httpx.Response, operation: str) -> Json:
    """The answer's JSON body, which must be an object; else a ``PermanentError``."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise PermanentError(
            BACKEND, operation, "answer is not a JSON object", status=response.status_code
        )
    return data


def _items(data: Json, field: str, operation: str) -> list[Json]:
    items = data.get(field)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise PermanentError(BACKEND, operation, f"answer has no list of objects in {field!r}")
    return items


def _unique(values: list[_R], key: Callable[[_R], str]) -> list[_R]:
    seen: set[str] = set()
    out: list[_R] = []
    for value in values:
        if key(value) not in seen:
            seen.add(key(value))
            out.append(value)
    return out


def _dig(data: Json, *path: str) -> Json | None:
    node: Any = data
    for step in path:
        if not isinstance(node, dict):
            return None
        node = node.get(step)
    return node if isinstance(node, dict) else None


def _str(data: Json, field: str) -> str | None:
    value = data.get(field)
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(data: Json, field: str) -> bool | None:
    value = data.get(field)
    return value if isinstance(value, bool) else None


def parse_datetime(value: object) -> datetime | None:
    """An ISO 8601 date-time (``Z`` accepted; naive = UTC) or date (midnight UTC); else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_date(value: object) -> date | None:
    """A ``YYYY-MM-DD`` date (a full date-time is cut to its UTC date); else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        parsed = parse_datetime(value)
        return parsed.astimezone(UTC).date() if parsed is not None else None


def _parse_key(data: Json) -> ApiKey:
    key_id = _str(data, "key_id")
    if not key_id:
        raise PermanentError(BACKEND, "parse", "a listed key has no key_id")
    return ApiKey(
        key_id=key_id,
        name=_str(data, "name"),
        hidden_key=_str(data, "hidden_key"),
        workspace_id=_str(data, "workspace_id"),
        created_at=parse_datetime(data.get("created_at")),
        expiration_date=parse_date(data.get("expiration_date")),
        last_used=parse_date(data.get("last_used")),
        created_by=_str(data, "created_by"),
        product=_str(data, "product"),
        can_delete=_bool(data, "can_delete"),
    )


def _parse_workspace(data: Json) -> Workspace:
    uuid = _str(data, "uuid")
    if not uuid:
        raise PermanentError(BACKEND, "parse", "a listed workspace has no uuid")
    return Workspace(
        uuid=uuid, name=_str(data, "name") or "", is_archived=_bool(data, "is_archived") or False
    )


def _parse_user(data: Json) -> User:
    uuid = _str(data, "uuid")
    if not uuid:
        raise PermanentError(BACKEND, "parse", "a listed member has no uuid")
    return User(uuid=uuid, email=_str(data, "email"), name=_str(data, "name"))
