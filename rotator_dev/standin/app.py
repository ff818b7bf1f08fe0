"""The stand-in's HTTP surface: Mistral's documented Admin API, ``GET /v1/models``, and control.

Behaviour where Mistral's documentation is silent (each is a choice a client must not rely on):

- Admin API under ``/v1/admin`` and ``/api/admin``; the admin key is accepted from
  ``Authorization: Bearer`` or ``x-api-key``. Anything else (missing, wrong, a workspace key) is
  401 ``{"detail": ...}``.
- Create: 422 (FastAPI shape) for a bad body or an expiration in the past; 404 for an unknown
  workspace or member; 400 for an archived workspace.
- Delete of an unknown or already-deleted key: 404. Deleted keys are hidden from the list unless
  the ``list_deleted`` setting is on (then ``can_delete`` is false, actions unavailable).
- ``name`` on the list matches a case-insensitive substring of the name *or* of the last 4
  characters of the key: clients must still match names exactly themselves.
- Workspaces and users pages start at 1 (``page_size`` 1..1000, default 100); ``search`` and
  ``email`` are case-insensitive substrings; ``is_archived`` absent lists both.
- ``spend-limit``: ``monthly_limit_reached`` is true when any workspace's switch is on, or, with
  ``?workspace_id=``, when that workspace's is.
- ``/v1/models``: 401 ``{"message": "Unauthorized", "request_id": ...}`` when the key is missing
  or unknown, 401 ``{"detail": "Unauthorized"}`` when it is revoked, expired or not yet active;
  402 when billing is inactive; 429 with ``Retry-After`` (seconds to the next calendar month, the
  next billing cycle) when the key's workspace reached its spending limit.

Every Mistral-facing request is counted per operation and may be hit by an injected fault
(:mod:`rotator_dev.standin.faults`) before or after the operation runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from rotator_dev.standin import wire
from rotator_dev.standin.asgi import drop_connection
from rotator_dev.standin.control import control_routes
from rotator_dev.standin.faults import Fault, FaultKind, FaultWhen, Operation
from rotator_dev.standin.records import Access, StandinHTTPError
from rotator_dev.standin.state import StandinState

ADMIN_PREFIXES = ("/v1/admin", "/api/admin")
_HANG_POLL_SECONDS = 0.02


def _wait_ended() -> Response:
    return JSONResponse({"detail": "stand-in wait ended early"}, status_code=503)


Handler = Callable[[Request, StandinState], Awaitable[Response]]


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _require_admin(request: Request, state: StandinState) -> None:
    if state.is_admin_key(_bearer(request)) or state.is_admin_key(request.headers.get("x-api-key")):
        return
    raise StandinHTTPError(401, "Invalid or missing admin API key")


def _request_id() -> str:
    return uuid.uuid4().hex


# -- faults ----------------------------------------------------------------------------------


async def _hang(request: Request, state: StandinState, seconds: float | None) -> bool:
    """Wait ``seconds``, or until the client leaves when ``None``.

    False when the wait was cut short (a reset or server stop, or the client left an endless
    hang): the operation must then not be carried out.
    """
    generation = state.generation
    deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
    while deadline is None or asyncio.get_running_loop().time() < deadline:
        if state.generation != generation:
            return False
        if deadline is None and await request.is_disconnected():
            return False
        await asyncio.sleep(_HANG_POLL_SECONDS)
    return True


async def _apply(request: Request, state: StandinState, fault: Fault) -> Response | None:
    """Carry out ``fault``; a response replaces the real answer, ``None`` lets it through."""
    if fault.kind is FaultKind.STATUS:
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        body = {"detail": f"stand-in injected fault: HTTP {fault.status}"}
        return JSONResponse(body, status_code=fault.status, headers=headers)
    if fault.kind is FaultKind.DROP:
        await drop_connection(request)
        return Response(status_code=500)  # discarded: the connection is already closed
    if fault.kind is FaultKind.HANG and not await _hang(request, state, fault.seconds):
        return _wait_ended()
    return None


def _operation(
    state: StandinState, operation: Operation, handler: Handler, *, admin: bool
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint running ``handler`` under the operation's counter and faults."""

    async def endpoint(request: Request) -> Response:
        await request.body()  # read first: a hang must not swallow the body
        state.count_request(operation)
        plan = state.faults.take(operation)
        if plan.latency and not await _hang(request, state, plan.latency):
            return _wait_ended()
        fault = plan.action
        if fault is not None and fault.when is FaultWhen.BEFORE:
            early = await _apply(request, state, fault)
            if early is not None:
                return early
        try:
            if admin:
                _require_admin(request, state)
            response = await handler(request, state)
        except StandinHTTPError as exc:
            response = wire.error_response(exc)
        if fault is not None and fault.when is FaultWhen.AFTER:
            late = await _apply(request, state, fault)
            if late is not None:
                return late
        return response

    return endpoint


# -- Admin API -------------------------------------------------------------------------------


async def list_keys(request: Request, state: StandinState) -> Response:
    query = wire.query_as(request, wire.ListKeysQuery)
    keys = state.list_keys(limit=query.limit, offset=query.offset, name=query.name)
    return JSONResponse({"keys": [wire.api_key_json(k) for k in keys]})


async def create_key(request: Request, state: StandinState) -> Response:
    body = await wire.body_as(request, wire.CreateKeyBody)
    facts, plaintext = state.create_key(
        workspace_id=str(body.workspace_uuid),
        user_id=str(body.user_id),
        name=body.name,
        expiration=body.expiration,
    )
    return JSONResponse(wire.created_key_json(facts, plaintext))


async def delete_key(request: Request, state: StandinState) -> Response:
    state.delete_key(request.path_params["key_id"])
    return JSONResponse({"detail": "API key deleted successfully"})


async def list_workspaces(request: Request, state: StandinState) -> Response:
    query = wire.query_as(request, wire.WorkspacesQuery)
    total, items = state.list_workspaces(
        page=query.page,
        page_size=query.page_size,
        search=query.search,
        is_archived=query.is_archived,
    )
    listed = [{k: v for k, v in w.to_json().items() if k != "spend_limit_reached"} for w in items]
    return JSONResponse(
        {"total": total, "items": listed, "page": query.page, "page_size": query.page_size}
    )


async def list_users(request: Request, state: StandinState) -> Response:
    query = wire.query_as(request, wire.UsersQuery)
    total, members = state.list_members(
        page=query.page, page_size=query.page_size, email=query.email
    )
    return JSONResponse(
        {
            "members": [m.to_json() for m in members],
            "total": total,
            "page": query.page,
            "page_size": query.page_size,
        }
    )


async def spend_limit(request: Request, state: StandinState) -> Response:
    query = wire.query_as(request, wire.SpendLimitQuery)
    workspace = str(query.workspace_id) if query.workspace_id else None
    reached = state.spend_limit_reached(workspace)
    return JSONResponse({"limits": {"completion": {"monthly_limit_reached": reached}}})


# -- inference -------------------------------------------------------------------------------


async def list_models(request: Request, state: StandinState) -> Response:
    verdict = state.check_key(_bearer(request))
    match verdict.access:
        case Access.OK:
            return JSONResponse({"object": "list", "data": wire.MODELS})
        case Access.MISSING | Access.UNKNOWN:
            body = {"message": "Unauthorized", "request_id": _request_id()}
            return JSONResponse(body, status_code=401)
        case Access.REVOKED | Access.EXPIRED | Access.NOT_ACTIVE:
            return JSONResponse({"detail": "Unauthorized"}, status_code=401)
        case Access.PAYMENT_REQUIRED:
            body = {
                "message": "No active billing for this organization",
                "request_id": _request_id(),
            }
            return JSONResponse(body, status_code=402)
        case Access.SPEND_LIMITED:
            body = {
                "message": "Monthly spending limit reached for this workspace",
                "request_id": _request_id(),
            }
            headers = {"Retry-After": str(verdict.retry_after)}
            return JSONResponse(body, status_code=429, headers=headers)


# -- assembly --------------------------------------------------------------------------------


async def _http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _standin_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StandinHTTPError)
    return wire.error_response(exc)


def _routes(state: StandinState) -> list[BaseRoute]:
    admin: list[tuple[str, str, Operation, Handler]] = [
        ("GET", "/api-keys", Operation.LIST_KEYS, list_keys),
        ("POST", "/api-keys", Operation.CREATE_KEY, create_key),
        ("DELETE", "/api-keys/{key_id}", Operation.DELETE_KEY, delete_key),
        ("GET", "/workspaces", Operation.LIST_WORKSPACES, list_workspaces),
        ("GET", "/users", Operation.LIST_USERS, list_users),
        ("GET", "/spend-limit", Operation.SPEND_LIMIT, spend_limit),
    ]
    routes: list[BaseRoute] = [
        Route(
            prefix + path,
            _operation(state, operation, handler, admin=True),
            methods=[method],
        )
        for prefix in ADMIN_PREFIXES
        for method, path, operation, handler in admin
    ]
    models = _operation(state, Operation.MODELS, list_models, admin=False)
    routes.append(Route("/v1/models", models, methods=["GET"]))
    routes.append(Mount("/_standin", routes=control_routes(state)))
    return routes


def create_app(state: StandinState) -> Starlette:
    """The stand-in as a Starlette app over ``state``.

    Serve it wrapped in :class:`~rotator_dev.standin.asgi.StandinASGI` under uvicorn (as
    :class:`~rotator_dev.standin.server.StandinServer` does): the wrapper writes the request
    log and is what lets a ``drop`` fault close the connection.
    """
    return Starlette(
        routes=_routes(state),
        exception_handlers={HTTPException: _http_exception, StandinHTTPError: _standin_error},
    )
