"""Projected demand: the coming boundary's demand extrapolated from the part of its window seen.

At ``now``, with b0 the last boundary and b1 = b0 + S the next (docs/reference/demand-rules.md,
"Projected demand")::

    projected = (P(b1 - W, b0) + P(b0, now) * S / (now - b0)) * scale_factor * units_Scale / W

None during the first tenth of a slide (at least 1 s), and when the window of b1 is already
invalid. Every value below is worked by hand.
"""

from __future__ import annotations

import pytest

from gateway.core import Channel, ChannelRules, DemandError, Engine
from tests.helpers import at, rules


def fed(channel_rules: ChannelRules, *pulses: tuple[str, int]) -> Channel:
    """A channel counted from 00:00:00 with ``pulses`` (clock, count), boundaries closed as
    the engine would."""
    channel = Channel(channel_rules, at("00:00:00"))
    for clock, count in pulses:
        t = at(clock)
        while channel.next_boundary <= t:
            channel.close()
        channel.pulses(t, count)
    return channel


def to(channel: Channel, clock: str) -> int:
    t = at(clock)
    while channel.next_boundary <= t:
        channel.close()
    return t


# kWh, 0.5 kWh per pulse, W = 15 min, S = 5 min: demand = kWh x 3600 / 900 = kWh x 4
ROLLING = rules(scale=0.5, window="15min", slide="5min")
PULSES = (("00:01:00", 4), ("00:06:00", 6), ("00:11:00", 8), ("00:16:00", 3))


def test_projected_demand_extrapolates_the_open_interval_over_the_rest_of_the_window() -> None:
    """At 00:17:30 (b0 = 00:15, b1 = 00:20, window [00:05, 00:20)): the closed part holds
    6 + 8 = 14 pulses, the open interval 3 pulses in 150 of 300 s, so 6 by 00:20:
    (14 + 6) x 0.5 x 4 = 40 kW. The boundary itself then shows 14 + 3 = 17 pulses: 34 kW."""
    channel = fed(ROLLING, *PULSES)
    assert channel.projected(to(channel, "00:17:30")) == 40.0
    assert channel.projected(at("00:19:00")) == (14 + 3 * 300 / 240) * 0.5 * 4
    to(channel, "00:20:00")
    assert channel.demand == 34.0


def test_no_projection_in_the_first_tenth_of_a_slide() -> None:
    """S / 10 = 30 s: none at 00:15:29.999999, then at 00:15:30 the 3 pulses count as
    3 x 300 / 30 = 30: (14 + 30) x 2 = 88 kW (an early projection swings, hence the wait)."""
    channel = fed(ROLLING, *PULSES[:3], ("00:15:10", 3))
    assert channel.projected(to(channel, "00:15:10")) is None
    assert channel.projected(at("00:15:29.999999")) is None
    assert channel.projected(at("00:15:30")) == 88.0


def test_a_short_slide_still_waits_one_second() -> None:
    """S = 5 s: a tenth is 0.5 s, but the projection waits 1 s. W = S: only the open interval
    counts: 2 pulses in 1 s of 5 give 10 per window: 10 x 1 kWh x 3600 / 5 = 7200 kW."""
    channel = fed(rules(window="5s", slide="5s"), ("00:00:10.200000", 2))
    assert channel.projected(to(channel, "00:00:10.900000")) is None
    assert channel.projected(at("00:00:11")) == 7200.0


def test_no_projection_while_the_coming_window_is_invalid() -> None:
    """Counting began at 00:00, so b1 = 00:05, 00:10 have windows that start too early; an
    outage (offline 00:16, online 00:19) voids every window that starts before 00:19: the
    first valid one is b1 = 00:35 ([00:20, 00:35)), projected from 00:30:30 on."""
    channel = fed(ROLLING, ("00:01:00", 4))
    assert channel.projected(at("00:02:00")) is None  # [23:50, 00:05)
    assert channel.projected(to(channel, "00:07:00")) is None  # [23:55, 00:10)
    assert channel.projected(to(channel, "00:12:00")) == 4 * 0.5 * 4  # [00:00, 00:15): 4 seen
    channel.offline(to(channel, "00:16:00"))
    assert channel.projected(at("00:18:00")) is None  # offline now
    channel.online(to(channel, "00:19:00"), catch_up=10)
    assert channel.projected(at("00:19:00")) is None  # [00:05, 00:20) holds the outage
    assert channel.projected(to(channel, "00:26:00")) is None  # [00:15, 00:30)
    channel.pulses(to(channel, "00:31:00"), 2)
    assert channel.projected(to(channel, "00:32:30")) == (2 * 300 / 150) * 0.5 * 4


def test_a_virtual_channels_projection_uses_the_terms_signed_contributions() -> None:
    """Site = a (1 kWh) - b (0.25 kWh), W = 10 min, S = 5 min (x 6 to kW). At 00:12:00
    (b0 = 00:10, b1 = 00:15, window [00:05, 00:15)): closed [00:05, 00:10) holds a 3, b 4:
    3 - 1 = 2 kWh; open: a 1, b 8 in 120 s of 300: (1 - 2) x 2.5 = -2.5 kWh: -3 kW."""
    config = {
        "a": rules(window="10min", slide="5min"),
        "b": rules(scale=0.25, window="10min", slide="5min"),
        "site": ChannelRules(
            rules().unit, 1.0, 600_000_000, 300_000_000, terms=(("a", 1), ("b", -1))
        ),
    }
    engine = Engine(config, at("00:00:00"))
    for clock, channel, count in [
        ("00:01:00", "a", 9),  # [00:00, 00:05): outside the window of 00:15
        ("00:06:00", "a", 3),
        ("00:07:00", "b", 4),
        ("00:10:30", "a", 1),
        ("00:11:00", "b", 8),
    ]:
        engine.advance(at(clock))
        engine.pulses(channel, at(clock), count)
    engine.advance(at("00:12:00"))
    assert engine.channels["site"].projected(at("00:12:00")) == -3.0
    assert engine.channels["a"].projected(at("00:12:00")) == (3 + 2.5) * 6


def test_projected_demand_is_read_between_the_last_boundary_and_the_next() -> None:
    channel = fed(ROLLING, *PULSES)
    with pytest.raises(DemandError, match="between"):
        channel.projected(at("00:15:30"))  # before the channel's last event (00:16)
    with pytest.raises(DemandError, match="between"):
        channel.projected(at("00:20:00"))  # the boundary 00:20 is not closed yet
    state = channel.state()
    channel.projected(at("00:18:00"))
    assert channel.state() == state  # a read changes nothing
