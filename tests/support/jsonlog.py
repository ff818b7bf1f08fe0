"""Reading a process's JSON log lines back as events (what the daemon tests observe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_events(log: Path) -> list[dict[str, Any]]:
    """Every JSON object line of ``log`` (other lines, e.g. a partial last line, are skipped)."""
    if not log.exists():
        return []
    return parse_events(log.read_text(errors="replace"))


def parse_events(text: str) -> list[dict[str, Any]]:
    """Every JSON object line of ``text``; other lines are skipped."""
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found
