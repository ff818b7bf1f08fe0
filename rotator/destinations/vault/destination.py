"""Vault / OpenBao KV v2 destination: one ``field`` of the secret at ``mount``/``path``.

KV v2 has no pending state: :meth:`stage` writes nothing and only proves the promotion will be
allowed (ownership and, unless rotator's own last promotion proved them, capabilities), from the
plan's read. :meth:`promote` writes the new version with ``cas`` = the version the rotation
planned on, over that version's data as the plan read it, then stamps ``custom_metadata`` with
the marks of the rotation. Semantics are those of :class:`rotator.contracts.Destination`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rotator.contracts import AccessCheck, CurrentValue, PromotedValue, StagedValue
from rotator.destinations._common import (
    check_rotation_id,
    check_staged_secret,
    current_from_marks,
    log_promoted,
    log_rolled_back,
    log_staged,
    marks_for,
    our_marks,
    refuse_foreign,
    refuse_moved,
    require_create_missing,
    stamped_by_rotator,
    with_marks,
)
from rotator.destinations.vault.api import KvVersion, VaultApi
from rotator.destinations.vault.auth import (
    VaultSession,
)
from rotator.errors import AuthError, BackendError, ConflictError, PermanentError
from rotator.pool import BlockingPool
from rotator.secret import Secret


class VaultDestination:
    """A KV v2 secret field in one Vault/OpenBao store."""

    def __init__(
        self,
        *,
        session: VaultSession,
        pool: BlockingPool,
        store: str,
        mount: str,
        path: str,
        field: str,
        create_missing: bool = False,
    ) -> None:
        self._session = session
        self._pool = pool
        self._mount = mount.strip("/")
        self._path = path.strip("/")
        self._field = field
        self._create_missing = create_missing
        self._name = f"{store}:{self._mount}/{self._path}#{field}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def data_path(self) -> str:
        """The API path of the secret's data (what policies name)."""
        return f"{self._mount}/data/{self._path}"

    @property
    def metadata_path(self) -> str:
        """The API path of the secret's metadata."""
        return f"{self._mount}/metadata/{self._path}"

    # -- the contract ---------------------------------------------------------------------------

    async def read_current(self) -> CurrentValue:
        return await self._pool.run_blocking(self._session.call, self._read_current)

    async def stage(
        self, secret: Secret, *, rotation_id: str, key_id: str, base: CurrentValue
    ) -> StagedValue:
        check_rotation_id(rotation_id)
        refuse_foreign(self._name, base)
        if not base.exists:
            require_create_missing("vault", self.data_path, self._create_missing)
        if not stamped_by_rotator(base):  # else rotator's last promotion proved the permissions

            def require(api: VaultApi) -> None:
                self._require_capabilities(api, exists=base.exists)

            await self._pool.run_blocking(self._session.call, require)
        staged = StagedValue(
            destination=self._name,
            rotation_id=rotation_id,
            key_id=key_id,
            fingerprint=secret.fingerprint,
            base_version=base.version,
            version=None,
            base_marks=our_marks(base.metadata),
            base=base,
        )
        log_staged(staged)
        return staged

    async def read_back(self, version: str) -> Secret | None:
        def read(api: VaultApi) -> Secret | None:
            found = api.read_version(self._mount, self._path, _version_number(version))
            if found is None or found.data is None:
                raise PermanentError(
                    "vault", f"read {self.data_path}", f"version {version} is gone"
                )
            return self._field_of(found.data)

        return await self._pool.run_blocking(self._session.call, read)

    async def promote(self, staged: StagedValue, secret: Secret) -> PromotedValue:
        check_staged_secret(staged, secret)

        def promote(api: VaultApi) -> PromotedValue:
            base = staged.base
            if base is not None and base.version == staged.base_version:
                # The plan read the version written over: no read, the check-and-set guards it.
                try:
                    return self._write(api, staged, secret, _data_of(base), base.metadata)
                except ConflictError:
                    pass  # it moved: this rotation's earlier try, or someone else (read below)
            latest = api.read_version(self._mount, self._path)
            current = self._current(latest)
            refuse_foreign(self._name, current)
            marks = self._marks_of_version(latest)
            if current.version != staged.base_version and self._is_ours(current, staged):
                # A retry after the write: finish the metadata if the first try died before it.
                assert current.version is not None
                self._stamp(api, marks, staged, current.version)
                return staged.promoted(current.version)
            refuse_moved(self._name, current, staged.base_version)
            if not current.exists:
                require_create_missing("vault", self.data_path, self._create_missing)
            data = dict(latest.data or {}) if latest else {}
            return self._write(api, staged, secret, data, marks)

        promoted = await self._pool.run_blocking(self._session.call, promote)
        log_promoted(promoted)
        return promoted

    async def roll_back(self, staged: StagedValue) -> bool:
        def roll_back(api: VaultApi) -> bool:
            latest = api.read_version(self._mount, self._path)
            current = self._current(latest)
            if current.version == staged.base_version:
                return False  # nothing of ours was ever served
            if not self._is_ours(current, staged):
                if self._restored(api, current, staged):
                    return False  # rolled back before
                if self._served_ours_since(api, staged, current.version):
                    raise ConflictError(
                        f"{self._name}: version {current.version} replaced this rotation's "
                        "value; roll back would overwrite someone else's write"
                    )
                return False
            refuse_foreign(self._name, current)
            if staged.base_version is None:
                raise PermanentError(
                    "vault",
                    f"roll back {self.data_path}",
                    "the secret did not exist before this rotation and rotator never deletes "
                    "secrets; remove it by hand if needed",
                )
            previous = api.read_version(
                self._mount, self._path, _version_number(staged.base_version)
            )
            if previous is None or previous.data is None:
                raise PermanentError(
                    "vault",
                    f"roll back {self.data_path}",
                    f"previous version {staged.base_version} is deleted or destroyed",
                )
            assert current.version is not None
            written = api.write(
                self._mount, self._path, previous.data, cas=_version_number(current.version)
            )
            marks = dict(staged.base_marks)
            if marks:
                marks["version"] = str(written)
            api.write_custom_metadata(
                self._mount, self._path, with_marks(self._marks_of_version(latest), marks)
            )
            return True

        changed = await self._pool.run_blocking(self._session.call, roll_back)
        log_rolled_back(staged, changed)
        return changed

    async def check_access(self) -> list[AccessCheck]:
        return await self._pool.run_blocking(self._check_access)

    # -- helpers (run on a pool thread) ---------------------------------------------------------

    def _read_current(self, api: VaultApi) -> CurrentValue:
        return self._current(api.read_version(self._mount, self._path))

    def _current(self, latest: KvVersion | None) -> CurrentValue:
        if latest is None:
            return CurrentValue(exists=False)
        data = latest.data
        return current_from_marks(
            secret=self._field_of(data) if data is not None else None,
            version=str(latest.version),
            marks=latest.custom_metadata,
            document=Secret(json.dumps(dict(data))) if data is not None else None,
        )

    def _field_of(self, data: Mapping[str, object]) -> Secret | None:
        value = data.get(self._field)
        return Secret(value) if isinstance(value, str) and value else None

    @staticmethod
    def _marks_of_version(latest: KvVersion | None) -> Mapping[str, str]:
        return latest.custom_metadata if latest is not None else {}

    @staticmethod
    def _is_ours(current: CurrentValue, staged: StagedValue) -> bool:
        return current.secret is not None and current.secret.fingerprint == staged.fingerprint

    def _restored(self, api: VaultApi, current: CurrentValue, staged: StagedValue) -> bool:
        """Whether consumers read the pre-rotation value again (a roll back already ran)."""
        if staged.base_version is None or current.secret is None:
            return False
        before = api.read_version(self._mount, self._path, _version_number(staged.base_version))
        value = self._field_of(before.data) if before and before.data is not None else None
        return value is not None and value.fingerprint == current.secret.fingerprint

    def _served_ours_since(self, api: VaultApi, staged: StagedValue, upto: str | None) -> bool:
        first = _cas(staged.base_version) + 1
        last = _version_number(upto) if upto else 0
        for number in range(first, last + 1):
            found = api.read_version(self._mount, self._path, number)
            if found is not None and found.data is not None:
                value = self._field_of(found.data)
                if value is not None and value.fingerprint == staged.fingerprint:
                    return True
        return False

    def _write(
        self,
        api: VaultApi,
        staged: StagedValue,
        secret: Secret,
        data: dict[str, object],
        marks: Mapping[str, str],
    ) -> PromotedValue:
        """Write ``data`` (the version ``staged.base_version`` holds) with the new key in its
        field, check-and-set on that version, then stamp ``marks`` with this rotation's."""
        data[self._field] = secret.reveal()
        written = str(api.write(self._mount, self._path, data, cas=_cas(staged.base_version)))
        self._stamp(api, marks, staged, written)
        return staged.promoted(written)

    def _stamp(
        self, api: VaultApi, existing: Mapping[str, str], staged: StagedValue, version: str
    ) -> None:
        wanted = marks_for(staged, version)
        if all(existing.get(k) == v for k, v in wanted.items()):
            return
        api.write_custom_metadata(self._mount, self._path, with_marks(existing, wanted))

    def _missing_capabilities(self, api: VaultApi, *, exists: bool) -> list[str]:
        write = "update" if exists else "create"
        wanted = {self.data_path: ("read", write), self.metadata_path: ("update",)}
        granted = api.capabilities(list(wanted))
        missing = []
        for path, needed in wanted.items():
            have = granted.get(path, frozenset())
            if "root" in have:
                continue
            lacking = [c for c in needed if c not in have]
            if lacking:
                missing.append(f"{'/'.join(lacking)} on {path}")
        return missing

    def _require_capabilities(self, api: VaultApi, *, exists: bool) -> None:
        missing = self._missing_capabilities(api, exists=exists)
        if missing:
            raise AuthError(
                "vault",
                f"stage {self.data_path}",
                "the token lacks " + "; ".join(missing) + " (see deploy/policies)",
            )

    def _check_access(self) -> list[AccessCheck]:
        checks: list[AccessCheck] = []

        def add(check: str, ok: bool, detail: str) -> None:
            checks.append(AccessCheck(self._name, check, ok, detail))

        method = self._session.credentials.method
        try:
            self._session.ensure_login()
        except BackendError as exc:
            add("login", False, f"{method}: {exc}")
            return checks
        add("login", True, f"authenticated with {method}")
        try:
            current = self._session.call(self._read_current)
        except BackendError as exc:
            add("read", False, str(exc))
            return checks
        if current.exists:
            add("read", True, f"version {current.version}")
        elif self._create_missing:
            add("read", True, "the secret does not exist yet; created at the first promotion")
        else:
            add("read", False, "the secret does not exist and create_missing is off")
        if current.foreign:
            add("owner", False, f"managed by {current.managed_by!r}; rotator will not write it")
        try:
            missing = self._session.call(
                lambda api: self._missing_capabilities(api, exists=current.exists)
            )
        except BackendError as exc:
            add("write", False, str(exc))
            return checks
        if missing:
            add("write", False, "the token lacks " + "; ".join(missing))
        else:
            add("write", True, f"capabilities cover {self.data_path} and {self.metadata_path}")
        return checks


def _version_number(version: str) -> int:
    try:
        return int(version)
    except ValueError:
        raise PermanentError("vault", "read", f"not a KV v2 version: {version!r}") from None


def _cas(base_version: str | None) -> int:
    return _version_number(base_version) if base_version is not None else 0


def _data_of(current: CurrentValue) -> dict[str, object]:
    """The data of the version ``current`` was read from (empty if it has none)."""
    if current.document is None:
        return {}
    data = json.loads(current.document.reveal())
    return dict(data) if isinstance(data, dict) else {}
