"""Interval records: what each channel consumed per ``interval``.

They are what the exports carry (docs/reference/export-formats.md).

At every slide boundary that is a whole multiple of a channel's interval I (15 min by default),
the channel gets one record for [end - I, end): the pulses and consumption counted in it, the
average demand (consumption * units_Scale / interval seconds) and a quality flag:

- **A** (actual): the gateway observed the whole interval.
- **E** (estimated): an outage touched it, counting began inside it, or the record follows a gap
  in which the gateway recorded nothing (downtime, a forward clock step). Such a record lumps
  everything counted since the previous record, so the records always add up to the meter's
  consumption (nothing lost, nothing counted twice); its ``start`` is the previous record's end
  and its average demand is over that whole span, so a lump never shows as a false peak.

Records carry the channel's running totals at their end, and the log keeps them per channel
as a *mark* that the service saves with every checkpoint, so the next record continues exactly
from it after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from gateway.core.demand import Channel
from gateway.core.engine import ChannelReading
from gateway.core.timeline import MICROS_PER_SECOND, Instant, Span


class IntervalRecord(NamedTuple):
    """One channel's consumption over one interval (or a lumped gap, flagged estimated).

    A NamedTuple rather than a frozen dataclass: an export streams millions of them out of
    the store, and a tuple is built in C (about 5x faster than a frozen dataclass's init).
    """

    channel: str
    end: Instant
    start: Instant  # end - interval, or the previous record's end after a gap
    pulses: int | None  # None for a virtual channel, which has consumption but no pulses
    consumption: float
    average_demand: float
    estimated: bool
    pulses_total: int | None  # the channel's running totals at ``end``: where the next starts
    consumption_total: float


@dataclass(frozen=True, slots=True)
class IntervalMark:
    """Where a channel's next interval record starts: the last record's end and totals."""

    end: Instant  # the last record's end; for a new channel, the moment it was created
    pulses_total: int | None  # None for a virtual channel
    consumption_total: float


class IntervalLog:
    """Turns boundary readings into interval records, for channels with their intervals."""

    def __init__(self, intervals: Mapping[str, Span], marks: Mapping[str, IntervalMark]) -> None:
        """``intervals`` per channel; ``marks`` where each channel's next record starts."""
        for channel_id, interval in intervals.items():
            if interval <= 0:
                raise ValueError(f"{channel_id}: the interval must be positive")
        self.intervals = dict(intervals)
        self.marks = dict(marks)
        # channels that were offline at their last record's end: the next interval starts with
        # the outage's end, whose catch-up pulses land at its first instant. Kept in memory
        # only: after a restart the downtime itself makes the next record estimated.
        self._offline_at_end: set[str] = set()

    def observe(
        self, readings: list[ChannelReading], channels: Mapping[str, Channel]
    ) -> list[IntervalRecord]:
        """The records due at these boundary readings (from one ``Engine.advance``).

        A channel's outage state cannot change between the boundaries of one advance (no
        event comes between them), so reading it from the live channel is exact.
        """
        records = []
        for item in readings:
            interval = self.intervals.get(item.channel)
            reading = item.reading
            if interval is None or reading.time % interval:
                continue
            channel = channels[item.channel]
            mark = self.marks.get(item.channel)
            end = reading.time
            nominal_start = end - interval
            if mark is None:  # a channel the log was not told about: it starts here
                mark = IntervalMark(nominal_start, 0, channel.rules.initial_reading)
            start = min(mark.end, nominal_start)
            gap = mark.end != nominal_start  # created mid-interval, or records missed (downtime)
            estimated = (
                gap
                or not channel.is_online
                or channel.valid_from > nominal_start
                or item.channel in self._offline_at_end
            )
            if channel.is_online:
                self._offline_at_end.discard(item.channel)
            else:
                self._offline_at_end.add(item.channel)
            pulses_before, consumption_before = mark.pulses_total, mark.consumption_total
            consumption = reading.consumption - consumption_before
            pulses = None
            if reading.pulses_total is not None:  # a physical channel
                pulses = reading.pulses_total - (pulses_before or 0)
                exact = pulses * channel.scale_factor
                if math.isclose(exact, consumption, rel_tol=1e-9, abs_tol=1e-9):
                    # the same scale factor throughout: pulses x scale has no float residue,
                    # the difference of two running totals has (18.23999999999978 for 18.24)
                    consumption = exact
            seconds = (end - start) / MICROS_PER_SECOND
            records.append(
                IntervalRecord(
                    channel=item.channel,
                    end=end,
                    start=start,
                    pulses=pulses,
                    consumption=consumption,
                    average_demand=consumption * channel.rules.unit.units_scale / seconds,
                    estimated=estimated,
                    pulses_total=reading.pulses_total,
                    consumption_total=reading.consumption,
                )
            )
            self.marks[item.channel] = IntervalMark(end, reading.pulses_total, reading.consumption)
        return records
