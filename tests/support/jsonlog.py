"""Reading a process's JSON log lines back as events (what the daemon tests observe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_events(log: Path) -> list[dict[str, Any]]:
    """Every JSON object line of ``log`` (other lines, e.g. a partial last line, are skipped)."""
    found: list[dict[str, Any]] = []
    if not log.exists():
        return found
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found
