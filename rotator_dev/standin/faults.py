"""Injected faults: what the stand-in does wrong on purpose, per operation.

A :class:`Fault` is armed for one :class:`Operation` and fires on its next ``count`` calls (or on
every call until cleared when ``count`` is ``None``). Kinds:

- ``status``: answer with ``status`` (any code 200-599, optional ``Retry-After``) instead of the
  real answer;
- ``hang``: wait ``seconds`` (``None`` = until the client gives up or the stand-in is reset), then
  carry on normally;
- ``drop``: close the connection without an answer;
- ``latency``: add ``seconds`` of delay; latency faults add up and combine with one other fault.

``when="after"`` performs the operation first and then fails, hangs or drops: the ambiguous
failure a client of a non-idempotent create must survive. Only one non-latency fault fires per
call: the oldest armed one. :class:`FaultBook` is thread-safe.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import asdict, dataclass
from typing import Any


class Operation(enum.StrEnum):
    """The stand-in's Mistral-facing operations, the unit faults and request counts apply to."""

    LIST_KEYS = "list_keys"
    CREATE_KEY = "create_key"
    DELETE_KEY = "delete_key"
    LIST_WORKSPACES = "list_workspaces"
    LIST_USERS = "list_users"
    SPEND_LIMIT = "spend_limit"
    MODELS = "models"


class FaultKind(enum.StrEnum):
    STATUS = "status"
    HANG = "hang"
    DROP = "drop"
    LATENCY = "latency"


class FaultWhen(enum.StrEnum):
    BEFORE = "before"
    AFTER = "after"


@dataclass(frozen=True, slots=True)
class Fault:
    """One armed misbehaviour. Construct through :meth:`checked` to validate combinations."""

    kind: FaultKind
    status: int = 503
    retry_after: int | None = None
    seconds: float | None = None
    count: int | None = 1
    when: FaultWhen = FaultWhen.BEFORE

    @classmethod
    def checked(
        cls,
        kind: FaultKind | str,
        *,
        status: int = 503,
        retry_after: int | None = None,
        seconds: float | None = None,
        count: int | None = 1,
        when: FaultWhen | str = FaultWhen.BEFORE,
    ) -> Fault:
        """A validated fault. Raises ``ValueError`` (one line) on a meaningless combination."""
        fault = cls(FaultKind(kind), status, retry_after, seconds, count, FaultWhen(when))
        if not 200 <= fault.status <= 599:
            raise ValueError(f"status must be within 200-599, got {fault.status}")
        if fault.retry_after is not None and fault.retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if fault.count is not None and fault.count < 1:
            raise ValueError("count must be >= 1 or null (until cleared)")
        if fault.seconds is not None and fault.seconds < 0:
            raise ValueError("seconds must be >= 0")
        if fault.kind is FaultKind.LATENCY:
            if fault.seconds is None:
                raise ValueError("a latency fault needs seconds")
            if fault.when is FaultWhen.AFTER:
                raise ValueError("a latency fault has no 'after' mode")
        return fault

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to do on one call: a total added delay and at most one other fault."""

    latency: float = 0.0
    action: Fault | None = None


@dataclass(slots=True)
class _Armed:
    fault: Fault
    remaining: int | None

    def spend(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1

    @property
    def spent(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


class FaultBook:
    """The armed faults of every operation. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[Operation, list[_Armed]] = {}

    def arm(self, operation: Operation, fault: Fault) -> None:
        """Add ``fault`` after the ones already armed for ``operation``."""
        with self._lock:
            self._armed.setdefault(operation, []).append(_Armed(fault, fault.count))

    def clear(self, operation: Operation | None = None) -> None:
        """Disarm every fault of ``operation``, or of all operations when ``None``."""
        with self._lock:
            if operation is None:
                self._armed.clear()
            else:
                self._armed.pop(operation, None)

    def take(self, operation: Operation) -> FaultPlan:
        """The plan for one call of ``operation``; spends one use of each fault that fires."""
        with self._lock:
            armed = self._armed.get(operation, [])
            latency = 0.0
            action: Fault | None = None
            for entry in armed:
                if entry.fault.kind is FaultKind.LATENCY:
                    latency += entry.fault.seconds or 0.0
                elif action is None:
                    action = entry.fault
                else:
                    continue
                entry.spend()
            armed[:] = [entry for entry in armed if not entry.spent]
            return FaultPlan(latency, action)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Armed faults per operation with their remaining uses (for the control API)."""
        with self._lock:
            return {
                op.value: [{**e.fault.to_json(), "remaining": e.remaining} for e in armed]
                for op, armed in self._armed.items()
                if armed
            }
