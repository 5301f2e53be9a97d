"""The B6070 demand rules (docs/reference/demand-rules.md), one named test per rule."""

from __future__ import annotations

import pytest

from gateway.core import UNITS, Channel, ChannelRules, DemandError, Engine
from tests.helpers import at, rules


def run_to(channel: Channel, t: int) -> list:
    """Close the channel's boundaries up to and including ``t``."""
    readings = []
    while channel.next_boundary <= t:
        readings.append(channel.close())
    return readings


def pulse(channel: Channel, t: int, count: int) -> list:
    """Pulses at ``t`` after closing the boundaries up to ``t``, as the engine does."""
    readings = run_to(channel, t)
    channel.pulses(t, count)
    return readings


@pytest.mark.parametrize(
    ("unit", "units_scale"),
    [
        ("kWh", 3600),
        ("lbs", 3600),
        ("cubic_feet", 60),
        ("us_gallons", 60),
        ("m3", 3600),
        ("liters", 60),
    ],
)
def test_demand_is_delta_pulses_times_scale_times_units_scale_over_window(
    unit: str, units_scale: int
) -> None:
    """Demand = deltaPulse * Scale_factor * units_Scale / Demand_Window (the B6070 manual)."""
    channel = Channel(rules(unit, scale=0.25, window="15min", slide="5min"), at("00:00:00"))
    pulse(channel, at("00:01:00"), 40)
    pulse(channel, at("00:14:59"), 20)
    (last,) = run_to(channel, at("00:15:00"))
    assert UNITS[unit].units_scale == units_scale
    assert last.demand == 60 * 0.25 * units_scale / 900


def test_the_demand_unit_follows_from_the_consumption_unit() -> None:
    """The four B6070 units are in the table with their fixed demand units."""
    assert {
        u: (UNITS[u].consumption, UNITS[u].demand)
        for u in ("kWh", "lbs", "cubic_feet", "us_gallons")
    } == {
        "kWh": ("kilowatt-hours", "kilowatts"),
        "lbs": ("pounds-mass", "pounds-mass-per-hour"),
        "cubic_feet": ("cubic-feet", "cubic-feet-per-minute"),
        "us_gallons": ("us-gallons", "us-gallons-per-minute"),
    }


def test_demand_is_updated_every_slide_over_a_sliding_window() -> None:
    """With W = 15 min and S = 5 min, each boundary sums the last three intervals."""
    channel = Channel(rules(window="15min", slide="5min"), at("00:00:00"))
    readings = []
    for minute, count in ((1, 10), (6, 20), (11, 30), (16, 40)):
        pulse(channel, at(f"00:{minute:02d}:00"), count)
        readings += run_to(channel, at(f"00:{minute + 4:02d}:00"))
    assert [(r.time, r.demand) for r in readings[-2:]] == [
        (at("00:15:00"), (10 + 20 + 30) * 3600 / 900),
        (at("00:20:00"), (20 + 30 + 40) * 3600 / 900),
    ]


def test_slide_equal_to_window_is_demand_on_fixed_intervals() -> None:
    """When S = W each boundary's window is exactly the interval just closed."""
    channel = Channel(rules(window="15min", slide="15min"), at("00:00:00"))
    channel.pulses(at("00:05:00"), 9)
    (first,) = run_to(channel, at("00:15:00"))
    pulse(channel, at("00:20:00"), 3)
    (second,) = run_to(channel, at("00:30:00"))
    assert [first.demand, second.demand] == [9 * 3600 / 900, 3 * 3600 / 900]


def test_intervals_are_half_open_so_a_pulse_at_a_boundary_counts_in_the_next() -> None:
    """A pulse at exactly b is not in demand(b) but is in demand(b + S)."""
    channel = Channel(rules(), at("00:00:00"))
    run_to(channel, at("00:01:00"))
    channel.pulses(at("00:01:00"), 5)
    (first,) = run_to(channel, at("00:02:00"))
    assert first.demand == 5 * 60.0


def test_the_first_window_is_not_available_until_the_gateway_saw_all_of_it() -> None:
    """demand(b) is valid only when b - W >= start (first-window rule)."""
    channel = Channel(rules(window="10min", slide="5min"), at("00:02:00"))
    readings = pulse(channel, at("00:03:00"), 4)
    readings += pulse(channel, at("00:06:00"), 4)
    readings += run_to(channel, at("00:15:00"))
    assert [r.demand for r in readings] == [None, None, 4 * 3600 / 600]


def test_peak_is_the_running_max_of_valid_demands() -> None:
    """Peak Demand since Reset only ever grows between resets and keeps its boundary time."""
    channel = Channel(rules(), at("00:00:00"))
    peaks = []
    for minute, count in enumerate((3, 7, 2, 7, 9, 1)):
        channel.pulses(at(f"00:{minute:02d}:30"), count)
        (reading,) = run_to(channel, at(f"00:{minute + 1:02d}:00"))
        peaks.append(reading.peak_demand)
    assert peaks == [180.0, 420.0, 420.0, 420.0, 540.0, 540.0]
    assert channel.peak_time == at("00:05:00")


def test_reset_stores_the_peak_adds_it_to_cumulative_and_zeroes_it() -> None:
    """At a reset: previous peak = peak; cumulative += peak; peak = 0; count + 1 (B6070)."""
    channel = Channel(rules(), at("00:00:00"))
    channel.pulses(at("00:00:10"), 2)
    run_to(channel, at("00:01:00"))
    outcome = channel.reset(at("00:01:30"))
    assert outcome.accepted
    assert (outcome.before.peak_demand, outcome.after.peak_demand) == (120.0, 0.0)
    assert (channel.previous_peak_demand, channel.cumulative_demand, channel.reset_count) == (
        120.0,
        120.0,
        1,
    )
    assert channel.peak_time is None


def test_peak_stays_zero_after_a_reset_until_the_next_slide_end() -> None:
    """Peak is zero right after a reset and is recomputed at the next boundary."""
    channel = Channel(rules(window="2min"), at("00:00:00"))
    channel.pulses(at("00:00:10"), 2)
    run_to(channel, at("00:02:00"))
    channel.reset(at("00:02:00"))
    assert channel.peak_demand == 0.0
    (reading,) = run_to(channel, at("00:03:00"))
    assert reading.peak_demand == reading.demand == 0.0


def test_cumulative_demand_is_a_checksum_of_the_previous_peaks() -> None:
    """Cumulative demand equals the sum of the peaks stored away at each reset."""
    channel = Channel(rules(), at("00:00:00"))
    stored = []
    for minute, count in enumerate((4, 1, 6)):
        channel.pulses(at(f"00:{minute * 2:02d}:10"), count)
        run_to(channel, at(f"00:{minute * 2 + 1:02d}:00"))
        stored.append(channel.reset(at(f"00:{minute * 2 + 1:02d}:30")).after.previous_peak_demand)
        run_to(channel, at(f"00:{minute * 2 + 2:02d}:00"))
    assert channel.cumulative_demand == sum(stored) == (4 + 1 + 6) * 60.0
    assert channel.reset_count == 3


def test_a_reset_inside_the_lockout_is_refused_and_changes_nothing() -> None:
    """Only t - last accepted reset >= reset_lockout is accepted; a refusal is counted."""
    channel = Channel(rules(lockout="15min"), at("00:00:00"))
    channel.pulses(at("00:00:10"), 2)
    run_to(channel, at("00:01:00"))
    assert channel.reset(at("00:01:00")).accepted
    state = channel.state()
    run_to(channel, at("00:15:59.999999"))
    refused = channel.reset(at("00:15:59.999999"))
    assert (refused.accepted, refused.reason) == (False, "lockout")
    assert refused.before == refused.after
    assert channel.state().reset_count == state.reset_count
    assert channel.rejected_resets == 1
    run_to(channel, at("00:16:00"))
    assert channel.reset(at("00:16:00")).accepted


def test_without_lockout_a_double_reset_is_accepted_and_shows_in_the_count() -> None:
    """lockout 0 = none: two resets at one instant both count (the checksum reveals them)."""
    channel = Channel(rules(), at("00:00:00"))
    assert channel.reset(at("00:00:30")).accepted
    assert channel.reset(at("00:00:30")).accepted
    assert channel.reset_count == 2


def test_an_outage_voids_every_window_it_overlaps() -> None:
    """Windows overlapping [offline, online) are not available; the next clean one is."""
    channel = Channel(rules(window="10min", slide="5min"), at("00:00:00"))
    channel.pulses(at("00:01:00"), 1)
    run_to(channel, at("00:15:00"))
    channel.offline(at("00:16:00"))
    readings = run_to(channel, at("00:23:00"))
    channel.online(at("00:23:00"), 0)
    readings += run_to(channel, at("00:35:00"))
    assert [(r.time, r.demand is None) for r in readings] == [
        (at("00:20:00"), True),
        (at("00:25:00"), True),
        (at("00:30:00"), True),
        (at("00:35:00"), False),
    ]


def test_catch_up_pulses_count_in_consumption_but_never_make_a_peak() -> None:
    """Pulses that turn up at the end of an outage are counted but in no window."""
    channel = Channel(rules(scale=2.0), at("00:00:00"))
    channel.offline(at("00:00:30"))
    run_to(channel, at("00:02:00"))
    channel.online(at("00:02:00"), 1000)
    readings = run_to(channel, at("00:04:00"))
    assert channel.pulses_total == 1000
    assert channel.consumption == 2000.0
    assert [r.demand for r in readings] == [0.0, 0.0]  # the window [00:02, 00:03) is clean
    assert channel.peak_demand == 0.0


def test_a_channel_offline_at_a_boundary_shows_no_demand_but_keeps_counting() -> None:
    """While offline, demand is not available and the last valid value is kept for BACnet."""
    channel = Channel(rules(), at("00:00:00"))
    channel.pulses(at("00:00:01"), 1)
    run_to(channel, at("00:01:00"))
    channel.offline(at("00:01:00"))
    channel.offline(at("00:01:30"))  # a second offline does not move the outage's start
    channel.pulses(at("00:01:40"), 3)
    (reading,) = run_to(channel, at("00:02:00"))
    assert reading.demand is None and not channel.is_online
    assert channel.last_valid_demand == 60.0
    assert channel.pulses_total == 4


def test_consumption_is_initial_reading_plus_pulses_times_scale() -> None:
    """consumption = initial_reading + pulses_total * scale_factor."""
    channel = Channel(rules(scale=0.5, initial=1000.0), at("00:00:00"))
    channel.pulses(at("00:00:01"), 5)
    assert channel.consumption == 1002.5


def test_a_scale_change_keeps_consumption_continuous_and_voids_mixed_windows() -> None:
    """Pulses before a scale change keep their old factor; no window mixes two factors."""
    channel = Channel(rules(window="2min"), at("00:00:00"))
    channel.pulses(at("00:00:10"), 6)
    run_to(channel, at("00:01:00"))
    channel.change_scale(at("00:01:30"), 2.0)
    assert channel.consumption == 6.0
    channel.pulses(at("00:01:40"), 3)
    assert channel.consumption == 12.0
    readings = run_to(channel, at("00:03:00"))
    pulse(channel, at("00:03:10"), 1)
    readings += run_to(channel, at("00:04:00"))
    assert [r.demand for r in readings] == [None, None, 1 * 2.0 * 3600 / 120]


def test_events_out_of_time_order_are_refused_without_change() -> None:
    """An event earlier than the previous one, or past an unclosed boundary, is an error."""
    channel = Channel(rules(), at("00:00:00"))
    channel.pulses(at("00:00:30"), 1)
    with pytest.raises(DemandError, match="time order"):
        channel.pulses(at("00:00:29"), 1)
    with pytest.raises(DemandError, match="boundary"):
        channel.pulses(at("00:01:00"), 1)
    with pytest.raises(DemandError, match="at least 1"):
        channel.pulses(at("00:00:40"), 0)
    assert channel.pulses_total == 1


@pytest.mark.parametrize(
    ("window", "slide", "scale", "message"),
    [
        ("10min", "3min", 1.0, "multiple"),
        ("5min", "500ms", 1.0, "whole number of seconds"),
        ("5min", "10min", 1.0, "multiple"),
        ("5min", "5min", 0.0, "positive"),
        ("5min", "5min", float("nan"), "positive"),
    ],
)
def test_unsound_rules_cannot_be_built(window: str, slide: str, scale: float, message: str) -> None:
    """W must be a whole multiple of S >= 1 s and the scale factor positive."""
    with pytest.raises(DemandError, match=message):
        rules(window=window, slide=slide, scale=scale)


def test_state_restores_exactly_and_continues_identically() -> None:
    """A channel restored from its state produces the same readings as the original."""
    channel = Channel(rules(window="3min", lockout="1min"), at("00:00:00"))
    for second in range(0, 200, 7):
        t = at(f"00:{second // 60:02d}:{second % 60:02d}")
        run_to(channel, t)
        channel.pulses(t, second % 5 + 1)
    channel.reset(at("00:03:20"))
    channel.offline(at("00:03:21"))
    copy = Channel.restore(channel.rules, channel.state())
    assert copy.state() == channel.state()
    for twin in (channel, copy):
        twin.online(at("00:03:40"), 7)
        twin.pulses(at("00:03:50"), 2)
    assert run_to(channel, at("00:09:00")) == run_to(copy, at("00:09:00"))
    assert copy.state() == channel.state()


def test_state_for_other_rules_is_refused() -> None:
    """A saved window of the wrong length cannot be restored into a channel."""
    state = Channel(rules(window="3min"), at("00:00:00")).state()
    with pytest.raises(DemandError, match="intervals"):
        Channel.restore(rules(window="2min"), state)


def test_the_engine_orders_readings_by_time_then_config_order() -> None:
    """Boundaries of channels with different slides interleave by time, ties in config order."""
    engine = Engine({"b": rules(slide="2min", window="2min"), "a": rules()}, at("00:00:00"))
    readings = engine.advance(at("00:04:00"))
    assert [(r.reading.time, r.channel) for r in readings] == [
        (at("00:01:00"), "a"),
        (at("00:02:00"), "b"),
        (at("00:02:00"), "a"),
        (at("00:03:00"), "a"),
        (at("00:04:00"), "b"),
        (at("00:04:00"), "a"),
    ]


def test_reset_all_applies_each_channels_own_lockout() -> None:
    """reset_all resets every channel at one instant; a locked-out channel refuses alone."""
    engine = Engine({"a": rules(lockout="10min"), "b": rules()}, at("00:00:00"))
    engine.reset("a", at("00:00:10"))
    outcomes = engine.reset_all(at("00:00:20"))
    assert {k: v.accepted for k, v in outcomes.items()} == {"a": False, "b": True}
    with pytest.raises(DemandError, match="unknown channel"):
        engine.reset("c", at("00:00:30"))


def test_channel_rules_reject_a_negative_lockout() -> None:
    """A negative lockout is a configuration error, not a silent zero."""
    with pytest.raises(DemandError, match="reset_lockout"):
        ChannelRules(UNITS["kWh"], 1.0, 60_000_000, 60_000_000, 0.0, -1)


def test_skipping_an_unobserved_gap_equals_closing_every_boundary() -> None:
    """skip_to on an offline channel leaves exactly the state of closing boundary by boundary."""
    for gap in ("00:00:50", "00:02:00", "00:04:59", "00:05:00", "00:30:00", "23:00:00"):
        twins = [Channel(rules(window="3min", slide="1min"), at("00:00:00")) for _ in range(2)]
        for channel in twins:
            channel.pulses(at("00:00:20"), 5)
            channel.offline(at("00:00:40"))
        slow, fast = twins
        run_to(slow, at(gap))
        slow.now = at(gap)
        fast.skip_to(at(gap))
        assert fast.state() == slow.state(), gap


def test_only_an_offline_channel_can_skip() -> None:
    """Skipping boundaries of an online channel would hide valid windows, so it is refused."""
    channel = Channel(rules(), at("00:00:00"))
    with pytest.raises(DemandError, match="offline"):
        channel.skip_to(at("01:00:00"))


def test_reconfigure_with_a_new_window_keeps_counts_and_peaks() -> None:
    """A reload that changes the window restarts the window but keeps every count and total."""
    channel = Channel(rules(window="2min"), at("00:00:00"))
    channel.pulses(at("00:00:10"), 4)
    run_to(channel, at("00:02:00"))
    channel.reset(at("00:02:00"))
    channel.pulses(at("00:02:10"), 1)
    run_to(channel, at("00:04:00"))
    before = channel.state()
    channel.reconfigure(at("00:04:30"), rules(window="5min", slide="5min", scale=2.0))
    after = channel.state()
    assert (after.pulses_total, after.reset_count, after.cumulative_demand, after.peak_demand) == (
        before.pulses_total,
        before.reset_count,
        before.cumulative_demand,
        before.peak_demand,
    )
    assert channel.consumption == 5.0
    assert len(after.window_intervals) == 1 and after.next_boundary == at("00:05:00")
    readings = pulse(channel, at("00:05:30"), 3)
    readings += run_to(channel, at("00:10:00"))
    assert [r.demand for r in readings] == [None, 3 * 2.0 * 3600 / 300]


def test_an_engine_can_be_built_over_restored_channels() -> None:
    """Engine.of takes channels as they are and schedules from their next boundaries."""
    a = Channel(rules(), at("00:00:00"))
    a.pulses(at("00:00:30"), 2)
    b = Channel(rules(slide="2min", window="2min"), at("00:00:00"))
    engine = Engine.of({"a": a, "b": b}, at("00:00:40"))
    assert engine.next_due == at("00:01:00")
    assert [r.channel for r in engine.advance(at("00:02:00"))] == ["a", "a", "b"]
