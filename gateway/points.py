"""The BACnet points list (PRODUCT.md §5) as data: what a BMS integrator maps, per object.

The object map is fixed by the product: channel k (1-based, config order) has ``base = 100 * k``
unless it sets ``bacnet_instance_base``; six analog inputs at base+1..base+6, a Reset
binary-value at base+1, and one ``reset_all`` binary-value at instance 1. This module is the
one description of that map: ``pulse-gateway points`` prints it, and the tests check the
running BACnet server against it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from gateway.config import Config

# (offset from the channel's base, name suffix, which unit, what it is)
CHANNEL_INPUTS = (
    (1, "consumption", "consumption", "consumption: initial reading + pulses x scale factor"),
    (2, "demand", "demand", "demand over the sliding window; last valid value while not available"),
    (3, "peak_demand", "demand", "peak demand since the last reset"),
    (4, "previous_peak_demand", "demand", "peak demand of the period before the last reset"),
    (5, "cumulative_demand", "demand", "sum of the peaks stored at each reset (the checksum)"),
    (6, "reset_count", None, "accepted resets"),
)
RESET_ALL_INSTANCE = 1
HEADER = ("type", "instance", "name", "units", "writable", "description")


@dataclass(frozen=True, slots=True)
class Point:
    """One BACnet object as an integrator sees it."""

    type: str  # BACnet object type, hyphenated (analog-input, binary-value, device)
    instance: int
    name: str
    units: str  # BACnet engineering units, hyphenated; "" where none apply
    writable: bool  # only the Reset objects' present-value is writable
    description: str
    channel: str | None = None


def points(config: Config) -> list[Point]:
    """Every BACnet object of ``config``, device first, then per channel in config order."""
    listed: list[Point] = []
    if config.bacnet is not None:
        listed.append(
            Point(
                "device",
                config.bacnet.device_instance,
                config.bacnet.device_name,
                "",
                False,
                "the gateway",
            )
        )
    listed.append(
        Point(
            "binary-value",
            RESET_ALL_INSTANCE,
            "reset_all",
            "",
            True,
            "write active: reset every channel at one instant",
        )
    )
    for channel in config.channels:
        base, unit = channel.bacnet_instance_base, channel.rules.unit
        for offset, suffix, kind, text in CHANNEL_INPUTS:
            units = {"consumption": unit.consumption, "demand": unit.demand}.get(
                kind or "", "no-units"
            )
            listed.append(
                Point(
                    "analog-input",
                    base + offset,
                    f"{channel.id}.{suffix}",
                    units,
                    False,
                    text,
                    channel.id,
                )
            )
        listed.append(
            Point(
                "binary-value",
                base + 1,
                f"{channel.id}.reset",
                "",
                True,
                "write active: reset this channel's peak demand",
                channel.id,
            )
        )
    return listed


def points_csv(config: Config) -> str:
    """The points list as CSV with the header type,instance,name,units,writable,description."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for p in points(config):
        writer.writerow(
            (p.type, p.instance, p.name, p.units, "yes" if p.writable else "no", p.description)
        )
    return out.getvalue()
