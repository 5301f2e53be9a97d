"""EnergyCAP interval-data text files (seed 001, formats #1, #3 and #4) from interval records.

Pure formatting: records in, text out, streamed (one interval end in memory at a time), so a
year of 100 channels costs no more memory than a day. The callers (``pulse-gateway export``, the
scheduled drop) read the records from the store and choose the file.

Formats (one header row, which the seed calls "optional, but recommended"):

- ``energycap1``: ``ImportID,Timestamp,KWValue,GPMValue`` - one row per ImportID and timestamp
  with a column per unit code, as the seed's ``ImportID,Timestamp,kWValue,kVARValue``. The
  columns are the codes of all exported channels in config order; a channel without a record
  at that timestamp (or an ImportID without that unit) leaves its column empty.
- ``energycap3``: ``TIMESTAMP,IMPORTID,UNIT,VALUE`` - one row per channel and timestamp; the
  seed's sample repeats the timestamp for each unit in the same way.
- ``energycap4``: whitespace-separated ``ESI_ID INTV_REC_DT INTV_END_TM UNIT VALUE Estimated``,
  one row per channel and timestamp with ``A`` (actual) or ``E`` (estimated: an outage or the
  gateway's downtime touched the interval). The seed's sample has a date column and a *begin*
  time column (``0 15 30 45 100 115``: hour * 100 + minute, no padding); PRODUCT.md §7 says
  timestamps are interval ends, so our time column holds the interval **end** in that same form
  and is named ``INTV_END_TM`` to say so (the interval ending at midnight is the next date,
  time ``0``). One row per channel rather than a column per unit: a whitespace-separated row
  cannot leave a column empty, and the A/E flag is exact per channel. The date column uses the
  picture's date part (the picture up to its first space: ``MM/dd/yyyy`` by default, as the
  seed). Formats 1 and 3 have no A/E column in the seed, so only format 4 carries the flag.

Unit codes, the one table (``UNIT_CODES``): format 3's UNIT values, format 4's UNIT values and
format 1's headers (``<code>Value``). Upper case as in the seed's format #2 and #3 samples
(``KW``, ``KVAR``); letters and digits only so they are safe in every format:

============== ================= ============
``unit``        consumption code  demand code
============== ================= ============
``kWh``         ``KWH``           ``KW``
``lbs``         ``LBS``           ``LBSHR``
``cubic_feet``  ``CF``            ``CFM``
``us_gallons``  ``GAL``           ``GPM``
``m3``          ``M3``            ``M3HR``
``liters``      ``L``             ``LPM``
============== ================= ============

Numbers (``format_number``): the shortest text that reads back as the same float (Python's
``repr``, as the replay output), always in fixed point - ``0.00001`` never ``1e-05``, which an
importer may misread - without a trailing ``.0`` (``4426`` as in the seed's samples) and without
thousands separators.

Timestamps are interval ends in local standard time by default (``gateway.export.localtime``
has the daylight-saving rule), written in an EnergyCAP picture (``gateway.export.pictures``).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import groupby, pairwise
from operator import attrgetter
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

from gateway.core import IntervalRecord, Unit, format_instant
from gateway.export.drop import drop_file
from gateway.export.localtime import LocalClock, day_span, local_to_instant
from gateway.export.pictures import DATE_FIELDS, Picture, compile_picture, parse_picture

if TYPE_CHECKING:
    from gateway.config import ChannelConfig

__all__ = [
    "DEFAULT_TIME_FORMAT",
    "FORMATS",
    "UNIT_CODES",
    "VALUES",
    "ExportChannel",
    "ExportWarning",
    "IntervalRecord",
    "day_span",
    "drop_file",
    "format_number",
    "local_to_instant",
    "parse_picture",
    "unit_code",
    "write_export",
]

FORMATS = ("energycap1", "energycap3", "energycap4")
VALUES = ("demand", "consumption")
DEFAULT_TIME_FORMAT = "MM/dd/yyyy HH:mm"  # PRODUCT.md §7; the seed's format #1 and #3 samples

# unit name (gateway.core.UNITS) -> (consumption code, demand code); see the module docstring.
UNIT_CODES: dict[str, tuple[str, str]] = {
    "kWh": ("KWH", "KW"),
    "lbs": ("LBS", "LBSHR"),
    "cubic_feet": ("CF", "CFM"),
    "us_gallons": ("GAL", "GPM"),
    "m3": ("M3", "M3HR"),
    "liters": ("L", "LPM"),
}

_FORBIDDEN_IN_IDS = frozenset(" \t\r\n,\"'")
_NUMBER_CACHE = 1 << 14  # distinct values remembered per export (bounded: memory stays flat)


@dataclass(frozen=True, slots=True)
class ExportChannel:
    """What the export needs of a channel's config."""

    id: str
    import_id: str  # EnergyCAP's ImportID: "links the imported data to the correct meter"
    unit: Unit

    @classmethod
    def of(cls, channel: ChannelConfig) -> ExportChannel:
        """The export's view of a configured channel."""
        return cls(channel.id, channel.import_id, channel.rules.unit)


class ExportWarning(UserWarning):
    """Something the reader of an export should know (a DST repeat or gap), not an error."""


def _warn(message: str) -> None:
    warnings.warn(message, ExportWarning, stacklevel=3)


def unit_code(unit: Unit, value: str) -> str:
    """The EnergyCAP unit code of ``unit``'s consumption or demand (``value``)."""
    if value not in VALUES:
        raise ValueError(f"unknown value {value!r}: use one of {', '.join(VALUES)}")
    try:
        consumption, demand = UNIT_CODES[unit.name]
    except KeyError:
        raise ValueError(f"unit {unit.name!r} has no EnergyCAP unit code") from None
    return demand if value == "demand" else consumption


def format_number(value: float) -> str:
    """Shortest round-trip text of ``value`` in fixed point: ``22.56``, ``4426``, ``0.00001``."""
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
        return "0" if text == "-0" else text
    if text[-1] in "nf":  # nan, inf, -inf
        raise ValueError(f"{text} cannot be exported: interval values are finite")
    if "e" in text:
        # Decimal keeps repr's digits exactly; "f" spells them out without an exponent.
        return format(Decimal(text), "f")
    return text


@dataclass(frozen=True, slots=True)
class _Spec:
    """A channel's place in the output, resolved once before the first row."""

    index: int  # config order: rows of one timestamp follow it
    channel: str
    import_id: str
    code: str
    row: int  # format 1: the ordinal of its ImportID (rows of one timestamp in this order)
    column: int  # format 1: the ordinal of its code among the value columns


def _specs(
    channels: Sequence[ExportChannel], value: str
) -> tuple[dict[str, _Spec], list[str], list[str]]:
    """Check the channels: their specs by id, unit codes and ImportIDs (first-seen order)."""
    specs: dict[str, _Spec] = {}
    codes: list[str] = []
    import_ids: list[str] = []
    taken: dict[tuple[str, str], str] = {}
    for index, channel in enumerate(channels):
        if channel.id in specs:
            raise ValueError(f"channel {channel.id!r} is listed twice")
        if not channel.import_id or _FORBIDDEN_IN_IDS.intersection(channel.import_id):
            raise ValueError(
                f"channel {channel.id!r}: import_id {channel.import_id!r} must be non-empty, "
                "without spaces, commas or quotes (it is a column of the export)"
            )
        code = unit_code(channel.unit, value)
        other = taken.setdefault((channel.import_id, code), channel.id)
        if other != channel.id:
            raise ValueError(
                f"channels {other!r} and {channel.id!r} share import_id "
                f"{channel.import_id!r} and unit {code}: their rows would collide"
            )
        if code not in codes:
            codes.append(code)
        if channel.import_id not in import_ids:
            import_ids.append(channel.import_id)
        row, column = import_ids.index(channel.import_id), codes.index(code)
        specs[channel.id] = _Spec(index, channel.id, channel.import_id, code, row, column)
    return specs, codes, import_ids


type _Group = list[tuple[_Spec, IntervalRecord]]
_END = attrgetter("end")


def _groups(records: Iterable[IntervalRecord], specs: dict[str, _Spec]) -> Iterator[_Group]:
    """The records of each interval end, of the exported channels, in config order."""
    last: int | None = None
    for end, group in groupby(records, _END):
        if last is not None and end <= last:
            raise ValueError(
                f"interval records out of order: {format_instant(end)} after "
                f"{format_instant(last)} (they must be ordered by end)"
            )
        last = end
        pairs: _Group = []
        previous, ordered = -1, True
        for record in group:
            spec = specs.get(record.channel)
            if spec is None:  # not an exported channel: callers filter by passing fewer
                continue
            ordered = ordered and spec.index > previous
            previous = spec.index
            pairs.append((spec, record))
        if not ordered:
            pairs.sort(key=lambda pair: pair[0].index)
            for (spec, _), (after, _) in pairwise(pairs):
                if spec.index == after.index:
                    raise ValueError(
                        f"two interval records for channel {spec.channel!r} "
                        f"ending {format_instant(end)}"
                    )
        if pairs:
            yield pairs


class _Layout(ABC):
    """One file format: its header, its timestamp text and its rows for one interval end."""

    def __init__(
        self, time_format: str, codes: list[str], import_ids: list[str], value: str
    ) -> None:
        self.codes = codes  # the unit codes, one per value column (format 1)
        self.import_ids = import_ids  # in order of first appearance (format 1 rows)
        self.read = attrgetter("average_demand" if value == "demand" else "consumption")
        # Meter values are pulses times a scale factor, so few distinct numbers recur all
        # year: remembering their text saves most of the float-to-text work (bench/export.py).
        self.numbers: dict[float, str] = {}
        self.picture = self._picture(time_format)
        self.seconds = "second" in self.picture.fields

    def _picture(self, time_format: str) -> Picture:
        picture = compile_picture(time_format)
        missing = (DATE_FIELDS | {"hour", "minute"}) - picture.fields
        if missing:
            raise ValueError(
                f"timestamp picture {time_format!r} has no {', '.join(sorted(missing))}: "
                "each interval needs its own timestamp, like MM/dd/yyyy HH:mm"
            )
        if set(picture.literal) & set(',"\r\n'):
            raise ValueError(f"timestamp picture {time_format!r}: a comma or quote would split it")
        return picture

    def describe(self, moment: datetime) -> str:
        """A local date-time as the file writes it."""
        return self.picture.format(moment)

    def number(self, amount: float) -> str:
        """``format_number`` through the cache (the layouts inline the cache hit)."""
        text = self.numbers.get(amount)
        if text is None:
            text = format_number(amount)
            if len(self.numbers) < _NUMBER_CACHE:
                self.numbers[amount] = text
        return text

    @abstractmethod
    def header(self) -> str:
        """The header line(s) of this format."""

    @abstractmethod
    def rows(self, stamp: str, group: _Group) -> str:
        """The rows of one timestamp's records."""


class _Format1(_Layout):
    def header(self) -> str:
        return ",".join(["ImportID", "Timestamp", *(f"{code}Value" for code in self.codes)]) + "\n"

    def rows(self, stamp: str, group: _Group) -> str:
        read, numbers, width = self.read, self.numbers, len(self.codes)
        table: list[list[str] | None] = [None] * len(self.import_ids)
        for spec, record in group:
            row = table[spec.row]
            if row is None:
                row = table[spec.row] = [""] * width
            amount = read(record)
            row[spec.column] = numbers.get(amount) or self.number(amount)
        return "".join(
            [
                f"{import_id},{stamp},{','.join(row)}\n"
                for import_id, row in zip(self.import_ids, table, strict=True)
                if row is not None
            ]
        )


class _Format3(_Layout):
    def header(self) -> str:
        return "TIMESTAMP,IMPORTID,UNIT,VALUE\n"

    def rows(self, stamp: str, group: _Group) -> str:
        read, numbers, lines = self.read, self.numbers, []
        for spec, record in group:
            amount = read(record)
            text = numbers.get(amount) or self.number(amount)
            lines.append(f"{stamp},{spec.import_id},{spec.code},{text}\n")
        return "".join(lines)


class _Format4(_Layout):
    def _picture(self, time_format: str) -> Picture:
        # The seed's INTV_REC_DT is a date column; its time column is fixed (hour*100+minute).
        date_part = time_format.split(maxsplit=1)[0] if time_format.strip() else time_format
        picture = compile_picture(date_part)
        if picture.fields != DATE_FIELDS:
            raise ValueError(
                f"timestamp picture {time_format!r}: energycap4 needs a date part of year, "
                f"month and day before the first space (like MM/dd/yyyy), read {date_part!r}; "
                "the time goes in its own column"
            )
        return picture

    def describe(self, moment: datetime) -> str:
        return f"{self.picture.format(moment)} {moment.hour * 100 + moment.minute}"

    def header(self) -> str:
        return "ESI_ID INTV_REC_DT INTV_END_TM UNIT VALUE Estimated\n"

    def rows(self, stamp: str, group: _Group) -> str:
        read, numbers, lines = self.read, self.numbers, []
        for spec, record in group:
            amount = read(record)
            text = numbers.get(amount) or self.number(amount)
            flag = "E" if record.estimated else "A"
            lines.append(f"{spec.import_id} {stamp} {spec.code} {text} {flag}\n")
        return "".join(lines)


_LAYOUTS: dict[str, type[_Layout]] = {
    "energycap1": _Format1,
    "energycap3": _Format3,
    "energycap4": _Format4,
}


def write_export(
    records: Iterable[IntervalRecord],
    channels: Sequence[ExportChannel],
    out: TextIO,
    *,
    format: str,
    value: str,
    time_format: str = DEFAULT_TIME_FORMAT,
    zone: ZoneInfo | None,
    dst: bool = False,
    warn: Callable[[str], None] = _warn,
) -> int:
    """Write ``records`` to ``out`` as an EnergyCAP file; the number of data rows written.

    ``records`` must be ordered by interval end (within one end any order; config order is
    restored); records of channels not in ``channels`` are skipped, so passing fewer channels
    filters the export. ``format`` is one of ``FORMATS``, ``value`` one of ``VALUES``,
    ``time_format`` an EnergyCAP picture. ``zone`` None writes UTC; otherwise local standard
    time, or wall-clock time with ``dst=True`` (each DST change is then reported via ``warn``).
    Bad arguments (format, value, picture, channels) raise ValueError before anything is
    written; bad data (records out of order, a duplicate, a non-finite value) raises ValueError
    when it is reached, after the rows before it (``drop_file`` then keeps no file).
    """
    if format not in _LAYOUTS:
        raise ValueError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    if value not in VALUES:
        raise ValueError(f"unknown value {value!r}: use one of {', '.join(VALUES)}")
    specs, codes, import_ids = _specs(channels, value)
    layout = _LAYOUTS[format](time_format, codes, import_ids, value)
    clock = LocalClock(zone, dst, layout.describe, warn)
    out.write(layout.header())
    rows = 0
    for group in _groups(records, specs):
        moment = clock(group[0][1].end)
        if moment.microsecond or (moment.second and not layout.seconds):
            raise ValueError(
                f"interval end {moment:%Y-%m-%d %H:%M:%S.%f} (local) does not fit the picture: "
                "intervals must end on whole minutes (or add ss to the picture)"
            )
        text = layout.rows(layout.describe(moment), group)
        out.write(text)
        rows += text.count("\n")
    return rows
