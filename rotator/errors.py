"""rotator's error tree. Every error carries context and never a secret.

::

    RotatorError
    ├── ConfigError            invalid configuration or usage: "file: field.path: problem" (exit 2)
    ├── BackendError           a call to Mistral, Vault or AWS failed (backend, operation)
    │   ├── TransientError     worth retrying: 5xx, 429, timeouts, dropped connections
    │   └── PermanentError     retrying will not help: 4xx, denied, malformed
    │       └── AuthError      401/403: the credential is wrong or lacks a permission
    ├── VerificationFailed     a key did not pass GET /v1/models within its window
    └── ConflictError          someone else changed or owns what we were about to write (CAS,
                               a foreign manager, an AWSPENDING we did not stage)

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
