"""The stand-in's organization as a pure in-memory model: no HTTP, no event loop.

:class:`StandinState` holds workspaces, members, keys, the organization switches
(:class:`~rotator_dev.standin.records.Settings`), the armed faults, request counters and the
clock. Every public method is atomic under one lock, so the HTTP app, a test thread and a
benchmark may share an instance.

A key's plaintext exists only in the :class:`~rotator.secret.Secret` returned by
:meth:`StandinState.create_key`; the state keeps its SHA-256 digest (to recognise it on
``/v1/models``), its fingerprint and its masked form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import string
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from rotator.clock import Clock
from rotator.secret import Secret, fingerprint_of
from rotator_dev.standin.clock import StandinClock
from rotator_dev.standin.faults import FaultBook, Operation
from rotator_dev.standin.records import (
    ANALYTICS_WORKSPACE_ID,
    ARCHIVED_WORKSPACE_ID,
    BATCH_WORKSPACE_ID,
    DEFAULT_ADMIN_KEY,
    DEFAULT_WORKSPACE_ID,
    SEED_USER_EMAIL,
    SEED_USER_ID,
    Access,
    KeyFacts,
    MemberRecord,
    Settings,
    StandinHTTPError,
    Verdict,
    WorkspaceRecord,
)

_R = TypeVar("_R", WorkspaceRecord, MemberRecord)

KEY_LENGTH = 32
_KEY_ALPHABET = string.ascii_letters + string.digits
_SETTING_NAMES = frozenset(Settings.__dataclass_fields__)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mask(plaintext: str) -> str:
    """Mistral's ``hidden_key``: first 4 + ``...`` + last 4 characters."""
    return f"{plaintext[:4]}...{plaintext[-4:]}"


def seconds_to_next_month(now: datetime) -> int:
    """Whole seconds until 00:00 UTC on the first day of the next month (a billing cycle)."""
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    start = datetime(year, month, 1, tzinfo=UTC)
    return max(1, int((start - now).total_seconds() + 0.999))


class _Key:
    """A key as the state keeps it: digest, never plaintext."""

    __slots__ = (
        "active_at",
        "created_at",
        "created_by",
        "deleted_at",
        "digest",
        "expiration_date",
        "fingerprint",
        "hidden_key",
        "key_id",
        "last_used",
        "models_calls",
        "models_ok",
        "name",
        "workspace_id",
    )

    def __init__(
        self,
        *,
        plaintext: str,
        name: str | None,
        workspace_id: str,
        created_by: str,
        created_at: datetime,
        expiration_date: date | None,
        active_at: datetime,
    ) -> None:
        self.key_id = str(uuid.uuid4())
        self.digest = _digest(plaintext)
        self.fingerprint = fingerprint_of(plaintext)
        self.hidden_key = mask(plaintext)
        self.name = name
        self.workspace_id = workspace_id
        self.created_by = created_by
        self.created_at = created_at
        self.expiration_date = expiration_date
        self.active_at = active_at
        self.last_used: date | None = None
        self.deleted_at: datetime | None = None
        self.models_calls = 0
        self.models_ok = 0

    @property
    def last4(self) -> str:
        return self.hidden_key[-4:]

    def facts(self, workspace_name: str | None) -> KeyFacts:
        return KeyFacts(
            key_id=self.key_id,
            name=self.name,
            hidden_key=self.hidden_key,
            fingerprint=self.fingerprint,
            workspace_id=self.workspace_id,
            workspace_name=workspace_name,
            created_by=self.created_by,
            created_at=self.created_at,
            expiration_date=self.expiration_date,
            last_used=self.last_used,
            active_at=self.active_at,
            deleted_at=self.deleted_at,
            models_calls=self.models_calls,
            models_ok=self.models_ok,
        )


def _seed_workspaces(now: datetime) -> dict[str, WorkspaceRecord]:
    seed = [
        WorkspaceRecord(DEFAULT_WORKSPACE_ID, "Default Workspace", now, is_default=True),
        WorkspaceRecord(BATCH_WORKSPACE_ID, "batch", now),
        WorkspaceRecord(ANALYTICS_WORKSPACE_ID, "analytics", now),
        WorkspaceRecord(ARCHIVED_WORKSPACE_ID, "old", now, is_archived=True),
    ]
    return {w.uuid: w for w in seed}


def _page(items: list[_R], page: int, page_size: int) -> list[_R]:
    """Copies of one page's records (pages start at 1), safe to read outside the lock."""
    start = (page - 1) * page_size
    return [dataclasses.replace(item) for item in items[start : start + page_size]]


class StandinState:
    """One Mistral organization: its admin key, workspaces, members, keys and switches."""

    def __init__(self, admin_key: str = DEFAULT_ADMIN_KEY, *, base_clock: Clock | None = None):
        if not admin_key:
            raise ValueError("the admin key must not be empty")
        self._admin_key = admin_key
        self._lock = threading.RLock()
        self.clock = StandinClock(base_clock)
        self.faults = FaultBook()
        self._generation = 0
        self._init_org()

    def _init_org(self) -> None:
        self._settings = Settings()
        self._workspaces = _seed_workspaces(self.clock.now())
        self._members = {
            SEED_USER_ID: MemberRecord(SEED_USER_ID, SEED_USER_EMAIL, "Rotator", "admin")
        }
        self._keys: list[_Key] = []
        self._by_digest: dict[str, _Key] = {}
        self._by_id: dict[str, _Key] = {}
        self._requests = dict.fromkeys(Operation, 0)

    # -- lifecycle ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the seed organization, real time, no faults, zero counters; ends all hangs."""
        with self._lock:
            self.clock.reset()
            self.faults.clear()
            self._init_org()
            self._generation += 1

    @property
    def generation(self) -> int:
        """Changes on every reset or release; a hang in progress ends when it changes."""
        with self._lock:
            return self._generation

    def release_waiters(self) -> None:
        """End every hang in progress (used when the server stops)."""
        with self._lock:
            self._generation += 1

    # -- auth and counters -------------------------------------------------------------------

    def is_admin_key(self, candidate: str | None) -> bool:
        """Whether ``candidate`` is the organization's admin key (constant-time compare)."""
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self._admin_key.encode())

    def count_request(self, operation: Operation) -> None:
        with self._lock:
            self._requests[operation] += 1

    def request_counts(self) -> dict[str, int]:
        """Requests received per operation since the last reset, faulted ones included."""
        with self._lock:
            return {op.value: n for op, n in self._requests.items()}

    # -- settings and control ----------------------------------------------------------------

    def settings(self) -> Settings:
        with self._lock:
            return Settings(**self._settings.to_json())

    def update_settings(self, **changes: Any) -> Settings:
        """Change some switches. Raises ``ValueError`` for an unknown or out-of-range one."""
        unknown = set(changes) - _SETTING_NAMES
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        nulled = sorted(k for k, v in changes.items() if v is None and k != "max_expiration_days")
        if nulled:
            raise ValueError(f"settings that cannot be null: {', '.join(nulled)}")
        for name in ("activation_delay_seconds", "revocation_delay_seconds"):
            if name in changes and float(changes[name]) < 0:
                raise ValueError(f"{name} must be >= 0")
        days = changes.get("max_expiration_days")
        if days is not None and int(days) < 1:
            raise ValueError("max_expiration_days must be >= 1 or null")
        with self._lock:
            for name, value in changes.items():
                setattr(self._settings, name, value)
            return self.settings()

    def add_workspace(
        self,
        name: str,
        *,
        workspace_id: str | None = None,
        description: str | None = None,
        icon: str | None = None,
    ) -> WorkspaceRecord:
        """Create a workspace. Raises 409 if the uuid is taken."""
        ws_id = workspace_id or str(uuid.uuid4())
        with self._lock:
            if ws_id in self._workspaces:
                raise StandinHTTPError(409, f"workspace {ws_id} already exists")
            record = WorkspaceRecord(ws_id, name, self.clock.now(), description, icon)
            self._workspaces[ws_id] = record
            return dataclasses.replace(record)

    def _workspace(self, workspace_id: str) -> WorkspaceRecord:
        record = self._workspaces.get(workspace_id)
        if record is None:
            raise StandinHTTPError(404, "Workspace not found")
        return record

    def archive_workspace(self, workspace_id: str) -> WorkspaceRecord:
        """Archive a workspace (idempotent). Raises 404 if unknown."""
        with self._lock:
            record = self._workspace(workspace_id)
            record.is_archived = True
            return dataclasses.replace(record)

    def set_spend_limit(self, workspace_id: str, reached: bool) -> WorkspaceRecord:
        """Turn a workspace's "monthly spending limit reached" switch on or off."""
        with self._lock:
            record = self._workspace(workspace_id)
            record.spend_limit_reached = reached
            return dataclasses.replace(record)

    def add_member(
        self,
        email: str,
        *,
        user_id: str | None = None,
        name: str | None = None,
        role: str = "member",
    ) -> MemberRecord:
        """Add an organization member. Raises 409 if the uuid is taken."""
        member_id = user_id or str(uuid.uuid4())
        with self._lock:
            if member_id in self._members:
                raise StandinHTTPError(409, f"user {member_id} already exists")
            record = MemberRecord(member_id, email, name, role)
            self._members[member_id] = record
            return dataclasses.replace(record)

    # -- Admin API ---------------------------------------------------------------------------

    def list_keys(self, *, limit: int, offset: int, name: str | None) -> list[KeyFacts]:
        """One page of the organization's keys, oldest first, deleted ones only if listed.

        ``name`` keeps keys whose name contains it (case-insensitive) or whose last 4
        characters contain it.
        """
        with self._lock:
            keys: Iterable[_Key] = self._keys
            if not self._settings.list_deleted:
                keys = (k for k in keys if k.deleted_at is None)
            if name:
                needle = name.lower()
                keys = (
                    k for k in keys if needle in (k.name or "").lower() or needle in k.last4.lower()
                )
            return [self._facts(k) for k in list(keys)[offset : offset + limit]]

    def _facts(self, key: _Key) -> KeyFacts:
        ws = self._workspaces.get(key.workspace_id)
        return key.facts(ws.name if ws else None)

    def create_key(
        self, *, workspace_id: str, user_id: str, name: str | None, expiration: date | None
    ) -> tuple[KeyFacts, Secret]:
        """Issue a key; its plaintext is returned here and nowhere else.

        Raises 422 for an expiration in the past, 404 for an unknown workspace or member, 400
        for an archived workspace. The organization policy (``max_expiration_days``) silently
        shortens or imposes the expiration. Not idempotent; names need not be unique.
        """
        with self._lock:
            now = self.clock.now()
            today = now.date()
            if expiration is not None and expiration < today:
                raise StandinHTTPError(
                    422,
                    [
                        {
                            "type": "value_error",
                            "loc": ["body", "expiration"],
                            "msg": "Value error, expiration must not be in the past",
                            "input": expiration.isoformat(),
                        }
                    ],
                )
            workspace = self._workspace(workspace_id)
            if workspace.is_archived:
                raise StandinHTTPError(400, "Workspace is archived")
            if user_id not in self._members:
                raise StandinHTTPError(404, "User not found in organization")
            max_days = self._settings.max_expiration_days
            if max_days is not None:
                ceiling = today + timedelta(days=max_days)
                if expiration is None or expiration > ceiling:
                    expiration = ceiling
            plaintext = self._fresh_plaintext()
            key = _Key(
                plaintext=plaintext,
                name=name,
                workspace_id=workspace_id,
                created_by=user_id,
                created_at=now,
                expiration_date=expiration,
                active_at=now + timedelta(seconds=self._settings.activation_delay_seconds),
            )
            self._keys.append(key)
            self._by_digest[key.digest] = key
            self._by_id[key.key_id] = key
            return self._facts(key), Secret(plaintext)

    def _fresh_plaintext(self) -> str:
        while True:
            candidate = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(KEY_LENGTH))
            if _digest(candidate) not in self._by_digest and not self.is_admin_key(candidate):
                return candidate

    def delete_key(self, key_id: str) -> KeyFacts:
        """Delete a key. Raises 404 if it is unknown or already deleted."""
        with self._lock:
            key = self._by_id.get(key_id)
            if key is None or key.deleted_at is not None:
                raise StandinHTTPError(404, "API key not found")
            key.deleted_at = self.clock.now()
            return self._facts(key)

    def list_workspaces(
        self, *, page: int, page_size: int, search: str | None, is_archived: bool | None
    ) -> tuple[int, list[WorkspaceRecord]]:
        """``(total, items of page)``; pages start at 1; ``search`` is a name substring."""
        with self._lock:
            items = list(self._workspaces.values())
            if search:
                items = [w for w in items if search.lower() in w.name.lower()]
            if is_archived is not None:
                items = [w for w in items if w.is_archived == is_archived]
            return len(items), _page(items, page, page_size)

    def list_members(
        self, *, page: int, page_size: int, email: str | None
    ) -> tuple[int, list[MemberRecord]]:
        """``(total, items of page)``; pages start at 1; ``email`` is a substring filter."""
        with self._lock:
            items = list(self._members.values())
            if email:
                items = [m for m in items if email.lower() in m.email.lower()]
            return len(items), _page(items, page, page_size)

    def spend_limit_reached(self, workspace_id: str | None = None) -> bool:
        """Whether the monthly limit is reached for ``workspace_id``, or for any workspace."""
        with self._lock:
            if workspace_id is not None:
                return self._workspace(workspace_id).spend_limit_reached
            return any(w.spend_limit_reached for w in self._workspaces.values())

    # -- inference gateway -------------------------------------------------------------------

    def check_key(self, token: str | None) -> Verdict:
        """Judge a bearer token as ``GET /v1/models`` does; a 200 records ``last_used``."""
        if not token:
            return Verdict(Access.MISSING)
        with self._lock:
            key = self._by_digest.get(_digest(token))
            if key is None:
                return Verdict(Access.UNKNOWN)
            key.models_calls += 1
            now = self.clock.now()
            verdict = self._judge(key, now)
            if verdict.access is Access.OK:
                key.last_used = now.date()
                key.models_ok += 1
            return verdict

    def _judge(self, key: _Key, now: datetime) -> Verdict:
        revocation = timedelta(seconds=self._settings.revocation_delay_seconds)
        if key.deleted_at is not None and now >= key.deleted_at + revocation:
            return Verdict(Access.REVOKED)
        if key.expiration_date is not None and now.date() > key.expiration_date:
            return Verdict(Access.EXPIRED)
        if now < key.active_at:
            return Verdict(Access.NOT_ACTIVE)
        if not self._settings.billing_active:
            return Verdict(Access.PAYMENT_REQUIRED)
        workspace = self._workspaces.get(key.workspace_id)
        if workspace is not None and workspace.spend_limit_reached:
            return Verdict(Access.SPEND_LIMITED, seconds_to_next_month(now))
        return Verdict(Access.OK)

    # -- observation -------------------------------------------------------------------------

    def key_facts(self) -> list[KeyFacts]:
        """Every key ever issued, deleted ones included, oldest first."""
        with self._lock:
            return [self._facts(k) for k in self._keys]

    def workspaces(self) -> list[WorkspaceRecord]:
        """Copies of every workspace record, with its spend-limit switch."""
        with self._lock:
            return [dataclasses.replace(w) for w in self._workspaces.values()]
