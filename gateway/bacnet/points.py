"""The BACnet points of a configuration as plain data (docs/reference/bacnet.md).

One source of truth for the object map: the server builds its objects from these, and a points
list for integrators (``pulse-gateway points``) can print them without starting a BACnet stack.
This module imports nothing from bacpypes3.

Channel k (config order) has ``base = 100 * k`` unless it sets ``bacnet_instance_base`` (the
config loader resolves it into ``ChannelConfig.bacnet_instance_base``):

    analog-input base+1..base+9   {id}.consumption, .demand, .peak_demand,
                                  .previous_peak_demand, .cumulative_demand, .reset_count,
                                  .period_consumption, .previous_period_consumption,
                                  .projected_demand
    binary-value base+1           {id}.reset     write active = reset this channel
    trend-log base+1, base+2      {id}.consumption_log, {id}.demand_log: the interval records
                                  (unless the channel says ``trend_log: false``)
    binary-value 1                reset_all      write active = reset every channel at one instant

Units come from the fixed table of docs/reference/demand-rules.md (``gateway.core.units``): the
consumption unit on the three consumption objects, the demand unit on the four demand objects,
``no-units`` on ``.reset_count``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import ChannelConfig

RESET_ALL_INSTANCE = 1  # binary-value 1 resets every channel (docs/reference/bacnet.md)
RESET_ALL_NAME = "reset_all"
NETWORK_PORT_INSTANCE = 1  # the B/IP port object bacpypes3 binds through (network-port 1)
NETWORK_PORT_NAME = "bacnet_ip_port"  # no dot: cannot clash with a channel's "{id}.x" names
NO_UNITS = "no-units"


class Measure(enum.IntEnum):
    """A channel's analog-input objects; the value is the offset from the channel's base."""

    CONSUMPTION = 1
    DEMAND = 2
    PEAK_DEMAND = 3
    PREVIOUS_PEAK_DEMAND = 4
    CUMULATIVE_DEMAND = 5
    RESET_COUNT = 6
    PERIOD_CONSUMPTION = 7
    PREVIOUS_PERIOD_CONSUMPTION = 8
    PROJECTED_DEMAND = 9

    @property
    def suffix(self) -> str:
        """The object-name suffix: ``{id}.{suffix}``."""
        return self.name.lower()


_DESCRIPTIONS = {
    Measure.CONSUMPTION: "consumption (initial reading + pulses x scale factor)",
    Measure.DEMAND: "demand over the sliding window (last valid value; fault while not available)",
    Measure.PEAK_DEMAND: "peak demand since the last reset",
    Measure.PREVIOUS_PEAK_DEMAND: "peak demand of the period before the last reset",
    Measure.CUMULATIVE_DEMAND: "cumulative demand (sum of the peaks at each reset)",
    Measure.RESET_COUNT: "accepted resets",
    Measure.PERIOD_CONSUMPTION: "consumption since the last accepted reset (this billing period)",
    Measure.PREVIOUS_PERIOD_CONSUMPTION: "consumption of the last closed billing period",
    Measure.PROJECTED_DEMAND: "demand the next boundary will show if the current rate holds"
    " (fault while not available)",
}
_CONSUMPTIONS = (
    Measure.CONSUMPTION,
    Measure.PERIOD_CONSUMPTION,
    Measure.PREVIOUS_PERIOD_CONSUMPTION,
)


@dataclass(frozen=True, slots=True)
class Point:
    """One BACnet object of the gateway, as an integrator sees it."""

    object_type: str  # "analog-input", "binary-value" or "trend-log"
    instance: int
    name: str
    # BACnet engineering unit, hyphenated ("kilowatt-hours"); "" for binary values; a trend
    # log's: the unit of its records
    units: str
    writable: bool  # only the reset objects' present-value
    description: str
    channel: str | None  # None for reset_all
    measure: Measure | None  # None for the reset objects; a trend log's: what it logs
    cov_increment: float | None = None  # analog inputs only; 0 = notify on any change
    interval: int | None = None  # trend logs only: the channel's interval in µs


# Trend logs (docs/reference/bacnet.md, "Trend logs"): the instance offset, the object-name
# suffix and what each record of the log holds; the logged analog input has the same offset.
TREND_LOGS = {
    Measure.CONSUMPTION: ("consumption_log", "the consumption reading at each interval end"),
    Measure.DEMAND: ("demand_log", "the average demand over each interval"),
}


def channel_points(channel: ChannelConfig) -> list[Point]:
    """The analog inputs and the reset binary-value of one channel, in instance order."""
    base = channel.bacnet_instance_base
    unit = channel.rules.unit
    points = []
    for measure in Measure:
        if measure in _CONSUMPTIONS:
            units = unit.consumption
        elif measure is Measure.RESET_COUNT:
            units = NO_UNITS
        else:
            units = unit.demand
        increment = channel.cov_increment
        if measure is Measure.RESET_COUNT:
            # a count moves in whole steps and every accepted reset matters to a BMS: never let
            # a large per-channel increment (sized for kWh) swallow one
            increment = min(increment, 1.0)
        points.append(
            Point(
                object_type="analog-input",
                instance=base + measure,
                name=f"{channel.id}.{measure.suffix}",
                units=units,
                writable=False,
                description=f"{channel.id}: {_DESCRIPTIONS[measure]}",
                channel=channel.id,
                measure=measure,
                cov_increment=increment,
            )
        )
    points.append(
        Point(
            object_type="binary-value",
            instance=base + 1,
            name=f"{channel.id}.reset",
            units="",
            writable=True,
            description=f"{channel.id}: write active to reset the peak demand",
            channel=channel.id,
            measure=None,
        )
    )
    if channel.trend_log:
        for measure, (suffix, what) in TREND_LOGS.items():
            units = unit.consumption if measure is Measure.CONSUMPTION else unit.demand
            points.append(
                Point(
                    object_type="trend-log",
                    instance=base + measure,
                    name=f"{channel.id}.{suffix}",
                    units=units,
                    writable=False,
                    description=f"{channel.id}: interval records, {what}",
                    channel=channel.id,
                    measure=measure,
                    interval=channel.interval,
                )
            )
    return points


def reset_all_point() -> Point:
    """binary-value 1, ``reset_all``."""
    return Point(
        object_type="binary-value",
        instance=RESET_ALL_INSTANCE,
        name=RESET_ALL_NAME,
        units="",
        writable=True,
        description="write active to reset every channel at one instant",
        channel=None,
        measure=None,
    )


def all_points(channels: Iterable[ChannelConfig]) -> list[Point]:
    """Every channel's points in config order, then ``reset_all``."""
    points = [point for channel in channels for point in channel_points(channel)]
    points.append(reset_all_point())
    return points
