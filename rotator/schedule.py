"""When a target's key is rotated: a 5-field cron expression in UTC, or ``every <duration>``.

A :class:`Schedule` only answers "when is the next fire after this instant"; what is due is
decided from stored state (last rotation, ``max_age``) by its callers.

Cron follows crontab(5): ``minute hour day-of-month month day-of-week``, where day-of-week
``0`` and ``7`` are Sunday and names (``mon``..``sun``) are accepted. APScheduler's own numeric
day-of-week starts at Monday, so that field is translated to day names before it is handed over.
Standard cron ORs a restricted day-of-month with a restricted day-of-week while APScheduler ANDs
them; an expression that restricts both is refused rather than silently run differently.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from apscheduler.triggers.cron import CronTrigger
from pydantic import PlainSerializer, PlainValidator

from rotator.durations import parse_duration

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELDS = "minute hour day-of-month month day-of-week"
_EVERY = re.compile(r"every\s+(\S.*)", re.IGNORECASE)
# A fixed origin to prove an expression fires at all (``0 0 30 2 *`` never does).
_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def _weekday(token: str) -> int:
    """A crontab day-of-week token as 0..6 with 0 = Sunday."""
    lowered = token.lower()
    if lowered in _DAY_NAMES:
        return _DAY_NAMES.index(lowered)
    if lowered.isdigit() and int(lowered) <= 7:
        return int(lowered) % 7
    raise ValueError(f"day-of-week: {token!r} is not 0-7 or a day name (sun..sat)")


def _translate_weekdays(expr: str) -> str:
    """Rewrite a crontab day-of-week field as APScheduler day names, e.g. ``1-5`` -> mon..fri."""
    if expr == "*":
        return "*"
    days: set[int] = set()
    for part in expr.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError("day-of-week: the step after '/' must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = 0, 6
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _weekday(first), _weekday(last)
            if last.strip() == "7" and first.strip() != "7":
                end = 7  # "5-7" is Friday..Sunday; "7-7" stays Sunday alone
            if start > end:
                raise ValueError(f"day-of-week: range {base!r} runs backwards")
        else:
            start = _weekday(base)
            end = 6 if step_text else start
        days.update(day % 7 for day in range(start, end + 1, step))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


def _cron_trigger(text: str) -> CronTrigger:
    expr = _MACROS.get(text.lower(), text)
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields ({_FIELDS}), in UTC; got {len(fields)}"
            " (or write 'every <duration>', like 'every 30d')"
        )
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        raise ValueError(
            "restrict day-of-month or day-of-week, not both (cron would run on either,"
            " which is rarely what is meant)"
        )
    try:
        trigger = CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_translate_weekdays(weekday),
            timezone=UTC,
        )
    except ValueError as exc:
        raise ValueError(f"invalid cron expression: {exc}") from None
    if trigger.get_next_fire_time(None, _ORIGIN) is None:
        raise ValueError("this cron expression never fires")
    return trigger


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule. ``str()`` gives the text it was parsed from; equal texts are equal."""

    text: str
    interval: timedelta | None = field(default=None, compare=False)
    _trigger: CronTrigger | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse ``"0 3 * * 1"``, ``"@daily"`` or ``"every 30d"``.

        Raises :class:`ValueError` (one line) for a wrong field count, an out-of-range field,
        a cron that never fires, or an ``every`` without a positive duration.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("must be a cron expression or 'every <duration>'")
        cleaned = " ".join(text.split())
        every = _EVERY.fullmatch(cleaned)
        if every:
            try:
                interval = parse_duration(every.group(1))
            except ValueError as exc:
                raise ValueError(f"every: {exc}") from None
            return cls(cleaned, interval=interval)
        if cleaned.lower().startswith("every"):
            raise ValueError("'every' needs a duration, like 'every 30d'")
        return cls(cleaned, _trigger=_cron_trigger(cleaned))

    @property
    def is_interval(self) -> bool:
        """True for ``every <duration>``, False for cron."""
        return self.interval is not None

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (timezone-aware), in UTC.

        Cron: the expression's next match. ``every D``: ``after + D`` (callers pass the last
        rotation time). Raises :class:`ValueError` for a naive ``after``.
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError("next_fire needs a timezone-aware datetime")
        after = after.astimezone(UTC)
        if self.interval is not None:
            return after + self.interval
        assert self._trigger is not None
        fire = _cron_next(self._trigger, after)
        if fire is None:
            raise ValueError(f"schedule {self.text!r} has no fire time after {after.isoformat()}")
        return fire.astimezone(UTC)

    def __str__(self) -> str:
        return self.text


@functools.lru_cache(maxsize=4096)
def _cron_next(trigger: CronTrigger, after: datetime) -> datetime | None:
    """A cron trigger's next fire after ``after``, remembered: the daemon and ``status`` ask it
    again for the same last rotation of every target at every refresh."""
    fire: datetime | None = trigger.get_next_fire_time(after, after)
    return fire


def _coerce(value: Any) -> Schedule:
    if isinstance(value, Schedule):
        return value
    return Schedule.parse(value)


ScheduleField = Annotated[Schedule, PlainValidator(_coerce), PlainSerializer(str, return_type=str)]
"""The pydantic field type for a schedule (validated text in, the original text out)."""
