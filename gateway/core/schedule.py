"""Scheduled billing resets: the instants at which "every month on the 1st at 00:00" fires.

Theory of operation
-------------------
A schedule picks local calendar dates and one wall-clock time ``at`` (hour, minute, second)
on each of them:

    every day      every date
    every week     each date that is ``weekday`` (0 = Monday ... 6 = Sunday)
    every month    ``day`` of each month, 1..31 or "last"
    every year     ``day`` of ``month`` each year

A day the month does not have means that month's last day: day 31 fires on 30 April and on
28 or 29 February, and a yearly 29 February fires on 28 February in a year that is not a leap
year. Billing runs per period, so a short month still gets its reset rather than none.

``at`` is read on the wall clock of an IANA zone (UTC when no zone is given). A reset fires at
the first instant at which that clock reads ``at`` or later on the scheduled date. The one rule
settles both daylight-saving edges:

- spring forward: a time inside the gap is never shown (02:30 on 2026-03-08 in New York); the
  first instant the clock reads later is the jump itself, 03:00 EDT = 07:00Z;
- fall back: a time inside the repeated hour is shown twice (01:30 on 2026-11-01 in New York);
  the reset fires at the first showing, 01:30 EDT = 05:30Z, and only once for that date.

Later dates never fire earlier, so the fires are increasing; a date whose fire would not be
later than the one before (only a gap of a day or more, like Samoa skipping 2011-12-30, can do
that) is dropped rather than fired twice at one instant.

How it is computed: dates are found directly (the next weekday by arithmetic, the next month by
counting months), never by stepping through time. A date's wall time becomes an instant
through the zone's PEP 495 offsets: ``fold=0`` is the offset before a transition, which gives
the first showing of a repeated time. Inside a gap neither fold gives the jump (``fold=0`` lands
after it by the gap's width, ``fold=1`` before it), so the jump is found by bisecting the whole
seconds between the two (zone transitions fall on whole seconds); a zone has a gap about once
a year. Instants are whole microseconds, from integer datetime arithmetic: never a float.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from itertools import takewhile
from typing import Literal

from gateway.core.timeline import MICROS_PER_SECOND, Instant

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = ResetSchedule.weekday

_EVERY = ("day", "week", "month", "year")
# Which of weekday, day, month each kind needs; the others must be left out.
_NEEDS: dict[str, tuple[str, ...]] = {
    "day": (),
    "week": ("weekday",),
    "month": ("day",),
    "year": ("month", "day"),
}
_AT = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")
_NAIVE_EPOCH = datetime(1970, 1, 1)
_EPOCH = _NAIVE_EPOCH.replace(tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_ONE_DAY = timedelta(days=1)
_ONE_WEEK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ResetSchedule:
    """When a channel's billing reset fires, checked once so the scheduler never meets a bad one.

    ``at`` is (hour, minute, second) on the local wall clock; ``weekday`` is 0 (Monday) to 6
    for ``every="week"``; ``day`` is 1..31 or "last" for ``every="month"`` and ``"year"``;
    ``month`` is 1..12 for ``every="year"``. A field the kind does not use must be None, so a
    config that says ``every: day, weekday: mon`` is refused instead of silently meaning daily.
    """

    every: Literal["day", "week", "month", "year"]
    at: tuple[int, int, int]
    weekday: int | None = None
    day: int | Literal["last"] | None = None
    month: int | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("; ".join(problems))


def parse_at(text: str) -> tuple[int, int, int]:
    """Read a wall-clock time ``HH:MM`` or ``HH:MM:SS`` (00:00 to 23:59:59) as (h, m, s).

    ``24:00`` is refused: it is 00:00 of the next date, and which date a reset belongs to
    must not hang on that reading.
    """
    if not isinstance(text, str):
        # PyYAML reads an unquoted 06:00 as the base-60 number 360: say so, not just "bad".
        raise ValueError(
            f"at must be text like '06:00' or '06:00:30' (quote it in YAML), not {text!r}"
        )
    match = _AT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"cannot read at {text!r}: expected HH:MM or HH:MM:SS, like '06:00'")
    hour, minute, second = match.groups(default="0")
    at = (int(hour), int(minute), int(second))
    problems = _at_problems(at)
    if problems:
        raise ValueError(f"cannot read at {text!r}: " + "; ".join(problems))
    return at


def next_after(schedule: ResetSchedule, zone: tzinfo | None, t: Instant) -> Instant:
    """The first scheduled instant strictly after ``t``; ``zone`` None means UTC."""
    return next(_fires_after(schedule, zone, t))


def between(
    schedule: ResetSchedule, zone: tzinfo | None, after: Instant, until: Instant
) -> Iterator[Instant]:
    """Every scheduled instant s with ``after < s <= until``, in order, computed as consumed.

    Half-open like the demand intervals: a reset at exactly ``after`` was the previous
    call's, one at exactly ``until`` is this one's, so consecutive calls miss and repeat none.
    """
    return takewhile(lambda fire: fire <= until, _fires_after(schedule, zone, after))


def _fires_after(schedule: ResetSchedule, zone: tzinfo | None, t: Instant) -> Iterator[Instant]:
    """The scheduled instants after ``t``, strictly increasing, without end."""
    zone = UTC if zone is None else zone
    hour, minute, second = schedule.at
    at = timedelta(hours=hour, minutes=minute, seconds=second)
    # A date before t's local date has its wall time before t's wall time, so the clock had
    # read it by t: it fired at or before t. Starting at t's own date misses nothing.
    start = _wall_clock(t, zone).date()
    last = t
    for day in _dates_from(schedule, start):
        fire = _first_reading(datetime(day.year, day.month, day.day) + at, zone)
        if fire > last:  # also drops a date that a day-long gap merged into the next one
            yield fire
            last = fire


def _dates_from(schedule: ResetSchedule, start: date) -> Iterator[date]:
    """The schedule's local dates on or after ``start``, in order, without end."""
    if schedule.every == "day":
        day = start
        while True:
            yield day
            day += _ONE_DAY
    elif schedule.every == "week":
        assert schedule.weekday is not None  # checked in __post_init__
        day = start + timedelta(days=(schedule.weekday - start.weekday()) % 7)
        while True:
            yield day
            day += _ONE_WEEK
    elif schedule.every == "month":
        assert schedule.day is not None
        year, month = start.year, start.month
        while True:
            day = _clamped(year, month, schedule.day)
            if day >= start:
                yield day
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    else:
        assert schedule.month is not None and schedule.day is not None
        year = start.year
        while True:
            day = _clamped(year, schedule.month, schedule.day)
            if day >= start:
                yield day
            year += 1


def _clamped(year: int, month: int, day: int | Literal["last"]) -> date:
    """``day`` of the month, or its last day when the month is shorter (or day is "last")."""
    last = calendar.monthrange(year, month)[1]
    return date(year, month, last if day == "last" else min(day, last))


def _first_reading(wall: datetime, zone: tzinfo) -> Instant:
    """The first instant at which the zone's wall clock reads ``wall`` (naive) or later."""
    before = wall.replace(tzinfo=zone).utcoffset()  # fold=0: the offset before a transition
    after = wall.replace(tzinfo=zone, fold=1).utcoffset()
    if before is None or after is None:
        raise ValueError(f"time zone {zone!r} gives no UTC offset for {wall}")
    if before >= after:
        # An ordinary time (the two agree) or a repeated one (the clock went back):
        # the offset before the transition gives the first showing.
        return (wall - before - _NAIVE_EPOCH) // _MICROSECOND
    # A gap: the clock jumped from before `wall` to after it. At `wall - after` (UTC) it still
    # read earlier than `wall`, at `wall - before` it already read later; the jump is between.
    early = (wall - after - _NAIVE_EPOCH) // _SECOND
    late = (wall - before - _NAIVE_EPOCH) // _SECOND
    while late - early > 1:
        middle = (early + late) // 2
        if _wall_clock(middle * MICROS_PER_SECOND, zone) < wall:
            early = middle
        else:
            late = middle
    return late * MICROS_PER_SECOND


def _wall_clock(instant: Instant, zone: tzinfo) -> datetime:
    """What the zone's wall clock reads at ``instant``, as a naive datetime."""
    return (_EPOCH + timedelta(microseconds=instant)).astimezone(zone).replace(tzinfo=None)


def _problems(schedule: ResetSchedule) -> list[str]:
    """Every rule the schedule's fields break, as messages naming the field."""
    every = schedule.every
    if every not in _EVERY:
        return [f"every must be one of day, week, month, year, not {every!r}"]
    found = _at_problems(schedule.at)
    for name in ("weekday", "day", "month"):
        value = getattr(schedule, name)
        if name in _NEEDS[every] and value is None:
            found.append(f"every {every} needs {name}")
        elif name not in _NEEDS[every] and value is not None:
            found.append(f"every {every} takes no {name}, but {name} is {value!r}")
    if schedule.weekday is not None and not _whole_in(schedule.weekday, 0, 6):
        found.append(f"weekday must be 0..6 (0 = mon ... 6 = sun), not {schedule.weekday!r}")
    if schedule.day is not None and schedule.day != "last" and not _whole_in(schedule.day, 1, 31):
        found.append(f"day must be 1..31 or 'last', not {schedule.day!r}")
    if schedule.month is not None and not _whole_in(schedule.month, 1, 12):
        found.append(f"month must be 1..12, not {schedule.month!r}")
    return found


def _at_problems(at: object) -> list[str]:
    """What is wrong with an (hour, minute, second) triple, as messages naming the part."""
    if not (isinstance(at, tuple) and len(at) == 3 and all(_whole_in(v, 0, None) for v in at)):
        return [f"at must be (hour, minute, second) as whole numbers, not {at!r}"]
    found = []
    for name, value, high in zip(("hour", "minute", "second"), at, (23, 59, 59), strict=True):
        if value > high:
            found.append(f"at {name} must be 0..{high}, not {value}")
    return found


def _whole_in(value: object, low: int, high: int | None) -> bool:
    """An int (not a bool, which YAML gives for yes/no) within [low, high]."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and low <= value
        and (high is None or value <= high)
    )
