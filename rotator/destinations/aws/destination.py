"""AWS Secrets Manager destination: a secret's ``SecretString``, whole or one JSON ``field``.

Staging writes a version labelled AWSPENDING whose ``VersionId`` is the rotation id
(``ClientRequestToken``), so a retry finds it instead of adding another; its other JSON fields
come from the version the plan read (``CurrentValue.document``), which is not read again.
Promotion moves AWSCURRENT to it with ``RemoveFromVersionId`` = the version the rotation planned
on (a compare-and-swap; AWSPREVIOUS follows) and then drops AWSPENDING, reading the secret
(``DescribeSecret``) only when a move is refused. A secret with no current value (or none at
all, with ``create_missing``) gets its first version at promotion: Secrets Manager serves a
secret's first version at once, whatever its labels. Semantics are those of
:class:`rotator.contracts.Destination`.

``PutSecretValue`` takes no condition, so two of its uses are check-then-act:

- The first value (promotion, labelled AWSCURRENT): a version someone else puts between the
  ``DescribeSecret`` and our put loses AWSCURRENT to ours. This is detected after the put (it
  now carries AWSPREVIOUS) and undone: ``ConflictError``, AWSCURRENT back on their version.
- Staging (labelled AWSPENDING): if someone else puts a version labelled AWSPENDING between
  the plan's ``DescribeSecret`` and stage's ``PutSecretValue`` (the time the new key takes to
  be created and verified), AWS moves AWSPENDING to ours and their version is left with no
  label. ``DescribeSecret`` does not list unlabelled versions, so rotator cannot see it (only
  ``ListSecretVersionIds``, one more IAM action, could); their later promotion by version id is
  not stopped either, and then makes ours fail its compare-and-swap. A put of AWSCURRENT since
  the plan makes our promotion's compare-and-swap fail (``ConflictError``, rolled back). The
  usual other writer is a Secrets Manager rotation Lambda, which ``rotator check`` reports; see
  docs/design/20261127-aws-label-races.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from rotator.contracts import (
    OWNER,
    AccessCheck,
    CurrentValue,
    PromotedValue,
    StagedValue,
)
from rotator.destinations._common import (
    MANAGED_BY,
    check_rotation_id,
    check_staged_secret,
    current_from_marks,
    field_of,
    log_promoted,
    log_rolled_back,
    log_staged,
    refuse_foreign,
    require_create_missing,
    with_field,
)
from rotator.destinations.aws.api import (
    CURRENT,
    PENDING,
    PREVIOUS,
    SecretDescription,
    SecretsManagerApi,
)
from rotator.errors import AuthError, BackendError, ConflictError, PermanentError, TransientError
from rotator.pool import BlockingPool
from rotator.secret import Secret

PROBE_VALUE = "rotator check: write probe (never stored)"


class AwsDestination:
    """One Secrets Manager secret (optionally one JSON field of it)."""

    def __init__(
        self,
        *,
        api: SecretsManagerApi,
        pool: BlockingPool,
        store: str,
        secret_id: str,
        field: str | None = None,
        create_missing: bool = False,
        kms_key_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self._api = api
        self._pool = pool
        self._secret_id = secret_id
        self._field = field
        self._create_missing = create_missing
        self._kms_key_id = kms_key_id
        self._tags = {**(tags or {}), MANAGED_BY: OWNER}
        self._name = f"{store}:{secret_id}" + (f"#{field}" if field else "")

    @property
    def name(self) -> str:
        return self._name

    # -- the contract ---------------------------------------------------------------------------

    async def read_current(self) -> CurrentValue:
        return await self._pool.run_blocking(self._read_current)

    async def stage(
        self, secret: Secret, *, rotation_id: str, key_id: str, base: CurrentValue
    ) -> StagedValue:
        check_rotation_id(rotation_id)
        staged = await self._pool.run_blocking(self._stage, secret, rotation_id, key_id, base)
        log_staged(staged)
        return staged

    async def read_back(self, version: str) -> Secret | None:
        def read() -> Secret | None:
            found = self._api.get_value(self._secret_id, version_id=version)
            if found is None:
                raise PermanentError(
                    "aws", f"GetSecretValue {self._secret_id}", f"version {version} not found"
                )
            return field_of(self._name, found.value, self._field)

        return await self._pool.run_blocking(read)

    async def promote(self, staged: StagedValue, secret: Secret) -> PromotedValue:
        check_staged_secret(staged, secret)
        promoted = await self._pool.run_blocking(self._promote, staged, secret)
        log_promoted(promoted)
        return promoted

    async def roll_back(self, staged: StagedValue) -> bool:
        changed = await self._pool.run_blocking(self._roll_back, staged)
        log_rolled_back(staged, changed)
        return changed

    async def check_access(self) -> list[AccessCheck]:
        return await self._pool.run_blocking(self._check_access)

    # -- helpers (run on a pool thread) ---------------------------------------------------------

    def _describe(self) -> SecretDescription | None:
        found = self._api.describe(self._secret_id)
        if found is not None and found.deleted:
            raise PermanentError(
                "aws",
                f"DescribeSecret {self._secret_id}",
                "the secret is scheduled for deletion (restore it or fix the configuration)",
            )
        return found

    def _read_current(self) -> CurrentValue:
        described = self._describe()
        if described is None:
            return CurrentValue(exists=False)
        return self._current(described)

    def _current(self, described: SecretDescription) -> CurrentValue:
        version = described.holder(CURRENT)
        secret = document = None
        if version is not None:
            found = self._api.get_value(self._secret_id)  # plain: what consumers read
            if found is not None:
                version, document = found.version_id, found.value
                secret = field_of(self._name, document, self._field)
        return current_from_marks(
            secret=secret,
            version=version,
            marks=described.tags,
            pending_version=described.holder(PENDING),
            document=document,
        )

    def _stage(
        self, secret: Secret, rotation_id: str, key_id: str, base: CurrentValue
    ) -> StagedValue:
        def staged(version: str | None) -> StagedValue:
            return StagedValue(
                destination=self._name,
                rotation_id=rotation_id,
                key_id=key_id,
                fingerprint=secret.fingerprint,
                base_version=base.version,
                version=version,
                base=base,
            )

        # Everything is decided on the plan's read (``base``): a write since is refused by
        # promote's compare-and-swap. The put is idempotent per rotation id (AWS keeps one
        # version per ClientRequestToken, and refuses the token for other content).
        if not base.exists:
            require_create_missing("aws", self._secret_id, self._create_missing)
            return staged(None)  # created, with its value, at promotion
        refuse_foreign(self._name, base)
        pending = base.pending_version
        if pending not in (None, rotation_id):
            raise ConflictError(
                f"{self._name}: AWSPENDING is on version {pending}, staged by someone else; "
                "rotator will not replace it"
            )
        if base.version is None:
            return staged(None)  # the first version would be served at once
        document = base.document if self._field is not None else None
        written = self._api.put_value(
            self._secret_id,
            token=rotation_id,
            value=with_field(self._name, document, self._field, secret),
            stages=[PENDING],
        )
        if PENDING not in written.stages:
            # The token named a version we wrote before (and rolled back): AWS ignored the put.
            self._api.move_stage(self._secret_id, PENDING, to=written.version_id, away_from=None)
        return staged(written.version_id)

    def _promote(self, staged: StagedValue, secret: Secret) -> PromotedValue:
        if staged.version is not None:
            return self._move_current(staged, staged.version)
        ours = staged.rotation_id
        described = self._describe()
        if described is None:
            if staged.base_version is not None:
                raise ConflictError(f"{self._name}: the secret was deleted since it was staged")
            require_create_missing("aws", self._secret_id, self._create_missing)
            version = self._api.create(
                self._secret_id,
                token=staged.rotation_id,
                value=with_field(self._name, None, self._field, secret),
                kms_key_id=self._kms_key_id,
                tags=self._tags,
            )
            return staged.promoted(version)
        refuse_foreign(
            self._name, current_from_marks(secret=None, version=None, marks=described.tags)
        )
        current = described.holder(CURRENT)
        pending = described.holder(PENDING)
        if current == ours:  # promoted before: finish by dropping AWSPENDING
            if pending == ours:
                self._drop_pending(ours)
            return staged.promoted(ours)
        if current != staged.base_version:
            raise ConflictError(
                f"{self._name}: AWSCURRENT is on {current or 'no version'}, staged against "
                f"{staged.base_version or 'none'}: someone else wrote it in between"
            )
        # The secret's first value (nothing was staged: it would have been served at once).
        self._api.put_value(
            self._secret_id,
            token=staged.rotation_id,
            value=with_field(self._name, None, self._field, secret),
            stages=[CURRENT],
        )
        self._refuse_first_value_race(described, ours)
        return staged.promoted(ours)

    def _move_current(self, staged: StagedValue, ours: str) -> PromotedValue:
        """AWSCURRENT onto our staged version, compare-and-swap on the planned one, then
        AWSPENDING off it. Nothing is read first: a refused move is told apart (a
        ``DescribeSecret``) as our own earlier move, or someone else's write."""
        try:
            self._api.move_stage(self._secret_id, CURRENT, to=ours, away_from=staged.base_version)
        except PermanentError:
            again = self._describe()
            holder = again.holder(CURRENT) if again is not None else None
            if holder != ours:
                if again is None:
                    raise ConflictError(
                        f"{self._name}: the secret was deleted since it was staged"
                    ) from None
                if holder != staged.base_version:
                    raise ConflictError(
                        f"{self._name}: AWSCURRENT moved to {holder or 'no version'} since "
                        f"{staged.base_version} was planned on: someone else wrote it in "
                        "between; nothing was changed"
                    ) from None
                raise
            # Ours already: this rotation promoted it before (a retry), or the move took effect
            # and only its answer was lost (botocore's replay was refused because
            # RemoveFromVersionId no longer held AWSCURRENT).
        self._drop_pending(ours)
        return staged.promoted(ours)

    def _drop_pending(self, ours: str) -> None:
        """Take AWSPENDING off our version. A refusal means it is not there (any more): a
        removal whose answer was lost took effect and botocore's replay of it is refused, or
        it was dropped before (a retry), or moved by someone else: that is done."""
        try:
            self._api.move_stage(self._secret_id, PENDING, to=None, away_from=ours)
        except PermanentError:
            again = self._api.describe(self._secret_id)
            if again is None or again.holder(PENDING) == ours:
                raise

    def _refuse_first_value_race(self, before: SecretDescription, ours: str) -> None:
        """After the first value was put with AWSCURRENT (``PutSecretValue`` has no condition):
        raise ``ConflictError`` if another writer's version got AWSCURRENT in the meantime.

        A version someone else put between :meth:`_promote`'s ``DescribeSecret`` and our put
        held AWSCURRENT, which our put moved away, so AWS labelled it AWSPREVIOUS: that label
        on a version other than the one holding it before is the sign. Then AWSCURRENT is moved
        back to it (``RemoveFromVersionId`` = ours, so a third writer is not clobbered) and
        AWSPREVIOUS is put back where it was, leaving our version unlabelled: consumers may have
        read our (valid) key in between, nothing else changed. A writer after our put simply
        replaced our value: AWSCURRENT is not ours and nothing is undone.
        """
        after = self._api.describe(self._secret_id)
        if after is None:
            raise ConflictError(f"{self._name}: the secret was deleted while promoting")
        holder = after.holder(CURRENT)
        if holder != ours:
            raise ConflictError(
                f"{self._name}: AWSCURRENT moved to version {holder or 'none'} right after "
                "this rotation's first value was written"
            )
        displaced = after.holder(PREVIOUS)
        previous = before.holder(PREVIOUS)
        if displaced in (None, previous, ours):
            return
        try:
            self._api.move_stage(self._secret_id, CURRENT, to=displaced, away_from=ours)
            self._api.move_stage(self._secret_id, PREVIOUS, to=previous, away_from=ours)
        except (BackendError, ConflictError) as exc:
            raise ConflictError(
                f"{self._name}: version {displaced} was written concurrently with this "
                f"rotation's first value and putting AWSCURRENT back on it failed ({exc}); "
                "check the secret's labels by hand"
            ) from None
        raise ConflictError(
            f"{self._name}: version {displaced} was written concurrently with this rotation's "
            "first value; AWSCURRENT is back on it and this rotation's version is unlabelled"
        )

    def _roll_back(self, staged: StagedValue) -> bool:
        ours = staged.version or staged.rotation_id
        described = self._api.describe(self._secret_id)
        if described is None:
            return False
        labels = described.stages.get(ours, ())
        current = described.holder(CURRENT)
        changed = False
        if current == ours:
            if staged.base_version is None:
                raise PermanentError(
                    "aws",
                    f"roll back {self._secret_id}",
                    "the secret had no value before this rotation and rotator never deletes "
                    "secrets; remove it by hand if needed",
                )
            self._api.move_stage(self._secret_id, CURRENT, to=staged.base_version, away_from=ours)
            changed = True
        elif current != staged.base_version and PREVIOUS in labels:
            raise ConflictError(
                f"{self._name}: version {current} replaced this rotation's "
                "value; roll back would overwrite someone else's write"
            )
        if PENDING in labels:
            self._drop_pending(ours)
            changed = True
        return changed

    def _check_access(self) -> list[AccessCheck]:
        checks: list[AccessCheck] = []

        def add(check: str, ok: bool, detail: str) -> None:
            checks.append(AccessCheck(self._name, check, ok, detail))

        try:
            described = self._api.describe(self._secret_id)
        except BackendError as exc:
            add("read", False, str(exc))
            return checks
        if described is None:
            if self._create_missing:
                add("read", True, "the secret does not exist yet; created at the first promotion")
                add(
                    "create",
                    True,
                    "not probed: CreateSecret cannot be tried without creating the secret; the"
                    " first promotion needs secretsmanager:CreateSecret (and TagResource)",
                )
            else:
                add("read", False, "the secret does not exist and create_missing is off")
            return checks
        problems = self._state_problems(described)
        for problem in problems:
            add("state", False, problem)
        if described.deleted:
            return checks
        try:
            current = self._current(described)
        except (BackendError, ConflictError) as exc:
            add("read", False, str(exc))
            return checks
        add("read", True, f"AWSCURRENT is version {current.version or 'none (no value yet)'}")
        add(*self._probe_writes(described))
        return checks

    @staticmethod
    def _state_problems(described: SecretDescription) -> list[str]:
        problems = []
        if described.deleted:
            problems.append("the secret is scheduled for deletion")
        if described.rotation_enabled:
            problems.append(
                "Secrets Manager's own rotation (a Lambda) is enabled on it and would fight rotator"
            )
        owner = described.tags.get(MANAGED_BY)
        if owner not in (None, OWNER):
            problems.append(f"managed by {owner!r}; rotator will not write it")
        pending = described.holder(PENDING)
        if pending is not None:
            problems.append(f"AWSPENDING is on version {pending}: a rotation is in progress")
        return problems

    def _probe_writes(self, described: SecretDescription) -> tuple[str, bool, str]:
        """Prove PutSecretValue and UpdateSecretVersionStage are allowed without changing
        anything: AWS authorizes a call before it looks at its arguments, and both probes are
        refused after that — a ``ClientRequestToken`` that already names the current version
        (with other content), and a label move to a version id that does not exist. They are
        real write calls: CloudTrail records them (as failed), and alarms on failed writes see
        them."""
        current = described.holder(CURRENT)
        if current is None or PENDING in described.stages.get(current, ()):
            return ("write", True, "not probed (no settled current version); proven at staging")
        try:
            self._api.put_value(
                self._secret_id, token=current, value=Secret(PROBE_VALUE), stages=[PENDING]
            )
        except ConflictError:
            pass  # the refusal that comes after authorization
        except BackendError as exc:
            return ("write", False, str(exc))
        try:
            self._api.move_stage(self._secret_id, PENDING, to=str(uuid.uuid4()), away_from=None)
        except (AuthError, TransientError) as exc:
            return ("write", False, str(exc))
        except PermanentError:
            pass  # "no such version": the refusal that comes after authorization
        probed = (
            "PutSecretValue and UpdateSecretVersionStage allowed (probed with writes AWS refused"
            " after authorizing them; CloudTrail shows them as failed calls)"
        )
        return ("write", True, probed)
