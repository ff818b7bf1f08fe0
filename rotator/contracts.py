"""The interfaces between the engine and its backends. Their docstrings are the contract.

Implementations live one per module (``rotator/mistral/admin.py``, ``rotator/mistral/verify.py``,
``rotator/destinations/vault/destination.py``, ``rotator/destinations/aws/destination.py``) and
inherit these semantics without repeating them. Every method may raise
:class:`rotator.errors.TransientError` (retry later) or :class:`rotator.errors.PermanentError`
(needs an operator); none ever puts a plaintext key in an exception, a log line or a return value
other than a :class:`rotator.secret.Secret`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Protocol, TypeAlias

from rotator.keys import ApiKey, CreatedKey, User, VerifyResult, Workspace
from rotator.secret import Secret

OnCall: TypeAlias = Callable[[str, str, str, float], None]
"""``on_call(backend, operation, status, seconds)``: the metrics hook every backend client is built
with (the Mistral clients, each destination's SDK seam), called once per call it makes.
``status`` is low-cardinality: for Mistral the HTTP status as text, or ``timeout``,
``connect_error``, ``network_error``, ``protocol_error`` or ``error`` when no answer came; for a
destination ``ok``, ``transient``, ``permanent`` or ``conflict``. Never given a target, a URL or a
value. A hook that raises is logged and ignored: metrics never break a rotation."""


class KeyIssuer(Protocol):
    """Mistral's Admin API: the only way keys are created, listed and deleted."""

    async def list_keys(self, *, workspace_id: str | None = None) -> list[ApiKey]:
        """Every key of the organization (all pages), optionally only one workspace's.

        Pages with ``limit``/``offset`` until a page is shorter than the limit. Retried on
        429/5xx/connection errors (it is idempotent).
        """
        ...

    async def create_key(
        self, *, workspace_id: str, user_id: str, name: str, expiration: date | None
    ) -> CreatedKey:
        """Create a key named ``name`` (which must be unique) in a workspace.

        Never blindly retried: after an ambiguous failure (no answer, or a 5xx) the client lists
        keys by name. Exactly one key with ``name`` in the workspace → ``AmbiguousCreate`` naming
        its key_id (the plaintext is lost: the caller deletes it, never uses it). None found after
        a 5xx answer → a plain ``TransientError`` (the server finished and created nothing). None
        found after no answer (timeout, dropped connection) → ``AmbiguousCreate`` without a
        key_id: the server may still create it, so the name must never be reused and must be
        looked up again later. More than one → ``PermanentError``. A clear 4xx is
        ``PermanentError`` (422 = bad body, 401/403 = bad admin key).
        ``expiration_date`` in the answer is what Mistral granted, which an organization policy
        may have shortened: callers read it back rather than assume the request.
        """
        ...

    async def delete_key(self, key_id: str) -> bool:
        """Delete a key. True if deleted now, False if it was already gone (404). Idempotent."""
        ...

    async def list_workspaces(self) -> list[Workspace]:
        """Every workspace of the organization, archived ones included (flagged)."""
        ...

    async def find_user(
        self, *, user_id: str | None = None, email: str | None = None
    ) -> User | None:
        """The organization member with this uuid or e-mail, or None."""
        ...

    async def spend_limit_reached(self) -> bool | None:
        """Whether the monthly completion spending limit is reached; None if unknown."""
        ...


class KeyVerifier(Protocol):
    """Proves a key works for inference with ``GET /v1/models``."""

    async def check(self, secret: Secret) -> VerifyResult:
        """One call, classified (see :class:`rotator.keys.VerifyOutcome`). Never raises
        for HTTP or network failures: they are outcomes."""
        ...

    async def wait_active(self, secret: Secret, *, timeout: float) -> VerifyResult:
        """Poll :meth:`check` with backoff (ceiling about 1 s) until OK or ``timeout`` seconds
        pass; returns the last result with the attempts and the time it took. A definitive
        ``PAYMENT_REQUIRED`` or ``SPEND_LIMITED`` ends the wait early."""
        ...


# --- Destinations -------------------------------------------------------------------------------
#
# A destination is one place a key is served from: a Vault/OpenBao KV v2 secret (mount, path,
# field) or an AWS Secrets Manager secret (id, optional JSON field). Records below carry only
# non-secret facts except ``CurrentValue.secret``, which is a ``Secret``. ``StagedValue`` and
# ``PromotedValue`` are what the journal keeps: ``to_record()``/``from_record()`` round-trip them
# through JSON-safe dicts so a restarted engine can continue or undo a rotation.

OWNER = "rotator"
"""The value of the ``managed-by`` mark rotator puts on what it writes."""


@dataclass(frozen=True, slots=True)
class CurrentValue:
    """What consumers of one destination read right now, and who claims it.

    ``exists`` is False when there is no secret at all (Vault: no path; AWS: no secret).
    ``secret`` is the managed value (the ``field``, or the whole plain string), None when the
    secret, its current version or the field is absent. ``version`` identifies the version
    consumers read (Vault: the data version number as text, also when the latest version is
    deleted; AWS: the AWSCURRENT ``VersionId``); None when no version exists. ``managed_by``,
    ``key_id``, ``rotation_id`` and ``fingerprint`` are the ownership marks found (Vault:
    ``custom_metadata``; AWS: the secret's tags, which carry only ``managed-by``).
    ``pending_version`` is the version holding AWSPENDING (AWS), None elsewhere.

    ``document`` is the whole stored value ``secret`` is part of, as read with it (Vault: the
    version's data as a JSON object; AWS: the ``SecretString``), None when there is none, and
    ``metadata`` every mark found, rotator's and others' (Vault: all ``custom_metadata``; AWS:
    all tags): with them :meth:`Destination.stage` and :meth:`Destination.promote` keep the other
    fields and marks (I6) without reading the version again — versions never change, and every
    write on them is a compare-and-swap. Neither takes part in ``==``.
    """

    exists: bool
    secret: Secret | None = None
    version: str | None = None
    managed_by: str | None = None
    key_id: str | None = None
    rotation_id: str | None = None
    fingerprint: str | None = None
    pending_version: str | None = None
    document: Secret | None = field(default=None, repr=False, compare=False)
    metadata: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def foreign(self) -> bool:
        """True when another manager's ``managed-by`` mark is on the secret: rotator refuses it."""
        return self.managed_by is not None and self.managed_by != OWNER


RecordValue = str | dict[str, str] | None


@dataclass(frozen=True, slots=True)
class StagedValue:
    """A new key placed in one destination for one rotation, not yet served to consumers.

    ``base_version`` is the version that was current when staging checked it: promotion swaps it
    out with compare-and-swap and fails if it is no longer current. ``version`` is the pending
    version written (AWS: the ``VersionId``, equal to the rotation id); None when nothing was
    written — always for Vault (KV v2 has no pending state), and for an AWS secret that has no
    current value yet (its first version would be served at once, so it is written at promotion).
    ``base_marks`` are the ownership marks that were on the secret, restored by a roll back.

    ``base`` is the :class:`CurrentValue` the value was staged on, kept in this process's memory
    only: never journaled (:meth:`to_record` leaves it out, :meth:`from_record` gives None) and
    not part of ``==``. A promotion in the same process writes over it instead of reading the
    destination again; after a restart it is None and the promotion reads.
    """

    destination: str
    rotation_id: str
    key_id: str
    fingerprint: str
    base_version: str | None
    version: str | None
    base_marks: dict[str, str] = field(default_factory=dict)
    base: CurrentValue | None = field(default=None, repr=False, compare=False)

    @property
    def pending(self) -> bool:
        """True when a pending version was written and :meth:`Destination.read_back` can read it
        now; False when the value reaches the destination only at promotion."""
        return self.version is not None

    def promoted(self, version: str) -> PromotedValue:
        """The record of this value served as ``version``, replacing ``base_version``."""
        return PromotedValue(
            destination=self.destination,
            rotation_id=self.rotation_id,
            key_id=self.key_id,
            fingerprint=self.fingerprint,
            version=version,
            previous_version=self.base_version,
        )

    def to_record(self) -> dict[str, RecordValue]:
        """A JSON-safe dict for the journal (no secret in it)."""
        return {
            "destination": self.destination,
            "rotation_id": self.rotation_id,
            "key_id": self.key_id,
            "fingerprint": self.fingerprint,
            "base_version": self.base_version,
            "version": self.version,
            "base_marks": dict(self.base_marks),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, RecordValue]) -> StagedValue:
        """The inverse of :meth:`to_record`. Raises ``ValueError`` or ``TypeError`` on a
        malformed record."""
        marks = record.get("base_marks") or {}
        if not isinstance(marks, dict):
            raise TypeError("base_marks must be a mapping")
        return cls(
            destination=_text(record, "destination"),
            rotation_id=_text(record, "rotation_id"),
            key_id=_text(record, "key_id"),
            fingerprint=_text(record, "fingerprint"),
            base_version=_optional_text(record, "base_version"),
            version=_optional_text(record, "version"),
            base_marks={str(k): str(v) for k, v in marks.items()},
        )


@dataclass(frozen=True, slots=True)
class PromotedValue:
    """A staged key now served to consumers: ``version`` is current, ``previous_version`` is the
    version it replaced (None if the secret had no value before)."""

    destination: str
    rotation_id: str
    key_id: str
    fingerprint: str
    version: str
    previous_version: str | None

    def to_record(self) -> dict[str, RecordValue]:
        """A JSON-safe dict for the journal (no secret in it)."""
        return {
            "destination": self.destination,
            "rotation_id": self.rotation_id,
            "key_id": self.key_id,
            "fingerprint": self.fingerprint,
            "version": self.version,
            "previous_version": self.previous_version,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, RecordValue]) -> PromotedValue:
        """The inverse of :meth:`to_record`. Raises ``ValueError`` on a malformed record."""
        return cls(
            destination=_text(record, "destination"),
            rotation_id=_text(record, "rotation_id"),
            key_id=_text(record, "key_id"),
            fingerprint=_text(record, "fingerprint"),
            version=_text(record, "version"),
            previous_version=_optional_text(record, "previous_version"),
        )


def _text(record: Mapping[str, RecordValue], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _optional_text(record: Mapping[str, RecordValue], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    return _text(record, name)


@dataclass(frozen=True, slots=True)
class AccessCheck:
    """One verdict of :meth:`Destination.check_access`: ``check`` names what was tried
    (``login``, ``read``, ``write``, ``state`` …), ``detail`` says what was found in one line."""

    destination: str
    check: str
    ok: bool
    detail: str

    def line(self) -> str:
        """The line ``rotator check`` prints."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.destination}: {self.check}: {self.detail}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of ``rotator check``: what was checked, whether it passed, a one-line detail.

    Built by :mod:`rotator.checks` and by the destination backends' checks alike."""

    subject: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Destination(Protocol):
    """One place a key is served from, written only with compare-and-swap and only if ours.

    The engine drives a rotation through these methods in order (the steps stage, read-back and
    promote of docs/overview.md#the-rotation-protocol):
    :meth:`read_current` (plan) → :meth:`stage` → :meth:`read_back` (pending values) →
    :meth:`promote` → :meth:`read_current` (verify what consumers read);
    :meth:`roll_back` undoes a rotation in this destination.

    What the plan read is not read again on the way: :meth:`stage` works from ``base`` and
    :meth:`promote` from the staged value, because every write is a compare-and-swap on the
    planned version (Vault ``cas``, AWS ``RemoveFromVersionId``), which refuses it if anything
    changed since. docs/overview.md#what-each-call-is-for lists every call and what it protects.

    Ownership: what rotator writes carries ``managed-by: rotator`` (Vault ``custom_metadata``
    with ``key_id``, ``rotation_id``, ``fingerprint`` and the data ``version`` they describe; AWS:
    a tag when rotator creates the secret). A secret marked ``managed-by`` anything else (as
    the plan read it, or a read of the method itself) is never written: :meth:`stage`,
    :meth:`promote` and :meth:`roll_back` raise ``ConflictError``. Fields of the secret other
    than the managed one are always preserved (invariant I6).

    Errors, for every method: ``TransientError`` (network down, timeouts, 5xx, throttling: retry
    later), ``AuthError`` (401/403 or a missing capability; one line naming the path and what is
    missing), ``PermanentError`` (anything else an operator must fix), ``ConflictError`` (a
    compare-and-swap lost, a foreign manager, a pending version someone else staged). An error
    means this call changed nothing unless its docstring says otherwise. No plaintext key is ever
    put in an error, a log line or a return value other than a ``Secret``.
    """

    @property
    def name(self) -> str:
        """A stable, non-secret label such as ``vault-main:secret/mistral/prod#api_key``; used
        in logs, errors, the journal (``StagedValue.destination``) and ``rotator check``."""
        ...

    async def read_current(self) -> CurrentValue:
        """What a consumer reads now (the way consumers read: Vault latest version, AWS plain
        ``GetSecretValue``), with its version and the ownership marks. Writes nothing. A missing
        secret is ``CurrentValue(exists=False)``, not an error."""
        ...

    async def stage(
        self, secret: Secret, *, rotation_id: str, key_id: str, base: CurrentValue
    ) -> StagedValue:
        """Prepare ``secret`` (Mistral key ``key_id``) for promotion, invisible to consumers.

        ``base`` is what :meth:`read_current` returned when the rotation was planned; its
        ``version`` is the compare-and-swap base for :meth:`promote`, and the returned value
        carries it (``StagedValue.base``). Nothing read at plan is read again: the other fields
        of the new value come from ``base.document``, ownership from ``base``'s marks.
        ``rotation_id`` is 32-64 characters of letters, digits and ``-`` (a UUID string): AWS
        uses it as the ``ClientRequestToken``.

        AWS: writes a new version labelled AWSPENDING whose ``VersionId`` is the rotation id
        (other JSON fields copied from ``base.document``), one ``PutSecretValue``. If the secret
        has no current value yet, or does not exist (and ``create_missing`` is set), nothing is
        written: the first version would be served at once, so it is written by :meth:`promote`.
        Vault: writes nothing (KV v2 has no pending state). Unless ``base`` carries rotator's
        marks for its very version (rotator's own last promotion wrote it, data and metadata,
        which proved the permissions), it asks ``sys/capabilities-self`` whether the token may
        write the data and metadata paths, so that a missing permission fails before anything
        is visible.

        A write by someone else since the plan is not looked for here: :meth:`promote`'s
        compare-and-swap refuses it (AWS: an AWSPENDING someone puts between the plan and this
        put loses its label to ours, the check-then-act race of the AWS module docstring).

        Idempotent per rotation id: staging again with the same rotation id and the same secret
        returns an equal ``StagedValue`` and writes nothing new, so there is never more than one
        pending version (I5). Raises ``ConflictError`` when ``base`` shows another manager's
        mark or another AWSPENDING, or the rotation id was used for a different value (it may
        also raise it when it sees the current version is no longer ``base.version``);
        ``PermanentError`` when the secret does not exist and ``create_missing`` is off, or the
        existing value is not a JSON object while a ``field`` is configured; ``AuthError`` when
        a needed permission is missing.
        """
        ...

    async def read_back(self, version: str) -> Secret | None:
        """The managed value stored in exactly ``version`` (a ``StagedValue.version`` or a
        ``PromotedValue.version``), read by version id the way it was written; None if that
        version lacks the field. Raises ``PermanentError`` if the version does not exist."""
        ...

    async def promote(self, staged: StagedValue, secret: Secret) -> PromotedValue:
        """Make the staged value the one consumers read; ``secret`` is the staged plaintext
        (its fingerprint must equal ``staged.fingerprint``, else ``ValueError``).

        AWS: moves AWSCURRENT to the staged version with ``RemoveFromVersionId`` =
        ``staged.base_version`` (compare-and-swap; AWSPREVIOUS follows the old version), then
        removes AWSPENDING from it, so a finished rotation leaves no AWSPENDING behind: two
        ``UpdateSecretVersionStage`` calls, and a ``DescribeSecret`` only when a move is refused
        (to tell a retry whose first move landed from a concurrent writer). A secret without a
        current value gets its first version here (created first if missing).
        Vault: writes the new version with ``cas`` = ``staged.base_version`` (0 to create), the
        other fields of that version preserved, then updates the secret's ``custom_metadata``
        with the ownership marks of this rotation (other metadata keys preserved). The version
        and marks written over are ``staged.base``'s when it is set (no read: the check-and-set
        refuses the write if the secret changed since), else read first. If the process dies
        between the two writes, calling again completes the metadata.

        Idempotent: once promoted, promoting again changes nothing and returns the same record.
        Raises ``ConflictError`` if the current version moved away from ``staged.base_version``
        to something that is not this rotation's (nothing is written), or the secret became
        another manager's.
        """
        ...

    async def roll_back(self, staged: StagedValue) -> bool:
        """Undo this rotation in this destination; True if something was changed.

        Before promotion: AWS removes the AWSPENDING label from our version (an AWSPENDING on
        anyone else's version is left alone); Vault has nothing to undo. After promotion (only
        if the current version is still ours — this rotation's fingerprint): AWS moves AWSCURRENT
        back to ``staged.base_version``; Vault writes the data of ``staged.base_version`` back as
        a new version with check-and-set and restores ``staged.base_marks``. Idempotent.
        Raises ``ConflictError`` if the current version is someone else's since our promotion,
        ``PermanentError`` if the secret had no value before us (rotator never deletes a secret).
        """
        ...

    async def check_access(self) -> list[AccessCheck]:
        """What ``rotator check`` reports for this destination: the store authenticates, the
        secret is readable, and the configured identity may write it (Vault:
        ``sys/capabilities-self`` on the data and metadata paths; AWS: ``DescribeSecret``, the
        secret's state, and write probes that cannot change anything). Writes nothing and never
        raises for a failed check: each failure is an ``AccessCheck`` with ``ok=False``."""
        ...


# --- State store ----------------------------------------------------------------------------------
#
# The durable memory of the engine: per-target state, rotations with their journal of steps, and
# a hash-chained audit log. Only non-secret facts are stored (key ids, names, fingerprints,
# destination version ids, timestamps, scrubbed error text): no method accepts a ``Secret``, and
# no column could hold a plaintext key. Timestamps are timezone-aware UTC ``datetime`` values.

JsonValue: TypeAlias = (
    "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)
"""A JSON-safe value: what journal and audit ``facts`` may contain (read-only containers, so
``StagedValue.to_record()`` fits as it is)."""

Facts: TypeAlias = "Mapping[str, JsonValue]"

JournalSteps: TypeAlias = "Sequence[tuple[str, Facts | None]]"
"""Journal steps written together: (step, facts) pairs in order (see
:meth:`StateStore.append_steps`)."""

TERMINAL_STATES = frozenset({"done", "rolled_back", "stuck"})
"""The rotation states that close a rotation (the terminal states of docs/http-api.md)."""


@dataclass(frozen=True, slots=True)
class ManagedKey:
    """A Mistral key rotator serves for a target: its id, fingerprint, when Mistral created it,
    the expiration date Mistral granted (None = no expiry) and the rotation that created it
    (None for a key that was adopted rather than created)."""

    key_id: str
    fingerprint: str
    created_at: datetime | None
    expiration: date | None
    rotation_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetiringKey:
    """A replaced key still valid until ``revoke_due_at`` (its grace deadline), then revoked.
    ``rotation_id`` is the rotation that replaced it."""

    target: str
    key_id: str
    fingerprint: str | None
    revoke_due_at: datetime
    rotation_id: str | None = None


@dataclass(frozen=True, slots=True)
class TargetState:
    """What the store knows about one target. ``current`` is None until a first promotion;
    ``retiring`` lists replaced keys pending revocation, earliest deadline first;
    ``adopted_key_id`` is a key the operator declared served (revoked after the next rotation);
    ``backoff_until`` is when the next attempt may start after ``consecutive_failures``;
    ``first_seen_at`` is when the store first heard of the target (the anchor of a never-rotated
    target's first scheduled fire)."""

    target: str
    current: ManagedKey | None
    retiring: tuple[RetiringKey, ...]
    adopted_key_id: str | None
    last_rotated_at: datetime | None
    consecutive_failures: int
    backoff_until: datetime | None
    first_seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Rotation:
    """One attempt to replace a target's key. ``state`` is the engine's latest state; the rotation
    is *open* until :meth:`StateStore.finish_rotation` sets ``finished_at`` and ``outcome``.
    ``rotation_id`` is a UUID string (AWS uses it as ``ClientRequestToken``)."""

    rotation_id: str
    target: str
    state: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None
    emergency: bool
    new_key_id: str | None
    new_key_name: str | None
    new_key_fingerprint: str | None
    old_key_ids: tuple[str, ...]

    @property
    def open(self) -> bool:
        """True until the rotation is finished."""
        return self.finished_at is None

    @property
    def short_id(self) -> str:
        """The first 8 characters of the id: the suffix of the new key's name."""
        return self.rotation_id.replace("-", "")[:8]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled step of a rotation: ``seq`` orders the steps of a rotation from 1."""

    rotation_id: str
    seq: int
    step: str
    at: datetime
    facts: dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One row of the audit log. ``hash`` is SHA-256 (hex) over the previous row's hash and this
    row's canonical JSON (``seq``, ``at``, ``event``, ``target``, ``rotation_id``, ``facts``),
    or HMAC-SHA256 of the same with the key ``audit.hmac_key`` whose id ``hmac_key_id`` is (None
    for a row chained without a key)."""

    seq: int
    at: datetime
    event: str
    target: str | None
    rotation_id: str | None
    facts: dict[str, JsonValue]
    hash: str
    hmac_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The audit log's recorded head: how many rows it has and the last one's hash (what the
    daemon publishes, and ``rotator history --expect-count/--expect-head`` checks later)."""

    rows: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    """A head published earlier, that the chain must still hold: at least ``count`` rows, and a
    row (row ``count``, when given) whose hash starts with ``head`` (a hex prefix)."""

    count: int | None = None
    head: str | None = None


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """The result of checking the audit chain. When ``ok`` is False, ``first_bad_seq`` is the
    first row that is missing, altered or out of place (None when the chain no longer holds a
    published head and nothing tells where it was rewritten) and ``problem`` says which in one
    line; ``unverifiable`` means rows from ``first_bad_seq`` on are chained with an HMAC key that
    is not configured, or not the one configured. ``head_hash`` is the hash of the last row read
    (anchor it elsewhere to detect a rewrite of the whole tail); ``rows`` is how many rows were
    read; ``keyed`` how many of them (always the last ones) are chained with the HMAC key whose
    id ``hmac_key_id`` is (the configured key's id when there is one)."""

    ok: bool
    rows: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    unverifiable: bool = False
    keyed: int = 0
    hmac_key_id: str | None = None

    def line(self) -> str:
        """The line ``rotator history --verify`` prints."""
        if self.ok:
            return f"audit log ok: {self.rows} rows{self._keyed()}, head {self.head_hash[:16]}"
        if self.unverifiable:
            return f"audit log NOT VERIFIED from row {self.first_bad_seq}: {self.problem}"
        if self.first_bad_seq is None:
            return f"audit log TAMPERED: {self.problem}"
        return f"audit log TAMPERED at row {self.first_bad_seq}: {self.problem}"

    def _keyed(self) -> str:
        if self.keyed:
            first = self.rows - self.keyed + 1
            return f" ({self.keyed} keyed with HMAC key {self.hmac_key_id}, from row {first})"
        if self.hmac_key_id is not None:
            return f" (none keyed yet with HMAC key {self.hmac_key_id})"
        return ""


class TargetLock(Protocol):
    """A held per-target lock (see :meth:`StateStore.try_lock_target`)."""

    def release(self) -> None:
        """Let go of it. Idempotent. The lock also vanishes when its process dies."""
        ...


class StateStore(Protocol):
    """Durable state of targets, rotations, their journals and the audit log.

    Every method is one short transaction: it commits entirely or not at all, so a crash leaves
    either the old or the new state. Concurrent callers (threads, processes, several rotator
    instances on one PostgreSQL) are safe: writes are serialised by the database.

    Nothing secret is ever stored. No method accepts a :class:`rotator.secret.Secret` (passing one
    raises ``TypeError``). Identifiers (targets, key ids, names, fingerprints, states, steps,
    events, and every string in ``facts`` except error text) that look like a credential are
    refused with ``ValueError``; error text (``error`` arguments and ``facts`` values under the
    keys ``error``, ``errors``, ``reason``, ``detail``) is scrubbed with :func:`rotator.logs.scrub`.
    ``facts`` must be JSON-safe (finite numbers, string keys); anything else is ``TypeError``.
    Times are taken from the store's injected clock.

    A method naming an unknown rotation raises ``LookupError``. Changes to rotations, promotions,
    revocations and adoptions append their audit event in the same transaction.
    """

    async def migrate(self) -> int:
        """Create or upgrade the schema to the latest version, keeping every row; returns the
        version. Idempotent and safe to run from several processes at once. Raises
        ``rotator.state.SchemaTooNewError`` (a ``ConfigError``) if the database was written by a
        newer rotator. Call once before anything else."""
        ...

    async def close(self) -> None:
        """Release the database connections. Idempotent."""
        ...

    async def get_target(self, target: str) -> TargetState | None:
        """The target's state, or None if the store has never heard of it."""
        ...

    async def list_targets(self) -> list[TargetState]:
        """Every known target's state, ordered by name."""
        ...

    async def probe(self) -> None:
        """Raise unless the store can be read and written now (changes nothing)."""
        ...

    async def register_target(self, target: str) -> TargetState:
        """Make the target known (created if new, ``first_seen_at`` = now); an existing target
        is returned unchanged, so ``first_seen_at`` keeps the first time. Idempotent. Any
        method that creates a target's row stamps ``first_seen_at`` the same way."""
        ...

    async def record_promotion(
        self,
        target: str,
        key: ManagedKey,
        *,
        retire: Sequence[RetiringKey] = (),
        steps: JournalSteps = (),
        state: str | None = None,
        outcome: str | None = None,
    ) -> TargetState:
        """Make ``key`` the target's current key once it is served everywhere: sets
        ``last_rotated_at`` to now, clears failures and backoff, schedules each ``retire`` entry
        for revocation (an entry for the same key id is replaced) and forgets ``adopted_key_id``
        if that key is retired. Idempotent: promoting the current key again only (re)schedules
        ``retire`` and keeps ``last_rotated_at``. Raises ``ValueError`` if a ``retire`` entry names
        another target or the key being promoted. Audit event ``key.promoted``.

        In the same transaction, for the rotation ``key.rotation_id`` (``ValueError`` if it is
        None while any of these is given): ``steps`` and ``state`` are journaled as
        :meth:`append_steps` journals them, and then, with ``outcome``, the rotation is closed
        as :meth:`finish_rotation` closes it with state ``done`` (audit event
        ``rotation.finished`` after ``key.promoted``). A new step for a finished rotation raises
        ``ConflictError`` and nothing of the call is written."""
        ...

    async def adopt_key(self, target: str, key_id: str | None) -> TargetState:
        """Declare ``key_id`` the key currently served by the target although rotator did not
        create it (``rotator adopt``); None withdraws the declaration. Idempotent. Audit event
        ``key.adopted``."""
        ...

    async def record_failure(
        self, target: str, *, backoff_until: datetime | None, counted: bool = True
    ) -> TargetState:
        """Count one more consecutive failed attempt and set when the next may start.

        ``counted=False``: an attempt that is no verdict on the backends (recovery undid an
        interrupted rotation): the count stays, and ``backoff_until`` only ever moves later."""
        ...

    async def clear_failures(self, target: str) -> TargetState:
        """Reset the failure count and backoff (a successful attempt, or an operator's retry)."""
        ...

    async def schedule_revocation(self, key: RetiringKey) -> TargetState:
        """Keep ``key`` valid until ``key.revoke_due_at``, then revoke it; an existing entry for
        the same key has its deadline and facts replaced (drain mode extends deadlines).
        Idempotent. Raises ``ValueError`` if the key is the target's current key."""
        ...

    async def revocations_due(self) -> list[RetiringKey]:
        """Every retiring key of every target whose deadline is now or past, earliest first."""
        ...

    async def revocation_done(self, target: str, key_id: str) -> bool:
        """Forget a retiring key after it was revoked (or found already gone). True if an entry
        was removed, False if there was none (idempotent). Audit event ``key.revoked`` when an
        entry is removed."""
        ...

    async def start_rotation(
        self,
        target: str,
        *,
        rotation_id: str | None = None,
        state: str = "planned",
        emergency: bool = False,
        new_key_name: str | None = None,
        old_key_ids: Sequence[str] = (),
        steps: JournalSteps = (),
    ) -> Rotation:
        """Open a rotation for ``target`` (created in the store if new), started now, with its
        first journal ``steps`` (numbered from 1) written in the same transaction.

        At most one open rotation per target exists at any time, enforced by the database even
        between processes: if another is open, raises ``ConflictError`` naming it. Idempotent
        for a given ``rotation_id``: starting it again returns the stored rotation unchanged,
        ``steps`` ignored (``ConflictError`` if that id belongs to another target). Without
        ``rotation_id`` a new UUID is drawn. Audit event ``rotation.started``."""
        ...

    async def update_rotation(
        self,
        rotation_id: str,
        *,
        state: str | None = None,
        new_key_id: str | None = None,
        new_key_name: str | None = None,
        new_key_fingerprint: str | None = None,
        old_key_ids: Sequence[str] | None = None,
        error: str | None = None,
    ) -> Rotation:
        """Set the given fields (None leaves a field unchanged) and return the rotation."""
        ...

    async def finish_rotation(
        self,
        rotation_id: str,
        *,
        state: str,
        outcome: str,
        error: str | None = None,
        steps: JournalSteps = (),
    ) -> Rotation:
        """Close the rotation now with a terminal ``state`` (one of :data:`TERMINAL_STATES`,
        else ``ValueError``) and an ``outcome`` (``rotated``, ``promoted``, ``rolled_back``,
        ``stuck`` …); the target may then start another. ``steps``, its last journal steps, are
        journaled first in the same transaction (as :meth:`append_steps` does, without a state).
        Idempotent when finished again with the same state and outcome (and steps journaled
        before); ``ConflictError`` if it was finished differently, or a step is new to a
        finished rotation. Audit event ``rotation.finished``."""
        ...

    async def get_rotation(self, rotation_id: str) -> Rotation | None:
        """The rotation, or None."""
        ...

    async def open_rotations(self, target: str | None = None) -> list[Rotation]:
        """Rotations not finished (what recovery must continue or undo), oldest first."""
        ...

    async def list_rotations(self, target: str | None = None, *, limit: int = 50) -> list[Rotation]:
        """The latest rotations, newest first."""
        ...

    async def append_step(
        self,
        rotation_id: str,
        step: str,
        facts: Facts | None = None,
        *,
        state: str | None = None,
    ) -> JournalEntry:
        """Journal ``step`` of the rotation with its non-secret ``facts`` (key ids, fingerprints,
        destination version ids, errors), stamped now; with ``state``, also set the rotation's
        state in the same transaction. Write it *before* the side effect it announces.

        Idempotent for (rotation_id, step): if the step is already journaled, returns the stored
        entry unchanged (first write wins; ``facts`` and ``state`` are ignored). Steps of a
        rotation are numbered in the order they were first journaled. A new step for a finished
        rotation raises ``ConflictError`` (a late writer never reopens or moves it)."""
        ...

    async def append_steps(
        self,
        rotation_id: str,
        steps: JournalSteps,
        *,
        state: str | None = None,
        new_key_id: str | None = None,
        new_key_fingerprint: str | None = None,
        error: str | None = None,
    ) -> list[JournalEntry]:
        """Journal several steps of the rotation in one transaction, in order, each as
        :meth:`append_step` would (stamped now, numbered in the order first journaled; a step
        journaled before, or earlier in ``steps``, is returned as stored and its facts ignored);
        returns one entry per element of ``steps``.

        With at least one step new, in the same transaction: the rotation's ``state`` is set to
        ``state`` and its ``new_key_id``, ``new_key_fingerprint`` and ``error`` to the values
        given (None leaves a field unchanged), as :meth:`update_rotation` sets them. A batch of
        steps all journaled before changes nothing (a replay never moves a rotation back).
        Raises ``ValueError`` for an empty ``steps``, ``LookupError`` for an unknown rotation,
        ``ConflictError`` (writing nothing) if a step is new and the rotation is finished.

        The engine writes what it learned since its last write together with the step that
        announces its next side effect, so one transaction precedes each side effect."""
        ...

    async def try_lock_target(self, target: str) -> TargetLock | None:
        """This process's lock on ``target``, held while it rotates or recovers it, or None if
        another process (or connection) holds it now. Never waits. The operating system or the
        database releases it when its holder dies, so a crashed rotation is recoverable at once
        and a live one never is. Release with :meth:`unlock_target`."""
        ...

    async def unlock_target(self, lock: TargetLock) -> None:
        """Release a lock from :meth:`try_lock_target`. Idempotent."""
        ...

    async def journal(self, rotation_id: str) -> list[JournalEntry]:
        """The rotation's steps in order (empty for an unknown rotation)."""
        ...

    async def append_audit(
        self,
        event: str,
        *,
        target: str | None = None,
        rotation_id: str | None = None,
        facts: Facts | None = None,
    ) -> AuditEvent:
        """Append one event to the audit log, stamped now and chained to the previous row.
        Append-only: no method changes or removes an audit row."""
        ...

    async def audit_events(
        self, target: str | None = None, *, limit: int | None = None
    ) -> list[AuditEvent]:
        """The audit trail (``rotator history``), newest first, optionally one target's only."""
        ...

    async def verify_audit(self, anchor: AuditAnchor | None = None) -> AuditVerdict:
        """Recompute the hash chain from the first row and report the first row that is missing
        (a gap in ``seq``, or rows cut off after the recorded head), altered or moved (its hash
        does not match), unreadable, or chained without the HMAC key after keyed rows; and,
        given an ``anchor``, whether the chain still holds that published head. Reads only."""
        ...

    async def audit_head(self) -> AuditHead:
        """The recorded head (row count and last hash), read without walking the chain."""
        ...
