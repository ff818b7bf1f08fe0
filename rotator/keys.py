"""Records exchanged with Mistral's Admin API and the key verifier (no plaintext outside Secret),
and :func:`masked`, the Admin API's ``hidden_key`` form of a plaintext.

Vocabulary: the contracts, the engine and the Mistral client all speak it; it imports only
:mod:`rotator.secret`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime

from rotator.secret import Secret


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as the Admin API lists it. ``key`` (the plaintext) is never kept here."""

    key_id: str
    name: str | None
    hidden_key: str | None
    workspace_id: str | None
    created_at: datetime | None
    expiration_date: date | None
    last_used: date | None
    created_by: str | None = None
    product: str | None = None
    can_delete: bool | None = None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """The answer to a create: the listed facts plus the plaintext, shown this once."""

    info: ApiKey
    secret: Secret


@dataclass(frozen=True, slots=True)
class Workspace:
    uuid: str
    name: str
    is_archived: bool


@dataclass(frozen=True, slots=True)
class User:
    uuid: str
    email: str | None
    name: str | None


class VerifyOutcome(enum.StrEnum):
    """How ``GET /v1/models`` judged a key. Only ``OK`` means the key works."""

    OK = "ok"
    UNAUTHORIZED = "unauthorized"  # 401/403: unknown, revoked, expired or not yet active
    PAYMENT_REQUIRED = "payment_required"  # 402: billing inactive on the organization
    SPEND_LIMITED = "spend_limited"  # 429 while the workspace's monthly limit is reached
    RATE_LIMITED = "rate_limited"  # 429 otherwise
    UNAVAILABLE = "unavailable"  # 5xx, timeouts, connection errors


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The verdict on one key: its outcome, the last HTTP status, attempts and time taken."""

    outcome: VerifyOutcome
    fingerprint: str
    status: int | None
    attempts: int
    elapsed: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is VerifyOutcome.OK


def masked(value: str) -> str:
    """The Admin API's ``hidden_key`` form of a plaintext: first 4 + ``...`` + last 4."""
    return f"{value[:4]}...{value[-4:]}"
