"""The demo's view: daemon log events become compact lines, ``/metrics`` a status line."""

from __future__ import annotations

from typing import Any

from rotator.logs import scrub
from rotator_dev.demo.view import EventView, duration, status_line

RID = "4e78c468-edc4-4cfc-a187-0e1de5f3b64a"
AT = "2026-11-27T13:10:33.066000Z"
DUE = "2026-11-27T13:10:43.061000Z"
"""The old key's revoke_due_at: set 10 s (its grace) after promotion, a moment before AT."""
LEGACY_ID, LEGACY_FP = "7f8f3a19-7d1f-47db-bf9a-7fda4ed8424a", "33047926bec8"
NEW_ID, NEW_FP = "de31d055-6dc8-4ed7-bfdc-04ecfcbca3d7", "17605eca966c"


def ev(event: str, **fields: Any) -> dict[str, Any]:
    """A log event as ``rotator run --log-format json`` writes it."""
    return {"event": event, "level": "info", "timestamp": AT, "target": "demo-backend", **fields}


def rotation_events(outcome: str = "promoted") -> list[dict[str, Any]]:
    """One rotation's events, in the order the daemon logs them."""
    return [
        ev("mistral.key_created", key_id=NEW_ID, fingerprint=NEW_FP, rotation_id=RID),
        ev("mistral.key_verified", attempts=1, elapsed=0.004, rotation_id=RID),
        ev("destination_staged", destination="vault-demo:secret/x#api_key", rotation_id=RID),
        ev("destination_promoted", destination="aws-demo:mistral/x#api_key", rotation_id=RID),
        ev("destination_promoted", destination="vault-demo:secret/x#api_key", rotation_id=RID),
        ev(
            "rotation_result",
            outcome=outcome,
            seconds=0.151,
            rotation_id=RID,
            new_key_id=NEW_ID,
            **({"revoke_due_at": DUE} if outcome == "promoted" else {}),
            **({"revoked_key_ids": [LEGACY_ID]} if outcome == "rotated" else {}),
        ),
    ]


def show(view: EventView, events: list[dict[str, Any]]) -> list[str]:
    return [text for event in events for text in view.lines(event)]


def test_a_rotation_and_its_revocation_in_three_lines() -> None:
    """A rotation prints "rotating" (new key verified) and "promoted" (old -> new, the stores in
    promotion order, the old key kept for its grace), and the old key's revocation names it by
    fingerprint."""
    view = EventView({LEGACY_ID: LEGACY_FP})
    view.current["demo-backend"] = LEGACY_FP
    revoked = ev("key_revoked", key_id=LEGACY_ID, outcome="revoked")
    lines = show(view, [*rotation_events(), revoked])
    assert len(lines) == 3
    assert "demo-backend" in lines[0]
    assert f"rotating  new key {NEW_FP} created; it works" in lines[0]
    promoted = f"promoted  {LEGACY_FP} -> {NEW_FP} in aws-demo, vault-demo (0.2s)"
    assert lines[1].endswith(f"{promoted}; old key kept 10s (grace)")
    assert f"revoked   old key {LEGACY_FP}: its grace is over" in lines[2]
    assert (view.rotations, view.revocations, view.failures) == (1, 1, 0)
    assert view.current["demo-backend"] == NEW_FP
    assert view.finished == {"demo-backend"}


def test_a_rolled_back_rotation_says_which_key_consumers_keep() -> None:
    """A rollback prints its reason, then a FAILED line naming the key consumers still hold."""
    view = EventView()
    view.current["demo-backend"] = LEGACY_FP
    events = rotation_events("rolled_back")
    events.insert(-1, ev("rotation_rolling_back", reason="read back a different value"))
    events[-1]["error"] = "vault-demo: read back a different value"
    lines = show(view, events)
    assert "rollback  read back a different value" in lines[1]
    failed = "FAILED    rolled_back: vault-demo: read back a different value; consumers keep"
    assert f"{failed} {LEGACY_FP}" in lines[2]
    assert (view.rotations, view.failures) == (0, 1)
    assert view.current["demo-backend"] == LEGACY_FP


def test_warnings_show_and_routine_events_do_not() -> None:
    """Unknown warnings and errors get a line with their message; info events and the
    single-instance election do not."""
    view = EventView()
    lines = show(
        view,
        [
            ev("Scheduler started"),
            ev("leadership_gained", level="warning", election="none"),
            ev("adoption_refused", level="warning", message="2 keys match the served key"),
            ev("revoke_due_failed", level="error"),
        ],
    )
    assert len(lines) == 2
    assert "warning   adoption_refused: 2 keys match the served key" in lines[0]
    assert "error     revoke_due_failed" in lines[1]
    assert view.failures == 1


def test_lines_never_carry_a_key_shaped_string() -> None:
    """An error text holding something shaped like a key is masked in the line."""
    view = EventView()
    leaked = "sk" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5"
    lines = view.lines(ev("rotation_stuck", level="error", reason=f"bad key {leaked}"))
    assert leaked not in lines[0]
    assert scrub(lines[0]) == lines[0]


def test_daemon_started_gives_the_port() -> None:
    """The daemon's start line records its HTTP port for the status and the on-demand call."""
    view = EventView()
    lines = view.lines(ev("daemon_started", target=None, host="127.0.0.1", port=9402))
    assert "rotator run serves http://127.0.0.1:9402" in lines[0]
    assert view.port == 9402


def test_status_line_from_metrics() -> None:
    """Per target: key age, time to the next rotation and old keys pending revocation; a target
    never rotated has no age."""
    metrics = "\n".join(
        [
            "# TYPE rotator_key_last_rotation_timestamp_seconds gauge",
            'rotator_key_last_rotation_timestamp_seconds{target="a"} 993.0',
            "# TYPE rotator_key_next_rotation_timestamp_seconds gauge",
            'rotator_key_next_rotation_timestamp_seconds{target="a"} 1125.0',
            'rotator_key_next_rotation_timestamp_seconds{target="b"} 1017.0',
            "# TYPE rotator_previous_keys_pending_revocation gauge",
            'rotator_previous_keys_pending_revocation{target="a"} 1.0',
            'rotator_previous_keys_pending_revocation{target="b"} 0.0',
            "",
        ]
    )
    text = status_line(metrics, ["a", "b"], now=1000.0)
    assert text.endswith("status          keys      a 7s/2m05s/1 | b -/17s/0")


def test_durations_are_short() -> None:
    """Seconds, minutes and hours read at a glance; negative means now."""
    assert [duration(s) for s in (-3, 7, 125, 3720)] == ["0s", "7s", "2m05s", "1h02m"]


def test_a_rotation_that_revoked_the_old_key_at_once_says_rotated() -> None:
    """Outcome ``rotated`` (no grace) is shown as such: the old key was revoked in the same
    rotation."""
    view = EventView({LEGACY_ID: LEGACY_FP})
    view.current["demo-backend"] = LEGACY_FP
    lines = show(view, rotation_events("rotated"))
    rotated = f"rotated   {LEGACY_FP} -> {NEW_FP} in aws-demo, vault-demo (0.2s); old key revoked"
    assert lines[1].endswith(rotated)
    assert (view.rotations, view.failures) == (1, 0)


def test_a_rotation_whose_start_the_view_missed_still_shows_as_promoted() -> None:
    """A successful result without its mistral.key_created event names the new key by id."""
    view = EventView()
    lines = view.lines(
        ev("rotation_result", outcome="promoted", rotation_id=RID, new_key_id=NEW_ID)
    )
    assert "promoted  (none) -> id de31d055 in every store" in lines[0]
    assert lines[0].endswith("old key kept for its grace")
    assert (view.rotations, view.failures) == (1, 0)
