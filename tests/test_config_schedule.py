"""``reset_schedule`` in the config: the gateway's default, a channel's own, ``none``, and every
mistake a technician can make with it, each named with its place."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from gateway.config import ConfigError, parse_config
from gateway.core import ResetSchedule
from tests.test_config import VALID, broken, problems

GATEWAY_LINE = "  timezone: UTC\n"  # line 4; a default schedule goes on line 5


def with_default(schedule: str) -> str:
    return broken((GATEWAY_LINE, f"  timezone: Europe/Berlin\n  reset_schedule: {schedule}\n"))


def on_gas(schedule: str) -> str:
    """The gas channel (line 23) with a schedule right after its id (line 24)."""
    return broken(("  - id: gas\n", f"  - id: gas\n    reset_schedule: {schedule}\n"))


def test_the_default_applies_to_every_channel_on_the_gateway_clock() -> None:
    config = parse_config(
        with_default('{every: month, day: 1, at: "00:00"}'), "site.yaml", purpose="run"
    )
    schedule = ResetSchedule("month", (0, 0, 0), day=1)
    assert config.gateway.reset_schedule == schedule
    for channel in config.channels:
        assert channel.rules.reset_schedule == schedule
        assert channel.rules.timezone == ZoneInfo("Europe/Berlin")


def test_a_channel_s_own_schedule_wins_and_none_opts_out() -> None:
    text = with_default('{every: month, day: last, at: "00:00"}')
    text = text.replace("  - id: gas\n", "  - id: gas\n    reset_schedule: none\n")
    text = text.replace(
        "  - id: water\n",
        '  - id: water\n    reset_schedule: {every: week, weekday: mon, at: "06:30:15"}\n',
    )
    rules = parse_config(text, "site.yaml", purpose="run").rules()
    assert rules["elec"].reset_schedule == ResetSchedule("month", (0, 0, 0), day="last")
    assert rules["gas"].reset_schedule is None and rules["gas"].timezone is None
    assert rules["water"].reset_schedule == ResetSchedule("week", (6, 30, 15), weekday=0)


def test_without_any_schedule_channels_reset_only_on_request() -> None:
    config = parse_config(VALID, "site.yaml", purpose="run")
    assert config.gateway.reset_schedule is None
    assert all(c.rules.reset_schedule is None for c in config.channels)


def test_an_unquoted_time_yaml_reads_as_text_is_taken() -> None:
    """YAML 1.1 reads 06:30 (a leading 0) as text and 12:30 as a number: the first is fine."""
    config = parse_config(on_gas("{every: day, at: 06:30}"), "site.yaml", purpose="run")
    assert config.rules()["gas"].reset_schedule == ResetSchedule("day", (6, 30, 0))


def test_a_yearly_schedule_and_replay_reads_the_default_too() -> None:
    text = (
        "gateway:\n  timezone: America/New_York\n"
        '  reset_schedule: {every: year, month: 2, day: 29, at: "01:30"}\n'
        "channels:\n  - {id: a, unit: kWh, scale_factor: 1, demand_window: 2min,"
        " demand_slide: 1min}\n"
    )
    config = parse_config(text, "replay.yaml", purpose="replay")
    rules = config.rules()["a"]
    assert rules.reset_schedule == ResetSchedule("year", (1, 30, 0), day=29, month=2)
    assert rules.timezone == ZoneInfo("America/New_York")


# (config text, line, column, key path, message fragment)
BAD = [
    pytest.param(
        with_default('{every: montly, day: 1, at: "00:00"}'),
        5,
        27,
        "gateway.reset_schedule.every",
        "did you mean 'month'?",
        id="every-typo",
    ),
    pytest.param(
        on_gas('{every: month, day: 0, at: "00:00"}'),
        24,
        41,
        "channels[1].reset_schedule.day",
        "day must be 1..31 or last",
        id="day-0",
    ),
    pytest.param(
        on_gas('{every: month, day: 32, at: "00:00"}'),
        24,
        41,
        "channels[1].reset_schedule.day",
        "a day past a month's end",
        id="day-32",
    ),
    pytest.param(
        on_gas('{every: week, weekday: mnday, at: "00:00"}'),
        24,
        44,
        "channels[1].reset_schedule.weekday",
        "did you mean 'mon'?",
        id="weekday-typo",
    ),
    pytest.param(
        on_gas('{every: day, at: "24:00"}'),
        24,
        38,
        "channels[1].reset_schedule.at",
        "cannot read at '24:00'",
        id="at-24",
    ),
    pytest.param(
        on_gas("{every: day, at: 12:30}"),
        24,
        38,
        "channels[1].reset_schedule.at",
        "quote the time",
        id="at-unquoted",
    ),
    pytest.param(
        on_gas('{every: day, at: "6 am"}'),
        24,
        38,
        "channels[1].reset_schedule.at",
        "expected HH:MM",
        id="at-words",
    ),
    pytest.param(
        on_gas("{every: day}"),
        24,
        21,
        "channels[1].reset_schedule.at",
        "required key is missing",
        id="no-at",
    ),
    pytest.param(
        on_gas('{at: "00:00"}'),
        24,
        21,
        "channels[1].reset_schedule.every",
        "required key is missing",
        id="no-every",
    ),
    pytest.param(
        on_gas('{every: day, weekday: mon, at: "00:00"}'),
        24,
        43,
        "channels[1].reset_schedule.weekday",
        "every day takes no weekday",
        id="weekday-on-daily",
    ),
    pytest.param(
        on_gas('{every: month, at: "00:00"}'),
        24,
        21,
        "channels[1].reset_schedule.day",
        "required key is missing for every month",
        id="month-without-day",
    ),
    pytest.param(
        on_gas('{every: year, month: 13, day: 1, at: "00:00"}'),
        24,
        42,
        "channels[1].reset_schedule.month",
        "between 1 and 12",
        id="month-13",
    ),
    pytest.param(
        on_gas("never"),
        24,
        21,
        "channels[1].reset_schedule",
        "or none",
        id="scalar-not-none",
    ),
    pytest.param(
        on_gas('{every: day, at: "00:00", hour: 3}'),
        24,
        47,
        "channels[1].reset_schedule.hour",
        "unknown key",
        id="unknown-key",
    ),
    pytest.param(
        on_gas('{every: none, at: "00:00"}'),
        24,
        29,
        "channels[1].reset_schedule.every",
        "is not one of",
        id="every-none",
    ),
    pytest.param(
        with_default("none"),
        5,
        19,
        "gateway.reset_schedule",
        "none is for a channel's opt-out",
        id="default-none",
    ),
]


@pytest.mark.parametrize(("text", "line", "column", "path", "message"), BAD)
def test_a_bad_schedule_is_named_with_its_place(
    text: str, line: int, column: int, path: str, message: str
) -> None:
    found = problems(text)
    expected = f"site.yaml:{line}:{column}: {path}: "
    assert any(p.startswith(expected) and message in p for p in found), found


def test_replay_reports_a_bad_default_schedule_too() -> None:
    text = (
        "gateway:\n  reset_schedule: {every: dayly, at: '00:00'}\n"
        "channels:\n  - {id: a, unit: kWh, scale_factor: 1, demand_window: 2min,"
        " demand_slide: 1min}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "r.yaml", purpose="replay")
    (problem,) = caught.value.problems
    assert str(problem).startswith("r.yaml:2:27: gateway.reset_schedule.every: ")
    assert "did you mean 'day'?" in str(problem)
