"""Invariants of the demand rules over random event logs (hypothesis).

The strongest one compares the O(1) engine with a naive reading of the demand rules
(docs/reference/demand-rules.md) written here from scratch: for each boundary it scans the whole
log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import UNITS, ChannelRules, Engine, Reading
from gateway.core.timeline import MICROS_PER_SECOND, next_boundary_after
from tests.helpers import outage_spans

SECOND = MICROS_PER_SECOND
START = 1_767_225_600 * SECOND  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Event:
    t: int
    kind: str  # pulses, reset, offline, online
    n: int = 0


@st.composite
def channel_rules(draw: st.DrawFn) -> ChannelRules:
    slide = draw(st.sampled_from([1, 2, 3, 60])) * 60 * SECOND // draw(st.sampled_from([1, 60]))
    slide = max(slide, SECOND)
    return ChannelRules(
        unit=UNITS[draw(st.sampled_from(sorted(UNITS)))],
        scale_factor=draw(st.sampled_from([1.0, 0.5, 2.0, 0.1, 10.0, 1 / 3])),
        window=slide * draw(st.integers(1, 4)),
        slide=slide,
        initial_reading=draw(st.sampled_from([0.0, 1000.0, 0.25])),
        reset_lockout=draw(st.sampled_from([0, 60 * SECOND, 300 * SECOND])),
    )


@st.composite
def event_logs(draw: st.DrawFn, with_outages: bool = True) -> list[Event]:
    kinds = ["pulses"] * 6 + ["reset"] + (["offline", "online"] if with_outages else [])
    t = START
    events = []
    for _ in range(draw(st.integers(0, 60))):
        t += draw(
            st.sampled_from(
                [0, 1, 500_000, SECOND, 7 * SECOND, 59 * SECOND, 60 * SECOND, 150 * SECOND]
            )
        )
        kind = draw(st.sampled_from(kinds))
        n = (
            draw(st.integers(1, 30))
            if kind == "pulses"
            else draw(st.integers(0, 40))
            if kind == "online"
            else 0
        )
        events.append(Event(t, kind, n))
    return events


def run(rules: ChannelRules, events: list[Event], end_pad: int = 400 * SECOND) -> list[Reading]:
    engine = Engine({"c": rules}, START)
    readings = []
    for event in events:
        readings += [r.reading for r in engine.advance(event.t)]
        if event.kind == "pulses":
            engine.pulses("c", event.t, event.n)
        elif event.kind == "reset":
            engine.reset("c", event.t)
        elif event.kind == "offline":
            engine.offline("c", event.t)
        else:
            engine.online("c", event.t, event.n)
    end = (events[-1].t if events else START) + end_pad
    readings += [r.reading for r in engine.advance(end)]
    return readings


def reference(
    rules: ChannelRules, events: list[Event], end_pad: int = 400 * SECOND
) -> list[Reading]:
    """The demand rules read literally, scanning the whole log at every boundary."""
    end = (events[-1].t if events else START) + end_pad
    window_seconds = rules.window / SECOND
    peak = previous = cumulative = 0.0
    resets = 0
    last_reset = None
    done = 0  # events applied so far (those with t < b at boundary b)
    out = []
    b = next_boundary_after(START, rules.slide)
    while b <= end:
        while done < len(events) and events[done].t < b:
            event = events[done]
            if event.kind == "reset" and (
                last_reset is None or event.t - last_reset >= rules.reset_lockout
            ):
                previous, cumulative, peak, resets, last_reset = (
                    peak,
                    cumulative + peak,
                    0.0,
                    resets + 1,
                    event.t,
                )
            done += 1
        seen = events[:done]
        total = sum(e.n for e in seen if e.kind in ("pulses", "online"))
        # outages as [off, on) with on = None while still offline; online instants void windows
        outages = outage_spans(seen)
        lo = b - rules.window
        valid = lo >= START and not any(o < b and (on is None or on > lo) for o, on in outages)
        demand = None
        if valid:
            in_window = sum(e.n for e in seen if e.kind == "pulses" and lo <= e.t < b)
            demand = in_window * rules.scale_factor * rules.unit.units_scale / window_seconds
            if demand > peak:
                peak = demand
        consumption = rules.initial_reading + total * rules.scale_factor
        out.append(Reading(b, total, consumption, demand, peak, previous, cumulative, resets))
        b += rules.slide
    return out


def same(a: list[Reading], b: list[Reading]) -> bool:
    def close(x: float | None, y: float | None) -> bool:
        if x is None or y is None:
            return x is y
        return math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12)

    return len(a) == len(b) and all(
        (p.time, p.pulses_total, p.reset_count) == (q.time, q.pulses_total, q.reset_count)
        and all(
            close(getattr(p, f), getattr(q, f))
            for f in (
                "consumption",
                "demand",
                "peak_demand",
                "previous_peak_demand",
                "cumulative_demand",
            )
        )
        for p, q in zip(a, b, strict=False)
    )


@settings(max_examples=300, deadline=None)
@given(channel_rules(), event_logs())
def test_engine_matches_a_naive_reading_of_the_rules(
    rules: ChannelRules, events: list[Event]
) -> None:
    """Every reading equals the one a full scan of the log gives."""
    assert same(run(rules, events), reference(rules, events))


@settings(max_examples=200, deadline=None)
@given(channel_rules(), event_logs())
def test_batched_pulses_equal_pulses_one_by_one(rules: ChannelRules, events: list[Event]) -> None:
    """N pulses at t give the same readings as N single pulses at t."""
    single = [Event(e.t, "pulses", 1) for e in events if e.kind == "pulses" for _ in range(e.n)]
    batched = [e for e in events if e.kind == "pulses"]
    assert run(rules, batched) == run(rules, single)


@settings(max_examples=200, deadline=None)
@given(channel_rules(), event_logs())
def test_demand_times_window_is_the_pulses_in_the_window(
    rules: ChannelRules, events: list[Event]
) -> None:
    """demand(b) * W / units_Scale == pulses in [b-W, b) * scale_factor."""
    for reading in run(rules, events):
        if reading.demand is None:
            continue
        pulses = sum(
            e.n
            for e in events
            if e.kind == "pulses" and reading.time - rules.window <= e.t < reading.time
        )
        assert math.isclose(
            reading.demand * (rules.window / SECOND) / rules.unit.units_scale,
            pulses * rules.scale_factor,
            rel_tol=1e-12,
            abs_tol=1e-12,
        )


@settings(max_examples=200, deadline=None)
@given(channel_rules(), event_logs())
def test_peak_bounds_every_valid_demand_since_the_last_reset(
    rules: ChannelRules, events: list[Event]
) -> None:
    """peak >= every valid demand since the last reset, and equals one of them (or 0)."""
    since_reset: list[float] = []
    count = 0
    for reading in run(rules, events):
        if reading.reset_count != count:
            since_reset, count = [], reading.reset_count
            # resets between boundaries: the peak restarted from 0 before this reading
        if reading.demand is not None:
            since_reset.append(reading.demand)
        assert all(reading.peak_demand >= d for d in since_reset)
        assert reading.peak_demand in [*since_reset, 0.0]


@settings(max_examples=200, deadline=None)
@given(channel_rules(), event_logs())
def test_cumulative_is_the_sum_of_previous_peaks_and_consumption_never_decreases(
    rules: ChannelRules, events: list[Event]
) -> None:
    """cumulative == sum of peaks stored at accepted resets; consumption is monotonic."""
    engine = Engine({"c": rules}, START)
    stored = 0.0
    consumption = -math.inf
    for event in events:
        for item in engine.advance(event.t):
            assert item.reading.consumption >= consumption
            consumption = item.reading.consumption
        if event.kind == "reset":
            outcome = engine.reset("c", event.t)
            if outcome.accepted:
                stored += outcome.after.previous_peak_demand
                assert outcome.after.previous_peak_demand == outcome.before.peak_demand
            assert math.isclose(engine.channels["c"].cumulative_demand, stored, abs_tol=1e-9)
        elif event.kind == "pulses":
            engine.pulses("c", event.t, event.n)


@settings(max_examples=200, deadline=None)
@given(
    channel_rules(),
    event_logs(with_outages=False),
    st.integers(0, 60 * 60),
    st.integers(0, 60 * 60),
    st.integers(0, 10_000),
)
def test_an_outage_never_raises_a_peak(
    rules: ChannelRules, events: list[Event], offset: int, length: int, catch_up: int
) -> None:
    """Adding an outage (with any catch-up) to a log never makes any peak larger."""
    off = START + offset * SECOND
    on = off + length * SECOND
    with_outage = sorted(
        [*events, Event(off, "offline"), Event(on, "online", catch_up)],
        key=lambda e: (e.t, e.kind == "online"),
    )
    plain, outaged = run(rules, events), run(rules, with_outage)
    plain_by_time = {r.time: r for r in plain}
    for reading in outaged:
        if reading.time in plain_by_time:
            assert reading.peak_demand <= plain_by_time[reading.time].peak_demand
            assert reading.cumulative_demand <= plain_by_time[reading.time].cumulative_demand + 1e-9
