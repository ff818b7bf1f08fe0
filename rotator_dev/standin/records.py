"""Non-secret records the stand-in's state hands out, shared by its server and its control client.

Nothing here holds a plaintext key: keys are known by id, masked form and fingerprint only.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

DEFAULT_ADMIN_KEY = "standin-admin-key"
SEED_USER_ID = "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce"
SEED_USER_EMAIL = "rotator@example.com"
DEFAULT_WORKSPACE_ID = "019b2bd7-96e7-7219-8c0b-45a73da50088"
BATCH_WORKSPACE_ID = "019b2bd7-96e7-7219-8c0b-45a73da50089"
ANALYTICS_WORKSPACE_ID = "019b2bd7-96e7-7219-8c0b-45a73da5008a"
ARCHIVED_WORKSPACE_ID = "019b2bd7-96e7-7219-8c0b-45a73da5008f"


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, as a pydantic-based backend writes it."""
    return moment.isoformat().replace("+00:00", "Z")


def _date_or_none(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _moment_or_none(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class StandinHTTPError(Exception):
    """A request the stand-in refuses: ``status`` and a FastAPI-style ``detail``."""

    def __init__(
        self, status: int, detail: str | list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"HTTP {status}: {detail}")


class Access(enum.StrEnum):
    """How ``GET /v1/models`` judges a presented key."""

    OK = "ok"
    MISSING = "missing"  # no bearer token at all
    UNKNOWN = "unknown"  # never issued
    REVOKED = "revoked"  # deleted, past its revocation delay
    EXPIRED = "expired"  # stand-in UTC date > expiration_date
    NOT_ACTIVE = "not_active"  # still inside its activation delay
    PAYMENT_REQUIRED = "payment_required"  # billing inactive on the organization
    SPEND_LIMITED = "spend_limited"  # the workspace's monthly spending limit is reached


@dataclass(frozen=True, slots=True)
class Verdict:
    access: Access
    retry_after: int | None = None


@dataclass(slots=True)
class Settings:
    """Organization-wide switches, each modelling a documented unknown or a failure mode."""

    activation_delay_seconds: float = 0.0
    revocation_delay_seconds: float = 0.0
    billing_active: bool = True
    max_expiration_days: int | None = None
    list_deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class WorkspaceRecord:
    uuid: str
    name: str
    created_at: datetime
    description: str | None = None
    icon: str | None = None
    is_default: bool = False
    is_archived: bool = False
    spend_limit_reached: bool = False

    def to_json(self) -> dict[str, Any]:
        """The Admin API's item, plus the stand-in's ``spend_limit_reached`` switch."""
        return {
            "uuid": self.uuid,
            "name": self.name,
            "description": self.description,
            "icon": self.icon,
            "is_default": self.is_default,
            "is_archived": self.is_archived,
            "created_at": iso_utc(self.created_at),
            "spend_limit_reached": self.spend_limit_reached,
        }


@dataclass(slots=True)
class MemberRecord:
    uuid: str
    email: str
    name: str | None = None
    role: str = "member"

    def to_json(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "email": self.email, "name": self.name, "role": self.role}


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """Everything non-secret about one key, including stand-in-only bookkeeping.

    ``models_calls`` counts every ``/v1/models`` call that presented this key, whatever the
    answer; ``models_ok`` counts the 200s.
    """

    key_id: str
    name: str | None
    hidden_key: str
    fingerprint: str
    workspace_id: str
    workspace_name: str | None
    created_by: str
    created_at: datetime
    expiration_date: date | None
    last_used: date | None
    active_at: datetime
    deleted_at: datetime | None = None
    models_calls: int = 0
    models_ok: int = 0

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "hidden_key": self.hidden_key,
            "fingerprint": self.fingerprint,
            "workspace_id": self.workspace_id,
            "workspace_name": self.workspace_name,
            "created_by": self.created_by,
            "created_at": iso_utc(self.created_at),
            "expiration_date": self.expiration_date.isoformat() if self.expiration_date else None,
            "last_used": self.last_used.isoformat() if self.last_used else None,
            "active_at": iso_utc(self.active_at),
            "deleted": self.deleted,
            "deleted_at": iso_utc(self.deleted_at) if self.deleted_at else None,
            "models_calls": self.models_calls,
            "models_ok": self.models_ok,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyFacts:
        return cls(
            key_id=data["key_id"],
            name=data["name"],
            hidden_key=data["hidden_key"],
            fingerprint=data["fingerprint"],
            workspace_id=data["workspace_id"],
            workspace_name=data["workspace_name"],
            created_by=data["created_by"],
            created_at=datetime.fromisoformat(data["created_at"]),
            expiration_date=_date_or_none(data["expiration_date"]),
            last_used=_date_or_none(data["last_used"]),
            active_at=datetime.fromisoformat(data["active_at"]),
            deleted_at=_moment_or_none(data["deleted_at"]),
            models_calls=data["models_calls"],
            models_ok=data["models_ok"],
        )
