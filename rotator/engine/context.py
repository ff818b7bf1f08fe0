"""What the engine needs to act on one target, and what a rotation knows while it runs.

:class:`Deps` bundles the backends (built once per process); :class:`TargetContext` binds them to
one configured target and its destinations; :class:`RotationState` is a rotation's working memory,
rebuilt from the journal after a crash by :func:`RotationState.from_journal`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from rotator.clock import Clock
from rotator.config import Target
from rotator.contracts import (
    CurrentValue,
    Destination,
    JournalEntry,
    JsonValue,
    KeyIssuer,
    KeyVerifier,
    PromotedValue,
    Rotation,
    StagedValue,
    StateStore,
)
from rotator.engine.steps import DestStep, Step, dest_tag
from rotator.pool import BlockingPool
from rotator.secret import Secret


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator must hear about (a stuck rotation, a refused revocation …)."""

    event: str
    target: str
    rotation_id: str | None
    message: str


AlertHook = Callable[[Alert], Awaitable[None]]


@dataclass(slots=True)
class Deps:
    """The backends and services the engine drives; one set per process."""

    store: StateStore
    issuer: KeyIssuer
    verifier: KeyVerifier
    clock: Clock
    user_id: str
    destinations: Callable[[Target], Sequence[Destination]]
    on_alert: AlertHook | None = None
    promote_attempts: int = 3
    """Tries per destination promotion (with backoff) before a rotation is declared stuck."""
    pool: BlockingPool | None = None
    """The thread pool the blocking backends run on; shut down with the engine."""
    before_step: Callable[[], Awaitable[None]] | None = None
    """Called before every journal write (the daemon re-checks its leadership here and raises
    if it was lost, so a deposed leader stops at a journaled point)."""


class TargetContext:
    """One configured target bound to its destinations (in configuration order).

    ``destinations`` may be given as a function of no argument that builds them: it is then
    called at their first use, so a target that never rotates (an idle daemon's, most of the
    time) never builds a client nor imports its store's library."""

    __slots__ = ("_build", "_destinations", "target")

    def __init__(
        self,
        target: Target,
        destinations: Sequence[Destination] | Callable[[], Sequence[Destination]],
    ) -> None:
        self.target = target
        self._build: Callable[[], Sequence[Destination]] | None = None
        self._destinations: tuple[Destination, ...] | None = None
        if callable(destinations):
            self._build = destinations
        else:
            self._destinations = tuple(destinations)

    @property
    def destinations(self) -> tuple[Destination, ...]:
        """The target's destinations, built now if they were not yet."""
        if self._destinations is None:
            assert self._build is not None
            self._destinations = tuple(self._build())
            self._build = None
        return self._destinations

    @property
    def name(self) -> str:
        return self.target.name

    def destination(self, tag: str) -> Destination | None:
        """The destination whose journal tag is ``tag``, or None if it left the configuration."""
        for dest in self.destinations:
            if dest_tag(dest.name) == tag:
                return dest
        return None


@dataclass(slots=True)
class RotationState:
    """A rotation's working memory. ``secret`` is the new key's plaintext: in memory only, and
    None after a crash until it is read back from a destination that holds it."""

    rotation_id: str
    target: str
    emergency: bool
    key_name: str
    old_key_ids: tuple[str, ...] = ()
    bases: dict[str, dict[str, JsonValue]] = field(default_factory=dict)
    key_id: str | None = None
    fingerprint: str | None = None
    expiration: date | None = None
    created_at: datetime | None = None
    secret: Secret | None = None
    staging: set[str] = field(default_factory=set)
    staged: dict[str, StagedValue] = field(default_factory=dict)
    promoting: set[str] = field(default_factory=set)
    promoted: dict[str, PromotedValue] = field(default_factory=dict)
    state: Step = Step.PLANNED

    @classmethod
    def from_journal(cls, rotation: Rotation, journal: Sequence[JournalEntry]) -> RotationState:
        """Rebuild what the rotation knew from its journaled steps (the plaintext excepted)."""
        st = cls(
            rotation_id=rotation.rotation_id,
            target=rotation.target,
            emergency=rotation.emergency,
            key_name=rotation.new_key_name or "",
            old_key_ids=rotation.old_key_ids,
            key_id=rotation.new_key_id,
            fingerprint=rotation.new_key_fingerprint,
            state=Step(rotation.state),
        )
        for entry in journal:
            st.apply(entry)
        return st

    def apply(self, entry: JournalEntry) -> None:
        """Fold one journal entry into this state."""
        facts = entry.facts
        step, _, tag = entry.step.partition(":")
        if tag:
            match DestStep(step):
                case DestStep.STAGING:
                    self.staging.add(tag)
                case DestStep.STAGED:
                    self.staged[tag] = StagedValue.from_record(facts)  # type: ignore[arg-type]
                case DestStep.PROMOTING:
                    self.promoting.add(tag)
                case DestStep.PROMOTED:
                    self.promoted[tag] = PromotedValue.from_record(facts)  # type: ignore[arg-type]
            return
        if step == Step.PLANNED:
            bases = facts.get("bases")
            if isinstance(bases, dict):
                self.bases = {k: v for k, v in bases.items() if isinstance(v, dict)}
            name = facts.get("key_name")
            if isinstance(name, str):
                self.key_name = name
        elif step == Step.CREATED:
            key_id, fp = facts.get("key_id"), facts.get("fingerprint")
            self.key_id = key_id if isinstance(key_id, str) else self.key_id
            self.fingerprint = fp if isinstance(fp, str) else self.fingerprint
            exp = facts.get("expiration")
            self.expiration = date.fromisoformat(exp) if isinstance(exp, str) else None
            created = facts.get("created_at")
            self.created_at = datetime.fromisoformat(created) if isinstance(created, str) else None

    @property
    def promotion_began(self) -> bool:
        """True once any promotion was announced: the new key may be visible to consumers."""
        return bool(self.promoting or self.promoted)


def served_key(current: CurrentValue) -> str | None:
    """The fingerprint of what a destination serves now, None when it serves nothing."""
    return current.secret.fingerprint if current.secret is not None else None


async def gather_bases(ctx: TargetContext) -> dict[str, CurrentValue]:
    """What every destination serves now (read concurrently)."""
    currents = await asyncio.gather(*(d.read_current() for d in ctx.destinations))
    return {d.name: c for d, c in zip(ctx.destinations, currents, strict=True)}
