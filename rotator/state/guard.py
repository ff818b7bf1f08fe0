"""What may enter the state database: identifiers and JSON facts, never anything secret.

Identifiers that look like a credential (what :func:`rotator.logs.scrub` would mask: a plaintext
wrapped in this process, a 32-character Mistral-shaped key, a bearer or Vault token, an AWS
secret key) are refused with ``ValueError``; error text is scrubbed instead, so a failure can
always be recorded. A :class:`rotator.secret.Secret` anywhere is a ``TypeError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from rotator.contracts import JsonValue, ManagedKey, RetiringKey
from rotator.logs import scrub
from rotator.secret import Secret
from rotator.state.schema import FINGERPRINT, ID, TARGET

_ROTATION_ID = re.compile(r"[A-Za-z0-9-]{32,64}")
"""AWS accepts a ``ClientRequestToken`` of 32-64 such characters; the rotation id is one."""

ERROR_KEYS = frozenset({"error", "errors", "reason", "detail"})
"""Keys of ``facts`` whose string values are error text, scrubbed rather than refused."""


def ident(value: object, field: str, max_len: int) -> str:
    """``value`` as a stored identifier: a non-empty string of at most ``max_len`` characters
    that does not look like a credential (a plain ``str``: an enum's value, not its name)."""
    if isinstance(value, Secret):
        raise TypeError(f"{field}: a Secret is never stored")
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a string, got {type(value).__name__}")
    if not value or len(value) > max_len:
        raise ValueError(f"{field}: must be 1 to {max_len} characters")
    return _not_credential(value if type(value) is str else str.__str__(value), field)


def optional_ident(value: object | None, field: str, max_len: int) -> str | None:
    """:func:`ident`, letting None through."""
    return None if value is None else ident(value, field, max_len)


def idents(values: Iterable[object], field: str, max_len: int) -> list[str]:
    """:func:`ident` for each value of a sequence (a lone string is refused)."""
    if isinstance(values, str | Secret):
        raise TypeError(f"{field}: expected a sequence of strings")
    return [ident(v, f"{field}[{i}]", max_len) for i, v in enumerate(values)]


def error_text(value: object | None, field: str = "error") -> str | None:
    """Error text as stored: scrubbed of anything credential-shaped."""
    if value is None:
        return None
    if isinstance(value, Secret):
        raise TypeError(f"{field}: a Secret is never stored")
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a string, got {type(value).__name__}")
    return scrub(value)


def facts(value: Mapping[str, JsonValue] | None, field: str = "facts") -> dict[str, JsonValue]:
    """A JSON-safe copy of ``value``: identifiers checked, error text scrubbed."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{field}: expected a mapping, got {type(value).__name__}")
    return _mapping(value, field, scrub_text=False)


def _mapping(value: Mapping[Any, Any], path: str, *, scrub_text: bool) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {}
    for key, item in value.items():
        name = ident(key, f"{path} key", 200)
        out[name] = _value(item, f"{path}.{name}", scrub_text=scrub_text or name in ERROR_KEYS)
    return out


def _value(value: object, path: str, *, scrub_text: bool) -> JsonValue:
    if isinstance(value, Secret):
        raise TypeError(f"{path}: a Secret is never stored")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path}: only finite numbers are JSON-safe")
        return value
    if isinstance(value, str):
        return error_text(value, path) if scrub_text else _not_credential(value, path)
    if isinstance(value, Mapping):
        return _mapping(value, path, scrub_text=scrub_text)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_value(v, f"{path}[{i}]", scrub_text=scrub_text) for i, v in enumerate(value)]
    raise TypeError(f"{path}: {type(value).__name__} is not JSON-safe")


def _not_credential(value: str, field: str) -> str:
    if scrub(value) != value:
        raise ValueError(f"{field}: refused, the value looks like a credential")
    return value


def rotation_id(value: object) -> str:
    """A rotation id: 32-64 letters, digits or ``-`` (a UUID string)."""
    checked = ident(value, "rotation_id", ID)
    if not _ROTATION_ID.fullmatch(checked):
        raise ValueError("rotation_id: must be 32-64 letters, digits or '-' (a UUID string)")
    return checked


def managed_key(key: ManagedKey) -> ManagedKey:
    """A copy of ``key`` whose every field was checked."""
    if not isinstance(key, ManagedKey):
        raise TypeError(f"key: expected a ManagedKey, got {type(key).__name__}")
    if key.expiration is not None and not isinstance(key.expiration, date):
        raise TypeError("key.expiration: expected a date")
    return ManagedKey(
        key_id=ident(key.key_id, "key.key_id", ID),
        fingerprint=ident(key.fingerprint, "key.fingerprint", FINGERPRINT),
        created_at=optional_aware(key.created_at, "key.created_at"),
        expiration=key.expiration,
        rotation_id=optional_ident(key.rotation_id, "key.rotation_id", ID),
    )


def retiring_key(key: RetiringKey) -> RetiringKey:
    """A copy of ``key`` whose every field was checked."""
    if not isinstance(key, RetiringKey):
        raise TypeError(f"retire: expected a RetiringKey, got {type(key).__name__}")
    return RetiringKey(
        target=ident(key.target, "target", TARGET),
        key_id=ident(key.key_id, "key_id", ID),
        fingerprint=optional_ident(key.fingerprint, "fingerprint", FINGERPRINT),
        revoke_due_at=aware(key.revoke_due_at, "revoke_due_at"),
        rotation_id=optional_ident(key.rotation_id, "rotation_id", ID),
    )


def optional_aware(value: datetime | None, field: str) -> datetime | None:
    return None if value is None else aware(value, field)


def aware(value: datetime, field: str) -> datetime:
    """``value``, which must be a timezone-aware datetime."""
    if not isinstance(value, datetime):
        raise TypeError(f"{field}: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError(f"{field}: must be timezone-aware")
    return value
