"""What goes over the wire: request validation in FastAPI's 422 shape, and Mistral's JSON bodies.

Validation uses pydantic exactly as a FastAPI backend would, so errors look like
``{"detail": [{"type": ..., "loc": ["body" | "query", field], "msg": ..., "input": ...}]}``.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from rotator.secret import Secret
from rotator_dev.standin.records import KeyFacts, StandinHTTPError, iso_utc

_M = TypeVar("_M", bound=BaseModel)

AVAILABLE: dict[str, Any] = {"rotate": {"status": "available"}, "delete": {"status": "available"}}
DELETED: dict[str, Any] = {
    "rotate": {"status": "unavailable", "reason": "deleted"},
    "delete": {"status": "unavailable", "reason": "deleted"},
}


class CreateKeyBody(BaseModel):
    """``POST /v1/admin/api-keys``."""

    model_config = ConfigDict(extra="ignore")
    workspace_uuid: UUID
    user_id: UUID
    name: str | None = Field(default=None, max_length=255)
    expiration: date | None = None


class ListKeysQuery(BaseModel):
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    name: str | None = None


class PageQuery(BaseModel):
    """Page-numbered listings (workspaces, users): pages start at 1."""

    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=100, ge=1, le=1000)


class WorkspacesQuery(PageQuery):
    search: str | None = None
    is_archived: bool | None = None


class UsersQuery(PageQuery):
    email: str | None = None


class SpendLimitQuery(BaseModel):
    """``workspace_id`` narrows the answer to one workspace (a stand-in extension)."""

    workspace_id: UUID | None = None


def validate(model: type[_M], data: object, where: str) -> _M:
    """``data`` as ``model``; raises a 422 :class:`StandinHTTPError` located under ``where``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
        for error in errors:
            error["loc"] = [where, *error["loc"]]
        raise StandinHTTPError(422, errors) from None


async def body_as(request: Request, model: type[_M]) -> _M:
    """The request's JSON body as ``model``; a missing or malformed body is a 422."""
    raw = await request.body()
    if not raw.strip():
        missing = {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
        raise StandinHTTPError(422, [missing])
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        problem: dict[str, Any] = {
            "type": "json_invalid",
            "loc": ["body", exc.pos],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise StandinHTTPError(422, [problem]) from None
    return validate(model, data, "body")


def query_as(request: Request, model: type[_M]) -> _M:
    """The query string as ``model``; a bad parameter is a 422."""
    return validate(model, dict(request.query_params), "query")


def error_response(exc: StandinHTTPError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def api_key_json(key: KeyFacts) -> dict[str, Any]:
    """A listed APIKey: every documented field, ``key`` always null."""
    return {
        "key_id": key.key_id,
        "key": None,
        "name": key.name,
        "hidden_key": key.hidden_key,
        "created_at": iso_utc(key.created_at),
        "expiration_date": _day(key.expiration_date),
        "last_used": _day(key.last_used),
        "workspace_id": key.workspace_id,
        "workspace_name": key.workspace_name,
        "created_by": key.created_by,
        "product": "API",
        "can_delete": not key.deleted,
        "actions": DELETED if key.deleted else AVAILABLE,
    }


def created_key_json(key: KeyFacts, plaintext: Secret) -> dict[str, Any]:
    """The create answer: the only body that ever carries a plaintext key."""
    return {
        "key_id": key.key_id,
        "key": plaintext.reveal(),
        "name": key.name,
        "hidden_key": key.hidden_key,
        "created_at": iso_utc(key.created_at),
        "expiration_date": _day(key.expiration_date),
        "actions": AVAILABLE,
    }


MODELS: list[dict[str, Any]] = [
    {
        "id": model_id,
        "object": "model",
        "created": 1756746619,
        "owned_by": "mistralai",
        "capabilities": {
            "completion_chat": chat,
            "completion_fim": fim,
            "function_calling": chat,
            "fine_tuning": False,
            "vision": False,
            "classification": False,
        },
        "name": model_id,
        "max_context_length": 131072 if chat else 8192,
        "aliases": [],
        "type": "base",
    }
    for model_id, chat, fim in (
        ("mistral-small-latest", True, False),
        ("mistral-large-latest", True, False),
        ("codestral-latest", True, True),
        ("mistral-embed", False, False),
    )
]
