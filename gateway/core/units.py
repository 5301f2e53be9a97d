"""The units table: the only place a unit's names and time factor live.

The demand unit always follows from the consumption unit. The B6070 fixes the time factor per
unit "to avoid mistakes" (docs/reference/demand-rules.md): kWh and lbs are per hour
(units_Scale 3600), cubic feet and US gallons per minute (units_Scale 60). m3 and liters are
this gateway's additions to the B6070's four units, on the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Unit:
    """One row of the units table."""

    name: str  # the config spelling
    consumption: str  # BACnet engineering unit of consumption
    demand: str  # BACnet engineering unit of demand
    units_scale: int  # seconds in the demand unit's time base: 3600 per hour, 60 per minute


UNITS: dict[str, Unit] = {
    unit.name: unit
    for unit in (
        Unit("kWh", "kilowatt-hours", "kilowatts", 3600),
        Unit("lbs", "pounds-mass", "pounds-mass-per-hour", 3600),
        Unit("cubic_feet", "cubic-feet", "cubic-feet-per-minute", 60),
        Unit("us_gallons", "us-gallons", "us-gallons-per-minute", 60),
        Unit("m3", "cubic-meters", "cubic-meters-per-hour", 3600),
        Unit("liters", "liters", "liters-per-minute", 60),
    )
}
