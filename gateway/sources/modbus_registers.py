"""The register side of the Modbus source: which reads to make, decoding, pulses from values.

Pure rules, no I/O and no clock (times are passed in): ``plan_reads`` coalesces a source's
points into the fewest requests and ``split_block`` splits one a device refused; ``decode``
reads a value from its registers; ``ChannelDelta`` turns successive raw values into pulses with
the wrap, rate and glitch rules described in ``gateway.sources.modbus``. Separate from the
polling source, which owns the connection, pacing and outages, so these rules are read and
tested on their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pymodbus.client.mixin import ModbusClientMixin

from gateway.config_sources import ModbusPoint
from gateway.logging import get_logger
from gateway.sources import Baseline

DEFAULT_MAX_RATE = 1000.0  # pulses/s; see the module docstring
DEFAULT_MAX_READ_GAP = 16  # registers read and thrown away to save a request
MAX_READ_REGISTERS = 125  # the protocol's limit for FC3/FC4
# The device sampled its counter at most one timeout before we got the answer; and modules
# refresh their registers on an internal cycle (~100 ms). Added to the elapsed time.
_SLACK_S = 0.5

_DATATYPES = {
    "u32": ModbusClientMixin.DATATYPE.UINT32,
    "u64": ModbusClientMixin.DATATYPE.UINT64,
    "i32": ModbusClientMixin.DATATYPE.INT32,
    "f32": ModbusClientMixin.DATATYPE.FLOAT32,
    "f64": ModbusClientMixin.DATATYPE.FLOAT64,
}

log = get_logger("modbus")


def decode(point: ModbusPoint, registers: Sequence[int]) -> int | float:
    """The value of ``point`` from its registers (word order as configured; bytes big-endian)."""
    if point.type == "u16":
        return registers[0]
    value = ModbusClientMixin.convert_from_registers(
        list(registers), _DATATYPES[point.type], word_order=point.word_order
    )
    assert isinstance(value, int | float)
    return value


def rollover_of(point: ModbusPoint) -> int | float | None:
    """The modulus a point wraps at: configured, else 2^bits for integer counters, else none."""
    if point.rollover is not None:
        return point.rollover
    if point.kind == "counter" and point.type[0] in "ui":
        return 2 ** (16 * point.words)
    return None


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers of ``table`` from ``address``, and its points."""

    table: str
    address: int
    count: int
    points: tuple[tuple[str, ModbusPoint], ...]

    @property
    def contiguous(self) -> bool:
        """True if the block reads no register that belongs to no point."""
        return sum(point.words for _, point in self.points) == self.count


def _block(members: Sequence[tuple[str, ModbusPoint]]) -> ReadBlock:
    first, last = members[0][1], members[-1][1]
    return ReadBlock(
        first.table, first.address, last.address + last.words - first.address, tuple(members)
    )


def plan_reads(
    points: Mapping[str, ModbusPoint],
    *,
    max_gap: int = DEFAULT_MAX_READ_GAP,
    max_count: int = MAX_READ_REGISTERS,
) -> list[ReadBlock]:
    """The fewest read requests covering ``points`` (per table, gaps <= ``max_gap``)."""
    blocks: list[ReadBlock] = []
    members: list[tuple[str, ModbusPoint]] = []
    for channel, point in sorted(points.items(), key=lambda item: (item[1].table, item[1].address)):
        if members:
            first, last = members[0][1], members[-1][1]
            end = last.address + last.words
            if (
                point.table == first.table
                and point.address - end <= max_gap
                and point.address + point.words - first.address <= max_count
            ):
                members.append((channel, point))
                continue
            blocks.append(_block(members))
        members = [(channel, point)]
    if members:
        blocks.append(_block(members))
    return blocks


def split_block(block: ReadBlock) -> list[ReadBlock]:
    """A refused block in smaller reads: its gap-free runs, or else its two halves."""
    if not block.contiguous:
        runs: list[list[tuple[str, ModbusPoint]]] = []
        for member in block.points:
            last = runs[-1][-1][1] if runs else None
            if last is not None and member[1].address == last.address + last.words:
                runs[-1].append(member)
            else:
                runs.append([member])
        return [_block(run) for run in runs]
    half = len(block.points) // 2
    return [_block(block.points[:half]), _block(block.points[half:])]


class ChannelDelta:
    """Successive raw readings of one point turned into pulses (the delta and glitch rules).

    ``baseline`` is a saved raw value to resume from; ``baseline_time`` the monotonic time it
    was true, or None if unknown: then a forward move is taken in full (the device counted while
    the gateway was down) and a backwards one as a reset, since a reset that looked like a wrap
    would invent up to a whole rollover of consumption.
    """

    def __init__(
        self,
        source: str,
        channel: str,
        point: ModbusPoint,
        *,
        max_rate: float = DEFAULT_MAX_RATE,
        slack: float = _SLACK_S,
        baseline: Baseline | None = None,
        baseline_time: float | None = None,
    ) -> None:
        self.source, self.channel, self.point = source, channel, point
        self.rollover = rollover_of(point)
        self.max_rate, self.slack = max_rate, slack
        self.per_count = point.pulses_per_count
        self.last: Baseline | None = baseline
        self.last_time = baseline_time
        self.pending = 0.0  # a fraction of a pulse counted but not reported
        self.suspect: tuple[Baseline, float] | None = None
        self.glitches = 0

    def baseline(self) -> Baseline | None:
        """The raw value the pulses reported so far go up to."""
        if self.last is None or not self.pending:
            return self.last
        raw = self.last - self.pending / self.per_count
        return raw % self.rollover if self.rollover else raw

    def update(self, value: Baseline, now: float) -> int:
        """Pulses since the previous good reading (0 for the first one or a glitch)."""
        if self._out_of_range(value):
            return self._glitch(value, "out of the register's range")
        if self.last is None:  # counts before the gateway existed are not this channel's
            self.last, self.last_time = value, now
            return 0
        counts = self._plausible(self.last, self.last_time, value, now)
        if counts is not None:
            self.suspect = None
            return self._emit(counts, value, now)
        if self.suspect is not None:
            counts = self._plausible(*self.suspect, value, now)
            if counts is not None:  # two readings agree: the device was reset or replaced
                log.warning(
                    "modbus_resync",
                    source=self.source,
                    channel=self.channel,
                    old=self.last,
                    new=self.suspect[0],
                )
                self.pending = 0.0
                self.suspect = None
                return self._emit(counts, value, now)
        self.suspect = (value, now)
        return self._glitch(value, "implausible change")

    def _out_of_range(self, value: Baseline) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return True
        if self.rollover is not None and self.point.type[0] != "i":
            return not 0 <= value < self.rollover
        return False

    def _plausible(
        self, old: Baseline, old_time: float | None, value: Baseline, now: float
    ) -> Baseline | None:
        """Counts from ``old`` to ``value``, or None if no wrap or rate can explain them."""
        diff = value - old
        if self.rollover is not None:
            counts, wrapped = diff % self.rollover, diff < 0
        elif diff < 0:
            return None
        else:
            counts, wrapped = diff, False
        if old_time is None:  # resumed from a saved baseline of unknown age
            return None if wrapped else counts
        limit = self.max_rate * (max(0.0, now - old_time) + self.slack)
        return counts if counts * self.per_count <= limit else None

    def _emit(self, counts: Baseline, value: Baseline, now: float) -> int:
        self.last, self.last_time = value, now
        if self.per_count == 1 and isinstance(counts, int) and not self.pending:
            return counts  # integer registers stay exact even past 2^53
        exact = counts * self.per_count + self.pending
        whole = math.floor(exact + 1e-9 * max(1.0, abs(exact)))  # float noise is no lost pulse
        self.pending = max(0.0, exact - whole)
        return int(whole)

    def _glitch(self, value: Baseline, reason: str) -> int:
        self.glitches += 1
        log.warning(
            "modbus_glitch",
            source=self.source,
            channel=self.channel,
            reason=reason,
            previous=self.last,
            value=value,
            glitches=self.glitches,
        )
        return 0
