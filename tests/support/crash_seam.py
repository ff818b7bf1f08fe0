"""The crash hook: a proxy over a Protocol seam that SIGKILLs its own process at a chosen call.

A :class:`CrashingProxy` stands in for the engine's ``StateStore`` (or ``KeyIssuer``, or a
destination) inside the child process. It forwards every call to the real object and counts the
calls per method; when the call named by a :class:`CrashPoint` comes, it kills the process with
SIGKILL either *before* forwarding it (the previous side effect happened, this write never did)
or *after* it returned (the write committed, the side effect it announces never happened).
Nothing of rotator is patched: the proxy only sits where the engine's dependency container
already holds its seams.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tests.support.journal_writes import WRITE, is_write

When = Literal["before", "after"]
WHENS: tuple[When, ...] = ("before", "after")


@dataclass(frozen=True, order=True)
class CrashPoint:
    """The ``k``-th call (from 1) of ``call`` (``"<seam>.<method>"``, e.g.
    ``"store.append_step"``), killed ``before`` it is forwarded or ``after`` it returned."""

    call: str
    k: int
    when: When

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k counts from 1, not {self.k}")
        if self.when not in WHENS:
            raise ValueError(f"when is before or after, not {self.when!r}")

    def __str__(self) -> str:
        return f"{self.when} {self.call}#{self.k}"

    def as_dict(self) -> dict[str, object]:
        return {"call": self.call, "k": self.k, "when": self.when}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrashPoint:
        return cls(call=str(data["call"]), k=int(data["k"]), when=data["when"])


def die() -> None:
    """End this process the way a power cut or the OOM killer would: no cleanup at all."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class CallLog:
    """Counts calls per ``"<seam>.<method>"`` (and per group a call also belongs to, such as
    ``"store.write"``) across proxies and fires the crash point."""

    crash: CrashPoint | None = None

    def __post_init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def enter(self, *calls: str) -> None:
        for call in calls:
            self.calls[call] += 1
        if any(self._hits(call, "before") for call in calls):
            die()

    def leave(self, *calls: str) -> None:
        if any(self._hits(call, "after") for call in calls):
            die()

    def _hits(self, call: str, when: When) -> bool:
        point = self.crash
        return (
            point is not None
            and point.call == call
            and point.when == when
            and self.calls[call] == point.k
        )


class CrashingProxy:
    """Forwards every attribute of ``inner``; its coroutine methods go through ``log``.

    Cast to the Protocol it wraps where it is installed: it is whatever it wraps. Attributes that
    are not coroutine functions are returned unchanged and not counted. ``groups(method)`` names
    groups a method's calls count in as well (``"<seam>.<group>"``): the store's writes, for one.
    """

    def __init__(
        self,
        inner: object,
        seam: str,
        log: CallLog,
        groups: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self._inner = inner
        self._seam = seam
        self._log = log
        self._groups = groups

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        groups = self._groups(name) if self._groups is not None else ()
        calls = [f"{self._seam}.{call}" for call in (name, *groups)]
        log = self._log

        @functools.wraps(attr)
        async def hooked(*args: Any, **kwargs: Any) -> Any:
            log.enter(*calls)
            result = await attr(*args, **kwargs)
            log.leave(*calls)
            return result

        return hooked


def store_writes(method: str) -> Sequence[str]:
    """The group of a state store's durable writes, ``store.write``: every journal boundary."""
    return [WRITE] if is_write(method) else []
