"""Scheduled resets and billing periods in the core: fed timestamps, never a clock."""

from __future__ import annotations

from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest

from gateway.core import (
    UNITS,
    ChannelRules,
    DemandError,
    Engine,
    Instant,
    Period,
    ResetAttempt,
    ResetSchedule,
    parse_duration,
    parse_instant,
)
from gateway.core.demand import NEVER

MIN = 60_000_000


def at(text: str) -> Instant:
    return parse_instant(text)


def rules(
    schedule: ResetSchedule | None = None, *, zone: str | None = None, **kw: object
) -> ChannelRules:
    base = ChannelRules(
        UNITS["kWh"],
        scale_factor=0.5,
        window=parse_duration("15min"),
        slide=parse_duration("5min"),
        reset_schedule=schedule,
        timezone=None if zone is None else ZoneInfo(zone),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


DAILY_6 = ResetSchedule("day", (6, 0, 0))
MONTHLY_LAST = ResetSchedule("month", (0, 0, 0), day="last")


def drive(engine: Engine, t: Instant) -> list[ResetAttempt]:
    """What the daemon and replay do: boundaries and scheduled resets in time order."""
    fired: list[ResetAttempt] = []
    while engine.next_fire <= t:
        engine.advance(engine.next_fire)
        fired += engine.fire()
    engine.advance(t)
    return fired


def steady(
    engine: Engine, channel: str, start: Instant, end: Instant, every: int = MIN
) -> list[ResetAttempt]:
    """One pulse per ``every`` from start to end (exclusive), scheduled resets in between."""
    fired: list[ResetAttempt] = []
    t = start
    while t < end:
        fired += drive(engine, t)
        engine.pulses(channel, t, 1)
        t += every
    return fired


def test_a_daily_schedule_resets_at_its_instant_and_closes_a_period() -> None:
    start = at("2026-03-01T00:00:00Z")
    engine = Engine({"m": rules(DAILY_6)}, start)
    assert engine.next_fire == at("2026-03-01T06:00:00Z")
    fired = steady(engine, "m", start, at("2026-03-02T07:00:00Z"))
    assert [f.outcome.time for f in fired] == [
        at("2026-03-01T06:00:00Z"),
        at("2026-03-02T06:00:00Z"),
    ]
    first = fired[0].outcome
    assert first.accepted and first.reason == "accepted"
    # 360 pulses of 0.5 kWh in the six hours before 06:00; steady 30 kW demand
    assert first.period == Period(
        start, at("2026-03-01T06:00:00Z"), 180.0, 30.0, at("2026-03-01T00:15:00Z")
    )
    second = fired[1].outcome.period
    assert second is not None
    assert second.start == at("2026-03-01T06:00:00Z")
    assert second.consumption == 24 * 60 * 0.5
    channel = engine.channels["m"]
    assert channel.previous_period == 24 * 60 * 0.5
    assert channel.period_consumption == 60 * 0.5  # 06:00 .. 07:00 on the 2nd
    assert channel.reset_count == 2
    assert engine.next_fire == at("2026-03-03T06:00:00Z")


def test_a_boundary_at_the_reset_instant_closes_before_the_reset() -> None:
    start = at("2026-03-01T05:00:00Z")
    engine = Engine({"m": rules(DAILY_6)}, start)
    steady(engine, "m", start, at("2026-03-01T06:00:00Z"))
    readings = engine.advance(at("2026-03-01T06:00:00Z"))
    assert [r.reading.reset_count for r in readings] == [0]  # the 06:00 row shows the old peak
    assert readings[0].reading.peak_demand == 30.0
    (fired,) = engine.fire()
    assert fired.outcome.before.peak_demand == 30.0
    assert engine.channels["m"].peak_demand == 0.0


def test_advance_and_events_refuse_to_pass_a_scheduled_reset() -> None:
    start = at("2026-03-01T00:00:00Z")
    engine = Engine({"m": rules(DAILY_6)}, start)
    drive(engine, at("2026-03-01T05:59:00Z"))
    with pytest.raises(DemandError, match="scheduled reset"):
        engine.advance(at("2026-03-01T06:00:01Z"))
    engine.advance(at("2026-03-01T06:00:00Z"))
    with pytest.raises(DemandError, match="scheduled reset"):
        engine.pulses("m", at("2026-03-01T06:00:00.5Z"), 1)
    engine.fire()
    engine.pulses("m", at("2026-03-01T06:00:00.5Z"), 1)


def test_a_scheduled_reset_at_the_same_instant_as_a_pulse_comes_first() -> None:
    start = at("2026-03-01T05:58:00Z")
    engine = Engine({"m": rules(DAILY_6)}, start)
    engine.pulses("m", start, 4)
    six = at("2026-03-01T06:00:00Z")
    (fired,) = drive(engine, six)
    engine.pulses("m", six, 2)  # the log's row at 06:00: after the reset
    assert fired.outcome.period is not None and fired.outcome.period.consumption == 2.0
    assert engine.channels["m"].period_consumption == 1.0


def test_the_lockout_refuses_a_scheduled_reset_and_the_schedule_moves_on() -> None:
    start = at("2026-03-01T00:00:00Z")
    engine = Engine({"m": rules(DAILY_6, reset_lockout=parse_duration("1h"))}, start)
    drive(engine, at("2026-03-01T05:30:00Z"))
    engine.reset("m", at("2026-03-01T05:30:00Z"))  # an operator, half an hour before
    (refused,) = drive(engine, at("2026-03-01T06:00:00Z"))
    assert not refused.outcome.accepted and refused.outcome.reason == "lockout"
    assert refused.outcome.period is None
    assert engine.channels["m"].reset_count == 1
    assert engine.next_fire == at("2026-03-02T06:00:00Z")


def test_a_period_without_valid_demand_has_no_peak() -> None:
    start = at("2026-03-01T05:50:00Z")
    engine = Engine({"m": rules(DAILY_6)}, start)
    engine.pulses("m", start, 10)
    (fired,) = drive(engine, at("2026-03-01T06:00:00Z"))  # the first window is never whole
    assert fired.outcome.period == Period(start, at("2026-03-01T06:00:00Z"), 5.0, None, None)


def test_month_end_and_new_york_dst_instants() -> None:
    start = at("2026-01-15T00:00:00Z")
    engine = Engine({"m": rules(MONTHLY_LAST, zone="America/New_York")}, start)
    fired = drive(engine, at("2026-04-15T00:00:00Z"))
    assert [f.outcome.time for f in fired] == [
        at("2026-01-31T05:00:00Z"),  # 00:00 EST on the 31st
        at("2026-02-28T05:00:00Z"),
        at("2026-03-31T04:00:00Z"),  # 00:00 EDT
    ]


def test_a_changed_schedule_counts_from_the_reload() -> None:
    start = at("2026-03-01T00:00:00Z")
    engine = Engine({"m": rules(DAILY_6)}, start)
    drive(engine, at("2026-03-01T07:00:00Z"))
    engine.update(at("2026-03-01T07:00:00Z"), {"m": rules(ResetSchedule("day", (5, 0, 0)))})
    assert engine.next_fire == at("2026-03-02T05:00:00Z")
    assert engine.channels["m"].reset_count == 1  # the 06:00 reset is kept
    engine.update(at("2026-03-01T07:00:00Z"), {"m": rules(None)})
    assert engine.next_fire == NEVER


def test_put_back_undoes_a_scheduled_reset_and_it_is_due_again() -> None:
    start = at("2026-03-01T00:00:00Z")
    engine = Engine({"m": rules(DAILY_6)}, start)
    drive(engine, at("2026-03-01T05:59:00Z"))
    engine.advance(engine.next_fire)
    before = engine.channels["m"].state()
    engine.fire()
    engine.put_back("m", before)
    assert engine.next_fire == at("2026-03-01T06:00:00Z")
    assert engine.channels["m"].reset_count == 0


def test_a_forward_gap_applies_its_scheduled_resets_each_at_its_instant() -> None:
    start = at("2026-03-01T00:00:00Z")
    engine = Engine({"a": rules(DAILY_6), "b": rules(None), "c": rules(DAILY_6)}, start)
    drive(engine, at("2026-03-01T01:00:00Z"))
    engine.offline_all(at("2026-03-01T01:00:00Z"))
    end = at("2026-03-04T01:00:00Z")
    with pytest.raises(DemandError, match="scheduled reset"):
        engine.skip_to(end)
    fired: list[ResetAttempt] = []
    while engine.next_fire <= end:
        engine.skip_to(engine.next_fire)
        fired += engine.fire()
    engine.skip_to(end)
    assert [(f.channel, f.outcome.time) for f in fired] == [
        ("a", at("2026-03-01T06:00:00Z")),
        ("c", at("2026-03-01T06:00:00Z")),
        ("a", at("2026-03-02T06:00:00Z")),
        ("c", at("2026-03-02T06:00:00Z")),
        ("a", at("2026-03-03T06:00:00Z")),
        ("c", at("2026-03-03T06:00:00Z")),
    ]
    assert engine.now == at("2026-03-04T01:00:00Z")


@pytest.mark.parametrize("missed", [0, 1, 3])
def test_resume_applies_each_missed_instant_once(missed: int) -> None:
    start = at("2026-03-01T00:00:00Z")
    engine = Engine({"m": rules(DAILY_6), "n": rules(None)}, start)
    steady(engine, "m", start, at("2026-03-01T05:00:00Z"))
    saved_at = at("2026-03-01T05:00:00Z")
    saved = {cid: (ch.rules, ch.state()) for cid, ch in engine.channels.items()}
    now = at("2026-03-01T05:30:00Z") + missed * 24 * 60 * MIN
    configured = {"m": rules(DAILY_6), "n": rules(None)}
    resumed = Engine.resume(configured, saved, saved_at, now)
    times = [f.outcome.time for f in resumed.missed]
    assert times == [at("2026-03-01T06:00:00Z") + i * 24 * 60 * MIN for i in range(missed)]
    assert all(f.channel == "m" and f.outcome.accepted for f in resumed.missed)
    channel = resumed.engine.channels["m"]
    assert channel.reset_count == missed
    if missed:
        first = resumed.missed[0].outcome.period
        assert first is not None and first.consumption == 5 * 60 * 0.5
        assert channel.previous_period == (150.0 if missed == 1 else 0.0)
        assert channel.previous_peak_demand == (30.0 if missed == 1 else 0.0)
    # resuming again from the state after them applies none twice
    again = {cid: (ch.rules, ch.state()) for cid, ch in resumed.engine.channels.items()}
    twice = Engine.resume(configured, again, now, now + MIN)
    assert twice.missed == []
    assert twice.engine.next_fire == resumed.engine.next_fire


def test_resume_gives_a_new_schedule_no_past_instants() -> None:
    start = at("2026-03-01T00:00:00Z")
    engine = Engine({"m": rules(None)}, start)
    drive(engine, at("2026-03-01T01:00:00Z"))
    saved = {"m": (engine.channels["m"].rules, engine.channels["m"].state())}
    now = at("2026-03-05T00:00:00Z")
    resumed = Engine.resume({"m": rules(DAILY_6)}, saved, at("2026-03-01T01:00:00Z"), now)
    assert resumed.missed == []
    assert resumed.engine.next_fire == at("2026-03-05T06:00:00Z")
