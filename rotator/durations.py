"""Durations as operators write them: ``30s``, ``15m``, ``1h``, ``7d``, ``2w`` (or ``1h30m``).

:func:`parse_duration` turns the text into a :class:`~datetime.timedelta`; :func:`format_duration`
turns it back. ``Duration`` and ``PositiveDuration`` are the pydantic field types built on them.
Error messages never repeat the rejected text: a value put in the wrong field may be a secret.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

UNITS: dict[str, timedelta] = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}
_PART = re.compile(r"(\d+)([wdhms])")
_WHOLE = re.compile(r"(?:\d+[wdhms])+")
_HINT = "use a whole number and a unit (s, m, h, d, w), like 30s, 15m, 1h or 7d"
# timedelta's ceiling is 999999999 days; anything near it is a typo, not a policy.
_MAX = timedelta(days=100 * 365)
_MAX_SECONDS = int(_MAX.total_seconds())
_TOO_LONG = "must be at most 100 years (36500d)"


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """Parse ``30s``/``15m``/``1h``/``7d``/``2w`` (units may be combined: ``1h30m``).

    Guarantees a non-negative result, positive unless ``allow_zero``; ``0`` alone is accepted
    as zero when ``allow_zero``. Raises :class:`TypeError` for a non-string and
    :class:`ValueError` with a one-line message that does
    not repeat ``text`` for anything else (garbage, negatives, zero where it is not allowed,
    more than a century).
    """
    if not isinstance(text, str):
        raise TypeError(f"must be a duration string; {_HINT}")
    cleaned = text.strip()
    if cleaned.startswith("-"):
        raise ValueError("must not be negative")
    if cleaned == "0":
        total = timedelta(0)
    elif _WHOLE.fullmatch(cleaned):
        # Counted in whole seconds: a count of days far past the century would overflow
        # timedelta (and a thousands-digit count int()) before it could be compared.
        seconds = 0
        for count, unit in _PART.findall(cleaned):
            digits = count.lstrip("0")
            if len(digits) > len(str(_MAX_SECONDS)):
                raise ValueError(_TOO_LONG)
            seconds += int(digits or "0") * int(UNITS[unit].total_seconds())
        if seconds > _MAX_SECONDS:
            raise ValueError(_TOO_LONG)
        total = timedelta(seconds=seconds)
    else:
        raise ValueError(f"not a duration: {_HINT}")
    if not total and not allow_zero:
        raise ValueError("must be longer than zero")
    return total


def format_duration(value: timedelta) -> str:
    """The shortest text :func:`parse_duration` reads back as ``value`` (``0s`` for zero)."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in UNITS.items():
        if unit == "w":
            continue  # "8d" reads better than "1w1d"
        count, seconds = divmod(seconds, int(size.total_seconds()))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _coerce(allow_zero: bool) -> Any:
    def coerce(value: object) -> timedelta:
        if isinstance(value, timedelta):
            if value < timedelta(0):
                raise ValueError("must not be negative")
            if not value and not allow_zero:
                raise ValueError("must be longer than zero")
            return value
        if isinstance(value, str):
            return parse_duration(value, allow_zero=allow_zero)
        if isinstance(value, int) and not isinstance(value, bool):
            if value == 0 and allow_zero:
                return timedelta(0)
            raise ValueError(f"needs a unit; {_HINT}")
        raise ValueError(f"must be a duration string; {_HINT}")

    return coerce


_SERIALIZE = PlainSerializer(format_duration, return_type=str)

Duration = Annotated[timedelta, BeforeValidator(_coerce(allow_zero=True)), _SERIALIZE]
"""A duration field that may be zero (``grace: 0s``)."""

PositiveDuration = Annotated[timedelta, BeforeValidator(_coerce(allow_zero=False)), _SERIALIZE]
"""A duration field that must be longer than zero (timeouts, ``max_age``)."""
