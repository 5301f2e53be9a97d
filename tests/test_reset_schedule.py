"""Scheduled billing resets fire on the right local dates and times, across DST and short months."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import islice, pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.schedule import ResetSchedule, between, next_after, parse_at
from gateway.core.timeline import MICROS_PER_SECOND, Instant, parse_instant

SECOND = MICROS_PER_SECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at(text: str) -> Instant:
    return parse_instant(text)


def daily(hh_mm: str) -> ResetSchedule:
    return ResetSchedule("day", parse_at(hh_mm))


def wall_clock(instant: Instant, zone: tzinfo | None) -> datetime:
    """The naive local wall-clock reading at an instant (UTC when zone is None)."""
    moment = EPOCH + timedelta(microseconds=instant)
    return moment.astimezone(zone or UTC).replace(tzinfo=None)


# -- parse_at ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("06:00", (6, 0, 0)),
        ("00:00", (0, 0, 0)),
        ("23:59", (23, 59, 0)),
        ("23:59:59", (23, 59, 59)),
        ("06:00:30", (6, 0, 30)),
        (" 06:15 ", (6, 15, 0)),
    ],
)
def test_parse_at_reads_hours_minutes_and_optional_seconds(
    text: str, expected: tuple[int, int, int]
) -> None:
    """HH:MM and HH:MM:SS read as (hour, minute, second)."""
    assert parse_at(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("24:00", "hour"),
        ("23:60", "minute"),
        ("23:59:60", "second"),
        ("6:00", "HH:MM"),
        ("0600", "HH:MM"),
        ("06:00:00:00", "HH:MM"),
        ("", "HH:MM"),
        ("noon", "HH:MM"),
        ("\u0660\u0666:\u0660\u0660", "HH:MM"),  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_parse_at_refuses_times_outside_the_day_and_other_forms(text: str, match: str) -> None:
    """24:00, minute 60, second 60 and any other shape are refused with what was expected."""
    with pytest.raises(ValueError, match=match):
        parse_at(text)


def test_parse_at_refuses_a_number_and_says_to_quote_it() -> None:
    """An unquoted YAML 06:00 (a base-60 number, 360) is refused with a hint to quote it."""
    with pytest.raises(ValueError, match="quote"):
        parse_at(360)  # type: ignore[arg-type]


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"every": "hour"}, "every"),
        ({"every": "day", "weekday": 0}, "weekday"),
        ({"every": "day", "day": 1}, "day"),
        ({"every": "day", "month": 1}, "month"),
        ({"every": "week"}, "weekday"),
        ({"every": "week", "weekday": 7}, "weekday"),
        ({"every": "week", "weekday": -1}, "weekday"),
        ({"every": "week", "weekday": True}, "weekday"),
        ({"every": "week", "weekday": 0, "day": 1}, "day"),
        ({"every": "month"}, "day"),
        ({"every": "month", "day": 0}, "day"),
        ({"every": "month", "day": 32}, "day"),
        ({"every": "month", "day": "first"}, "day"),
        ({"every": "month", "day": 1, "month": 1}, "month"),
        ({"every": "month", "day": 1, "weekday": 0}, "weekday"),
        ({"every": "year", "day": 1}, "month"),
        ({"every": "year", "month": 1}, "day"),
        ({"every": "year", "month": 0, "day": 1}, "month"),
        ({"every": "year", "month": 13, "day": 1}, "month"),
        ({"every": "year", "month": 2, "day": 32}, "day"),
        ({"every": "day", "at": (24, 0, 0)}, "at hour"),
        ({"every": "day", "at": (0, 60, 0)}, "at minute"),
        ({"every": "day", "at": (0, 0, 60)}, "at second"),
        ({"every": "day", "at": (-1, 0, 0)}, "at must be"),
        ({"every": "day", "at": (6, 0)}, "at must be"),
        ({"every": "day", "at": "06:00"}, "at must be"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    """Each wrong, missing or extra field is a ValueError whose message names that field."""
    fields = {"at": (0, 0, 0), **fields}
    with pytest.raises(ValueError, match=field):
        ResetSchedule(**fields)


def test_every_problem_is_reported_at_once() -> None:
    """A schedule with several bad fields names all of them in one error."""
    with pytest.raises(ValueError) as error:
        ResetSchedule("month", (25, 0, 0), weekday=3, day=40)
    message = str(error.value)
    assert "hour" in message and "weekday" in message and "day must be" in message


def test_well_formed_schedules_are_accepted() -> None:
    """Each kind with its own fields, including day 31 and 'last', is a valid schedule."""
    ResetSchedule("day", (23, 59, 59))
    ResetSchedule("week", (0, 0, 0), weekday=6)
    ResetSchedule("month", (0, 0, 0), day=31)
    ResetSchedule("month", (0, 0, 0), day="last")
    ResetSchedule("year", (0, 0, 0), month=2, day=29)
    ResetSchedule("year", (0, 0, 0), month=12, day="last")


# -- each kind, in UTC ---------------------------------------------------------------------------


def test_daily_fires_every_day_at_its_time_in_utc_by_default() -> None:
    """With no zone a daily schedule fires at its time in UTC, today if still ahead."""
    schedule = daily("06:00")
    assert next_after(schedule, None, at("2026-01-05T00:00:00Z")) == at("2026-01-05T06:00:00Z")
    assert next_after(schedule, None, at("2026-01-05T07:00:00Z")) == at("2026-01-06T06:00:00Z")
    assert next_after(schedule, None, at("2026-12-31T23:00:00Z")) == at("2027-01-01T06:00:00Z")


def test_seconds_of_the_at_time_are_honoured() -> None:
    """at 06:00:30 fires 30 seconds after 06:00, exactly."""
    schedule = ResetSchedule("day", (6, 0, 30))
    assert next_after(schedule, None, at("2026-01-05T06:00:00Z")) == at("2026-01-05T06:00:30Z")


def test_weekly_fires_on_its_weekday() -> None:
    """A Monday schedule fires on the next Monday; on a Monday before its time, that day."""
    schedule = ResetSchedule("week", (0, 0, 0), weekday=0)
    wednesday = at("2026-01-07T12:00:00Z")
    assert next_after(schedule, None, wednesday) == at("2026-01-12T00:00:00Z")
    sunday_schedule = ResetSchedule("week", (8, 0, 0), weekday=6)
    sunday_early = at("2026-01-11T07:00:00Z")
    assert next_after(sunday_schedule, None, sunday_early) == at("2026-01-11T08:00:00Z")
    fires = list(between(schedule, None, at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z")))
    assert fires == [at(f"2026-01-{d:02}T00:00:00Z") for d in (5, 12, 19, 26)]


def test_monthly_fires_on_its_day_each_month() -> None:
    """A monthly day-1 schedule fires on the 1st of every month, across the year's end."""
    schedule = ResetSchedule("month", (0, 0, 0), day=1)
    fires = list(between(schedule, None, at("2026-10-15T00:00:00Z"), at("2027-02-15T00:00:00Z")))
    assert fires == [
        at("2026-11-01T00:00:00Z"),
        at("2026-12-01T00:00:00Z"),
        at("2027-01-01T00:00:00Z"),
        at("2027-02-01T00:00:00Z"),
    ]


def test_yearly_fires_on_its_month_and_day_each_year() -> None:
    """A yearly 1 January schedule fires once a year, on 1 January."""
    schedule = ResetSchedule("year", (0, 0, 0), month=1, day=1)
    assert next_after(schedule, None, at("2026-01-01T00:00:00Z")) == at("2027-01-01T00:00:00Z")
    fires = list(between(schedule, None, at("2025-06-01T00:00:00Z"), at("2028-06-01T00:00:00Z")))
    assert fires == [at(f"{year}-01-01T00:00:00Z") for year in (2026, 2027, 2028)]


# -- short months --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "year", "fires_on"),
    [
        (29, 2028, 29),
        (30, 2028, 29),
        (31, 2028, 29),
        ("last", 2028, 29),
        (28, 2028, 28),
        (29, 2026, 28),
        (30, 2026, 28),
        (31, 2027, 28),
        ("last", 2026, 28),
        ("last", 2027, 28),
    ],
)
def test_a_day_past_februarys_end_fires_on_its_last_day(
    day: int | Literal["last"], year: int, fires_on: int
) -> None:
    """Day 29, 30, 31 and 'last' fire on 28 or 29 February, then on the day itself in March."""
    schedule = ResetSchedule("month", (0, 0, 0), day=day)
    start = at(f"{year}-02-01T00:00:00Z")
    february = next_after(schedule, None, start)
    assert february == at(f"{year}-02-{fires_on}T00:00:00Z")
    march_day = 31 if day == "last" else day
    assert next_after(schedule, None, february) == at(f"{year}-03-{march_day}T00:00:00Z")


def test_day_31_fires_on_april_30_then_may_31() -> None:
    """A 31st-of-the-month schedule fires on 30 April, then on 31 May."""
    schedule = ResetSchedule("month", (0, 0, 0), day=31)
    fires = list(between(schedule, None, at("2026-04-01T00:00:00Z"), at("2026-06-01T00:00:00Z")))
    assert fires == [at("2026-04-30T00:00:00Z"), at("2026-05-31T00:00:00Z")]


def test_yearly_february_29_fires_on_the_28th_outside_leap_years() -> None:
    """A yearly 29 February fires on 28 February in 2026 and 2027 and on the 29th in 2028."""
    schedule = ResetSchedule("year", (0, 0, 0), month=2, day=29)
    fires = list(between(schedule, None, at("2026-01-01T00:00:00Z"), at("2028-12-31T00:00:00Z")))
    assert fires == [
        at("2026-02-28T00:00:00Z"),
        at("2027-02-28T00:00:00Z"),
        at("2028-02-29T00:00:00Z"),
    ]


def test_yearly_last_day_of_a_month() -> None:
    """A yearly 'last' day of February fires on the 28th or the 29th as the year has."""
    schedule = ResetSchedule("year", (12, 0, 0), month=2, day="last")
    assert next_after(schedule, None, at("2027-03-01T00:00:00Z")) == at("2028-02-29T12:00:00Z")


# -- daylight saving -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "zone", "t", "expected"),
    [
        # New York springs forward 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 is never shown.
        (daily("02:30"), NEW_YORK, "2026-03-08T00:00:00Z", "2026-03-08T07:00:00Z"),
        (daily("02:00"), NEW_YORK, "2026-03-08T00:00:00Z", "2026-03-08T07:00:00Z"),
        (daily("03:00"), NEW_YORK, "2026-03-08T00:00:00Z", "2026-03-08T07:00:00Z"),
        (daily("01:59"), NEW_YORK, "2026-03-08T00:00:00Z", "2026-03-08T06:59:00Z"),
        # Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST.
        (daily("02:30"), BERLIN, "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z"),
        # Lord Howe springs forward half an hour: 2026-10-04 02:00 -> 02:30 (+10:30 -> +11).
        (daily("02:15"), LORD_HOWE, "2026-10-03T12:00:00Z", "2026-10-03T15:30:00Z"),
        (
            ResetSchedule("month", (2, 30, 0), day=8),
            NEW_YORK,
            "2026-02-20T00:00:00Z",
            "2026-03-08T07:00:00Z",
        ),
        (
            ResetSchedule("month", (2, 30, 0), day=29),
            BERLIN,
            "2026-03-01T00:00:00Z",
            "2026-03-29T01:00:00Z",
        ),
        (
            ResetSchedule("week", (2, 30, 0), weekday=6),
            NEW_YORK,
            "2026-03-02T00:00:00Z",
            "2026-03-08T07:00:00Z",
        ),
        (
            ResetSchedule("week", (2, 30, 0), weekday=6),
            BERLIN,
            "2026-03-23T00:00:00Z",
            "2026-03-29T01:00:00Z",
        ),
        (
            ResetSchedule("year", (2, 30, 0), month=3, day=8),
            NEW_YORK,
            "2026-01-01T00:00:00Z",
            "2026-03-08T07:00:00Z",
        ),
    ],
)
def test_a_time_in_the_spring_gap_fires_when_the_clock_jumps(
    schedule: ResetSchedule, zone: ZoneInfo, t: str, expected: str
) -> None:
    """A wall time skipped by the spring change fires at the jump, the first instant after it."""
    assert next_after(schedule, zone, at(t)) == at(expected)


@pytest.mark.parametrize(
    ("schedule", "zone", "t", "expected"),
    [
        # New York falls back 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 is shown twice.
        (daily("01:30"), NEW_YORK, "2026-11-01T00:00:00Z", "2026-11-01T05:30:00Z"),
        # Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 is shown twice.
        (daily("02:30"), BERLIN, "2026-10-24T12:00:00Z", "2026-10-25T00:30:00Z"),
        # Lord Howe falls back 2026-04-05 02:00 -> 01:30 (+11 -> +10:30).
        (daily("01:45"), LORD_HOWE, "2026-04-04T12:00:00Z", "2026-04-04T14:45:00Z"),
        (
            ResetSchedule("month", (1, 30, 0), day=1),
            NEW_YORK,
            "2026-10-15T00:00:00Z",
            "2026-11-01T05:30:00Z",
        ),
        (
            ResetSchedule("month", (2, 30, 0), day=25),
            BERLIN,
            "2026-10-01T00:00:00Z",
            "2026-10-25T00:30:00Z",
        ),
        (
            ResetSchedule("week", (1, 30, 0), weekday=6),
            NEW_YORK,
            "2026-10-26T00:00:00Z",
            "2026-11-01T05:30:00Z",
        ),
        (
            ResetSchedule("week", (2, 30, 0), weekday=6),
            BERLIN,
            "2026-10-19T00:00:00Z",
            "2026-10-25T00:30:00Z",
        ),
    ],
)
def test_a_repeated_time_fires_at_its_first_showing(
    schedule: ResetSchedule, zone: ZoneInfo, t: str, expected: str
) -> None:
    """A wall time shown twice by the autumn change fires at its first showing (fold=0)."""
    assert next_after(schedule, zone, at(t)) == at(expected)


def test_a_repeated_time_fires_once_for_its_date() -> None:
    """A repeated time fires at its first showing only; the next fire is the next day's."""
    schedule = daily("01:30")
    fires = list(
        between(schedule, NEW_YORK, at("2026-10-31T00:00:00Z"), at("2026-11-03T00:00:00Z"))
    )
    assert fires == [
        at("2026-10-31T05:30:00Z"),  # 01:30 EDT
        at("2026-11-01T05:30:00Z"),  # 01:30 EDT, the first of two
        at("2026-11-02T06:30:00Z"),  # 01:30 EST
    ]
    second_showing = at("2026-11-01T06:30:00Z")
    assert next_after(schedule, NEW_YORK, second_showing - 1) == at("2026-11-02T06:30:00Z")


def test_daily_across_the_new_york_gap_keeps_one_fire_per_day() -> None:
    """A daily 02:30 in New York fires on each day around the spring change, at the jump on it."""
    fires = list(
        between(daily("02:30"), NEW_YORK, at("2026-03-07T00:00:00Z"), at("2026-03-10T00:00:00Z"))
    )
    assert fires == [
        at("2026-03-07T07:30:00Z"),  # 02:30 EST
        at("2026-03-08T07:00:00Z"),  # the jump to 03:00 EDT
        at("2026-03-09T06:30:00Z"),  # 02:30 EDT
    ]


def test_a_day_long_gap_does_not_fire_twice_at_one_instant() -> None:
    """Samoa skipped 2011-12-30: its midnight and the next one's fire once, not twice at once."""
    apia = ZoneInfo("Pacific/Apia")
    fires = list(
        between(daily("00:00"), apia, at("2011-12-28T00:00:00Z"), at("2012-01-01T09:00:00Z"))
    )
    assert fires == [
        at("2011-12-28T10:00:00Z"),  # 28 Dec 00:00 -10:00
        at("2011-12-29T10:00:00Z"),  # 29 Dec 00:00 -10:00
        at("2011-12-30T10:00:00Z"),  # 31 Dec 00:00 +14:00, which 30 Dec's midnight also maps to
        at("2011-12-31T10:00:00Z"),  # 1 Jan 00:00 +14:00
    ]


def test_fixed_offset_zones_and_half_hour_zones_have_no_surprises() -> None:
    """Asia/Kolkata (+05:30, no DST) fires 5.5 hours before the same wall time in UTC."""
    kolkata = ZoneInfo("Asia/Kolkata")
    assert next_after(daily("06:00"), kolkata, at("2026-06-01T00:00:00Z")) == at(
        "2026-06-01T00:30:00Z"
    )


# -- strictly after, half-open -------------------------------------------------------------------


def test_next_after_a_scheduled_instant_is_the_following_one() -> None:
    """At exactly a fire next_after gives the following one; a microsecond before, that fire."""
    schedule = daily("06:00")
    fire = at("2026-01-05T06:00:00Z")
    assert next_after(schedule, None, fire) == at("2026-01-06T06:00:00Z")
    assert next_after(schedule, None, fire - 1) == fire
    assert isinstance(next_after(schedule, None, fire - 1), int)


def test_between_is_open_at_after_and_closed_at_until() -> None:
    """between yields fires in (after, until]: one at `after` is left out, one at `until` kept."""
    schedule = daily("06:00")
    first, second, third = (at(f"2026-01-0{d}T06:00:00Z") for d in (5, 6, 7))
    assert list(between(schedule, None, first, third)) == [second, third]
    assert list(between(schedule, None, first - 1, third - 1)) == [first, second]
    assert list(between(schedule, None, first, first)) == []
    assert list(between(schedule, None, third, first)) == []


def test_between_is_lazy() -> None:
    """between over millennia gives its first fires at once: nothing is built up front."""
    schedule = daily("06:00")
    fires = between(schedule, None, at("2026-01-01T00:00:00Z"), at("9999-01-01T00:00:00Z"))
    assert list(islice(fires, 2)) == [at("2026-01-01T06:00:00Z"), at("2026-01-02T06:00:00Z")]


def test_consecutive_between_calls_miss_and_repeat_nothing() -> None:
    """Split at any instant, two between calls give exactly the fires of one."""
    schedule = ResetSchedule("week", (2, 30, 0), weekday=6)
    start, middle, end = (
        at("2026-01-01T00:00:00Z"),
        at("2026-03-08T07:00:00Z"),
        at("2027-01-01T00:00:00Z"),
    )
    whole = list(between(schedule, NEW_YORK, start, end))
    assert (
        list(between(schedule, NEW_YORK, start, middle))
        + list(between(schedule, NEW_YORK, middle, end))
        == whole
    )
    assert len(whole) == 52


# -- properties ----------------------------------------------------------------------------------

ZONE_NAMES = [
    None,
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
]
FROM = at("2000-01-01T00:00:00Z")
TO = at("2100-01-01T00:00:00Z")
DAY = 24 * HOUR


def at_times() -> st.SearchStrategy[tuple[int, int, int]]:
    # Hours 0-3 are drawn often: that is where the DST changes of these zones fall.
    hours = st.one_of(st.integers(0, 3), st.integers(0, 23))
    minutes = st.one_of(st.sampled_from([0, 15, 30, 45]), st.integers(0, 59))
    return st.tuples(hours, minutes, st.sampled_from([0, 0, 0, 30, 59]))


days = st.one_of(st.integers(1, 31), st.sampled_from([28, 29, 30, 31, "last"]))

schedules = st.one_of(
    st.builds(ResetSchedule, st.just("day"), at_times()),
    st.builds(ResetSchedule, st.just("week"), at_times(), weekday=st.integers(0, 6)),
    st.builds(ResetSchedule, st.just("month"), at_times(), day=days),
    st.builds(ResetSchedule, st.just("year"), at_times(), month=st.integers(1, 12), day=days),
)
zones = st.sampled_from(ZONE_NAMES).map(lambda name: None if name is None else ZoneInfo(name))


@st.composite
def instants(draw: st.DrawFn) -> Instant:
    """Any instant of the century, or one in a month where these zones change their clocks."""
    if draw(st.booleans()):
        return draw(st.integers(FROM, TO))
    month = draw(st.sampled_from([3, 4, 9, 10, 11]))
    start = at(f"{draw(st.integers(2000, 2099))}-{month:02}-01T00:00:00Z")
    return start + draw(st.integers(0, 31 * DAY))


def scheduled_wall(schedule: ResetSchedule, fired: datetime) -> datetime:
    """The wall time the schedule asks for on the local date a fire landed on."""
    hour, minute, second = schedule.at
    day = fired.day
    if schedule.day is not None:
        last = calendar.monthrange(fired.year, fired.month)[1]
        day = last if schedule.day == "last" else min(schedule.day, last)
    return datetime(fired.year, fired.month, day, hour, minute, second)


def assert_fires_as_scheduled(schedule: ResetSchedule, zone: tzinfo | None, fire: Instant) -> None:
    """A fire is on a scheduled local date, at the first instant the clock reads `at` or later."""
    fired = wall_clock(fire, zone)
    wanted = scheduled_wall(schedule, fired)
    assert fired.date() == wanted.date()
    if schedule.weekday is not None:
        assert fired.weekday() == schedule.weekday
    if schedule.month is not None:
        assert fired.month == schedule.month
    # At the wanted time, or just after a gap the wanted time fell into.
    assert fired >= wanted
    if fired != wanted:
        assert wall_clock(fire - 1, zone) < wanted
        assert fired - wanted <= timedelta(hours=1)
    # The first showing: the clock read earlier than `wanted` over the hours before the fire
    # (a second showing of a repeated time would have the clock reading `wanted` an hour ago).
    for back in (1, SECOND, 15 * MINUTE, 30 * MINUTE, HOUR, 90 * MINUTE, 2 * HOUR):
        assert wall_clock(fire - back, zone) < wanted


@settings(max_examples=300, deadline=None)
@given(schedules, zones, instants())
def test_next_after_is_strictly_after_and_fires_as_scheduled(
    schedule: ResetSchedule, zone: ZoneInfo | None, t: Instant
) -> None:
    """next_after(t) > t, lands as scheduled, and is also what any instant just before it gets."""
    fire = next_after(schedule, zone, t)
    assert fire > t
    assert_fires_as_scheduled(schedule, zone, fire)
    assert next_after(schedule, zone, fire - 1) == fire
    assert next_after(schedule, zone, fire) > fire


@settings(max_examples=200, deadline=None)
@given(schedules, zones, instants(), st.integers(0, 400 * DAY))
def test_between_is_next_after_repeated_and_strictly_increasing(
    schedule: ResetSchedule, zone: ZoneInfo | None, after: Instant, span: int
) -> None:
    """between(a, b) is next_after iterated from a while <= b: increasing, all as scheduled."""
    until = after + span
    fires = list(between(schedule, zone, after, until))
    expected = []
    fire = next_after(schedule, zone, after)
    while fire <= until:
        expected.append(fire)
        fire = next_after(schedule, zone, fire)
    assert fires == expected
    assert all(a < b for a, b in pairwise(fires))
    assert all(after < fire <= until for fire in fires)
    for fire in fires:
        assert_fires_as_scheduled(schedule, zone, fire)


@settings(max_examples=150, deadline=None)
@given(at_times(), zones, instants())
def test_daily_fires_are_a_day_apart_give_or_take_a_dst_change(
    at_time: tuple[int, int, int], zone: ZoneInfo | None, after: Instant
) -> None:
    """Daily fires fall on consecutive local dates 24 h apart, give or take the zone's DST shift."""
    # The shift is an hour in New York and Berlin, half an hour on Lord Howe, none in UTC/Kolkata.
    schedule = ResetSchedule("day", at_time)
    fires = list(between(schedule, zone, after, after + 200 * DAY))
    name = getattr(zone, "key", "UTC")
    slack = {"Australia/Lord_Howe": 30 * MINUTE, "UTC": 0, "Asia/Kolkata": 0}.get(name, HOUR)
    for fire in fires:
        assert_fires_as_scheduled(schedule, zone, fire)
    for earlier, later in pairwise(fires):
        assert DAY - slack <= later - earlier <= DAY + slack
        gap = wall_clock(later, zone).date() - wall_clock(earlier, zone).date()
        assert gap == timedelta(days=1)


@settings(max_examples=150, deadline=None)
@given(at_times(), days, zones, instants())
def test_monthly_fires_once_in_every_month(
    at_time: tuple[int, int, int], day: int | Literal["last"], zone: ZoneInfo | None, after: Instant
) -> None:
    """Consecutive monthly fires fall in consecutive local months, none skipped, none doubled."""
    schedule = ResetSchedule("month", at_time, day=day)
    fires = [wall_clock(f, zone) for f in between(schedule, zone, after, after + 800 * DAY)]
    assert len(fires) >= 25
    for earlier, later in pairwise(fires):
        assert (later.year * 12 + later.month) - (earlier.year * 12 + earlier.month) == 1


@pytest.mark.parametrize("zone", [NEW_YORK, BERLIN, LORD_HOWE], ids=lambda zone: zone.key)
def test_every_quarter_hour_around_the_changes_fires_as_scheduled(zone: ZoneInfo) -> None:
    """Schedules at each quarter hour 00:00-03:45 fire as scheduled through 2026's DST changes."""
    # The 2026 changes of these zones all fall on a Sunday between 01:00 and 03:00 local time.
    # 2026: New York 8 Mar and 1 Nov, Berlin 29 Mar and 25 Oct, Lord Howe 5 Apr and 4 Oct.
    change_days = [1, 4, 5, 8, 25, 29]
    start, end = at("2025-12-31T00:00:00Z"), at("2027-01-02T00:00:00Z")
    for minutes in range(0, 4 * 60, 15):
        at_time = (minutes // 60, minutes % 60, 0)
        kinds = [ResetSchedule("day", at_time), ResetSchedule("week", at_time, weekday=6)]
        kinds += [ResetSchedule("month", at_time, day=day) for day in change_days]
        for schedule in kinds:
            fires = list(between(schedule, zone, start, end))
            assert all(a < b for a, b in pairwise(fires))
            for fire in fires:
                assert_fires_as_scheduled(schedule, zone, fire)
