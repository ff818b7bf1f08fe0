"""What every leader elector shares: the :class:`Elector` contract and its run loop, the
:class:`Timing` it runs on, and the bounds the daemon derives from it.

An elector is one instance's side of the election (``sole``, ``postgres`` and ``kubernetes``
each implement one; :func:`rotator.daemon.leader.build_elector` picks it). The loop in
:meth:`Elector.run` is common to all: as a standby it tries to acquire every ``retry_period``;
as the leader it renews, keeps :class:`~rotator.daemon.control.Health` current, and raises
:class:`LeadershipLost` when leadership is gone.
"""

from __future__ import annotations

import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import structlog

from rotator.clock import Clock, SystemClock
from rotator.daemon.control import Health
from rotator.errors import LeadershipLost

log = structlog.get_logger(__package__)  # the package's name, as before the split

OnChange = Callable[[bool], None]
"""Called with the new value on every transition (feeds ``rotator_leader`` and its counter)."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds: how long a lease is valid, how long a leader may fail to renew before it steps
    down, and how often standbys retry and leaders renew."""

    lease_duration: float = 60.0
    renew_deadline: float = 40.0
    retry_period: float = 15.0


def api_timeout(timing: Timing) -> float:
    """Seconds each Kubernetes API request may take: half the renew deadline, 1 to 10 s."""
    return max(1.0, min(10.0, timing.renew_deadline / 2))


def release_bound(election: str, timing: Timing) -> float:
    """The longest :meth:`Elector.release` of ``election`` (``none``, ``postgres`` or
    ``kubernetes``) waits on the network, in seconds: the PostgreSQL unlock is bounded by the
    renew deadline; the Lease release is a read and a write of :func:`api_timeout` each."""
    return {"none": 0.0, "postgres": timing.renew_deadline, "kubernetes": 2 * api_timeout(timing)}[
        election
    ]


class Elector(ABC):
    """One instance's side of the election.

    :meth:`acquire` tries once and never waits for another holder. :meth:`ensure` re-checks
    before each step and raises :class:`LeadershipLost` if this instance does not lead.
    :meth:`run` is the background loop: as a standby it calls :meth:`acquire` every
    ``retry_period``; as the leader it renews (and re-checks) every ``retry_period``, keeps
    ``health.leading`` and ``health.lease_valid_until`` current, calls ``on_change`` on each
    transition, and raises :class:`LeadershipLost` when leadership is lost (the daemon then
    exits: in-flight work is not safe to continue). :meth:`release` gives leadership up so a
    standby can take over at once; it is idempotent and never raises.
    """

    kind: ClassVar[str]

    def __init__(self, *, health: Health, timing: Timing, clock: Clock | None = None) -> None:
        self.health = health
        self.timing = timing
        self.clock: Clock = clock or SystemClock()
        self.identity: str | None = None
        """This instance's name in the election (None where the election names no one)."""
        self.holder: str | None = None
        """The leader's identity as last seen (Kubernetes: the Lease's holder); None when
        unknown or when this backend does not tell (the status page shows it)."""
        self._leading = False
        self._reported = False
        """What :attr:`health` and ``on_change`` were last told."""
        self._on_change: OnChange | None = None
        self._loss: str | None = None
        """Why leadership held by this instance was lost (it is not taken again)."""
        self._released = False

    @property
    def is_leader(self) -> bool:
        """What this instance last established (no I/O); :meth:`ensure` re-checks."""
        return self._leading

    @abstractmethod
    async def acquire(self) -> bool:
        """One non-blocking attempt to become (or stay) the leader; True when leading.

        Backend failures are logged and answer False; never raises them."""

    @abstractmethod
    async def ensure(self) -> None:
        """Raise :class:`LeadershipLost` unless this instance still leads (checked now)."""

    @abstractmethod
    async def release(self) -> None:
        """Give leadership up (if held) and close connections. Idempotent; never raises."""

    async def _renew(self) -> None:
        """Keep leadership while leading; raise :class:`LeadershipLost` when it is gone.

        By default a re-check (:meth:`ensure`); a lease-based elector also renews its lease."""
        await self.ensure()

    def _valid_for(self) -> float | None:
        """Seconds this instance may still consider itself the leader without renewing."""
        return self.timing.lease_duration

    async def run(self, *, on_change: OnChange | None = None) -> None:
        """Contend for leadership until cancelled, or until leadership is lost.

        Raises :class:`LeadershipLost` after a loss, whether the loop or a step's
        :meth:`ensure` found it (``on_change(False)`` has been called and ``health.leading`` is
        False): a lost leader does not contend again, the daemon exits. Returns after
        :meth:`release`. Cancelling the task leaves leadership as it is: call :meth:`release`
        afterwards."""
        self._on_change = on_change
        while not self._released:
            if self._loss is not None:
                raise LeadershipLost(self._loss)
            if self._leading and self._reported:
                try:
                    await self._renew()
                except LeadershipLost:
                    self._transition(False)
                    raise
                self._touch()
            elif self._leading or await self.acquire():
                self._transition(True)
            await self.clock.sleep(self.timing.retry_period)

    def _touch(self) -> None:
        """Record a successful acquisition or renewal in :attr:`health`."""
        valid = self._valid_for()
        self.health.lease_valid_until = (
            None if valid is None else self.health.monotonic() + max(0.0, valid)
        )

    def _transition(self, leading: bool) -> None:
        """Set the state, health and metric callback after a change (not before)."""
        changed = leading != self._reported
        self._leading = self._reported = leading
        self.health.leading = leading
        if leading:
            self._touch()
        else:
            self.health.lease_valid_until = None
        if changed:
            log.warning("leadership_gained" if leading else "leadership_lost", election=self.kind)
            if self._on_change is not None:
                try:
                    self._on_change(leading)
                except Exception:
                    log.exception("leader_callback_failed")

    def _known(self) -> None:
        """The election's backend answered: who leads is known (``/readyz`` may say ready)."""
        self.health.problems.pop("leader", None)

    def _unknown(self) -> None:
        """The election's backend did not answer: this standby cannot tell who leads."""
        self.health.problems["leader"] = f"the {self.kind} election cannot tell who leads"

    def _lost(self, why: str) -> LeadershipLost:
        """Mark leadership lost (state and health) and build the error to raise."""
        message = f"{self.kind} leadership lost: {why}"
        if self._leading:
            self._loss = message
            self._transition(False)
        return LeadershipLost(message)

    def _release_done(self) -> None:
        """Record a release: health and callback told, :meth:`run` returns."""
        self._released = True
        if self._leading or self._reported:
            self._transition(False)


def _why(exc: BaseException) -> str:
    """A one-line, secret-free reason (psycopg messages may quote the connection string)."""
    from rotator.logs import scrub

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def default_identity() -> str:
    """``<hostname>_<random>``: the pod name in Kubernetes, unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


__all__ = [
    "Elector",
    "LeadershipLost",
    "OnChange",
    "Timing",
    "api_timeout",
    "default_identity",
    "release_bound",
]
