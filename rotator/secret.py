"""The `Secret` wrapper: the only type a plaintext key travels in.

Its ``repr``/``str``/``format`` are ``***``; it cannot be pickled, JSON-encoded by accident or
compared by timing. Unwrap with :meth:`Secret.reveal` only at the HTTP header or SDK call that
needs the value.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import deque
from typing import NoReturn

MASK = "***"

# The last plaintexts wrapped in this process, so the log scrubber can mask them even if one ever
# reached a log call by some path the other redaction layers miss (defence in depth).
_RECENT: deque[str] = deque(maxlen=512)
_RECENT_LOCK = threading.Lock()


def recent_plaintexts() -> tuple[str, ...]:
    """Plaintexts wrapped recently in this process, for output scrubbing only."""
    with _RECENT_LOCK:
        return tuple(_RECENT)


def recent_marker() -> tuple[int, int]:
    """Changes whenever a plaintext is added to :func:`recent_plaintexts` (its count and the
    identity of the newest): lets a reader cache what it derived from them."""
    with _RECENT_LOCK:
        return (len(_RECENT), id(_RECENT[-1])) if _RECENT else (0, 0)


def fingerprint_of(value: str) -> str:
    """First 12 hex characters of SHA-256: what journals, logs and metadata may carry."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


class Secret:
    """A plaintext credential that never prints."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value
        if len(value) >= 8:
            with _RECENT_LOCK:
                _RECENT.append(value)

    def reveal(self) -> str:
        """The plaintext. Call only where it leaves the process (a header, an SDK argument)."""
        return self._value

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible id of the value (see :func:`fingerprint_of`)."""
        return fingerprint_of(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self.fingerprint))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")
