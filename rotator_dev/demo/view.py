"""What the demo prints: the daemon's JSON log events as compact lines, and a status line.

:class:`EventView` reads the events ``rotator run --log-format json`` writes and keeps only what
a newcomer wants to follow: a rotation starting (new key created and verified), a rotation done
(old → new fingerprint, the stores that serve the new key; ``promoted``: the old key stays valid
for its grace, ``rotated``: it was revoked at once), an old key revoked after its grace, and
every failure, rollback or warning. It remembers which fingerprint each key id has, so
a revocation names the key by fingerprint too. :func:`status_line` summarises ``/metrics``: per
target, the key's age, the time to its next rotation and the old keys pending revocation.

Every line is passed through :func:`rotator.logs.scrub`: fingerprints and ids only, never a key.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from rotator.logs import scrub

_OK = frozenset({"rotated", "promoted"})
_QUIET = frozenset({"leadership_gained", "leadership_lost", "shutdown_forced"})
"""Warnings the demo has nothing to say about (the single-instance election, the stop)."""


def line(when: str, subject: str, verb: str, text: str) -> str:
    """One demo line: ``HH:MM:SS  subject  verb  text``, scrubbed."""
    return scrub(f"{when:8}  {subject:<15} {verb:<9} {text}".rstrip())


def clock(stamp: object = None) -> str:
    """An event's ISO timestamp (or now) as local ``HH:MM:SS``."""
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S")
        except ValueError:
            pass
    return time.strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """``7s``, ``2m05s``, ``1h02m``: short, for the status line."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclass(frozen=True, slots=True)
class _Event:
    """One log event with what every line needs."""

    data: Mapping[str, Any]
    when: str
    target: str
    rotation: str

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def say(self, verb: str, text: str, *, subject: str | None = None) -> list[str]:
        return [line(self.when, subject or self.target, verb, text)]


class EventView:
    """Turns daemon log events into demo lines; counts rotations, revocations and failures."""

    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        """``known``: key id → fingerprint of keys made before rotator (the seeded ones)."""
        self.fingerprints: dict[str, str] = dict(known or {})
        self.current: dict[str, str] = {}
        """Target → fingerprint of the key it serves, as far as the log told."""
        self.rotations = 0
        self.revocations = 0
        self.failures = 0
        self.port: int | None = None
        """The daemon's HTTP port, once it said it is up."""
        self.planned: set[str] = set()
        """Targets the daemon planned a rotation for (it leads and accepts on-demand ones)."""
        self.finished: set[str] = set()
        """Targets that had a rotation result (any outcome)."""
        self._new: dict[str, str] = {}  # rotation id -> new key's fingerprint
        self._stores: dict[str, list[str]] = {}  # rotation id -> stores promoted
        self._handlers: dict[str, Callable[[_Event], list[str]]] = {
            "daemon_started": self._started,
            "rotation_planned": self._planned,
            "mistral.key_created": self._created,
            "mistral.key_verified": self._verified,
            "destination_promoted": self._promoted,
            "rotation_result": self._result,
            "key_revoked": self._revoked,
            "rotation_rolling_back": lambda e: e.say("rollback", str(e.get("reason"))),
            "rotation_stuck": lambda e: e.say("STUCK", str(e.get("reason"))),
            "rotation_recovered": lambda e: e.say("recovered", f"outcome {e.get('outcome')}"),
            "shutdown_requested": self._stopping,
            "daemon_stopped": lambda e: e.say(
                "stopped", f"exit status {e.get('exit_code')}", subject="rotator"
            ),
        }

    def lines(self, data: Mapping[str, Any]) -> list[str]:
        """The lines the event ``data`` deserves (often none)."""
        name = str(data.get("event", ""))
        event = _Event(
            data,
            clock(data.get("timestamp")),
            str(data.get("target") or "rotator"),
            str(data.get("rotation_id", "")),
        )
        handler = self._handlers.get(name)
        if handler is not None:
            return handler(event)
        level = str(data.get("level", ""))
        if level in {"warning", "error", "critical"} and name not in _QUIET:
            self.failures += level != "warning"
            why = data.get("message") or data.get("error") or data.get("reason") or ""
            return event.say(level, f"{name}: {why}" if why else name)
        return []

    # -- the events the demo shows ----------------------------------------------------------------

    def _started(self, e: _Event) -> list[str]:
        self.port = int(e.get("port"))
        url = f"http://{e.get('host') or '127.0.0.1'}:{self.port}"
        return e.say("up", f"rotator run serves {url} (/metrics, /livez, /api)", subject="rotator")

    def _planned(self, e: _Event) -> list[str]:
        self.planned.add(e.target)
        return []

    def _created(self, e: _Event) -> list[str]:
        fingerprint = str(e.get("fingerprint"))
        self.fingerprints[str(e.get("key_id"))] = fingerprint
        self._new[e.rotation] = fingerprint
        return []

    def _verified(self, e: _Event) -> list[str]:
        new = self._new.get(e.rotation, "?")
        return e.say("rotating", f"new key {new} created; it works (GET /v1/models)")

    def _promoted(self, e: _Event) -> list[str]:
        store = str(e.get("destination") or "").split(":", 1)[0]
        stores = self._stores.setdefault(e.rotation, [])
        if store and store not in stores:
            stores.append(store)
        return []

    def _result(self, e: _Event) -> list[str]:
        outcome = str(e.get("outcome"))
        self.finished.add(e.target)
        new = self._new.pop(e.rotation, None)
        stores = self._stores.pop(e.rotation, [])
        if outcome in _OK:
            if new is None:  # created before this view started reading (a recovered rotation)
                key_id = str(e.get("new_key_id"))
                new = self.fingerprints.get(key_id, f"id {key_id[:8]}")
            self.rotations += 1
            old = self.current.get(e.target, "(none)")
            self.current[e.target] = new
            where = ", ".join(stores) or "every store"
            took = float(e.get("seconds") or 0.0)
            text = f"{old} -> {new} in {where} ({took:.1f}s); {_old_key(e)}"
            return e.say(outcome, text)
        if outcome == "skipped":
            return e.say("skipped", str(e.get("error") or ""))
        self.failures += 1
        keeps = self.current.get(e.target)
        tail = f"; consumers keep {keeps}" if keeps else ""
        return e.say("FAILED", f"{outcome}: {e.get('error') or ''}{tail}")

    def _revoked(self, e: _Event) -> list[str]:
        key_id = str(e.get("key_id"))
        shown = self.fingerprints.get(key_id, f"id {key_id[:8]}")
        if e.get("outcome") == "already_gone":
            return e.say("revoked", f"{shown} was already gone")
        self.revocations += 1
        return e.say("revoked", f"old key {shown}: its grace is over")

    def _stopping(self, e: _Event) -> list[str]:
        busy = ", ".join(e.get("in_flight") or []) or "none"
        return e.say("stopping", f"{e.get('signal')}; in flight: {busy}", subject="rotator")


def _old_key(e: _Event) -> str:
    """What became of the old key: ``promoted`` keeps it until ``revoke_due_at`` (its grace),
    ``rotated`` revoked it at once (or there was none)."""
    if e.get("outcome") == "rotated":
        return "old key revoked" if e.get("revoked_key_ids") else "no old key"
    try:
        due = datetime.fromisoformat(str(e.get("revoke_due_at")))
        logged = datetime.fromisoformat(str(e.get("timestamp")))
    except ValueError:
        return "old key kept for its grace"
    # Ceiling: the result is logged a moment after revoke_due_at was set from the grace.
    return f"old key kept {duration(math.ceil((due - logged).total_seconds()))} (grace)"


def _samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.labels, float(sample.value)


def status_line(metrics: str, targets: Iterable[str], *, now: float | None = None) -> str:
    """Per target ``name age/next/pending`` from a ``/metrics`` text: the key's age (``-``
    never rotated), the time to its next rotation, the old keys pending revocation."""
    now = time.time() if now is None else now
    last: dict[str, float] = {}
    nxt: dict[str, float] = {}
    pending: dict[str, float] = {}
    gauges = {
        "rotator_key_last_rotation_timestamp_seconds": last,
        "rotator_key_next_rotation_timestamp_seconds": nxt,
        "rotator_previous_keys_pending_revocation": pending,
    }
    for name, labels, value in _samples(metrics):
        if name in gauges and "target" in labels:
            gauges[name][labels["target"]] = value
    parts = []
    for target in targets:
        age = duration(now - last[target]) if target in last else "-"
        due = duration(nxt[target] - now) if target in nxt else "?"
        parts.append(f"{target} {age}/{due}/{int(pending.get(target, 0))}")
    return line(clock(), "status", "keys", " | ".join(parts))
