"""rotator's error tree. Every error carries context and never a secret.

::

    RotatorError
    ├── ConfigError            invalid configuration or usage: "file: field.path: problem" (exit 2)
    │   └── SchemaError        the state database cannot be used by this rotator
    │       └── SchemaTooNewError   migrated by a newer rotator than this one
    ├── BackendError           a call to Mistral, Vault or AWS failed (backend, operation)
    │   ├── TransientError     worth retrying: 5xx, 429, timeouts, dropped connections
    │   │   ├── RequestNotSentError  the connection never opened: the server saw nothing
    │   │   └── AmbiguousCreate      a create's outcome is unknown (the key may exist)
    │   └── PermanentError     retrying will not help: 4xx, denied, malformed
    │       └── AuthError      401/403: the credential is wrong or lacks a permission
    ├── VerificationFailed     a key did not pass GET /v1/models within its window
    ├── ConflictError          someone else changed or owns what we were about to write (CAS,
    │                          a foreign manager, an AWSPENDING we did not stage)
    ├── UnreadableAuditRowError  an audit row holds values rotator never writes (tampering)
    └── LeadershipLost         this daemon is no longer (or never was) the leader: stop rotating

Messages are built from non-secret facts only (ids, fingerprints, status codes). Backend error
text from SDKs is scrubbed (:func:`rotator.logs.scrub`) before it is put in an error.
"""

from __future__ import annotations


class RotatorError(Exception):
    """Base of every error rotator raises on purpose."""


class ConfigError(RotatorError):
    """Invalid configuration or usage. ``str()`` is the single line shown to the operator."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(f"{where}{problem}")


def exit_status(exc: Exception) -> int:
    """The exit status a command ends with when ``exc`` escapes it: 2 for a configuration or
    usage error (:class:`ConfigError`), 1 for anything else."""
    return 2 if isinstance(exc, ConfigError) else 1


class SchemaError(ConfigError):
    """The state database cannot be used by this rotator; the message says why and what to do."""


class SchemaTooNewError(SchemaError):
    """The database was migrated by a newer rotator than this one."""


class BackendError(RotatorError):
    """A backend call failed. ``transient`` says whether a retry may succeed."""

    transient: bool = False

    def __init__(
        self,
        backend: str,
        operation: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.backend = backend
        self.operation = operation
        self.status = status
        self.retry_after = retry_after
        code = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{backend} {operation}: {message}{code}")


class TransientError(BackendError):
    """Worth retrying later: 5xx, 429, timeouts, dropped connections, a server that is down."""

    transient = True


class RequestNotSentError(TransientError):
    """The connection could not be opened: the server never saw the request."""


class AmbiguousCreate(TransientError):  # noqa: N818 - the name the engine matches on
    """A create failed ambiguously and its outcome could not be ruled out.

    ``key_id`` names the key that the failed call created (found by its unique name): its
    plaintext is lost, so the caller must delete it and create again, under a new name (a
    deleted key may stay listed). ``key_id`` is None when the lookup itself failed: a key named
    ``name`` may exist, so look it up before creating.
    """

    def __init__(
        self, *, name: str, key_id: str | None, status: int | None, retry_after: float | None
    ) -> None:
        self.key_id = key_id
        self.name = name
        if key_id is None:
            message = f"outcome unknown for key named {name!r}; look it up before creating again"
        else:
            message = f"created key {key_id} ({name!r}) but its plaintext was lost; delete it"
        super().__init__("mistral", "create_key", message, status=status, retry_after=retry_after)


class PermanentError(BackendError):
    """Retrying will not help without an operator: 4xx other than 429, malformed answers."""


class AuthError(PermanentError):
    """401/403: the credential is invalid or lacks a permission."""


class VerificationFailed(RotatorError):  # noqa: N818 - a verdict on a key, not a fault of ours
    """A key did not pass ``GET /v1/models`` within its activation window."""

    def __init__(self, fingerprint: str, outcome: str, detail: str) -> None:
        self.fingerprint = fingerprint
        self.outcome = outcome
        super().__init__(f"key {fingerprint} failed verification: {outcome}: {detail}")


class ConflictError(RotatorError):
    """A compare-and-swap lost, or the target is owned by someone else; nothing was written."""


class LeadershipLost(RotatorError):  # noqa: N818 - a state, like ConflictError's peers
    """This instance was the leader and no longer is (or never was): stop rotating."""


class UnreadableAuditRowError(RotatorError):
    """An audit row whose stored values rotator never writes: it was edited in the database."""

    def __init__(self, seq: int, what: str) -> None:
        self.seq = seq
        self.what = what
        super().__init__(
            f"audit {self.problem} (the audit log was altered: see rotator history --verify)"
        )

    @property
    def problem(self) -> str:
        """The verdict's problem: ``row N cannot be read: …``."""
        return f"row {self.seq} cannot be read: {self.what}"
