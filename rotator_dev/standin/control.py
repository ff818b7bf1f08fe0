"""The control API under ``/_standin/``: how tests, the demo and benchmarks steer the stand-in.

No Mistral authentication; every request must come from a loopback address (403 otherwise).
Bodies are JSON; a bad one is a FastAPI-shaped 422. :class:`~rotator_dev.standin.client.
StandinControl` is the typed client for these routes.

| method and path | body / query | effect |
| --- | --- | --- |
| POST /reset | | back to the seed organization, real time, no faults, zero counters |
| GET, POST /clock | ``{now?, frozen?, advance_seconds?}`` | read, set, freeze or move the clock |
| GET, POST /settings | any of :class:`~rotator_dev.standin.records.Settings` | switches |
| GET, POST /workspaces | ``{name, uuid?, description?, icon?}`` | list (with switches) / add |
| POST /workspaces/{uuid}/archive | | archive |
| POST /workspaces/{uuid}/spend-limit | ``{reached}`` | the monthly-limit switch |
| POST /users | ``{email, uuid?, name?, role?}`` | add an organization member |
| GET, POST, DELETE /faults | fault fields / ``?operation=`` | list, arm, clear |
| GET /keys | | every key's non-secret facts, deleted ones too |
| GET /requests | | request count per operation |
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rotator_dev.standin import wire
from rotator_dev.standin.faults import Fault, FaultKind, FaultWhen, Operation
from rotator_dev.standin.records import StandinHTTPError, iso_utc
from rotator_dev.standin.state import StandinState

Handler = Callable[[Request, StandinState], Awaitable[Response]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClockBody(_Body):
    now: datetime | None = None
    frozen: bool | None = None
    advance_seconds: float | None = None


class SettingsBody(_Body):
    activation_delay_seconds: float | None = Field(default=None, ge=0)
    revocation_delay_seconds: float | None = Field(default=None, ge=0)
    billing_active: bool | None = None
    max_expiration_days: int | None = Field(default=None, ge=1)
    list_deleted: bool | None = None


class WorkspaceBody(_Body):
    name: str
    uuid: UUID | None = None
    description: str | None = None
    icon: str | None = None


class SpendLimitBody(_Body):
    reached: bool


class UserBody(_Body):
    email: str
    uuid: UUID | None = None
    name: str | None = None
    role: str = "member"


class FaultBody(_Body):
    operation: Operation
    kind: FaultKind
    status: int = 503
    retry_after: int | None = None
    seconds: float | None = None
    count: int | None = 1
    when: FaultWhen = FaultWhen.BEFORE


def _loopback_only(request: Request) -> None:
    host = request.client.host if request.client else ""
    try:
        allowed = ipaddress.ip_address(host).is_loopback
    except ValueError:
        allowed = False
    if not allowed:
        raise StandinHTTPError(403, "the stand-in control API answers loopback clients only")


async def _reset(_request: Request, state: StandinState) -> Response:
    state.reset()
    return JSONResponse({"detail": "reset"})


async def _clock(request: Request, state: StandinState) -> Response:
    if request.method == "POST":
        body = await wire.body_as(request, ClockBody)
        if body.now is not None or body.frozen is not None:
            frozen = body.frozen if body.frozen is not None else state.clock.frozen
            state.clock.set(body.now or state.clock.now(), frozen=frozen)
        if body.advance_seconds:
            state.clock.advance(body.advance_seconds)
    return JSONResponse({"now": iso_utc(state.clock.now()), "frozen": state.clock.frozen})


async def _settings(request: Request, state: StandinState) -> Response:
    if request.method == "POST":
        body = await wire.body_as(request, SettingsBody)
        try:
            state.update_settings(**body.model_dump(exclude_unset=True))
        except ValueError as exc:
            raise StandinHTTPError(422, str(exc)) from None
    return JSONResponse(state.settings().to_json())


async def _workspaces(request: Request, state: StandinState) -> Response:
    if request.method == "POST":
        body = await wire.body_as(request, WorkspaceBody)
        record = state.add_workspace(
            body.name,
            workspace_id=str(body.uuid) if body.uuid else None,
            description=body.description,
            icon=body.icon,
        )
        return JSONResponse(record.to_json())
    return JSONResponse({"workspaces": [w.to_json() for w in state.workspaces()]})


async def _archive(request: Request, state: StandinState) -> Response:
    return JSONResponse(state.archive_workspace(request.path_params["uuid"]).to_json())


async def _spend_limit(request: Request, state: StandinState) -> Response:
    body = await wire.body_as(request, SpendLimitBody)
    record = state.set_spend_limit(request.path_params["uuid"], body.reached)
    return JSONResponse(record.to_json())


async def _users(request: Request, state: StandinState) -> Response:
    body = await wire.body_as(request, UserBody)
    record = state.add_member(
        body.email,
        user_id=str(body.uuid) if body.uuid else None,
        name=body.name,
        role=body.role,
    )
    return JSONResponse(record.to_json())


async def _faults(request: Request, state: StandinState) -> Response:
    if request.method == "POST":
        body = await wire.body_as(request, FaultBody)
        try:
            fault = Fault.checked(**body.model_dump(exclude={"operation"}))
        except ValueError as exc:
            raise StandinHTTPError(422, str(exc)) from None
        state.faults.arm(body.operation, fault)
    elif request.method == "DELETE":
        name = request.query_params.get("operation")
        try:
            operation = Operation(name) if name else None
        except ValueError:
            raise StandinHTTPError(422, f"unknown operation {name!r}") from None
        state.faults.clear(operation)
    return JSONResponse({"faults": state.faults.snapshot()})


async def _keys(_request: Request, state: StandinState) -> Response:
    return JSONResponse({"keys": [k.to_json() for k in state.key_facts()]})


async def _requests(_request: Request, state: StandinState) -> Response:
    return JSONResponse({"requests": state.request_counts()})


_TABLE: list[tuple[str, Handler, list[str]]] = [
    ("/reset", _reset, ["POST"]),
    ("/clock", _clock, ["GET", "POST"]),
    ("/settings", _settings, ["GET", "POST"]),
    ("/workspaces", _workspaces, ["GET", "POST"]),
    ("/workspaces/{uuid}/archive", _archive, ["POST"]),
    ("/workspaces/{uuid}/spend-limit", _spend_limit, ["POST"]),
    ("/users", _users, ["POST"]),
    ("/faults", _faults, ["GET", "POST", "DELETE"]),
    ("/keys", _keys, ["GET"]),
    ("/requests", _requests, ["GET"]),
]


def control_routes(state: StandinState) -> list[BaseRoute]:
    """The ``/_standin`` routes over ``state`` (mount them under ``/_standin``)."""

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            _loopback_only(request)
            return await handler(request, state)

        return endpoint

    return [Route(path, guarded(handler), methods=methods) for path, handler, methods in _TABLE]
