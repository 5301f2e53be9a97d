"""EnergyCAP interval-data text files (formats #1, #3 and #4) from interval records.

The formats are those of EnergyCAP's interval-data import guide, quoted in
docs/reference/export-formats.md; "the guide" below.

Pure formatting: records in, text out, streamed (one interval end in memory at a time), so a
year of 100 channels costs no more memory than a day. The callers (``pulse-gateway export``, the
scheduled drop) read the records from the store and choose the file.

Formats (one header row, which the guide calls "optional, but recommended"):

- ``energycap1``: ``ImportID,Timestamp,KWValue,GPMValue`` - one row per ImportID and timestamp
  with a column per unit code, as the guide's ``ImportID,Timestamp,kWValue,kVARValue``. The
  columns are the codes of all exported channels in config order; a channel without a record
  at that timestamp (or an ImportID without that unit) leaves its column empty.
- ``energycap3``: ``TIMESTAMP,IMPORTID,UNIT,VALUE`` - one row per channel and timestamp; the
  guide's sample repeats the timestamp for each unit in the same way.
- ``energycap4``: whitespace-separated ``ESI_ID INTV_REC_DT INTV_END_TM UNIT VALUE Estimated``,
  one row per channel and timestamp with ``A`` (actual) or ``E`` (estimated: an outage or the
  gateway's downtime touched the interval). The guide's sample has a date column and a *begin*
  time column (``0 15 30 45 100 115``: hour * 100 + minute, no padding); this gateway's
  timestamps are interval ends, so our time column holds the interval **end** in that same form
  and is named ``INTV_END_TM`` to say so (the interval ending at midnight is the next date,
  time ``0``). One row per channel rather than a column per unit: a whitespace-separated row
  cannot leave a column empty, and the A/E flag is exact per channel. The date column uses the
  picture's date part (the picture up to its first space: ``MM/dd/yyyy`` by default, as the
  guide). Formats 1 and 3 have no A/E column in the guide, so only format 4 carries the flag.

Unit codes, the one table (``UNIT_CODES``): format 3's UNIT values, format 4's UNIT values and
format 1's headers (``<code>Value``). Upper case as in the guide's format #2 and #3 samples
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
importer may misread - without a trailing ``.0`` (``4426`` as in the guide's samples) and without
thousands separators.

Timestamps are interval ends in local standard time by default (``gateway.export.localtime``
has the daylight-saving rule), written in an EnergyCAP picture (``gateway.export.pictures``).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import groupby, pairwise
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, TextIO
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
    "VALUE_FIELDS",
    "ExportChannel",
    "ExportWarning",
    "IntervalRecord",
    "IntervalValue",
    "day_span",
    "drop_file",
    "format_number",
    "local_to_instant",
    "parse_picture",
    "unit_code",
    "write_export",
    "write_values",
]

FORMATS = ("energycap1", "energycap3", "energycap4")
VALUES = ("demand", "consumption")
# the IntervalRecord field each value exports
VALUE_FIELDS: dict[str, Literal["average_demand", "consumption"]] = {
    "demand": "average_demand",
    "consumption": "consumption",
}
DEFAULT_TIME_FORMAT = "MM/dd/yyyy HH:mm"  # the guide's format #1 and #3 samples

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


# (channel, end, value, estimated): what one export reads of a record (Store.interval_values)
type IntervalValue = tuple[str, int, float, int]
type _Row = Sequence[Any]  # an IntervalValue or an IntervalRecord: channel at 0, end at 1
_CHANNEL = itemgetter(0)
_END = itemgetter(1)
_PLANS = 16  # distinct channel sequences remembered per export (bounded: memory stays flat)


class _Numbers(dict[float, str]):
    """``format_number`` with a memory, read in C by ``map(numbers.__getitem__, ...)``.

    Meter values are pulses times a scale factor, so few distinct numbers recur all year:
    remembering their text saves most of the float-to-text work (bench/export.py).
    """

    def __missing__(self, amount: float) -> str:
        text = format_number(amount)
        if len(self) < _NUMBER_CACHE:
            self[amount] = text
        return text


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to write an interval end whose records name ``channels``, in that order.

    The records of consecutive ends nearly always name the same channels in the same order
    (the store reads them by channel id), so the work per record - find its channel, restore
    config order, check for duplicates, lay out its line - is done once per distinct sequence
    and each end then costs a few calls into C instead of Python code per record.
    """

    channels: tuple[str, ...]  # the records' channels as read
    pick: Callable[[Sequence[_Row]], Sequence[_Row]]  # the exported records, in config order
    template: str  # str.format: {0} the timestamp, {1}.. the values (then format 4's flags)
    lines: int  # rows it writes (0: no exported channel, nothing to write)


def _braces(text: str) -> str:
    """``text`` as a literal part of a str.format template."""
    return text.replace("{", "{{").replace("}", "}}")


def _picker(positions: list[int]) -> Callable[[Sequence[_Row]], Sequence[_Row]]:
    """A function taking the items at ``positions`` of a sequence, as a tuple."""
    if len(positions) > 1:
        return itemgetter(*positions)
    # itemgetter of one position returns the item itself, of none it is an error
    return lambda group: tuple(group[position] for position in positions)


class _Layout(ABC):
    """One file format: its header, its timestamp text and its rows for one interval end."""

    def __init__(
        self,
        time_format: str,
        specs: dict[str, _Spec],
        codes: list[str],
        import_ids: list[str],
        value_at: int,
        flag_at: int,
    ) -> None:
        self.specs = specs
        self.codes = codes  # the unit codes, one per value column (format 1)
        self.import_ids = import_ids  # in order of first appearance (format 1 rows)
        self.value = itemgetter(value_at)  # where a row holds the exported value
        self.flag = itemgetter(flag_at)  # and its estimated flag
        self.numbers = _Numbers()
        self.plans: dict[tuple[str, ...], _Plan] = {}
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

    def plan(self, channels: tuple[str, ...], end: int) -> _Plan:
        """The plan for records naming ``channels`` (ending ``end``, for the error message)."""
        plan = self.plans.get(channels)
        if plan is None:
            chosen = [
                (self.specs[channel], position)
                for position, channel in enumerate(channels)
                if channel in self.specs  # others are skipped: callers filter by passing fewer
            ]
            chosen.sort(key=lambda pair: pair[0].index)
            for (spec, _), (after, _) in pairwise(chosen):
                if spec.index == after.index:
                    raise ValueError(
                        f"two interval records for channel {spec.channel!r} "
                        f"ending {format_instant(end)}"
                    )
            template, lines = self.template([spec for spec, _ in chosen])
            plan = _Plan(channels, _picker([position for _, position in chosen]), template, lines)
            if len(self.plans) >= _PLANS:
                self.plans.clear()
            self.plans[channels] = plan
        return plan

    def rows(self, plan: _Plan, stamp: str, group: Sequence[_Row]) -> str:
        """The rows of one timestamp's records."""
        texts = map(self.numbers.__getitem__, map(self.value, plan.pick(group)))
        return plan.template.format(stamp, *texts)

    @abstractmethod
    def header(self) -> str:
        """The header line(s) of this format."""

    @abstractmethod
    def template(self, specs: list[_Spec]) -> tuple[str, int]:
        """The rows of these channels' records (in config order) as a template; how many."""


class _Format1(_Layout):
    def header(self) -> str:
        return ",".join(["ImportID", "Timestamp", *(f"{code}Value" for code in self.codes)]) + "\n"

    def template(self, specs: list[_Spec]) -> tuple[str, int]:
        table: dict[int, list[str]] = {}
        for field, spec in enumerate(specs, 1):
            table.setdefault(spec.row, [""] * len(self.codes))[spec.column] = f"{{{field}}}"
        lines = [
            f"{_braces(self.import_ids[row])},{{0}},{','.join(table[row])}\n"
            for row in sorted(table)
        ]
        return "".join(lines), len(lines)


class _Format3(_Layout):
    def header(self) -> str:
        return "TIMESTAMP,IMPORTID,UNIT,VALUE\n"

    def template(self, specs: list[_Spec]) -> tuple[str, int]:
        lines = [
            f"{{0}},{_braces(spec.import_id)},{spec.code},{{{field}}}\n"
            for field, spec in enumerate(specs, 1)
        ]
        return "".join(lines), len(lines)


class _Format4(_Layout):
    def _picture(self, time_format: str) -> Picture:
        # The guide's INTV_REC_DT is a date column; its time column is fixed (hour*100+minute).
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

    def template(self, specs: list[_Spec]) -> tuple[str, int]:
        count = len(specs)
        lines = [
            f"{_braces(spec.import_id)} {{0}} {spec.code} {{{field}}} {{{field + count}}}\n"
            for field, spec in enumerate(specs, 1)
        ]
        return "".join(lines), len(lines)

    def rows(self, plan: _Plan, stamp: str, group: Sequence[_Row]) -> str:
        records = plan.pick(group)
        texts = map(self.numbers.__getitem__, map(self.value, records))
        flags = map(_FLAGS.__getitem__, map(bool, map(self.flag, records)))
        return plan.template.format(stamp, *texts, *flags)


_FLAGS = ("A", "E")  # by ``estimated``: actual or estimated
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
    _check(format, value)
    fields = IntervalRecord._fields
    value_at, flag_at = fields.index(VALUE_FIELDS[value]), fields.index("estimated")
    layout = _layout(format, value, time_format, channels, value_at, flag_at)
    return _write(records, layout, out, zone, dst, warn)


def write_values(
    values: Iterable[IntervalValue],
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
    """``write_export`` of ``(channel, end, value, estimated)`` tuples instead of records.

    Each tuple holds the field of a record that ``value`` exports (``VALUE_FIELDS``), as
    ``Store.interval_values`` reads them: a year of 100 channels is 3.5 M records, and plain
    tuples from SQLite save building a record for each.
    """
    _check(format, value)
    return _write(values, _layout(format, value, time_format, channels, 2, 3), out, zone, dst, warn)


def _check(format: str, value: str) -> None:
    if format not in _LAYOUTS:
        raise ValueError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    if value not in VALUES:
        raise ValueError(f"unknown value {value!r}: use one of {', '.join(VALUES)}")


def _layout(
    format: str,
    value: str,
    time_format: str,
    channels: Sequence[ExportChannel],
    value_at: int,
    flag_at: int,
) -> _Layout:
    specs, codes, import_ids = _specs(channels, value)
    return _LAYOUTS[format](time_format, specs, codes, import_ids, value_at, flag_at)


def _write(
    rows: Iterable[_Row],
    layout: _Layout,
    out: TextIO,
    zone: ZoneInfo | None,
    dst: bool,
    warn: Callable[[str], None],
) -> int:
    """Write the header, then the rows of each interval end; the number of data rows."""
    clock = LocalClock(zone, dst, layout.describe, warn)
    out.write(layout.header())
    written = 0
    last: int | None = None
    plan: _Plan | None = None
    for end, records in groupby(rows, _END):
        if last is not None and end <= last:
            raise ValueError(
                f"interval records out of order: {format_instant(end)} after "
                f"{format_instant(last)} (they must be ordered by end)"
            )
        last = end
        group = list(records)
        channels = tuple(map(_CHANNEL, group))
        if plan is None or plan.channels != channels:
            plan = layout.plan(channels, end)
        if not plan.lines:
            continue
        moment = clock(end)
        if moment.microsecond or (moment.second and not layout.seconds):
            raise ValueError(
                f"interval end {moment:%Y-%m-%d %H:%M:%S.%f} (local) does not fit the picture: "
                "intervals must end on whole minutes (or add ss to the picture)"
            )
        out.write(layout.rows(plan, layout.describe(moment), group))
        written += plan.lines
    return written
