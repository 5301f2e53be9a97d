"""Local time for exported timestamps: the daylight-saving rule, in one place.

Interval records carry UTC instants; EnergyCAP files carry local wall times without an offset
("12/31/2005 12:15" in EnergyCAP's import guide, docs/reference/export-formats.md), and the
importer infers the channel interval from the spacing of the timestamps ("The interval between
the timestamps determines the channel interval"). A wall clock that repeats an hour in the
autumn and skips one in the spring would therefore give duplicate timestamps (two rows for
01:15) and a hole (no 02:15) that EnergyCAP cannot tell from missing data. So:

- ``zone=None`` (``--utc``): UTC, the importer's "Times are in GMT" box.
- **default** (``dst=False``): the zone's *standard* time all year, ignoring daylight saving
  (America/New_York is UTC-05:00 in July too). Timestamps never repeat or skip, every local
  day has the same number of intervals, as is usual for utility interval data.
- ``dst=True``: wall-clock time. The repeated autumn hour and the skipped spring hour are
  reported through ``warn`` with the affected timestamps, never silently.

Every change of the offset between two consecutive exported instants is reported through
``warn``, whichever the mode: with ``dst=True`` that is each DST change, in standard time only
a historical change of the zone's standard offset.

The same rule turns local dates and times back into instants (``local_to_instant``,
``day_span``), so ``--from``/``--to`` and the daily file's day agree with the timestamps written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["LocalClock", "day_span", "local_time", "local_to_instant", "utc_offset"]

_EPOCH = datetime(1970, 1, 1)  # naive: instants are UTC
_ZERO = timedelta(0)
_ONE_MICROSECOND = timedelta(microseconds=1)


def utc_offset(instant: int, zone: ZoneInfo | None, *, dst: bool = False) -> timedelta:
    """The offset from UTC used for ``instant`` (µs since the epoch) under the export rule."""
    if zone is None:
        return _ZERO
    aware = (_EPOCH + timedelta(microseconds=instant)).replace(tzinfo=UTC).astimezone(zone)
    offset = aware.utcoffset() or _ZERO
    return offset if dst else offset - (aware.dst() or _ZERO)


def local_time(instant: int, zone: ZoneInfo | None, *, dst: bool = False) -> datetime:
    """``instant`` as a naive local date-time under the export rule."""
    return _EPOCH + timedelta(microseconds=instant) + utc_offset(instant, zone, dst=dst)


def local_to_instant(moment: datetime, zone: ZoneInfo | None, *, dst: bool = False) -> int:
    """The instant (µs) of a naive local ``moment``, the inverse of ``local_time``.

    With ``dst=True`` a wall time that occurs twice is taken at its first occurrence and one
    that does not exist (in the spring gap) is read with the offset before the change.
    """
    if moment.tzinfo is not None:
        raise ValueError(f"{moment.isoformat()} already has a zone: give a naive local time")
    if zone is None:
        offset = _ZERO
    else:
        aware = moment.replace(tzinfo=zone, fold=0)
        offset = aware.utcoffset() or _ZERO
        if not dst:
            offset -= aware.dst() or _ZERO
    return (moment - offset - _EPOCH) // _ONE_MICROSECOND


def day_span(day: date, zone: ZoneInfo | None, *, dst: bool = False) -> tuple[int, int]:
    """``(after, through)``: the interval ends ``after < end <= through`` that make up ``day``.

    Timestamps are interval ends, so a local day holds the intervals ending from 00:15 to the
    next day's 00:00 (as the import guide's format #1 sample, which starts at 00:15).
    """
    midnight = datetime(day.year, day.month, day.day)
    return (
        local_to_instant(midnight, zone, dst=dst),
        local_to_instant(midnight + timedelta(days=1), zone, dst=dst),
    )


def _offset_text(offset: timedelta) -> str:
    minutes = offset // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _span_text(span: timedelta) -> str:
    minutes = span // timedelta(minutes=1)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes % 60 else f"{minutes // 60} h"


class LocalClock:
    """Interval ends (µs, non-decreasing) -> naive local date-times, reporting offset changes.

    ``describe`` writes a local date-time as it appears in the file (so a warning names the
    very timestamps a reader will see); ``warn`` receives one message per change.
    """

    def __init__(
        self,
        zone: ZoneInfo | None,
        dst: bool,
        describe: Callable[[datetime], str],
        warn: Callable[[str], None],
    ) -> None:
        self.zone = zone
        self.dst = dst
        self.describe = describe
        self.warn = warn
        self._last: tuple[int, timedelta] | None = None

    def __call__(self, instant: int) -> datetime:
        """The local date-time of ``instant``; call in non-decreasing order of instants."""
        offset = utc_offset(instant, self.zone, dst=self.dst)
        if self._last is not None and self._last[1] != offset:
            self._report(self._last[0], self._last[1], instant, offset)
        self._last = (instant, offset)
        return _EPOCH + timedelta(microseconds=instant) + offset

    def _report(self, before: int, old: timedelta, after: int, new: timedelta) -> None:
        # Find the change to the microsecond: the first instant with the new offset.
        low, high = before, after
        while high - low > 1:
            middle = (low + high) // 2
            if utc_offset(middle, self.zone, dst=self.dst) == old:
                low = middle
            else:
                high = middle
        change = _EPOCH + timedelta(microseconds=high)
        where = f"{self.zone.key if self.zone else 'UTC'} changes from {_offset_text(old)} to "
        where += f"{_offset_text(new)} at {change:%Y-%m-%d %H:%M:%S}Z"
        if new < old:
            first, stop = change + new, change + old
            self.warn(
                f"{where}: local time goes back {_span_text(old - new)}, so the timestamps from "
                f"{self.describe(first)} up to (not including) {self.describe(stop)} occur "
                f"twice, first at {_offset_text(old)}, then at {_offset_text(new)}; export in "
                "standard time (the default) for timestamps that never repeat"
            )
        else:
            first, stop = change + old, change + new
            self.warn(
                f"{where}: local time jumps ahead {_span_text(new - old)}, so no row has a "
                f"timestamp from {self.describe(first)} up to (not including) "
                f"{self.describe(stop)}, although no data is missing; export in standard time "
                "(the default) for timestamps without gaps"
            )
