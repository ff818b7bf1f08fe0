"""The interfaces between the engine and its backends. Their docstrings are the contract.

Implementations live one per module (``rotator/mistral/admin.py``, ``rotator/mistral/verify.py``,
``rotator/destinations/vault.py``, ``rotator/destinations/aws.py``) and inherit these semantics
without repeating them. Every method may raise :class:`rotator.errors.TransientError` (retry
later) or :class:`rotator.errors.PermanentError` (needs an operator); none ever puts a plaintext
key in an exception, a log line or a return value other than a :class:`rotator.secret.Secret`.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from rotator.mistral.models import ApiKey, CreatedKey, User, VerifyResult, Workspace
from rotator.secret import Secret


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

        Never blindly retried: after an ambiguous failure (timeout, dropped connection, 5xx) the
        client lists keys and, if exactly one carries ``name``, raises a ``TransientError``
        naming its key_id — the plaintext is lost, so the caller must delete that key, not use
        it. Raises ``PermanentError`` on 4xx (422 = bad body, 401/403 = bad admin key).
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
        """One call, classified (see :class:`rotator.mistral.models.VerifyOutcome`). Never raises
        for HTTP or network failures: they are outcomes."""
        ...

    async def wait_active(self, secret: Secret, *, timeout: float) -> VerifyResult:
        """Poll :meth:`check` with backoff (ceiling about 1 s) until OK or ``timeout`` seconds
        pass; returns the last result with the attempts and the time it took. A definitive
        ``PAYMENT_REQUIRED`` or ``SPEND_LIMITED`` ends the wait early."""
        ...
