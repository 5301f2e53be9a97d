"""Durations and instants are read exactly, and refused clearly when they are ambiguous."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import (
    TimeSyntaxError,
    format_duration,
    format_instant,
    parse_duration,
    parse_instant,
)
from gateway.core.timeline import next_boundary_after


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("500ms", 500_000),
        ("10s", 10_000_000),
        ("5min", 300_000_000),
        ("1h", 3_600_000_000),
        ("1d", 86_400_000_000),
        ("1.5h", 5_400_000_000),
        ("0s", 0),
        (" 15min ", 900_000_000),
    ],
)
def test_durations_are_read_in_microseconds(text: str, micros: int) -> None:
    """Each unit of the config's duration syntax converts exactly."""
    assert parse_duration(text) == micros


@pytest.mark.parametrize(
    "bad", ["15", "", "min", "5 minutes", "-5min", "1.5", "0.0000001s", "5m", "1e3s"]
)
def test_bad_durations_are_refused_with_the_expected_form(bad: str) -> None:
    """A duration without a known unit is an error that shows the accepted form."""
    with pytest.raises(TimeSyntaxError, match="duration"):
        parse_duration(bad)


def test_a_bare_number_is_not_a_duration() -> None:
    """A YAML number (seconds or minutes?) is refused instead of guessed."""
    with pytest.raises(TimeSyntaxError, match="unit"):
        parse_duration(900)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**15))
def test_format_duration_round_trips(micros: int) -> None:
    """Every span prints as text that reads back to the same span."""
    assert parse_duration(format_duration(micros)) == micros


def test_instants_honour_zones_and_fractions() -> None:
    """Z, offsets and fractional seconds are exact to the microsecond."""
    base = parse_instant("2026-03-01T00:10:00Z")
    assert parse_instant("2026-03-01T01:10:00+01:00") == base
    assert base - parse_instant("2026-03-01T00:09:59.999Z") == 1_000
    assert format_instant(base) == "2026-03-01T00:10:00Z"


@pytest.mark.parametrize("bad", ["2026-03-01T00:10:00", "yesterday", "", "2026-13-01T00:00:00Z"])
def test_bad_instants_are_refused(bad: str) -> None:
    """A time without a zone, or not ISO 8601, is an error naming the text."""
    with pytest.raises(TimeSyntaxError):
        parse_instant(bad)


def test_boundaries_are_multiples_of_the_slide_since_the_epoch() -> None:
    """The next boundary is strictly after the instant, even when the instant is one."""
    five = parse_duration("5min")
    assert next_boundary_after(parse_instant("2026-01-01T00:00:00Z"), five) == parse_instant(
        "2026-01-01T00:05:00Z"
    )
    assert next_boundary_after(parse_instant("2026-01-01T00:04:59.999999Z"), five) == parse_instant(
        "2026-01-01T00:05:00Z"
    )
