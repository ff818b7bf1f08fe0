"""The stand-in's clock: real time plus an adjustable offset, or frozen at a chosen instant.

Dates the stand-in shows (``created_at``, ``last_used``, ``expiration_date`` checks) and the
activation and revocation delays of keys are all measured on this clock, so tests move days in
milliseconds. Injected delays (hang, latency) use real time.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from rotator.clock import Clock, SystemClock


class StandinClock:
    """Wall time for the stand-in. Thread-safe; never goes backwards unless told to."""

    def __init__(self, base: Clock | None = None) -> None:
        self._base: Clock = base or SystemClock()
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None

    def now(self) -> datetime:
        """The stand-in's current instant, timezone-aware UTC."""
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return self._base.now().astimezone(UTC) + self._offset

    @property
    def frozen(self) -> bool:
        with self._lock:
            return self._frozen_at is not None

    def set(self, when: datetime, *, frozen: bool = False) -> datetime:
        """Jump to ``when`` (naive means UTC); keep ticking from there unless ``frozen``."""
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        with self._lock:
            if frozen:
                self._frozen_at = when
            else:
                self._frozen_at = None
                self._offset = when - self._base.now().astimezone(UTC)
        return when

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (negative moves back); frozen stays frozen."""
        step = timedelta(seconds=seconds)
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += step
            else:
                self._offset += step
        return self.now()

    def reset(self) -> None:
        """Back to real time."""
        with self._lock:
            self._offset = timedelta(0)
            self._frozen_at = None
