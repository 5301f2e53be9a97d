"""Virtual channels in the core: the coincident demand of several physical channels (terms).

Each pulse of a term contributes +scale_factor (added) or -scale_factor (subtracted) of that
term; a virtual channel's demand is the window's sum of contributions over its own W and S,
valid when no term's outage touches the window (docs/reference/demand-rules.md, "Virtual
channels"). The hypothesis tests compare the engine with a naive recomputation from the terms'
pulses; the golden cases are worked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import (
    UNITS,
    Channel,
    ChannelReading,
    ChannelRules,
    DemandError,
    Engine,
    Instant,
    Reading,
    ResetSchedule,
    format_instant,
)
from gateway.core.intervals import IntervalLog, IntervalMark
from gateway.core.timeline import MICROS_PER_SECOND, next_boundary_after
from tests.helpers import at, outage_spans

SECOND = MICROS_PER_SECOND
MINUTE = 60 * SECOND
START = 1_767_225_600 * SECOND  # 2026-01-01T00:00:00Z


def virtual(
    *terms: tuple[str, int],
    unit: str = "kWh",
    window: int = 10 * MINUTE,
    slide: int = 5 * MINUTE,
    initial: float = 0.0,
    lockout: int = 0,
) -> ChannelRules:
    """A virtual channel's rules (its own scale_factor is not used: 1.0 by convention)."""
    return ChannelRules(UNITS[unit], 1.0, window, slide, initial, lockout, terms=terms)


def physical(scale: float, window: int = 10 * MINUTE, slide: int = 5 * MINUTE) -> ChannelRules:
    return ChannelRules(UNITS["kWh"], scale, window, slide)


class Run:
    """An engine driven event by event from wall-clock strings, keeping every reading."""

    def __init__(self, config: dict[str, ChannelRules], start: str = "00:00:00") -> None:
        self.engine = Engine(config, at(start))
        self.readings: list[ChannelReading] = []

    def to(self, clock: str) -> Instant:
        """Close the boundaries up to ``clock`` (as the engine needs before an event there)."""
        t = at(clock)
        self.readings += self.engine.advance(t)
        return t

    def pulses(self, clock: str, channel: str, count: int) -> None:
        self.engine.pulses(channel, self.to(clock), count)

    def offline(self, clock: str, channel: str) -> None:
        self.engine.offline(channel, self.to(clock))

    def online(self, clock: str, channel: str, catch_up: int = 0) -> None:
        self.engine.online(channel, self.to(clock), catch_up)

    def rows(self, channel: str) -> dict[str, Reading]:
        """The channel's readings by boundary, as HH:MM."""
        return {
            format_instant(r.reading.time)[11:16]: r.reading
            for r in self.readings
            if r.channel == channel
        }

    def demand(self, channel: str) -> dict[str, float | None]:
        return {clock: r.demand for clock, r in self.rows(channel).items()}


# -- golden cases, worked by hand -----------------------------------------------------------


def test_a_site_total_over_three_feeders_with_an_outage_on_one() -> None:
    """Feeders of 0.5, 1 and 0.25 kWh per pulse summed into one site (kWh, W = 10 min,
    S = 5 min: demand = kWh in the window x 3600 / 600 = x 6).

    | boundary | window          | what the site shows                                        |
    | 00:05    | [23:55, 00:05)  | nothing: counting began at 00:00                           |
    | 00:10    | [00:00, 00:10)  | f1 (4 + 2) x 0.5 + f2 3 x 1 + f3 8 x 0.25 = 8 kWh: 48 kW    |
    | 00:15-20 |                 | nothing: f2 is offline from 00:12 (f1 and f3 still valid)  |
    | 00:25-30 | starts < 00:21  | nothing: f2 came back at 00:21 (its 5 catch-up pulses      |
    |          |                 | count in consumption only)                                 |
    | 00:35    | [00:25, 00:35)  | f1 2 x 0.5 + f3 4 x 0.25 = 2 kWh: 12 kW                    |
    """
    run = Run(
        {
            "f1": physical(0.5),
            "f2": physical(1.0),
            "f3": physical(0.25),
            "site": virtual(("f1", 1), ("f2", 1), ("f3", 1), initial=100.0),
        }
    )
    run.pulses("00:01:00", "f1", 4)
    run.pulses("00:02:00", "f2", 3)
    run.pulses("00:06:00", "f3", 8)
    run.pulses("00:09:00", "f1", 2)
    run.offline("00:12:00", "f2")
    run.pulses("00:13:00", "f1", 6)  # timed: in f1's windows, and in the site's invalid ones
    run.online("00:21:00", "f2", 5)
    run.pulses("00:26:00", "f1", 2)
    run.pulses("00:32:00", "f3", 4)
    run.to("00:35:00")

    assert run.demand("site") == {
        "00:05": None,
        "00:10": 48.0,
        "00:15": None,
        "00:20": None,
        "00:25": None,
        "00:30": None,
        "00:35": 12.0,
    }
    site = run.rows("site")
    assert [r.peak_demand for r in site.values()] == [0.0, 48.0, 48.0, 48.0, 48.0, 48.0, 48.0]
    # 100 + f1 14 x 0.5 + f2 (3 + 5 catch-up) x 1 + f3 12 x 0.25
    assert site["00:35"].consumption == 100.0 + 7.0 + 8.0 + 3.0
    assert all(r.pulses_total is None for r in site.values())
    # the feeder that stayed online shows its demand while the site cannot: 8 x 0.5 x 6
    assert run.demand("f1")["00:15"] == 24.0 and run.demand("f1")["00:20"] == 18.0


def test_a_net_of_load_minus_generation_goes_negative_and_never_sets_a_peak() -> None:
    """load (0.5 kWh per pulse) minus pv (0.25 kWh per pulse), W = S = 15 min (x 4 to kW).

    | interval        | load      | pv        | net     | demand | peak      |
    | [00:00, 00:15)  | 6: 3 kWh  | 4: 1 kWh  |  2 kWh  |   8 kW | 8         |
    | [00:15, 00:30)  | 2: 1 kWh  | 16: 4 kWh | -3 kWh  | -12 kW | 8         |
    | [00:30, 00:45)  |           | 4: 1 kWh  | -1 kWh  |  -4 kW | 0 (reset) |
    """
    run = Run(
        {
            "load": physical(0.5, 15 * MINUTE, 15 * MINUTE),
            "pv": physical(0.25, 15 * MINUTE, 15 * MINUTE),
            "net": virtual(
                ("load", 1), ("pv", -1), window=15 * MINUTE, slide=15 * MINUTE, initial=50.0
            ),
        }
    )
    run.pulses("00:03:00", "load", 6)
    run.pulses("00:04:00", "pv", 4)
    run.pulses("00:16:00", "load", 2)
    run.pulses("00:20:00", "pv", 16)
    run.engine.reset("net", run.to("00:31:00"))
    run.pulses("00:31:00", "pv", 4)
    run.to("00:45:00")

    net = run.rows("net")
    assert [(r.demand, r.peak_demand) for r in net.values()] == [
        (8.0, 8.0),
        (-12.0, 8.0),
        (-4.0, 0.0),
    ]
    assert [r.consumption for r in net.values()] == [52.0, 49.0, 48.0]
    last = net["00:45"]
    assert (last.previous_peak_demand, last.cumulative_demand, last.reset_count) == (8.0, 8.0, 1)


def test_resetting_a_term_leaves_the_total_alone_and_reset_all_resets_both() -> None:
    run = Run({"a": physical(1.0), "b": physical(1.0), "total": virtual(("a", 1), ("b", 1))})
    run.pulses("00:01:00", "a", 10)  # [00:00, 00:10): a 10 kWh, 60 kW
    run.pulses("00:02:00", "b", 5)  # b 5 kWh, 30 kW; the total 90 kW
    engine, total = run.engine, run.engine.channels["total"]
    assert engine.reset("a", run.to("00:10:00")).accepted
    assert engine.channels["a"].peak_demand == 0.0
    assert (total.peak_demand, total.reset_count, total.cumulative_demand) == (90.0, 0, 0.0)

    engine.reset("total", run.to("00:11:00"))  # and the reverse: the terms keep their peaks
    assert (engine.channels["b"].peak_demand, total.peak_demand) == (30.0, 0.0)

    outcomes = engine.reset_all(run.to("00:12:00"))
    assert set(outcomes) == {"a", "b", "total"} and all(o.accepted for o in outcomes.values())
    assert (engine.channels["b"].reset_count, total.reset_count) == (1, 2)
    assert total.cumulative_demand == 90.0  # 90, then 0


# -- the engine's wiring ----------------------------------------------------------------------


def test_a_virtual_channel_takes_no_events_of_its_own() -> None:
    engine = Engine({"a": physical(1.0), "v": virtual(("a", 1)), "x": physical(1.0)}, START)
    for call in (
        lambda: engine.pulses("v", START, 1),
        lambda: engine.offline("v", START),
        lambda: engine.online("v", START),
    ):
        with pytest.raises(DemandError, match="virtual"):
            call()
    assert engine.channels["v"].state() == Channel(virtual(("a", 1)), START, (1.0,)).state()
    # replay feeds pulses through the engine to a term (and to a virtual channel, which refuses
    # them); any other channel's go straight to it
    assert engine.feeds["x"] == engine.channels["x"].pulses
    with pytest.raises(DemandError, match="virtual"):
        engine.feeds["v"](START, 1)
    engine.feeds["a"](START, 3)
    assert engine.channels["v"].consumption == 3.0


def test_the_engine_says_which_channels_a_pulse_changes() -> None:
    """A term's pulse changes the term and each virtual channel over it, in config order; a
    reload that drops a virtual channel drops it from the answer."""
    rules = {
        "a": physical(1.0),
        "b": physical(1.0),
        "v": virtual(("a", 1), ("b", -1)),
        "w": virtual(("a", 1)),
    }
    engine = Engine(rules, START)
    assert engine.touched("a") == ("a", "v", "w")
    assert engine.touched("b") == ("b", "v")
    assert engine.touched("v") == ("v",) and engine.touched("nope") == ()
    engine.update(START, {k: r for k, r in rules.items() if k != "v"})
    assert engine.touched("a") == ("a", "w") and engine.touched("b") == ("b",)


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        ({"v": virtual(("a", 1))}, "'a' is not a channel"),
        ({"a": physical(1.0), "v": virtual(("a", 1)), "w": virtual(("v", 1))}, "physical"),
        ({"a": physical(1.0), "v": virtual(("v", 1))}, "physical"),
    ],
)
def test_terms_are_physical_channels_of_the_same_engine(
    channels: dict[str, ChannelRules], message: str
) -> None:
    with pytest.raises(DemandError, match=message):
        Engine(channels, START)
    engine = Engine({"a": physical(1.0)}, START)
    with pytest.raises(DemandError, match=message):
        engine.update(START, channels)
    assert list(engine.channels) == ["a"]  # a refused reload changes nothing


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ((("a", 1), ("a", -1)), "each term once"),
        ((("a", 2),), "added"),
        ((("", 1),), "channel ids"),
    ],
)
def test_a_term_list_is_checked_with_the_rules(
    terms: tuple[tuple[str, int], ...], message: str
) -> None:
    with pytest.raises(DemandError, match=message):
        virtual(*terms)


def test_a_virtual_channel_needs_its_factors_and_refuses_a_scale_change() -> None:
    with pytest.raises(DemandError, match="factor"):
        Channel(virtual(("a", 1), ("b", -1)), START)
    with pytest.raises(DemandError, match="2 term factors"):
        Channel(virtual(("a", 1), ("b", -1)), START, (1.0,))
    with pytest.raises(DemandError, match="non-zero"):
        Channel(virtual(("a", 1)), START, (0.0,))
    channel = Channel(virtual(("a", 1), ("b", -1)), START, (0.5, -2.0))
    assert channel.factors == (0.5, -2.0)
    with pytest.raises(DemandError, match="change_factors"):
        channel.change_scale(START, 2.0)
    with pytest.raises(DemandError, match="no term 2"):
        channel.pulses(START, 1, term=2)


def test_a_terms_new_scale_factor_on_reload_is_a_factor_change_of_the_virtual_channel() -> None:
    """Consumption goes on from the value it had; windows that mix the factors are invalid."""
    config = {"a": physical(1.0), "b": physical(1.0), "v": virtual(("a", 1), ("b", -1))}
    run = Run(config)
    run.pulses("00:01:00", "a", 10)
    run.pulses("00:02:00", "b", 4)
    v = run.engine.channels["v"]
    run.engine.update(run.to("00:12:00"), {**config, "b": physical(0.5)})
    assert v.factors == (1.0, -0.5) and v.consumption == 6.0 and v.valid_from == at("00:12:00")
    run.pulses("00:13:00", "b", 4)  # now -0.5 kWh each
    run.to("00:25:00")
    assert run.demand("v") == {
        "00:05": None,
        "00:10": 36.0,  # (10 - 4) x 6: the peak, kept through the reload
        "00:15": None,  # [00:05, 00:15) mixes the two factors
        "00:20": None,
        "00:25": 0.0,
    }
    assert run.rows("v")["00:25"].consumption == 4.0 and v.peak_demand == 36.0


def test_a_new_term_list_starts_a_new_window_and_keeps_peaks_and_consumption() -> None:
    config = {"a": physical(1.0), "b": physical(2.0), "v": virtual(("a", 1), initial=10.0)}
    run = Run(config)
    run.pulses("00:01:00", "a", 5)  # [00:00, 00:10): 30 kW
    run.engine.reset("v", run.to("00:10:00"))
    run.pulses("00:11:00", "a", 3)  # [00:05, 00:15): 18 kW
    run.to("00:16:00")
    v = run.engine.channels["v"]
    before = (v.peak_demand, v.previous_peak_demand, v.cumulative_demand, v.reset_count)
    assert before == (18.0, 30.0, 30.0, 1) and v.consumption == 18.0

    run.engine.update(at("00:16:00"), {**config, "v": virtual(("a", 1), ("b", 1), initial=10.0)})
    assert run.engine.channels["v"] is v and v.factors == (1.0, 2.0)
    assert (v.peak_demand, v.previous_peak_demand, v.cumulative_demand, v.reset_count) == before
    assert v.consumption == 18.0 and v.next_boundary == at("00:20:00")
    run.pulses("00:17:00", "b", 1)
    run.pulses("00:20:00", "a", 1)
    run.pulses("00:25:00", "b", 2)
    run.to("00:30:00")
    after = {clock: d for clock, d in run.demand("v").items() if clock >= "00:20"}
    assert after == {"00:20": None, "00:25": None, "00:30": (1 + 4) * 6.0}
    assert run.rows("v")["00:30"].consumption == 18.0 + 2.0 + 1.0 + 4.0
    run.engine.feeds["b"](at("00:30:00"), 1)  # the new term's pulses reach the virtual channel
    assert run.engine.channels["v"].consumption == 25.0 + 2.0


def test_a_virtual_channel_added_by_a_reload_follows_its_terms_outages() -> None:
    """Over running terms it counts from the reload; over an offline one it waits for it."""
    config = {"a": physical(1.0), "b": physical(1.0)}
    run = Run(config)
    run.offline("00:01:00", "b")
    run.engine.update(
        run.to("00:02:00"),
        {**config, "va": virtual(("a", 1)), "vb": virtual(("a", 1), ("b", 1))},
    )
    va, vb = run.engine.channels["va"], run.engine.channels["vb"]
    assert va.is_online and va.valid_from == at("00:02:00")
    assert not vb.is_online and vb.term_online(0) and not vb.term_online(1)
    run.pulses("00:06:00", "a", 1)
    run.online("00:15:00", "b", 7)
    assert vb.is_online and vb.consumption == 1.0 + 7.0
    run.to("00:25:00")
    assert list(run.demand("va").values()) == [None, None, 6.0, 0.0, 0.0]  # 00:05 .. 00:25
    assert list(run.demand("vb").values()) == [None, None, None, None, 0.0]


def test_every_channel_goes_offline_together_and_skips_a_gap() -> None:
    engine = Engine({"a": physical(1.0), "v": virtual(("a", 1))}, at("00:00:00"))
    engine.offline_all(at("00:01:00"))
    assert not engine.channels["v"].is_online
    engine.skip_to(at("05:00:00"))
    assert engine.channels["v"].next_boundary == at("05:05:00")
    engine.online("a", at("05:00:00"))
    assert engine.channels["v"].is_online


def test_a_virtual_channels_interval_records_carry_consumption_and_no_pulses() -> None:
    run = Run({"a": physical(0.5), "v": virtual(("a", -1))})
    log = IntervalLog(
        {"a": 15 * MINUTE, "v": 15 * MINUTE},
        {c: IntervalMark(at("00:00:00"), 0, 0.0) for c in ("a", "v")},
    )
    run.pulses("00:01:00", "a", 4)
    readings = run.engine.advance(at("00:15:00"))
    records = {r.channel: r for r in log.observe(readings, run.engine.channels)}
    assert (records["a"].pulses, records["a"].consumption) == (4, 2.0)
    assert (records["v"].pulses, records["v"].pulses_total) == (None, None)
    assert (records["v"].consumption, records["v"].average_demand) == (-2.0, -8.0)
    assert not records["v"].estimated


def test_replay_writes_an_empty_pulses_total_for_a_virtual_channel() -> None:
    from gateway.replay import _Writer

    run = Run({"a": physical(1.0), "v": virtual(("a", 1))})
    run.pulses("00:01:00", "a", 2)
    lines: list[str] = []
    writer = _Writer(lines.append, None, None)  # type: ignore[arg-type]  # no records: no config
    writer(run.engine.advance(at("00:05:00")))
    assert [line.split(",")[1:3] for line in lines] == [["a", "2"], ["v", ""]]


# -- properties over random logs --------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    t: int
    kind: str  # pulses, offline, online (on a term), reset (on the virtual channel or a term)
    channel: str
    n: int = 0


TERMS = ("a", "b", "c")
FACTORS = [0.1, 0.5, 1.0, 2.0, 10.0, 0.001, 1 / 3]


@st.composite
def slides(draw: st.DrawFn) -> tuple[int, int]:
    slide = draw(st.sampled_from([1, 2, 5, 15])) * MINUTE
    return slide * draw(st.integers(1, 3)), slide


@st.composite
def setups(draw: st.DrawFn) -> dict[str, ChannelRules]:
    """Three physical terms and a virtual channel over some of them, each on its own W/S."""
    config: dict[str, ChannelRules] = {}
    for term in TERMS:
        window, slide = draw(slides())
        config[term] = physical(draw(st.sampled_from(FACTORS)), window, slide)
    chosen = draw(st.lists(st.sampled_from(TERMS), min_size=1, max_size=3, unique=True))
    signs = [draw(st.sampled_from([1, -1])) for _ in chosen]
    window, slide = draw(slides())
    config["v"] = virtual(
        *zip(chosen, signs, strict=True),
        window=window,
        slide=slide,
        initial=draw(st.sampled_from([0.0, 1000.0, 0.25])),
        lockout=draw(st.sampled_from([0, 10 * MINUTE])),
    )
    return config


@st.composite
def logs(draw: st.DrawFn, channels: tuple[str, ...] = TERMS) -> list[Event]:
    kinds = ["pulses"] * 8 + ["offline", "online", "reset"]
    t = START
    events = []
    for _ in range(draw(st.integers(0, 50))):
        t += draw(st.sampled_from([0, 1, SECOND, 30 * SECOND, MINUTE, 4 * MINUTE, 11 * MINUTE]))
        kind = draw(st.sampled_from(kinds))
        channel = draw(st.sampled_from([*channels, "v"] if kind == "reset" else channels))
        n = draw(st.integers(1, 30)) if kind == "pulses" else 0
        if kind == "online":
            n = draw(st.integers(0, 40))
        events.append(Event(t, kind, channel, n))
    return events


def drive(
    engine: Engine, events: list[Event], end: int, on_time: object = None
) -> dict[str, list[Reading]]:
    readings: dict[str, list[Reading]] = {c: [] for c in engine.channels}
    for event in events:
        for item in engine.advance(event.t):
            readings[item.channel].append(item.reading)
        if callable(on_time):
            on_time(event.t)
        if event.kind == "pulses":
            engine.pulses(event.channel, event.t, event.n)
        elif event.kind == "offline":
            engine.offline(event.channel, event.t)
        elif event.kind == "online":
            engine.online(event.channel, event.t, event.n)
        else:
            engine.reset(event.channel, event.t)
    for item in engine.advance(end):
        readings[item.channel].append(item.reading)
    return readings


def naive(config: dict[str, ChannelRules], events: list[Event], end: int) -> list[Reading]:
    """The virtual channel's rows read literally from the terms' log, scanning it at every
    boundary: counts per term in the window times the signed factors, in term order."""
    rules = config["v"]
    factors = [sign * config[term].scale_factor for term, sign in rules.terms]
    peak = previous = cumulative = 0.0
    resets, last_reset = 0, None
    out: list[tuple[int, float, float | None]] = []
    b = next_boundary_after(START, rules.slide)
    while b <= end:
        seen = [e for e in events if e.t < b]
        lo = b - rules.window
        valid = lo >= START
        consumption = rules.initial_reading
        contribution = 0.0
        for k, (term, _) in enumerate(rules.terms):
            mine = [e for e in seen if e.channel == term]
            outages = outage_spans(mine)
            if any(o < b and (on is None or on > lo) for o, on in outages):
                valid = False
            total = sum(e.n for e in mine if e.kind in ("pulses", "online"))
            in_window = sum(e.n for e in mine if e.kind == "pulses" and lo <= e.t < b)
            consumption += total * factors[k]
            contribution += in_window * factors[k]  # 0.0 + x is x: the engine's order
        out.append((b, consumption, contribution if valid else None))
        b += rules.slide
    # the reset-controlled values, boundary by boundary, from the resets before each boundary
    readings = []
    done = 0
    virtual_resets = [e for e in events if e.kind == "reset" and e.channel == "v"]
    for b, consumption, window_sum in out:
        while done < len(virtual_resets) and virtual_resets[done].t < b:
            t = virtual_resets[done].t
            if last_reset is None or t - last_reset >= rules.reset_lockout:
                previous, cumulative, peak = peak, cumulative + peak, 0.0
                resets, last_reset = resets + 1, t
            done += 1
        demand = None
        if window_sum is not None:
            demand = window_sum * rules.unit.units_scale / (rules.window / SECOND)
            if demand > peak:
                peak = demand
        readings.append(Reading(b, None, consumption, demand, peak, previous, cumulative, resets))
    return readings


def end_of(events: list[Event]) -> int:
    return (events[-1].t if events else START) + 40 * MINUTE


@settings(max_examples=300, deadline=None)
@given(setups(), logs())
def test_virtual_readings_equal_a_naive_recomputation_from_the_terms(
    config: dict[str, ChannelRules], events: list[Event]
) -> None:
    """Every row of the virtual channel, to the bit: the window's counts per term times the
    signed factors, valid when no term's outage touches the window, peaks since reset."""
    end = end_of(events)
    got = drive(Engine(config, START), events, end)["v"]
    assert got == naive(config, events, end)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0.1, 0.5, 10.0, 0.001, 1 / 3, 0.3, 7.0]),
    st.sampled_from([0.1, 0.5, 10.0, 0.001, 2.5]),
    slides(),
    st.sampled_from([0.0, 1000.0, 0.1]),
    logs(channels=("a",)),
    st.integers(0, 50),
)
def test_a_virtual_channel_over_one_added_term_is_that_channel_to_the_bit(
    scale: float,
    new_scale: float,
    window_slide: tuple[int, int],
    initial: float,
    events: list[Event],
    reload_at: int,
) -> None:
    """Demand, consumption, peaks and projected demand equal the term's exactly, through
    outages, catch-up, resets of both and a reload that changes the term's scale factor."""
    window, slide = window_slide
    term = replace(physical(scale, window, slide), initial_reading=initial)
    config = {"a": term, "v": virtual(("a", 1), window=window, slide=slide, initial=initial)}
    engine = Engine(config, START)
    resets = [replace(e, kind="reset_all") for e in events if e.kind == "reset"]
    plain = [e for e in events if e.kind != "reset"]
    merged = sorted(plain + resets, key=lambda e: e.t)
    reload_time = merged[reload_at].t if reload_at < len(merged) else None
    seen: dict[str, list[Reading]] = {"a": [], "v": []}
    projected: list[tuple[float | None, float | None]] = []
    for event in merged:
        for item in engine.advance(event.t):
            seen[item.channel].append(item.reading)
        if event.t == reload_time:
            engine.update(event.t, {**config, "a": replace(term, scale_factor=new_scale)})
            reload_time = None
        a, v = engine.channels["a"], engine.channels["v"]
        projected.append((a.projected(event.t), v.projected(event.t)))
        if event.kind == "pulses":
            engine.pulses("a", event.t, event.n)
        elif event.kind == "offline":
            engine.offline("a", event.t)
        elif event.kind == "online":
            engine.online("a", event.t, event.n)
        else:
            engine.reset_all(event.t)
    for item in engine.advance(end_of(events)):
        seen[item.channel].append(item.reading)
    assert [replace(r, pulses_total=None) for r in seen["a"]] == seen["v"]
    assert all(x == y for x, y in projected)
    a, v = engine.channels["a"], engine.channels["v"]
    assert (a.consumption, a.period_consumption, a.peak_time) == (
        v.consumption,
        v.period_consumption,
        v.peak_time,
    )


@settings(max_examples=200, deadline=None)
@given(setups(), logs())
def test_the_coincident_peak_is_at_most_the_sum_of_the_terms_peaks(
    config: dict[str, ChannelRules], events: list[Event]
) -> None:
    """With every term added, on the virtual channel's W and S, and no resets: a valid window
    of the sum is a valid window of every term, so its demand is the sum of theirs."""
    v = config["v"]
    config = {t: replace(r, window=v.window, slide=v.slide) for t, r in config.items()}
    config["v"] = replace(v, terms=tuple((term, 1) for term, _ in v.terms))
    events = [e for e in events if e.kind != "reset"]
    drive(engine := Engine(config, START), events, end_of(events))
    peaks = sum(engine.channels[term].peak_demand for term, _ in config["v"].terms)
    assert engine.channels["v"].peak_demand <= peaks * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(setups(), logs(), st.integers(0, 50))
def test_a_virtual_channel_restored_from_its_state_goes_on_exactly(
    config: dict[str, ChannelRules], events: list[Event], split: int
) -> None:
    """state() -> Channel.restore is exact at any instant, and the copy goes on exactly."""
    end = end_of(events)
    whole = drive(Engine(config, START), events, end)["v"]

    engine = Engine(config, START)
    first = drive(engine, events[:split], events[split].t if split < len(events) else end)["v"]
    state = engine.channels["v"].state()
    restored = Channel.restore(config["v"], state)
    assert restored.state() == state
    again = Engine.of({**engine.channels, "v": restored}, engine.now)
    assert first + drive(again, events[split:], end)["v"] == whole


def test_resume_after_a_downtime_with_terms() -> None:
    """The downtime is an outage of every term; a missed scheduled reset of the virtual
    channel is applied at its instant; consumption goes on; the windows count again once
    every term is back (a = 1 kWh, b = 0.5 kWh per pulse, v = 5 + a - b)."""
    daily = ResetSchedule("day", (1, 0, 0))
    config = {
        "a": physical(1.0),
        "b": physical(0.5),
        "v": replace(virtual(("a", 1), ("b", -1), initial=5.0), reset_schedule=daily),
    }
    run = Run(config)
    run.pulses("00:01:00", "a", 20)
    run.pulses("00:02:00", "b", 4)
    run.to("00:12:00")
    v = run.engine.channels["v"]
    assert (v.peak_demand, v.consumption) == ((20 - 2) * 6.0, 5.0 + 20 - 2)
    saved = {c: (ch.rules, ch.state()) for c, ch in run.engine.channels.items()}

    engine, missed = Engine.resume(config, saved, at("00:12:00"), at("03:00:00"))
    assert [(m.channel, m.outcome.time, m.outcome.accepted) for m in missed] == [
        ("v", at("01:00:00"), True)
    ]
    v = engine.channels["v"]
    assert not v.term_online(0) and not v.term_online(1)
    assert (v.previous_peak_demand, v.peak_demand, v.consumption) == (108.0, 0.0, 23.0)
    assert v.schedule_next == at("01:00:00", "2026-01-02")
    engine.online("a", at("03:00:00"), 3)
    assert not v.is_online  # b is still down
    engine.online("b", at("03:01:00"), 2)
    assert v.is_online and v.consumption == 23.0 + 3 - 1
    readings = engine.advance(at("03:12:00"))
    engine.pulses("b", at("03:12:00"), 2)
    readings += engine.advance(at("03:20:00"))
    demand = [r.reading.demand for r in readings if r.channel == "v"]
    # 03:05 and 03:10: their windows start before b came back; then [03:05, 03:15) and
    # [03:10, 03:20) hold b's 2 pulses: -1 kWh, -6 kW, which sets no peak
    assert demand == [None, None, -6.0, -6.0]
    assert v.peak_demand == 0.0 and v.consumption == 24.0


def test_put_back_undoes_a_reset_of_a_virtual_channel_and_keeps_its_routes() -> None:
    run = Run({"a": physical(1.0), "v": virtual(("a", 1))})
    run.pulses("00:01:00", "a", 5)
    engine = run.engine
    run.to("00:10:00")
    before = engine.channels["v"].state()  # the peak of [00:00, 00:10) is 30 kW
    assert engine.reset("v", at("00:10:00")).accepted
    engine.put_back("v", before)
    assert engine.channels["v"].state() == before and engine.channels["v"].peak_demand == 30.0
    engine.pulses("a", at("00:11:00"), 1)  # still reaches the restored channel
    assert engine.channels["v"].consumption == 6.0
