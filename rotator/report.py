"""``rotator report``: a per-workspace compliance report of the keys the Admin API lists.

For every workspace a configured target lives in, every key the Admin API lists there is
classified:

- **managed** by rotator when the state store knows it — a target's ``current`` key, a
  ``retiring`` one (replaced, revoked at its grace deadline) or an ``adopted`` one (declared by
  an operator, revoked after the next rotation) — or when its name carries a target's
  ``key_name_prefix`` followed by ``-`` (``prefix``: e.g. a key of a rotation in flight);
  otherwise **unmanaged**;
- **without expiration** when Mistral reports no expiration date;
- **older than max_age** when created longer ago than its target's ``max_age`` (an unmanaged
  key is held to the strictest ``max_age`` among the workspace's targets);
- **unused** when its last use (a date) is ``unused_days`` or more days before today, or, never
  used, it was created that long ago.

A key the state store names as a target's current key but that the Admin API no longer lists
is reported as missing (consumers are likely broken). The report reads only: the Admin API
listing, the workspaces' names and the state store. Nothing secret is in it — key ids, names
(scrubbed) and dates.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import structlog

from rotator.config import Config, Target
from rotator.contracts import TargetState
from rotator.errors import RotatorError
from rotator.keys import ApiKey, Workspace
from rotator.logs import scrub
from rotator.render import iso, plural, table

log = structlog.get_logger(__name__)

DEFAULT_UNUSED_DAYS = 30
_EPOCH = datetime.min.replace(tzinfo=UTC)

KEY_COLUMNS = (
    "workspace_id",
    "key_id",
    "name",
    "managed",
    "target",
    "managed_as",
    "created_at",
    "age_days",
    "max_age_days",
    "expiration_date",
    "last_used",
    "without_expiration",
    "older_than_max_age",
    "unused",
)
"""The fields of a key row, in CSV column order."""

SUMMARY_FIELDS = (
    "keys",
    "managed",
    "unmanaged",
    "without_expiration",
    "older_than_max_age",
    "unused",
    "missing_current_keys",
)


class KeyListing(Protocol):
    """What the report reads from the Admin API (a subset of ``KeyIssuer``)."""

    async def list_keys(self, *, workspace_id: str | None = None) -> list[ApiKey]: ...

    async def list_workspaces(self) -> list[Workspace]: ...


class TargetListing(Protocol):
    """What the report reads from the state store (a subset of ``StateStore``)."""

    async def list_targets(self) -> list[TargetState]: ...


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One listed key and its findings."""

    workspace_id: str
    key_id: str
    name: str | None
    target: str | None
    managed_as: str | None  # current | retiring | adopted | prefix | None (unmanaged)
    created_at: datetime | None
    age_days: int | None
    max_age_days: float | None
    expiration_date: date | None
    last_used: date | None
    without_expiration: bool
    older_than_max_age: bool
    unused: bool

    @property
    def managed(self) -> bool:
        return self.managed_as is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "workspace_id": self.workspace_id,
            "key_id": self.key_id,
            "name": self.name,
            "managed": self.managed,
            "target": self.target,
            "managed_as": self.managed_as,
            "created_at": iso(self.created_at),
            "age_days": self.age_days,
            "max_age_days": self.max_age_days,
            "expiration_date": _day(self.expiration_date),
            "last_used": _day(self.last_used),
            "without_expiration": self.without_expiration,
            "older_than_max_age": self.older_than_max_age,
            "unused": self.unused,
        }


@dataclass(slots=True)
class WorkspaceReport:
    """The keys of one workspace, its targets, and the counts of each finding."""

    workspace_id: str
    name: str | None
    archived: bool | None
    targets: list[str]
    keys: list[KeyRow] = field(default_factory=list)
    missing_current_keys: list[str] = field(default_factory=list)
    """Current keys of the workspace's targets (per the state store) the API does not list."""

    def summary(self) -> dict[str, int]:
        return {
            "keys": len(self.keys),
            "managed": sum(k.managed for k in self.keys),
            "unmanaged": sum(not k.managed for k in self.keys),
            "without_expiration": sum(k.without_expiration for k in self.keys),
            "older_than_max_age": sum(k.older_than_max_age for k in self.keys),
            "unused": sum(k.unused for k in self.keys),
            "missing_current_keys": len(self.missing_current_keys),
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "workspace_id": self.workspace_id,
            "name": self.name,
            "archived": self.archived,
            "targets": self.targets,
            "summary": self.summary(),
            "missing_current_keys": self.missing_current_keys,
            "keys": [k.as_dict() for k in self.keys],
        }


@dataclass(frozen=True, slots=True)
class Report:
    """The whole report: when it was made, the unused threshold, one entry per workspace."""

    generated_at: datetime
    unused_days: int
    workspaces: list[WorkspaceReport]

    def as_dict(self) -> dict[str, object]:
        return {
            "generated_at": iso(self.generated_at),
            "unused_days": self.unused_days,
            "workspaces": [w.as_dict() for w in self.workspaces],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def to_csv(self) -> str:
        """One row per key (RFC 4180, with a header); the summaries are not repeated here."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["workspace_name", *KEY_COLUMNS])
        for ws in self.workspaces:
            for key in ws.keys:
                row = key.as_dict()
                writer.writerow([ws.name or "", *(_csv(row[c]) for c in KEY_COLUMNS)])
        return buf.getvalue()

    def to_markdown(self) -> str:
        """A heading per workspace, its summary, then its keys (unmanaged first)."""
        lines = [
            "# rotator compliance report",
            "",
            (
                f"Generated {iso(self.generated_at)}; a key is unused after"
                f" {self.unused_days} days without use."
            ),
        ]
        for ws in self.workspaces:
            title = f"{ws.name} (`{ws.workspace_id}`)" if ws.name else f"`{ws.workspace_id}`"
            lines += ["", f"## {_md(title)}", ""]
            if ws.archived:
                lines += ["Archived workspace.", ""]
            lines.append(f"Targets: {', '.join(ws.targets)}")
            lines += ["", *_md_table([ws.summary()], SUMMARY_FIELDS)]
            if ws.missing_current_keys:
                missing = ", ".join(f"`{k}`" for k in ws.missing_current_keys)
                lines += ["", f"Current keys not listed by the Admin API: {missing}"]
            if ws.keys:
                columns = (
                    "key_id", "name", "managed", "target", "managed_as", "age_days",
                    "expiration_date", "last_used", "without_expiration", "older_than_max_age",
                    "unused",
                )  # fmt: skip
                lines += ["", *_md_table([k.as_dict() for k in _ordered(ws.keys)], columns)]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """The terminal view: a summary line and a table of keys per workspace."""
        out: list[str] = []
        for ws in self.workspaces:
            s = ws.summary()
            name = f"{ws.name} ({ws.workspace_id})" if ws.name else ws.workspace_id
            archived = " [archived]" if ws.archived else ""
            out.append(
                f"workspace {name}{archived}: {plural(s['keys'], 'key')},"
                f" {s['managed']} managed, {s['unmanaged']} unmanaged,"
                f" {s['without_expiration']} without expiration,"
                f" {s['older_than_max_age']} older than max_age,"
                f" {s['unused']} unused for {self.unused_days}d"
            )
            if ws.missing_current_keys:
                out.append(f"  current keys missing: {', '.join(ws.missing_current_keys)}")
            if ws.keys:
                rows = [k.as_dict() for k in _ordered(ws.keys)]
                columns = [
                    "key_id", "name", "target", "managed_as", "age_days", "expiration_date",
                    "last_used", "without_expiration", "older_than_max_age", "unused",
                ]  # fmt: skip
                out.append(table(rows, columns))
            out.append("")
        return "\n".join(out).rstrip("\n") + "\n" if out else "no workspaces configured\n"


async def build_report(
    cfg: Config,
    *,
    issuer: KeyListing,
    store: TargetListing,
    now: datetime,
    unused_days: int = DEFAULT_UNUSED_DAYS,
) -> Report:
    """The compliance report of every workspace a configured target uses, at ``now``.

    Reads the Admin API's key listing (once, for all workspaces), the workspaces' names (a
    failure there only leaves names out) and the state store. Raises the issuer's or store's
    errors. ``unused_days`` must be at least 1.
    """
    if unused_days < 1:
        raise ValueError("unused_days must be at least 1")
    workspaces: dict[str, list[Target]] = {}
    for target in cfg.targets:
        workspaces.setdefault(target.workspace_id, []).append(target)
    if not workspaces:
        return Report(now, unused_days, [])
    states = {s.target: s for s in await store.list_targets()}
    listed = await issuer.list_keys()
    try:
        info = {w.uuid: w for w in await issuer.list_workspaces()}
    except RotatorError as exc:
        log.warning("report_workspace_names_unavailable", error=str(exc))
        info = {}
    reports = []
    for workspace_id, targets in workspaces.items():
        ws = info.get(workspace_id)
        report = WorkspaceReport(
            workspace_id=workspace_id,
            name=ws.name if ws else None,
            archived=ws.is_archived if ws else None,
            targets=[t.name for t in targets],
        )
        known = _known_keys(targets, states)
        keys = [k for k in listed if k.workspace_id == workspace_id]
        report.keys = [_row(k, targets, known, now, unused_days) for k in keys]
        listed_ids = {k.key_id for k in keys}
        report.missing_current_keys = [
            state.current.key_id
            for t in targets
            if (state := states.get(t.name)) is not None
            and state.current is not None
            and state.current.key_id not in listed_ids
        ]
        reports.append(report)
    return Report(now, unused_days, reports)


def _known_keys(
    targets: Sequence[Target], states: dict[str, TargetState]
) -> dict[str, tuple[str, str]]:
    """Key id → (target, role) for the keys the state store tracks for ``targets``."""
    known: dict[str, tuple[str, str]] = {}
    for target in targets:
        state = states.get(target.name)
        if state is None:
            continue
        if state.adopted_key_id:
            known[state.adopted_key_id] = (target.name, "adopted")
        for retiring in state.retiring:
            known[retiring.key_id] = (target.name, "retiring")
        if state.current is not None:
            known[state.current.key_id] = (target.name, "current")
    return known


def _by_prefix(name: str | None, targets: Sequence[Target]) -> Target | None:
    """The target whose ``<key_name_prefix>-`` starts ``name`` (the longest prefix wins)."""
    if not name:
        return None
    matches = [t for t in targets if name.startswith(f"{t.key_name_prefix}-")]
    return max(matches, key=lambda t: len(t.key_name_prefix), default=None)


def _row(
    key: ApiKey,
    targets: Sequence[Target],
    known: dict[str, tuple[str, str]],
    now: datetime,
    unused_days: int,
) -> KeyRow:
    target_name, role = known.get(key.key_id, (None, None))
    if target_name is None:
        by_prefix = _by_prefix(key.name, targets)
        if by_prefix is not None:
            target_name, role = by_prefix.name, "prefix"
    if target_name is not None:
        max_age = next(t for t in targets if t.name == target_name).policy.max_age
    else:
        max_age = min(t.policy.max_age for t in targets)
    age = now - key.created_at if key.created_at is not None else None
    today = now.date()
    threshold = today - timedelta(days=unused_days)
    if key.last_used is not None:
        unused = key.last_used <= threshold
    else:
        unused = key.created_at is not None and key.created_at.date() <= threshold
    return KeyRow(
        workspace_id=key.workspace_id or "",
        key_id=key.key_id,
        name=scrub(key.name) if key.name else None,
        target=target_name,
        managed_as=role,
        created_at=key.created_at,
        age_days=age.days if age is not None else None,
        max_age_days=round(max_age.total_seconds() / 86400, 3),
        expiration_date=key.expiration_date,
        last_used=key.last_used,
        without_expiration=key.expiration_date is None,
        older_than_max_age=age is not None and age > max_age,
        unused=unused,
    )


def _ordered(keys: Sequence[KeyRow]) -> list[KeyRow]:
    """Unmanaged keys first, then by target and creation time."""
    return sorted(keys, key=lambda k: (k.managed, k.target or "", k.created_at or _EPOCH, k.key_id))


def _day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _csv(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell or heading."""
    return " ".join(text.split()).replace("|", "\\|")


def _md_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> list[str]:
    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "yes" if value else "no"
        return _md(str(value))

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


__all__ = [
    "DEFAULT_UNUSED_DAYS",
    "KeyListing",
    "KeyRow",
    "Report",
    "WorkspaceReport",
    "build_report",
]
