"""Durations: the few forms operators write, and clear refusals for everything else."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rotator.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 45d ", timedelta(days=45)),
    ],
)
def test_valid_durations(text: str, expected: timedelta) -> None:
    """Each unit (and a combination of units) parses to the matching timedelta."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0s", "0", "0m"])
def test_zero_only_when_allowed(text: str) -> None:
    """Zero is accepted with allow_zero and refused where a positive duration is needed."""
    assert parse_duration(text, allow_zero=True) == timedelta(0)
    with pytest.raises(ValueError, match="must be longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("-5m", "must not be negative"),
        ("", "not a duration"),
        ("30", "not a duration"),
        ("1.5h", "not a duration"),
        ("30 s", "not a duration"),
        ("5M", "not a duration"),
        ("1y", "not a duration"),
        ("soon", "not a duration"),
        ("999999w", "must be at most 100 years"),
    ],
)
def test_invalid_durations(text: str, fragment: str) -> None:
    """Garbage, negatives, unknown units and absurd lengths raise ValueError naming the rule."""
    with pytest.raises(ValueError, match=fragment):
        parse_duration(text)


def test_message_does_not_repeat_the_value() -> None:
    """A rejected value (perhaps a misplaced secret) is not repeated in the message."""
    with pytest.raises(ValueError, match="not a duration") as caught:
        parse_duration("sk-Xq9zVv81")
    assert "sk-Xq9zVv81" not in str(caught.value)


def test_non_string_is_a_type_error() -> None:
    """A non-string is a TypeError, not silently coerced."""
    with pytest.raises(TypeError):
        parse_duration(30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=8), "8d"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4), "1d2h3m4s"),
    ],
)
def test_format_round_trips(value: timedelta, text: str) -> None:
    """format_duration gives the shortest text that parse_duration reads back."""
    assert format_duration(value) == text
    assert parse_duration(text, allow_zero=True) == value
