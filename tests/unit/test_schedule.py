"""Schedules: crontab(5) semantics in UTC, or a fixed interval after the last rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rotator.schedule import Schedule

MONDAY_3AM = datetime(2025, 1, 6, 3, 0, tzinfo=UTC)  # 2025-01-06 is a Monday


def test_cron_fires_strictly_after() -> None:
    """A cron's next fire is strictly after the given instant, even when it is a fire time."""
    weekly = Schedule.parse("0 3 * * 1")
    assert weekly.next_fire(MONDAY_3AM) == MONDAY_3AM + timedelta(weeks=1)
    assert weekly.next_fire(MONDAY_3AM - timedelta(seconds=1)) == MONDAY_3AM


@pytest.mark.parametrize(
    ("expr", "weekday"),
    [("0 3 * * 1", 0), ("0 3 * * 0", 6), ("0 3 * * 7", 6), ("0 3 * * sat", 5), ("0 3 * * 5", 4)],
)
def test_day_of_week_follows_crontab(expr: str, weekday: int) -> None:
    """Day-of-week numbers mean what crontab(5) says: 0 and 7 are Sunday, 1 is Monday."""
    fire = Schedule.parse(expr).next_fire(MONDAY_3AM)
    assert fire.weekday() == weekday
    assert (fire.hour, fire.minute) == (3, 0)


def test_weekday_ranges_and_steps_follow_crontab() -> None:
    """1-5 is Monday to Friday, */2 is Sunday, Tuesday, Thursday, Saturday."""
    start = datetime(2025, 1, 4, 12, 0, tzinfo=UTC)  # a Saturday
    workdays = Schedule.parse("0 0 * * 1-5")
    fires = [start]
    for _ in range(5):
        fires.append(workdays.next_fire(fires[-1]))
    assert [f.weekday() for f in fires[1:]] == [0, 1, 2, 3, 4]
    every_other = Schedule.parse("0 0 * * */2")
    fires = [start]
    for _ in range(4):
        fires.append(every_other.next_fire(fires[-1]))
    assert [f.weekday() for f in fires[1:]] == [6, 1, 3, 5]


def test_cron_is_utc_whatever_the_input_zone() -> None:
    """Fire times are computed and returned in UTC for an aware input in any zone."""
    paris = timezone(timedelta(hours=1))
    fire = Schedule.parse("0 3 * * *").next_fire(datetime(2025, 1, 6, 3, 30, tzinfo=paris))
    assert fire == datetime(2025, 1, 6, 3, 0, tzinfo=UTC)
    assert fire.tzinfo == UTC


def test_interval_is_after_plus_duration() -> None:
    """'every D' fires D after the given instant (the caller's last rotation)."""
    schedule = Schedule.parse("every 30d")
    assert schedule.is_interval
    assert schedule.interval == timedelta(days=30)
    assert schedule.next_fire(MONDAY_3AM) == MONDAY_3AM + timedelta(days=30)


def test_macros() -> None:
    """@daily and friends are accepted as their 5-field equivalents."""
    assert Schedule.parse("@daily").next_fire(MONDAY_3AM) == datetime(2025, 1, 7, tzinfo=UTC)


def test_text_and_equality() -> None:
    """str() is the original text (whitespace normalised); equal texts are equal schedules."""
    assert str(Schedule.parse("0  3 * *  1")) == "0 3 * * 1"
    assert str(Schedule.parse("every 1h")) == "every 1h"
    assert Schedule.parse("every 1h") == Schedule.parse("every  1h")
    assert Schedule.parse("every 1h") != Schedule.parse("every 60m")


def test_naive_datetime_refused() -> None:
    """next_fire needs a timezone-aware datetime."""
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule.parse("@hourly").next_fire(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0 3 * *", "a cron expression has 5 fields"),
        ("0 3 * * 1 2025", "got 6"),
        ("61 3 * * 1", "invalid cron expression"),
        ("0 24 * * *", "invalid cron expression"),
        ("0 0 32 * *", "invalid cron expression"),
        ("0 0 * 13 *", "invalid cron expression"),
        ("0 0 * * 8", "day-of-week"),
        ("0 0 * * 5-1", "runs backwards"),
        ("*/0 * * * *", "invalid cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 1 * 1", "not both"),
        ("every", "needs a duration"),
        ("every 0s", "every: must be longer than zero"),
        ("every fortnight", "every: not a duration"),
        ("", "must be a cron expression"),
    ],
)
def test_invalid_schedules(text: str, fragment: str) -> None:
    """Wrong field counts, out-of-range fields, impossible dates and bad intervals are refused."""
    with pytest.raises(ValueError, match=fragment):
        Schedule.parse(text)


@pytest.mark.parametrize(
    ("expr", "weekdays"),
    [
        ("0 0 * * 7-7", [6, 6, 6]),
        ("0 0 * * 5-7", [4, 5, 6]),
        ("0 0 * * 0-7", [4, 5, 6]),
        ("0 0 * * 6-7", [5, 6, 5]),
    ],
)
def test_weekday_range_ending_at_seven(expr: str, weekdays: list[int]) -> None:
    """A range ending at 7 ends on Sunday; 7-7 is Sunday alone, not every day."""
    fires = [datetime(2025, 1, 2, 12, 0, tzinfo=UTC)]  # a Thursday
    schedule = Schedule.parse(expr)
    for _ in weekdays:
        fires.append(schedule.next_fire(fires[-1]))
    assert [f.weekday() for f in fires[1:]] == weekdays
