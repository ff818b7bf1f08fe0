"""The in-memory reference destination: the contract in its plainest form, for unit tests.

A :class:`MemoryStore` plays the server; it behaves like AWS Secrets Manager (``pending=True``:
staging writes a version consumers do not see, promotion moves the current label) or like Vault
KV v2 (``pending=False``: staging writes nothing, promotion writes a new version with
check-and-set and stamps the ownership marks). Tests use its hooks to play a concurrent writer,
another manager, someone else's pending version, an outage or a missing permission. The contract
suite (``tests/contract``) holds this module and the real backends to the same behaviour.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from rotator.contracts import OWNER, AccessCheck, CurrentValue, PromotedValue, StagedValue
from rotator.destinations._common import (
    MANAGED_BY,
    check_rotation_id,
    check_staged_secret,
    current_from_marks,
    marks_for,
    our_marks,
    refuse_foreign,
    refuse_moved,
    require_create_missing,
    with_marks,
)
from rotator.errors import AuthError, ConflictError, PermanentError, TransientError
from rotator.secret import Secret

BACKEND = "memory"
PLAIN = ""
"""The data key under which a destination without ``field`` keeps its whole value."""


@dataclass
class _Version:
    data: dict[str, str] = field(repr=False)


@dataclass
class _Entry:
    versions: dict[str, _Version] = field(default_factory=dict)
    current: str | None = None
    pending: str | None = None
    previous: str | None = None
    marks: dict[str, str] = field(default_factory=dict)


class MemoryStore:
    """A small secret server in process memory, shared by the destinations that point at it."""

    def __init__(self, *, pending: bool) -> None:
        self.pending = pending
        self.down = False
        self.denied: set[str] = set()
        self._entries: dict[str, _Entry] = {}

    # -- hooks for tests: what other actors do ---------------------------------------------------

    def consumer_read(self, path: str) -> dict[str, str] | None:
        """What a consumer reads at ``path`` now (a copy), or None."""
        entry = self._entries.get(path)
        if entry is None or entry.current is None:
            return None
        return dict(entry.versions[entry.current].data)

    def write(self, path: str, data: Mapping[str, str]) -> str:
        """Someone else writes ``data`` as the new current version; returns its id."""
        entry = self._entries.setdefault(path, _Entry())
        version = self.new_version_id(entry)
        entry.versions[version] = _Version(dict(data))
        entry.previous, entry.current = entry.current, version
        return version

    def stage_foreign(self, path: str, data: Mapping[str, str]) -> str:
        """Someone else stages ``data`` as a pending version (``pending`` stores only)."""
        entry = self._entries.setdefault(path, _Entry())
        version = str(uuid.uuid4())
        entry.versions[version] = _Version(dict(data))
        entry.pending = version
        return version

    def set_marks(self, path: str, marks: Mapping[str, str]) -> None:
        """Replace the ownership marks (metadata or tags) on ``path``."""
        self._entries.setdefault(path, _Entry()).marks = dict(marks)

    def version_count(self, path: str) -> int:
        """How many versions ``path`` holds (to prove a retry added none)."""
        entry = self._entries.get(path)
        return len(entry.versions) if entry else 0

    # -- used by MemoryDestination -------------------------------------------------------------

    def entry(self, path: str) -> _Entry:
        """The record of ``path``, created empty if missing."""
        return self._entries.setdefault(path, _Entry())

    def new_version_id(self, entry: _Entry) -> str:
        return str(len(entry.versions) + 1) if not self.pending else str(uuid.uuid4())

    def reach(self, operation: str, path: str) -> _Entry | None:
        if self.down:
            raise TransientError(BACKEND, f"{operation} {path}", "server unreachable")
        return self._entries.get(path)

    def may_write(self, operation: str, path: str) -> None:
        if path in self.denied:
            raise AuthError(
                BACKEND,
                f"{operation} {path}",
                f"permission denied: needs write on {path}",
                status=403,
            )


class MemoryDestination:
    """A destination in a :class:`MemoryStore`; see :class:`rotator.contracts.Destination`."""

    def __init__(
        self,
        store: MemoryStore,
        *,
        path: str,
        field: str | None = None,
        create_missing: bool = False,
        name: str = "memory",
    ) -> None:
        self.store = store
        self.path = path
        self._field = field if field is not None else PLAIN
        self._create_missing = create_missing
        self._name = f"{name}:{path}" + (f"#{field}" if field else "")

    @property
    def name(self) -> str:
        return self._name

    async def read_current(self) -> CurrentValue:
        entry = self.store.reach("read", self.path)
        return self._current(entry)

    async def stage(
        self, secret: Secret, *, rotation_id: str, key_id: str, base: CurrentValue
    ) -> StagedValue:
        check_rotation_id(rotation_id)
        entry = self.store.reach("stage", self.path)

        def staged(version: str | None) -> StagedValue:
            return StagedValue(
                destination=self._name,
                rotation_id=rotation_id,
                key_id=key_id,
                fingerprint=secret.fingerprint,
                base_version=entry.current if entry else None,
                version=version,
                base_marks=our_marks(entry.marks) if entry and not self.store.pending else {},
            )

        current = self._current(entry)
        if entry is None or not current.exists:
            if base.exists:
                raise ConflictError(f"{self._name}: the secret was deleted since it was read")
            require_create_missing(BACKEND, self.path, self._create_missing)
            self.store.may_write("stage", self.path)
            return staged(None)
        refuse_foreign(self._name, current)
        refuse_moved(self._name, current, base.version)
        if not self.store.pending:
            self.store.may_write("stage", self.path)
            return staged(None)
        if entry.pending == rotation_id:
            if entry.versions[rotation_id].data.get(self._field) != secret.reveal():
                raise ConflictError(f"{self._name}: rotation id already used for another value")
            return staged(rotation_id)
        if entry.pending is not None:
            raise ConflictError(f"{self._name}: AWSPENDING is on version {entry.pending}")
        if entry.current is None:
            return staged(None)
        self.store.may_write("stage", self.path)
        if rotation_id not in entry.versions:
            data = dict(entry.versions[entry.current].data)
            data[self._field] = secret.reveal()
            entry.versions[rotation_id] = _Version(data)
        entry.pending = rotation_id
        return staged(rotation_id)

    async def read_back(self, version: str) -> Secret | None:
        entry = self.store.reach("read", self.path)
        if entry is None or version not in entry.versions:
            raise PermanentError(BACKEND, f"read {self.path}", f"version {version} not found")
        return self._value(entry, version)

    async def promote(self, staged: StagedValue, secret: Secret) -> PromotedValue:
        check_staged_secret(staged, secret)
        entry = self.store.reach("promote", self.path)
        ours = staged.version or (staged.rotation_id if self.store.pending else None)
        if entry is None:
            if staged.base_version is not None:
                raise ConflictError(f"{self._name}: the secret was deleted since it was staged")
            require_create_missing(BACKEND, self.path, self._create_missing)
            self.store.may_write("promote", self.path)
            entry = self.store.entry(self.path)
            if self.store.pending:
                entry.marks = {MANAGED_BY: OWNER}
        current = self._current(entry)
        refuse_foreign(self._name, current)
        if entry.current is not None and entry.current != staged.base_version:
            if self._is_ours(entry, entry.current, staged):
                if self.store.pending and entry.pending == entry.current:
                    entry.pending = None
                if not self.store.pending:
                    entry.marks = with_marks(entry.marks, marks_for(staged, entry.current))
                return staged.promoted(entry.current)
            refuse_moved(self._name, current, staged.base_version)
        self.store.may_write("promote", self.path)
        if self.store.pending and staged.version is not None:
            if entry.pending not in (None, staged.version):
                raise ConflictError(f"{self._name}: AWSPENDING moved to {entry.pending}")
            entry.previous, entry.current = entry.current, staged.version
            entry.pending = None
            return staged.promoted(staged.version)
        data = dict(entry.versions[entry.current].data) if entry.current else {}
        data[self._field] = secret.reveal()
        version = ours or self.store.new_version_id(entry)
        entry.versions[version] = _Version(data)
        entry.previous, entry.current = entry.current, version
        if not self.store.pending:
            entry.marks = with_marks(entry.marks, marks_for(staged, version))
        return staged.promoted(version)

    async def roll_back(self, staged: StagedValue) -> bool:
        entry = self.store.reach("roll back", self.path)
        if entry is None:
            return False
        changed = False
        if entry.current is not None and entry.current != staged.base_version:
            if self._is_ours(entry, entry.current, staged):
                if staged.base_version is None:
                    raise PermanentError(
                        BACKEND, f"roll back {self.path}", "rotator never deletes secrets"
                    )
                self.store.may_write("roll back", self.path)
                if self.store.pending:
                    entry.previous, entry.current = entry.current, staged.base_version
                else:
                    data = dict(entry.versions[staged.base_version].data)
                    version = self.store.new_version_id(entry)
                    entry.versions[version] = _Version(data)
                    entry.previous, entry.current = entry.current, version
                    marks = dict(staged.base_marks)
                    if marks:
                        marks["version"] = version
                    entry.marks = with_marks(entry.marks, marks)
                changed = True
            elif not self._restored(entry, staged) and self._served_since(entry, staged):
                raise ConflictError(f"{self._name}: someone else wrote over this rotation")
        if self.store.pending and entry.pending == (staged.version or staged.rotation_id):
            entry.pending = None
            changed = True
        return changed

    async def check_access(self) -> list[AccessCheck]:
        try:
            current = await self.read_current()
        except TransientError as exc:
            return [AccessCheck(self._name, "read", False, str(exc))]
        checks = [AccessCheck(self._name, "read", True, f"version {current.version}")]
        if not current.exists and not self._create_missing:
            checks = [
                AccessCheck(
                    self._name, "read", False, "the secret does not exist and create_missing is off"
                )
            ]
        if current.foreign:
            checks.append(
                AccessCheck(self._name, "owner", False, f"managed by {current.managed_by!r}")
            )
        if self.path in self.store.denied:
            checks.append(AccessCheck(self._name, "write", False, f"no write on {self.path}"))
        else:
            checks.append(AccessCheck(self._name, "write", True, "allowed"))
        return checks

    # -- helpers --------------------------------------------------------------------------------

    def _current(self, entry: _Entry | None) -> CurrentValue:
        if entry is None:
            return CurrentValue(exists=False)
        secret = self._value(entry, entry.current) if entry.current else None
        return current_from_marks(
            secret=secret,
            version=entry.current,
            marks=entry.marks,
            pending_version=entry.pending if self.store.pending else None,
        )

    def _value(self, entry: _Entry, version: str) -> Secret | None:
        value = entry.versions[version].data.get(self._field)
        return Secret(value) if value else None

    def _is_ours(self, entry: _Entry, version: str, staged: StagedValue) -> bool:
        value = self._value(entry, version)
        return value is not None and value.fingerprint == staged.fingerprint

    def _restored(self, entry: _Entry, staged: StagedValue) -> bool:
        """Whether consumers read the pre-rotation value again (a roll back already ran)."""
        if staged.base_version is None or entry.current is None:
            return False
        before = self._value(entry, staged.base_version)
        now = self._value(entry, entry.current)
        return before is not None and now is not None and before.fingerprint == now.fingerprint

    def _served_since(self, entry: _Entry, staged: StagedValue) -> bool:
        if self.store.pending:
            ours = staged.version or staged.rotation_id
            return entry.previous == ours
        return any(
            self._is_ours(entry, v, staged)
            for v in entry.versions
            if staged.base_version is None or int(v) > int(staged.base_version)
        )
