"""Interval records (docs/reference/export-formats.md): actual, estimated, lumped after a gap;
they add up."""

from __future__ import annotations

from gateway.core import Engine, IntervalLog, IntervalMark
from tests.helpers import at, rules

FIFTEEN = 15 * 60 * 1_000_000


def meter(start: str = "00:00:00") -> tuple[Engine, IntervalLog, list]:
    engine = Engine({"e": rules(scale=0.5, window="5min", slide="5min")}, at(start))
    log = IntervalLog({"e": FIFTEEN}, {"e": IntervalMark(at(start), 0, 0.0)})
    return engine, log, []


def advance(engine: Engine, log: IntervalLog, records: list, clock: str) -> None:
    records += log.observe(engine.advance(at(clock)), engine.channels)


def test_records_are_actual_estimated_and_lumped_as_hand_computed() -> None:
    """Per 15 min: pulses, consumption, average demand, and A/E as worked out by hand."""
    engine, log, records = meter()
    for clock, count in (("00:01:00", 10), ("00:07:00", 20), ("00:14:59", 30), ("00:16:00", 4)):
        advance(engine, log, records, clock)
        engine.pulses("e", at(clock), count)
    advance(engine, log, records, "00:20:00")
    engine.offline("e", at("00:20:00"))
    advance(engine, log, records, "00:25:00")
    engine.online("e", at("00:25:00"), 6)
    advance(engine, log, records, "00:31:00")
    engine.pulses("e", at("00:31:00"), 8)
    advance(engine, log, records, "00:46:00")
    engine.offline("e", at("00:46:00"))
    engine.skip_to(at("02:00:00"))  # the gateway was down: no readings, no records
    engine.online("e", at("02:00:00"), 100)
    advance(engine, log, records, "02:05:00")
    engine.pulses("e", at("02:05:00"), 2)
    advance(engine, log, records, "02:15:00")
    assert [
        (r.end, r.start, r.pulses, r.consumption, r.average_demand, r.estimated) for r in records
    ] == [
        (at("00:15:00"), at("00:00:00"), 60, 30.0, 120.0, False),
        (at("00:30:00"), at("00:15:00"), 10, 5.0, 20.0, True),  # outage 00:20-00:25
        (at("00:45:00"), at("00:30:00"), 8, 4.0, 16.0, False),
        # downtime 00:46-02:00: one lump from 00:45, over 90 minutes, estimated
        (at("02:15:00"), at("00:45:00"), 102, 51.0, 34.0, True),
    ]
    assert sum(r.consumption for r in records) == engine.channels["e"].consumption


def test_counting_that_begins_inside_an_interval_makes_it_estimated() -> None:
    """The first interval is E when the gateway started after its beginning."""
    engine, log, records = meter("00:05:00")
    engine.channels["e"].offline(at("00:05:00"))
    engine.channels["e"].online(at("00:05:00"))
    advance(engine, log, records, "00:30:00")
    assert [(r.end, r.estimated) for r in records] == [
        (at("00:15:00"), True),
        (at("00:30:00"), False),
    ]


def test_a_record_continues_from_a_saved_mark_after_a_restart() -> None:
    """With the last record's totals as the mark, the next record holds only the new pulses."""
    engine, _, records = meter()
    engine.pulses("e", at("00:01:00"), 40)
    log = IntervalLog({"e": FIFTEEN}, {"e": IntervalMark(at("00:00:00"), 30, 15.0)})
    advance(engine, log, records, "00:15:00")
    (record,) = records
    assert (record.pulses, record.consumption, record.pulses_total) == (10, 5.0, 40)


def test_an_outage_ending_exactly_at_an_interval_start_makes_that_interval_estimated() -> None:
    """Catch-up pulses at an interval's first instant make it E, never an actual peak."""
    engine = Engine({"e": rules(window="15min", slide="15min")}, at("00:00:00"))
    log = IntervalLog({"e": FIFTEEN}, {"e": IntervalMark(at("00:00:00"), 0, 0.0)})
    records: list = []
    engine.offline("e", at("00:10:00"))
    advance(engine, log, records, "00:30:00")
    engine.online("e", at("00:30:00"), 100)
    advance(engine, log, records, "00:31:00")
    engine.pulses("e", at("00:31:00"), 1)
    advance(engine, log, records, "01:00:00")
    assert [(r.end, r.pulses, r.estimated) for r in records] == [
        (at("00:15:00"), 0, True),
        (at("00:30:00"), 0, True),
        (at("00:45:00"), 101, True),  # the outage's 100 catch-up pulses are in here
        (at("01:00:00"), 0, False),
    ]


def test_interval_consumption_is_pulses_times_scale_without_float_residue() -> None:
    """With one scale factor, a record's consumption is exactly pulses x scale_factor."""
    engine = Engine({"e": rules(scale=0.01, window="15min", slide="15min")}, at("00:00:00"))
    log = IntervalLog({"e": FIFTEEN}, {"e": IntervalMark(at("00:00:00"), 0, 0.0)})
    records: list = []
    for minute in range(0, 45, 3):
        advance(engine, log, records, f"00:{minute:02d}:30")
        engine.pulses("e", at(f"00:{minute:02d}:30"), 608)
    advance(engine, log, records, "00:45:00")
    assert [r.consumption for r in records] == [5 * 608 * 0.01] * 3
