"""A synthetic status-page world: a configuration of N targets in every state, the status rows
and stored states a daemon would read for it, and a :class:`FakeSource` serving them.

For the status page's unit tests and ``bench/ui.py`` (page weight and server time at 100 and
1000 targets); no server, no database. Target ``i`` is, by ``i % 10``: 0 stuck, 1 failing,
2 overdue, 3 rotating, 4-5 draining, the rest idle (never rotated or rotated days ago).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.config import Config, parse_config
from rotator.contracts import (
    AuditEvent,
    JournalEntry,
    ManagedKey,
    RetiringKey,
    Rotation,
    TargetState,
)
from rotator.daemon.ui.source import (
    DaemonFacts,
    ReloadRecord,
    RotationRecord,
    Snapshot,
    TargetHistory,
)
from rotator.engine.engine import TargetStatus
from rotator.engine.steps import dest_tag

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WORKSPACE = "019b2bd7-96e7-7219-8c0b-45a73da50088"
DAY = timedelta(days=1)


def name_of(i: int) -> str:
    return f"svc-{i:04d}"


def config(names: Sequence[str], **server: Any) -> Config:
    """A valid configuration of ``names``, each with a Vault and an AWS destination."""
    data: dict[str, Any] = {
        "mistral": {
            "admin_url": "http://127.0.0.1:1",
            "api_url": "http://127.0.0.1:1",
            "admin_key": "ui-world-admin-key",
            "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce",
        },
        "state": {"url": "sqlite:////var/lib/rotator/state.db"},
        "server": {"listen": "127.0.0.1:0", **server},
        "stores": {
            "vault": {
                "type": "vault",
                "url": "http://127.0.0.1:2",
                "auth": {"method": "token", "token": "ui-world-vault-token"},
            },
            "aws": {"type": "aws_secrets_manager", "region": "eu-west-1"},
        },
        "defaults": {"schedule": "every 30d", "max_age": "30d", "grace": "1h"},
        "targets": [
            {
                "name": name,
                "workspace_id": WORKSPACE,
                "destinations": [
                    {"store": "vault", "path": f"mistral/{name}", "field": "api_key"},
                    {"store": "aws", "secret_id": f"mistral/{name}", "field": "api_key"},
                ],
            }
            for name in names
        ],
    }
    return parse_config(data, source="/etc/rotator/rotator.yaml")


def destinations(name: str) -> tuple[str, ...]:
    return (f"vault:secret/mistral/{name}#api_key", f"aws:mistral/{name}#api_key")


def key_id(i: int, generation: int = 0) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"key {i} {generation}"))


def fingerprint(i: int, generation: int = 0) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, f"fp {i} {generation}").hex[:12]


def target_row(i: int, now: datetime = NOW) -> tuple[TargetStatus, TargetState]:
    """Target ``i``'s status row and stored state (see the module docstring)."""
    name = name_of(i)
    kind = i % 10
    rotated = now - timedelta(days=3, hours=i % 24)
    key = ManagedKey(key_id(i), fingerprint(i), rotated, (now + 40 * DAY).date(), str(i))
    retiring: tuple[RetiringKey, ...] = ()
    failures, backoff, last, current = 0, None, rotated, key
    state, reason = "idle", ""
    next_due = rotated + 30 * DAY
    if kind == 0:
        state, reason, failures = "stuck", "vault:secret/x#api_key: current version is 6", 1
    elif kind == 1:
        state, failures = "failing", 2
        reason, backoff = "2 failed attempts", now + timedelta(hours=2)
        next_due = backoff
    elif kind == 2:
        last = now - 31 * DAY
        key = replace(key, created_at=last)
        current, next_due = key, last + 30 * DAY
    elif kind == 3:
        state, reason = "rotating", "rotation 5f0c8a52 at staged"
    elif kind in {4, 5}:
        state = "draining"
        retiring = (
            RetiringKey(name, key_id(i, 1), fingerprint(i, 1), now + timedelta(minutes=45)),
        )
        reason = "1 old key pending revocation"
    elif i % 3 == 0:
        last, current, next_due = None, None, now + 20 * DAY
        reason = "never rotated by rotator"
    status = TargetStatus(
        target=name,
        state=state,
        key_id=current.key_id if current else None,
        last_rotated_at=last,
        next_due_at=next_due,
        revoke_due_at=retiring[0].revoke_due_at if retiring else None,
        compliant=last is not None and now - last <= 30 * DAY,
        reason=reason,
    )
    stored = TargetState(
        target=name,
        current=current,
        retiring=retiring,
        adopted_key_id=None,
        last_rotated_at=last,
        consecutive_failures=failures,
        backoff_until=backoff,
        first_seen_at=now - (40 if kind == 2 else 10) * DAY,
    )
    return status, stored


def daemon_facts(now: datetime = NOW) -> DaemonFacts:
    return DaemonFacts(
        version="0.1.0",
        leading=True,
        election="none",
        identity=None,
        leader=None,
        config_source="/etc/rotator/rotator.yaml",
        config_loaded_at=now - timedelta(hours=5),
        store="SQLite /var/lib/rotator/state.db",
        started_at=now - timedelta(days=2),
        uptime=timedelta(days=2),
        ready=True,
        ready_reason="ok",
        last_reload=ReloadRecord(now - timedelta(hours=5), True, "3 target(s)"),
    )


def fleet(n: int, now: datetime = NOW, cfg: Config | None = None) -> Snapshot:
    """A snapshot of ``n`` targets in every state."""
    names = [name_of(i) for i in range(n)]
    pairs = [target_row(i, now) for i in range(n)]
    return Snapshot(
        now=now,
        cfg=cfg or config(names),
        rows=[status for status, _ in pairs],
        states={stored.target: stored for _, stored in pairs},
        destinations={name: destinations(name) for name in names},
        daemon=daemon_facts(now),
    )


def rotation_record(name: str, i: int, now: datetime = NOW) -> RotationRecord:
    """A finished, promoted rotation of ``name`` with a realistic journal."""
    rid = str(uuid.uuid5(uuid.NAMESPACE_OID, f"rotation {i}"))
    started = now - timedelta(hours=2, minutes=i)
    dests = destinations(name)
    names = ["planned", "created", "verified"]
    for d in dests:
        names += [f"staging:{dest_tag(d)}", f"staged:{dest_tag(d)}"]
    names += ["staged", "readback_ok", "promoting"]
    for d in dests:
        names += [f"promoting:{dest_tag(d)}", f"promoted:{dest_tag(d)}"]
    names += ["promoted", "done"]
    steps = [
        JournalEntry(rid, seq, step, started + timedelta(milliseconds=40 * seq + 7 * seq**2), {})
        for seq, step in enumerate(names, start=1)
    ]
    rotation = Rotation(
        rotation_id=rid,
        target=name,
        state="done",
        started_at=started,
        finished_at=steps[-1].at,
        outcome="promoted",
        error=None,
        emergency=False,
        new_key_id=key_id(i),
        new_key_name=f"rotator-{name}-x",
        new_key_fingerprint=fingerprint(i),
        old_key_ids=(key_id(i, 1),),
    )
    return RotationRecord(rotation, tuple(steps))


def audit_events(name: str, i: int, now: datetime = NOW) -> tuple[AuditEvent, ...]:
    """A few audit rows of ``name``, newest first, one of them a revocation."""
    rid = str(uuid.uuid5(uuid.NAMESPACE_OID, f"rotation {i}"))
    rows = [
        ("rotation.started", {"emergency": False, "old_key_ids": [key_id(i, 1)]}),
        ("key.promoted", {"key_id": key_id(i), "fingerprint": fingerprint(i)}),
        ("rotation.finished", {"state": "done", "outcome": "promoted"}),
        ("key.revoked", {"key_id": key_id(i, 1), "fingerprint": fingerprint(i, 1)}),
    ]
    events = [
        AuditEvent(
            seq,
            now - timedelta(hours=2) + seq * timedelta(seconds=1),
            ev,
            name,
            rid,
            dict(facts),
            f"{seq:064x}",
        )
        for seq, (ev, facts) in enumerate(rows, start=1)
    ]
    return tuple(reversed(events))


@dataclass
class FakeSource:
    """A :class:`~rotator.daemon.ui.source.StatusSource` over a fixed snapshot; ``broken``
    makes every read raise it (a state store that cannot answer)."""

    snap: Snapshot
    histories: Mapping[str, TargetHistory] = field(default_factory=dict)
    broken: Exception | None = None
    reads: list[str] = field(default_factory=list)

    async def snapshot(self) -> Snapshot:
        self.reads.append("snapshot")
        if self.broken is not None:
            raise self.broken
        return self.snap

    async def history(self, target: str, *, rotations: int, audit: int) -> TargetHistory | None:
        self.reads.append(f"history {target}")
        if self.broken is not None:
            raise self.broken
        if target in self.histories:
            return self.histories[target]
        if not any(row.target == target for row in self.snap.rows):
            return None
        i = int(target.rsplit("-", 1)[1]) if target.rsplit("-", 1)[1].isdigit() else 0
        return TargetHistory(
            self.snap,
            target,
            (rotation_record(target, i, self.snap.now),)[:rotations],
            audit_events(target, i, self.snap.now)[:audit],
        )
