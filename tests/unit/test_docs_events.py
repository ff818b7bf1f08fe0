"""The event names the docs tell operators to look for exist in the code.

Webhook events named in the docs (``Webhook event `x` ``) are members of
:data:`rotator.daemon.notify.NOTIFY_EVENTS`; log events (``log events `x`, `y` ``) are string
literals somewhere under ``rotator/``. The configuration reference's ``events`` row names every
webhook event and every engine alert that maps onto one (:data:`ALERT_EVENTS`).
"""

from __future__ import annotations

import re
from pathlib import Path

from rotator.daemon.notify import ALERT_EVENTS, NOTIFY_EVENTS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_LIST = r"((?:`[a-z][a-z_]+`(?: \([^)]*\))?(?:, and |, or |, | or | and )?)+)"
_WEBHOOK = re.compile(r"[Ww]ebhook events?:? " + _LIST)
_LOG = re.compile(r"[Ll]og events?:? " + _LIST)


def named(pattern: re.Pattern[str], markdown: str) -> set[str]:
    """The backticked names listed right after the phrase ``pattern`` matches (parentheses
    after a name are comments, not names)."""
    text = re.sub(r"\s+", " ", markdown)
    found: set[str] = set()
    for match in pattern.finditer(text):
        found.update(re.findall(r"`([a-z][a-z_]+)`", re.sub(r"\([^)]*\)", "", match.group(1))))
    return found


def docs_text() -> dict[str, str]:
    """Every document under docs/, by its path relative to docs/."""
    return {str(p.relative_to(DOCS)): p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md")}


def source_literals() -> str:
    """All of rotator's Python source, to look string literals up in."""
    return "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "rotator").rglob("*.py"))


def test_every_webhook_event_the_docs_name_exists() -> None:
    """No document names a webhook event that rotator/daemon/notify.py does not send."""
    wrong = {
        doc: sorted(named(_WEBHOOK, text) - set(NOTIFY_EVENTS)) for doc, text in docs_text().items()
    }
    assert {doc: names for doc, names in wrong.items() if names} == {}
    assert any(named(_WEBHOOK, text) for text in docs_text().values())


def test_every_log_event_the_docs_name_is_logged_somewhere() -> None:
    """Each log event a document names appears as a string literal in rotator's source."""
    source = source_literals()
    wrong = {
        doc: sorted(n for n in named(_LOG, text) if f'"{n}"' not in source)
        for doc, text in docs_text().items()
    }
    assert {doc: names for doc, names in wrong.items() if names} == {}
    assert any(named(_LOG, text) for text in docs_text().values())


def test_the_events_setting_names_every_event_and_alert() -> None:
    """The ``notifications.webhooks[].events`` row lists every event and every engine alert."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    (row,) = [line for line in text.splitlines() if "`notifications.webhooks[].events`" in line]
    listed = set(re.findall(r"`([a-z][a-z_]+)`", row))
    assert set(NOTIFY_EVENTS) <= listed
    assert set(ALERT_EVENTS) <= listed


def test_names_are_read_from_the_list_after_the_phrase_only() -> None:
    """Names after the phrase are read, a parenthesised comment and later prose are not."""
    text = (
        "Log events `a_b` (warning, with `c_d`) and\n`e_f`; the `g_h` field. Webhook event `x_y`."
    )
    assert named(_LOG, text) == {"a_b", "e_f"}
    assert named(_WEBHOOK, text) == {"x_y"}
