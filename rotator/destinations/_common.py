"""Helpers every destination shares: rotation-id rules, ownership marks, JSON fields, call logs."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import structlog

from rotator.contracts import OWNER, CurrentValue, OnCall, PromotedValue, StagedValue
from rotator.errors import BackendError, ConflictError, PermanentError, RotatorError
from rotator.logs import scrub
from rotator.secret import Secret

log = structlog.get_logger(__name__)

T = TypeVar("T")

MANAGED_BY = "managed-by"
MARK_KEYS = (MANAGED_BY, "key_id", "rotation_id", "fingerprint", "version")
"""The ownership marks rotator keeps on a secret (never the key itself)."""

_ROTATION_ID = re.compile(r"^[A-Za-z0-9-]{32,64}$")


def check_rotation_id(rotation_id: str) -> None:
    """Raise ``ValueError`` unless ``rotation_id`` is usable as an AWS ``ClientRequestToken``."""
    if not _ROTATION_ID.match(rotation_id):
        raise ValueError("rotation_id must be 32-64 letters, digits or '-' (a UUID string)")


def check_staged_secret(staged: StagedValue, secret: Secret) -> None:
    """Raise ``ValueError`` if ``secret`` is not the value ``staged`` describes."""
    if secret.fingerprint != staged.fingerprint:
        raise ValueError(
            f"secret {secret.fingerprint} is not the staged value {staged.fingerprint}"
        )


def marks_for(staged: StagedValue, version: str) -> dict[str, str]:
    """The ownership marks that describe ``staged`` served as ``version``."""
    return {
        MANAGED_BY: OWNER,
        "key_id": staged.key_id,
        "rotation_id": staged.rotation_id,
        "fingerprint": staged.fingerprint,
        "version": version,
    }


def our_marks(marks: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``marks`` that rotator owns (what a roll back restores)."""
    return {k: v for k, v in marks.items() if k in MARK_KEYS}


def with_marks(existing: Mapping[str, str], marks: Mapping[str, str]) -> dict[str, str]:
    """``existing`` metadata with rotator's marks replaced by ``marks``; other keys untouched."""
    merged = {k: v for k, v in existing.items() if k not in MARK_KEYS}
    merged.update(marks)
    return merged


def current_from_marks(
    *,
    secret: Secret | None,
    version: str | None,
    marks: Mapping[str, str],
    pending_version: str | None = None,
    document: Secret | None = None,
) -> CurrentValue:
    """A ``CurrentValue`` for an existing secret carrying ``marks`` (all of them kept as its
    ``metadata``) and read as ``document``."""
    return CurrentValue(
        exists=True,
        secret=secret,
        version=version,
        managed_by=marks.get(MANAGED_BY),
        key_id=marks.get("key_id"),
        rotation_id=marks.get("rotation_id"),
        fingerprint=marks.get("fingerprint"),
        pending_version=pending_version,
        document=document,
        metadata=dict(marks),
    )


def stamped_by_rotator(current: CurrentValue) -> bool:
    """Whether rotator's own marks describe the very version ``current`` is: rotator's last
    promotion wrote both its data and its metadata (nobody wrote the secret since)."""
    return (
        current.version is not None
        and current.managed_by == OWNER
        and current.metadata.get("version") == current.version
    )


def refuse_foreign(name: str, current: CurrentValue) -> None:
    """Raise ``ConflictError`` if another manager's ``managed-by`` mark is on the secret."""
    if current.foreign:
        raise ConflictError(
            f"{name}: managed by {current.managed_by!r}, not {OWNER!r}; rotator will not write it"
        )


def refuse_moved(name: str, current: CurrentValue, base_version: str | None) -> None:
    """Raise ``ConflictError`` if the current version is not the one the rotation planned on."""
    if current.version != base_version:
        raise ConflictError(
            f"{name}: current version is {current.version or 'none'}, planned against "
            f"{base_version or 'none'}: someone else wrote it in between"
        )


def field_of(name: str, document: Secret | None, field: str | None) -> Secret | None:
    """The managed value inside a stored string: the whole string, or ``field`` of a JSON object.

    Raises ``PermanentError`` if ``field`` is set and the string is not a JSON object.
    """
    if document is None:
        return None
    if field is None:
        return document
    value = _stored_object(name, document).get(field)
    return Secret(value) if isinstance(value, str) and value else None


def with_field(name: str, document: Secret | None, field: str | None, secret: Secret) -> Secret:
    """The string to store: ``secret`` itself, or ``document`` (a JSON object, or nothing) with
    ``field`` set to it and every other field preserved."""
    if field is None:
        return secret
    obj = _stored_object(name, document) if document is not None else {}
    obj[field] = secret.reveal()
    return Secret(json.dumps(obj, separators=(",", ":")))


def _stored_object(name: str, document: Secret) -> dict[str, object]:
    """The stored secret string parsed as a JSON object; else a ``PermanentError``."""
    try:
        obj = json.loads(document.reveal())
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise PermanentError(
            "destination", name, "the stored value is not a JSON object, but a field is configured"
        )
    return obj


@contextmanager
def observed(backend: str, operation: str, target: str, on_call: OnCall | None) -> Iterator[None]:
    """Log one line per backend call: backend, operation, target, outcome and duration; tell
    ``on_call`` (the metrics hook the destination was built with, see
    :data:`rotator.contracts.OnCall`) the same, without the target, with ``ok``, ``transient``,
    ``permanent`` or ``conflict`` as the status."""
    started = time.monotonic()
    outcome = "ok"
    try:
        yield
    except BackendError as exc:
        outcome = "transient" if exc.transient else "permanent"
        raise
    except ConflictError:
        outcome = "conflict"
        raise
    finally:
        seconds = time.monotonic() - started
        log.debug(
            "backend_call",
            backend=backend,
            operation=operation,
            target=target,
            outcome=outcome,
            duration_s=seconds,
        )
        if on_call is not None:
            try:
                on_call(backend, operation, outcome, seconds)
            except Exception:  # noqa: BLE001 - a broken metrics hook must not break a rotation
                log.warning("backend_call_observer_failed", backend=backend, operation=operation)


def unexpected_failure(
    backend: str,
    operation: str,
    target: str,
    exc: Exception,
    clean: Callable[[str], str] = scrub,
) -> RotatorError:
    """The error for an exception an SDK seam has no mapping for: ``exc`` itself when it is
    already a rotator error, else a one-line ``PermanentError`` naming backend, operation and
    target with the exception's type and text passed through ``clean`` — a local ``OSError``
    (an unreadable CA bundle), or an answer without the fields rotator reads (``KeyError``)."""
    if isinstance(exc, RotatorError):
        return exc
    detail = " ".join(clean(f"{type(exc).__name__}: {exc}").split())
    if len(detail) > 200:
        detail = detail[:199] + "…"
    return PermanentError(backend, f"{operation} {target}", f"unexpected failure: {detail}")


def require_create_missing(backend: str, target: str, create_missing: bool) -> None:
    """Raise ``PermanentError`` for a missing secret unless ``create_missing`` is set."""
    if not create_missing:
        raise PermanentError(
            backend, f"stage {target}", "the secret does not exist and create_missing is off"
        )


def log_staged(staged: StagedValue) -> None:
    """The one log line of a stage (ids, versions, fingerprint: never the key)."""
    log.info(
        "destination_staged",
        destination=staged.destination,
        rotation_id=staged.rotation_id,
        fingerprint=staged.fingerprint,
        base_version=staged.base_version,
        version=staged.version,
    )


def log_promoted(promoted: PromotedValue) -> None:
    """The one log line of a promotion."""
    log.info(
        "destination_promoted",
        destination=promoted.destination,
        rotation_id=promoted.rotation_id,
        fingerprint=promoted.fingerprint,
        version=promoted.version,
        previous_version=promoted.previous_version,
    )


def log_rolled_back(staged: StagedValue, changed: bool) -> None:
    """The one log line of a roll back."""
    log.info(
        "destination_rolled_back",
        destination=staged.destination,
        rotation_id=staged.rotation_id,
        changed=changed,
    )


class StoreConnections:
    """One connection per store (a logged-in Vault session, a boto3 client), shared by every
    destination of that store so a store logs in once. Thread-safe."""

    def __init__(self) -> None:
        self._by_store: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, store: str, connect: Callable[[], T]) -> T:
        """The connection of ``store``, made with ``connect()`` the first time."""
        with self._lock:
            if store not in self._by_store:
                self._by_store[store] = connect()
            found: T = self._by_store[store]  # type: ignore[assignment]
            return found
