"""Plain-text tables and CSV for the operator commands (no secrets ever reach here)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta


def table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """Left-aligned columns with an upper-case header; ``-`` for empty cells."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    header = [c.upper().replace("_", " ") for c in columns]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def to_csv(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """RFC 4180 CSV with a header; nested values as JSON."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def age(since: datetime | None, now: datetime) -> str:
    """A short human age: ``3d4h``, ``15m``, ``-`` when unknown."""
    if since is None:
        return "-"
    return short_duration(now - since)


def short_duration(delta: timedelta) -> str:
    """``2d3h``, ``4h5m``, ``12m``, ``30s``; negative durations print as ``in …``."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in " + short_duration(-delta)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 target``, ``2 targets`` (``many`` when adding an ``s`` is wrong)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a ``Z``."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, datetime):
        return iso(value) or ""
    return str(value)
