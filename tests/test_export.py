"""EnergyCAP export (docs/reference/export-formats.md): formats, pictures, numbers, DST and the
drop file.

Expected files in tests/golden_export/ are written by hand, not generated; the sample_* files
there are EnergyCAP's own sample rows (docs/reference/export-formats.md), copied verbatim, which
must round-trip through a small reader of each format written here.
"""

from __future__ import annotations

import io
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import parse_config
from gateway.core import UNITS, parse_instant
from gateway.export import (
    UNIT_CODES,
    VALUE_FIELDS,
    ExportChannel,
    IntervalRecord,
    day_span,
    drop_file,
    format_number,
    local_time,
    local_to_instant,
    parse_picture,
    write_export,
    write_values,
)
from gateway.store import Store

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden_export"
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = 60_000_000
QUARTER = 15 * MINUTE

CHANNELS = [
    ExportChannel("main_electric", "KZG002614057", UNITS["kWh"]),
    ExportChannel("water", "KZG002614057", UNITS["us_gallons"]),  # same site id, another unit
    ExportChannel("gas", "METER001", UNITS["cubic_feet"]),
]


def record(
    channel: str, end: str, pulses: int, consumption: float, demand: float, estimated: bool
) -> IntervalRecord:
    """A 15-minute record ending at ``end`` (ISO, UTC)."""
    instant = parse_instant(end)
    return IntervalRecord(
        channel, instant, instant - QUARTER, pulses, consumption, demand, estimated, 0, 0.0
    )


# 2026-07-05 05:00Z..06:00Z: 00:00..01:00 in New York *standard* time (EDT would say 01:00..02:00).
RECORDS = [
    record("main_electric", "2026-07-05T05:00:00Z", 10, 1.0, 4.0, False),
    record("main_electric", "2026-07-05T05:15:00Z", 45, 4.5, 18.0, False),
    record("water", "2026-07-05T05:15:00Z", 120, 120.0, 8.0, False),
    record("gas", "2026-07-05T05:15:00Z", 3, 30.0, 2.0, False),
    record("main_electric", "2026-07-05T05:30:00Z", 3, 0.1 + 0.2, 1.2000000000000002, False),
    record("gas", "2026-07-05T05:30:00Z", 0, 0.0, 0.0, True),
    record("main_electric", "2026-07-05T05:45:00Z", 1, 1e-05, 4e-05, True),
    record("water", "2026-07-05T05:45:00Z", 7, 7.0, 0.4666666666666667, False),
    record("gas", "2026-07-05T05:45:00Z", 2, 20.0, 1.3333333333333333, False),
    record("main_electric", "2026-07-05T06:00:00Z", 123456789, 12345678.9, 49382715.6, False),
    record("water", "2026-07-05T06:00:00Z", 1, 1.5e-07, 1e-08, False),
]  # fmt: skip


def export(records: list[IntervalRecord], **options: Any) -> tuple[str, list[str]]:
    """``write_export`` into a string; the text and the warnings it gave."""
    warnings: list[str] = []
    out = io.StringIO()
    options.setdefault("zone", None)
    rows = write_export(records, CHANNELS, out, warn=warnings.append, **options)
    text = out.getvalue()
    assert rows == text.count("\n") - 1
    return text, warnings


# -- golden files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("energycap1_demand_new_york.csv", {"format": "energycap1", "value": "demand"}),
        (
            "energycap3_consumption_utc.csv",
            {"format": "energycap3", "value": "consumption", "time_format": "yyyy-MM-dd hhmm"},
        ),
        ("energycap4_demand_new_york.txt", {"format": "energycap4", "value": "demand"}),
    ],
)
def test_export_files_match_the_hand_written_files(
    tmp_path: Path, name: str, options: dict[str, Any]
) -> None:
    """Each format, written through a drop file, is byte for byte the hand-written file."""
    zone = None if "utc" in name else NEW_YORK
    warnings: list[str] = []

    def write(out: io.TextIOBase) -> None:
        write_export(RECORDS, CHANNELS, out, zone=zone, warn=warnings.append, **options)

    path = drop_file(tmp_path, "gss", date(2026, 7, 5), write)
    assert path.read_bytes() == (GOLDEN / name).read_bytes()
    assert warnings == []


# -- EnergyCAP's samples round-trip ---------------------------------------------------------


def sample_lines(name: str) -> list[str]:
    """The lines of one of EnergyCAP's sample files."""
    return (GOLDEN / name).read_text().splitlines()


def read_format1(lines: list[str]) -> list[tuple[str, str, dict[str, str]]]:
    """Format #1 rows as (ImportID, Timestamp, {unit label in lower case: value})."""
    header = lines[0].split(",")
    assert header[:2] == ["ImportID", "Timestamp"]
    labels = [name.removesuffix("Value").lower() for name in header[2:]]
    rows = []
    for line in lines[1:]:
        import_id, stamp, *values = line.split(",")
        rows.append((import_id, stamp, {k: v for k, v in zip(labels, values, strict=True) if v}))
    return rows


def read_format3(lines: list[str]) -> list[tuple[str, str, str, str]]:
    """Format #3 rows as (TIMESTAMP, IMPORTID, UNIT, VALUE); the sample pads with spaces."""
    assert [name.strip() for name in lines[0].split(",")] == [
        "TIMESTAMP",
        "IMPORTID",
        "UNIT",
        "VALUE",
    ]
    rows = []
    for line in lines[1:]:
        stamp, import_id, unit, value = (field.strip() for field in line.split(","))
        rows.append((stamp, import_id, unit, value))
    return rows


def read_format4(lines: list[str]) -> list[tuple[str, str, int, str, str, str]]:
    """Format #4 rows in long form: (ID, date, interval END as H*100+M, unit, value, A/E).

    Reads both the sample's layout (a begin-time column and a ``<unit>_QT`` column per
    quantity, 15-minute intervals) and ours (an end-time column, UNIT and VALUE).
    """
    header = lines[0].split()
    rows = []
    for line in lines[1:]:
        fields = dict(zip(header, line.split(maxsplit=len(header) - 1), strict=False))
        if "INTV_BEG_TM" in fields:
            begin = int(fields["INTV_BEG_TM"])
            minutes = begin // 100 * 60 + begin % 100 + 15
            end = minutes // 60 * 100 + minutes % 60
        else:
            end = int(fields["INTV_END_TM"])
        flag = fields["Estimated"]
        if "UNIT" in fields:
            quantities = {fields["UNIT"]: fields["VALUE"]}
        else:
            quantities = {
                name.removesuffix("_QT"): v for name, v in fields.items() if "_QT" in name
            }
        for unit, value in quantities.items():
            rows.append((fields["ESI_ID"], fields["INTV_REC_DT"], end, unit, value, flag))
    return rows


def sample_instant(stamp: str) -> int:
    """A sample timestamp (MM/dd/yyyy HH:mm), read as UTC."""
    moment = datetime.strptime(stamp, "%m/%d/%Y %H:%M").replace(tzinfo=UTC)
    return parse_instant(moment.isoformat())


def demand_records(rows: list[tuple[str, int, str, bool]]) -> list[IntervalRecord]:
    """kWh records (channel = ImportID) from (ImportID, end, kW, estimated)."""
    return [
        IntervalRecord(meter, end, end - QUARTER, 0, 0.0, float(kw), estimated, 0, 0.0)
        for meter, end, kw, estimated in rows
    ]


def kw_channels(records: list[IntervalRecord]) -> list[ExportChannel]:
    """One kWh channel per meter of ``records``, its id being its ImportID."""
    meters = dict.fromkeys(r.channel for r in records)
    return [ExportChannel(meter, meter, UNITS["kWh"]) for meter in meters]


def test_energycap_format1_sample_round_trips() -> None:
    """The sample's format #1 kW column, read and written back, is its text without kVAR."""
    sample = sample_lines("sample_format1.csv")
    rows = read_format1(sample)
    records = demand_records([(i, sample_instant(t), v["kw"], False) for i, t, v in rows])
    out = io.StringIO()
    count = write_export(
        records, kw_channels(records), out, format="energycap1", value="demand", zone=None
    )
    ours = out.getvalue().splitlines()
    without_kvar = [line.rsplit(",", 1)[0] for line in sample]
    assert count == len(rows) == 12
    assert ours[0] == "ImportID,Timestamp,KWValue"  # the sample writes kWValue: same unit
    assert ours[1:] == without_kvar[1:]  # values (22.56, 22.368, 8.16...) byte for byte
    assert [(i, t, v) for i, t, v in read_format1(ours)] == [
        (i, t, {"kw": v["kw"]}) for i, t, v in rows
    ]


def test_energycap_format3_sample_round_trips() -> None:
    """The sample's format #3 KW rows, read and written back, are its rows unpadded."""
    sample = sample_lines("sample_format3.csv")
    rows = [row for row in read_format3(sample) if row[2] == "KW"]
    records = demand_records([(i, sample_instant(t), v, False) for t, i, _, v in rows])
    out = io.StringIO()
    write_export(records, kw_channels(records), out, format="energycap3", value="demand", zone=None)
    ours = out.getvalue().splitlines()
    assert ours == [sample[0].replace(", ", ",")] + [
        line.replace(", ", ",") for line in sample[1:] if ", KW," in line
    ]
    assert read_format3(ours) == rows


@pytest.mark.parametrize("name", ["sample_format4.txt", "sample_format4_faq.txt"])
def test_energycap_format4_sample_round_trips(name: str) -> None:
    """Format #4 samples: KW_QT and A/E columns survive a write, times moved to interval ends."""
    rows = [row for row in read_format4(sample_lines(name)) if row[3] == "KW"]
    records = demand_records(
        [
            (meter, sample_instant(f"{day} {end // 100:02d}:{end % 100:02d}"), kw, flag == "E")
            for meter, day, end, _, kw, flag in rows
        ]
    )
    out = io.StringIO()
    write_export(records, kw_channels(records), out, format="energycap4", value="demand", zone=None)
    ours = out.getvalue().splitlines()
    assert ours[0] == "ESI_ID INTV_REC_DT INTV_END_TM UNIT VALUE Estimated"
    assert read_format4(ours) == rows
    assert len(rows) == len(sample_lines(name)) - 1


# -- pictures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("picture", "moment", "text"),
    [
        ("MM/dd/yyyy HH:mm", datetime(2002, 7, 5, 0, 15), "07/05/2002 00:15"),  # format #1
        ("MM/dd/yyyy hh:mm", datetime(2005, 12, 31, 12, 15), "12/31/2005 12:15"),
        ("MMddyy h:mm", datetime(2005, 12, 31, 0, 0), "123105 0:00"),
        ("yyyyMMdd hh:mm", datetime(2005, 12, 31, 1, 30), "20051231 01:30"),
        ("yyyy-MM-dd hhmm", datetime(2005, 12, 31, 1, 30), "2005-12-31 0130"),
        ("MMddyyyy H:mm", datetime(2006, 1, 1, 0, 0), "01012006 0:00"),  # the monthly sample
        ("yyyy-MM-dd HH:mm", datetime(2010, 5, 13, 15, 0), "2010-05-13 15:00"),  # the FAQ
        ("yyyyMMdd", datetime(2008, 9, 9), "20080909"),  # the FAQ's daily weather row
    ],
)
def test_energycap_pictures_write_their_own_examples(
    picture: str, moment: datetime, text: str
) -> None:
    """Every picture in EnergyCAP's documentation writes its own example timestamp."""
    assert parse_picture(picture)(moment) == text


def test_hh_is_a_24_hour_hour_and_single_letters_are_unpadded() -> None:
    """hh writes 13 for 1 pm (EnergyCAP has no AM/PM); M, d, H, h unpadded; quotes are literal."""
    moment = datetime(2026, 3, 8, 13, 5, 9)
    assert parse_picture("hh:mm")(moment) == "13:05"
    assert parse_picture("M/d/yy H:mm:ss")(datetime(2026, 3, 8, 7, 5, 9)) == "3/8/26 7:05:09"
    assert parse_picture("yyyy-MM-dd'T'HH:mm {}")(moment) == "2026-03-08T13:05 {}"


@pytest.mark.parametrize(
    ("picture", "complaint"),
    [
        ("MM/dd/yyyy HH:nn", "unknown token 'nn'"),
        ("MM/dd/yyyy hh:mm tt", "no AM/PM"),
        ("MMM dd yyyy", "unknown token 'MMM'"),
        ("MM/dd/yyy HH:mm", "unknown token 'yyy'"),
        ("MM/dd/yyyy HH:m", "minutes are mm"),
        ("mm/dd/yyyy HH:mm", "the minute appears twice"),
        ("MM/dd/yyyy 'at HH:mm", "unterminated quote"),
        ("", "empty"),
    ],
)
def test_unknown_picture_tokens_are_errors(picture: str, complaint: str) -> None:
    """A typo in a picture raises ValueError saying what is wrong, never writes garbage."""
    with pytest.raises(ValueError, match=complaint):
        parse_picture(picture)


@pytest.mark.parametrize(
    ("format", "picture", "complaint"),
    [
        ("energycap1", "MM/dd/yyyy", "has no hour, minute"),
        ("energycap3", "MM/dd HH:mm", "has no year"),
        ("energycap1", "MM,dd,yyyy HH:mm", "comma"),
        ("energycap4", "yyyyMMddHHmm", "date part"),
    ],
)
def test_pictures_that_cannot_carry_the_format_are_refused(
    format: str, picture: str, complaint: str
) -> None:
    """A picture that would merge intervals or split columns is refused before any output."""
    out = io.StringIO()
    with pytest.raises(ValueError, match=complaint):
        write_export(
            RECORDS, CHANNELS, out, format=format, value="demand", time_format=picture, zone=None
        )
    assert out.getvalue() == ""


def test_format4_uses_the_date_part_of_the_picture() -> None:
    """energycap4 writes the picture up to its first space as the date column."""
    text, _ = export(RECORDS[:1], format="energycap4", value="demand", time_format="yyyyMMdd hh:mm")
    assert text.splitlines()[1] == "KZG002614057 20260705 500 KW 4 A"


# -- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (22.56, "22.56"),
        (4426.0, "4426"),
        (0.0, "0"),
        (-0.0, "0"),
        (1e-05, "0.00001"),
        (1.5e-07, "0.00000015"),
        (1e16, "10000000000000000"),
        (1.2345e20, "123450000000000000000"),
        (0.1 + 0.2, "0.30000000000000004"),
        (12345678.9, "12345678.9"),
    ],
)
def test_numbers_are_shortest_round_trip_fixed_point(value: float, text: str) -> None:
    """Numbers are repr's digits in fixed point, without '.0', exponent or separators."""
    assert format_number(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_number_reads_back_exactly(value: float) -> None:
    """The text of any finite float has no exponent and reads back as the same float."""
    text = format_number(value)
    assert "e" not in text and "," not in text and not text.endswith(".0")
    assert float(text) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value: float) -> None:
    """NaN and infinities raise instead of writing text EnergyCAP cannot read."""
    with pytest.raises(ValueError, match="finite"):
        format_number(value)


def test_every_unit_has_distinct_plain_codes() -> None:
    """Each unit of the core table has a consumption and a demand code, all distinct, A-Z0-9."""
    assert set(UNIT_CODES) == set(UNITS)
    codes = [code for pair in UNIT_CODES.values() for code in pair]
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9]*", code) for code in codes)


def test_export_channels_come_from_the_config() -> None:
    """ExportChannel.of takes a channel's id, import_id (default: the id) and unit."""
    config = parse_config(
        "channels:\n"
        "  - {id: main, import_id: KZG002614057, unit: kWh, scale_factor: 0.5,"
        " demand_window: 15min, demand_slide: 5min}\n"
        "  - {id: gas, unit: cubic_feet, scale_factor: 10, demand_window: 1h,"
        " demand_slide: 15min}\n"
    )
    assert [ExportChannel.of(channel) for channel in config.channels] == [
        ExportChannel("main", "KZG002614057", UNITS["kWh"]),
        ExportChannel("gas", "gas", UNITS["cubic_feet"]),
    ]


# -- records in, rows out -------------------------------------------------------------------


def test_rows_of_one_timestamp_follow_config_order_whatever_the_input_order() -> None:
    """Records of one interval end in any order come out in config order."""
    shuffled = [*RECORDS[:1], RECORDS[3], RECORDS[1], RECORDS[2], *RECORDS[4:]]
    assert export(shuffled, format="energycap3", value="demand") == export(
        RECORDS, format="energycap3", value="demand"
    )


def test_records_out_of_time_order_are_refused() -> None:
    """An interval end earlier than one already written raises ValueError."""
    with pytest.raises(ValueError, match="out of order"):
        export([RECORDS[1], RECORDS[0]], format="energycap3", value="demand")


def test_two_records_of_one_channel_and_end_are_refused() -> None:
    """A duplicate (channel, end) raises ValueError instead of writing two rows."""
    with pytest.raises(ValueError, match="two interval records for channel 'main_electric'"):
        export([RECORDS[1], RECORDS[3], RECORDS[1]], format="energycap1", value="demand")


def test_records_of_channels_not_exported_are_skipped() -> None:
    """Passing fewer channels filters the export to those channels."""
    out = io.StringIO()
    rows = write_export(RECORDS, CHANNELS[2:], out, format="energycap3", value="demand", zone=None)
    assert rows == 3
    assert all(",METER001,CFM," in line for line in out.getvalue().splitlines()[1:])


@pytest.mark.parametrize(
    ("channels", "complaint"),
    [
        ([CHANNELS[0], CHANNELS[0]], "listed twice"),
        ([CHANNELS[0], ExportChannel("other", "KZG002614057", UNITS["kWh"])], "would collide"),
        ([ExportChannel("x", "KZG 1", UNITS["kWh"])], "without spaces"),
        ([ExportChannel("x", "", UNITS["kWh"])], "non-empty"),
    ],
)
def test_channels_that_would_make_ambiguous_rows_are_refused(
    channels: list[ExportChannel], complaint: str
) -> None:
    """Duplicate channels, a shared ImportID and unit, or a bad ImportID raise ValueError."""
    with pytest.raises(ValueError, match=complaint):
        write_export([], channels, io.StringIO(), format="energycap1", value="demand", zone=None)


@pytest.mark.parametrize(
    ("option", "complaint"),
    [({"format": "energycap2"}, "export format"), ({"value": "peak"}, "value")],
)
def test_unknown_format_or_value_is_refused_before_writing(
    option: dict[str, Any], complaint: str
) -> None:
    """An unknown --format or --value raises ValueError and writes nothing."""
    options = {"format": "energycap1", "value": "demand"} | option
    out = io.StringIO()
    with pytest.raises(ValueError, match=f"unknown {complaint}"):
        write_export(RECORDS, CHANNELS, out, zone=None, **options)
    assert out.getvalue() == ""


def test_an_empty_export_is_the_header_alone() -> None:
    """No records: the header row and 0 rows."""
    assert export([], format="energycap1", value="consumption") == (
        "ImportID,Timestamp,KWHValue,GALValue,CFValue\n",
        [],
    )


def test_intervals_off_whole_minutes_need_seconds_in_the_picture() -> None:
    """An end at 00:00:30 is refused by an hh:mm picture and written with ss."""
    odd = [record("gas", "2026-07-05T05:00:30Z", 1, 10.0, 40.0, False)]
    with pytest.raises(ValueError, match="whole minutes"):
        export(odd, format="energycap3", value="demand")
    text, _ = export(odd, format="energycap3", value="demand", time_format="MM/dd/yyyy HH:mm:ss")
    assert text.splitlines()[1] == "07/05/2026 05:00:30,METER001,CFM,40"


def test_export_streams_rows_before_reading_all_records() -> None:
    """Rows of an interval end are written before the records of later ends are read."""
    out = io.StringIO()
    seen: list[str] = []

    def records() -> Iterator[IntervalRecord]:
        for step in range(1000):
            end = parse_instant("2026-01-01T00:00:00Z") + step * QUARTER
            seen.append(out.getvalue())
            yield IntervalRecord("gas", end, end - QUARTER, 1, 10.0, 40.0, False, 0, 0.0)

    assert (
        write_export(records(), CHANNELS, out, format="energycap3", value="demand", zone=None)
        == 1000
    )
    assert seen[3].count("\n") == 3  # header and the rows of the first two ends


def test_rows_follow_config_order_whatever_channels_each_end_has() -> None:
    """Ends with changing sets and orders of channels (more than the writer remembers) and an
    unexported one: each end's rows in config order, row count and cells as the records say."""
    units = (UNITS["kWh"], UNITS["us_gallons"])  # two meters a site: KW and GPM columns
    channels = [ExportChannel(f"c{k}", f"SITE{k // 2}", units[k % 2]) for k in range(8)]
    start = parse_instant("2026-01-01T00:00:00Z")
    records: list[IntervalRecord] = []
    expected3, expected1 = [], []
    for step in range(300):
        end = start + (step + 1) * QUARTER
        present = [k for k in range(8) if (step >> k) & 1]  # 256 distinct sets, then again
        names = [f"c{k}" for k in present] + ["other"]
        names.sort(key=lambda name: hash((name, step)))  # any order within one end
        for name in names:
            records.append(
                IntervalRecord(name, end, end - QUARTER, 1, 0.5, step + 0.25, False, 0, 0.0)
            )
        stamp = f"{datetime(2026, 1, 1) + timedelta(minutes=15 * (step + 1)):%m/%d/%Y %H:%M}"
        expected3 += [f"{stamp},SITE{k // 2},{('KW', 'GPM')[k % 2]},{step + 0.25}" for k in present]
        for site in sorted({k // 2 for k in present}):
            cells = [str(step + 0.25) if k in present else "" for k in (2 * site, 2 * site + 1)]
            expected1.append(f"SITE{site},{stamp},{','.join(cells)}")
    for fmt, expected in (("energycap3", expected3), ("energycap1", expected1)):
        out = io.StringIO()
        rows = write_export(records, channels, out, format=fmt, value="demand", zone=None)
        assert out.getvalue().splitlines()[1:] == expected
        assert rows == len(expected)


@pytest.mark.parametrize(
    ("fmt", "row"),
    [
        ("energycap1", "{0}x}}{,07/05/2026 05:15,2"),
        ("energycap3", "07/05/2026 05:15,{0}x}}{,CFM,2"),
        ("energycap4", "{0}x}}{ 07/05/2026 515 CFM 2 A"),
    ],
)
def test_import_ids_with_braces_are_written_as_they_are(fmt: str, row: str) -> None:
    """An ImportID may hold { and }: written literally, never read as a placeholder."""
    channels = [ExportChannel("gas", "{0}x}}{", UNITS["cubic_feet"])]
    out = io.StringIO()
    write_export([RECORDS[3]], channels, out, format=fmt, value="demand", zone=None)
    assert out.getvalue().splitlines()[1:] == [row]


# -- daylight saving ------------------------------------------------------------------------


def quarter_hours(first_end: str, count: int) -> list[IntervalRecord]:
    """``count`` consecutive 15-minute gas records, the first ending at ``first_end`` (UTC)."""
    start = parse_instant(first_end)
    return [
        IntervalRecord("gas", end, end - QUARTER, 1, 10.0, 40.0, False, 0, 0.0)
        for end in range(start, start + count * QUARTER, QUARTER)
    ]


def stamps(text: str) -> list[str]:
    """The TIMESTAMP column of a format #3 export."""
    return [line.split(",")[0] for line in text.splitlines()[1:]]


def every_quarter(first: datetime, count: int) -> list[str]:
    """``count`` quarter-hour timestamps from ``first``, in the default picture."""
    return [f"{first + timedelta(minutes=15 * k):%m/%d/%Y %H:%M}" for k in range(count)]


# Spring forward in New York: 2026-03-08 02:00 EST (07:00Z) becomes 03:00 EDT.
# Fall back: 2026-11-01 02:00 EDT (06:00Z) becomes 01:00 EST.
SPRING = quarter_hours("2026-03-08T05:15:00Z", 16)  # ends 05:15Z..09:00Z
FALL = quarter_hours("2026-11-01T04:15:00Z", 20)  # ends 04:15Z..09:00Z


@pytest.mark.parametrize(
    ("records", "first"),
    [(SPRING, datetime(2026, 3, 8, 0, 15)), (FALL, datetime(2026, 10, 31, 23, 15))],
    ids=["spring", "fall"],
)
def test_standard_time_never_repeats_or_skips_across_dst_changes(
    records: list[IntervalRecord], first: datetime
) -> None:
    """By default timestamps are New York standard time (UTC-5) all year: even, silent."""
    text, warnings = export(records, format="energycap3", value="demand", zone=NEW_YORK)
    assert stamps(text) == every_quarter(first, len(records))
    assert warnings == []


def test_wall_clock_spring_forward_skips_an_hour_and_says_so() -> None:
    """With dst=True the 02:00-03:00 gap has no rows and a warning names those timestamps."""
    text, warnings = export(SPRING, format="energycap3", value="demand", zone=NEW_YORK, dst=True)
    assert stamps(text) == every_quarter(datetime(2026, 3, 8, 0, 15), 7) + every_quarter(
        datetime(2026, 3, 8, 3, 0), 9
    )
    assert len(warnings) == 1
    assert "jumps ahead 1 h" in warnings[0]
    assert "from 03/08/2026 02:00 up to (not including) 03/08/2026 03:00" in warnings[0]
    assert "2026-03-08 07:00:00Z" in warnings[0]


def test_wall_clock_fall_back_repeats_an_hour_and_says_so() -> None:
    """With dst=True 01:00-01:45 occur twice and a warning names those timestamps."""
    text, warnings = export(FALL, format="energycap3", value="demand", zone=NEW_YORK, dst=True)
    repeated = every_quarter(datetime(2026, 11, 1, 1, 0), 4)
    assert stamps(text) == (
        every_quarter(datetime(2026, 11, 1, 0, 15), 3)
        + repeated
        + repeated
        + every_quarter(datetime(2026, 11, 1, 2, 0), 9)
    )
    assert len(warnings) == 1
    assert "goes back 1 h" in warnings[0]
    assert "from 11/01/2026 01:00 up to (not including) 11/01/2026 02:00 occur twice" in warnings[0]


def test_dst_warnings_name_timestamps_as_format4_writes_them() -> None:
    """In energycap4 the warning names the date and the H*100+M time of that format."""
    _, warnings = export(FALL, format="energycap4", value="demand", zone=NEW_YORK, dst=True)
    assert "from 11/01/2026 100 up to (not including) 11/01/2026 200" in warnings[0]


def test_dst_warnings_go_to_python_warnings_by_default() -> None:
    """Without a warn callback a DST repeat is an ExportWarning, never silent."""
    with pytest.warns(UserWarning, match="occur twice"):
        write_export(
            FALL,
            CHANNELS,
            io.StringIO(),
            format="energycap1",
            value="demand",
            zone=NEW_YORK,
            dst=True,
        )


def test_utc_export_ignores_the_zone_rules() -> None:
    """zone=None (--utc) writes the UTC interval ends."""
    text, warnings = export(FALL, format="energycap3", value="demand", zone=None)
    assert stamps(text) == every_quarter(datetime(2026, 11, 1, 4, 15), 20)
    assert warnings == []


@pytest.mark.parametrize(
    ("day", "dst", "intervals"),
    [
        (date(2026, 3, 8), False, 96),
        (date(2026, 3, 8), True, 92),
        (date(2026, 11, 1), False, 96),
        (date(2026, 11, 1), True, 100),
    ],
)
def test_a_local_day_follows_the_same_rule(day: date, dst: bool, intervals: int) -> None:
    """day_span gives 96 intervals every standard-time day; wall-clock days have 92 or 100."""
    after, through = day_span(day, NEW_YORK, dst=dst)
    assert (through - after) // QUARTER == intervals
    assert local_time(through, NEW_YORK, dst=dst) == datetime(day.year, day.month, day.day + 1)


def test_local_times_convert_back_to_their_instants() -> None:
    """local_to_instant undoes local_time (first occurrence of a repeated wall time)."""
    for end in (r.end for r in SPRING + FALL):
        assert local_to_instant(local_time(end, NEW_YORK), NEW_YORK) == end
        assert local_to_instant(local_time(end, None), None) == end
    assert local_to_instant(datetime(2026, 11, 1, 1, 30), NEW_YORK, dst=True) == parse_instant(
        "2026-11-01T05:30:00Z"
    )
    assert day_span(date(2026, 7, 5), NEW_YORK) == (
        parse_instant("2026-07-05T05:00:00Z"),
        parse_instant("2026-07-06T05:00:00Z"),
    )


# -- the drop file --------------------------------------------------------------------------

DAY = date(2004, 4, 6)  # EnergyCAP's sample drop file is 'gss_20040406.csv'


def no_tmpfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make drop_file use a named hidden temporary file, as where O_TMPFILE is missing."""
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named-temp"])
def test_drop_files_get_a_b_c_suffixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """A second, third, fourth file of one day is named ...a.csv, ...b.csv, ...c.csv."""
    if not unnamed:
        no_tmpfile(monkeypatch)
    paths = [
        drop_file(tmp_path, "gss", DAY, lambda out, k=k: out.write(f"{k}\n")) for k in range(4)
    ]
    assert [p.name for p in paths] == [
        "gss_20040406.csv",
        "gss_20040406a.csv",
        "gss_20040406b.csv",
        "gss_20040406c.csv",
    ]
    assert [p.read_text() for p in paths] == ["0\n", "1\n", "2\n", "3\n"]
    assert sorted(os.listdir(tmp_path)) == [p.name for p in paths]  # no temporary file left


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named-temp"])
def test_a_failing_write_leaves_no_file_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """When the write callback raises, neither the file nor a temporary file remains."""
    if not unnamed:
        no_tmpfile(monkeypatch)

    def write(out: io.TextIOBase) -> None:
        out.write("ImportID,Timestamp,KWValue\n" * 10_000)
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError, match="store went away"):
        drop_file(tmp_path, "gss", DAY, write)
    assert os.listdir(tmp_path) == []


def test_without_hard_links_the_drop_falls_back_to_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file system without hard links a free name is still taken, never overwritten."""
    no_tmpfile(monkeypatch)

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "gss_20040406.csv").write_text("first\n")
    path = drop_file(tmp_path, "gss", DAY, lambda out: out.write("second\n"))
    assert path.name == "gss_20040406a.csv" and path.read_text() == "second\n"
    assert (tmp_path / "gss_20040406.csv").read_text() == "first\n"
    assert sorted(os.listdir(tmp_path)) == ["gss_20040406.csv", "gss_20040406a.csv"]


def test_concurrent_drops_never_take_the_same_name(tmp_path: Path) -> None:
    """Eight writers at once get eight different names, each with its own whole content."""
    barrier = threading.Barrier(8)
    paths: list[Path] = []

    def worker(k: int) -> None:
        def write(out: io.TextIOBase) -> None:
            barrier.wait()
            out.write(f"{k}\n" * 1000)

        paths.append(drop_file(tmp_path, "gss", DAY, write))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 8
    assert sorted(p.read_text() for p in paths) == [f"{k}\n" * 1000 for k in range(8)]


def test_drop_file_prefix_must_be_a_plain_name(tmp_path: Path) -> None:
    """A prefix with a path separator, or none, is refused."""
    for prefix in ("", "../gss", "a/b"):
        with pytest.raises(ValueError, match="prefix"):
            drop_file(tmp_path, prefix, DAY, lambda out: None)


KILLED_DROP = """
import os, sys, time
from datetime import date
from pathlib import Path
from gateway.export import drop_file
if sys.argv[3] == "named-temp":
    del os.O_TMPFILE
def write(out):
    out.write("ImportID,Timestamp,KWValue\\n" * 100_000)
    out.flush()
    Path(sys.argv[2]).touch()
    time.sleep(60)
drop_file(Path(sys.argv[1]), "gss", date(2004, 4, 6), write)
"""


@pytest.mark.parametrize("mode", ["o_tmpfile", "named-temp"])
def test_a_killed_drop_leaves_no_partial_csv(tmp_path: Path, mode: str) -> None:
    """SIGKILL in the middle of writing leaves no gss_*.csv (and the earlier file intact)."""
    drops, ready = tmp_path / "drops", tmp_path / "ready"
    drops.mkdir()
    (drops / "gss_20040405.csv").write_text("yesterday\n")
    command = [sys.executable, "-c", KILLED_DROP, str(drops), str(ready), mode]
    child = subprocess.Popen(command, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert child.poll() is None, "the drop process died before writing"
            assert time.monotonic() < deadline, "the drop process never started writing"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert [p.name for p in drops.glob("gss_*.csv")] == ["gss_20040405.csv"]
    assert (drops / "gss_20040405.csv").read_text() == "yesterday\n"
    left = sorted(set(os.listdir(drops)) - {"gss_20040405.csv"})
    if mode == "o_tmpfile":
        assert left == []  # the unnamed file vanished with the process
    else:
        assert all(name.startswith(".gss_20040406.") and name.endswith(".tmp") for name in left)


# -- from the store -------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Iterator[Store]:
    """A store holding RECORDS (and a record of a channel no longer configured)."""
    stray = record("removed", "2026-07-05T05:30:00Z", 1, 9.0, 9.0, False)
    with Store.open(tmp_path) as store:
        store.checkpoint({}, parse_instant("2026-07-05T06:00:00Z"), intervals=[*RECORDS, stray])
        yield store


@pytest.mark.parametrize("value", ["demand", "consumption"])
@pytest.mark.parametrize("fmt", ["energycap1", "energycap3", "energycap4"])
def test_values_read_from_the_store_export_like_the_records(
    saved: Store, fmt: str, value: str
) -> None:
    """write_values of Store.interval_values writes what write_export of the records does."""
    expected, _ = export(RECORDS, format=fmt, value=value, zone=NEW_YORK)
    for channels in ([c.id for c in CHANNELS], None):
        values = saved.interval_values(0, 2**62, VALUE_FIELDS[value], channels)
        out = io.StringIO()
        rows = write_values(values, CHANNELS, out, format=fmt, value=value, zone=NEW_YORK)
        assert (out.getvalue(), rows) == (expected, expected.count("\n") - 1)


def test_store_values_are_the_records_fields(saved: Store) -> None:
    """(channel, end, the column, estimated as 0/1), in the order and range of intervals()."""
    since, until = RECORDS[0].end, RECORDS[-1].end
    records = list(saved.intervals(since, until, ["water", "gas"]))
    assert list(saved.interval_values(since, until, "average_demand", ["water", "gas"])) == [
        (r.channel, r.end, r.average_demand, int(r.estimated)) for r in records
    ]
    assert len(records) == 6
    with pytest.raises(ValueError, match="consumption or average_demand"):
        saved.interval_values(since, until, "pulses")  # type: ignore[arg-type]


def test_store_readers_return_the_channels_asked_for_exactly(saved: Store) -> None:
    """Another channel's records are left out whether or not it has some in the range (the
    store skips its SQL filter when none has), and all come with no channels given."""
    ids = [c.id for c in CHANNELS]
    stray = parse_instant("2026-07-05T05:30:00Z")  # the end of the "removed" channel's record
    by_end = sorted(RECORDS, key=lambda r: (r.end, r.channel))
    assert list(saved.intervals(0, 2**62, ids)) == by_end
    assert list(saved.intervals(stray, 2**62, ids)) == [r for r in by_end if r.end > stray]
    assert list(saved.interval_values(stray - 1, stray, "consumption", ["gas"])) == [
        ("gas", stray, 0.0, 1)
    ]
    assert list(saved.interval_values(0, 2**62, "consumption", [])) == []
    assert [r.channel for r in saved.intervals(stray - 1, stray)] == [
        "gas",
        "main_electric",
        "removed",
    ]


EDGES = Path(__file__).parent / "golden" / "shared-replay-edges"


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        (
            "energycap3",
            "demand",
            "TIMESTAMP,IMPORTID,UNIT,VALUE\n03/01/2026 00:15,main,KW,50\n"
            "03/01/2026 00:30,main,KW,6\n03/01/2026 00:45,main,KW,92\n",
        ),
        (
            "energycap1",
            "consumption",
            "ImportID,Timestamp,KWHValue\nmain,03/01/2026 00:15,12.5\n"
            "main,03/01/2026 00:30,1.5\nmain,03/01/2026 00:45,23\n",
        ),
        (
            "energycap4",
            "demand",
            "ESI_ID INTV_REC_DT INTV_END_TM UNIT VALUE Estimated\nmain 03/01/2026 15 KW 50 A\n"
            "main 03/01/2026 30 KW 6 E\nmain 03/01/2026 45 KW 92 E\n",
        ),
    ],
)
def test_export_of_a_replayed_log_matches_the_hand_written_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, value: str, expected: str
) -> None:
    """replay --db then export --db: the edges example's three intervals, byte for byte."""
    db = tmp_path / "edges.db"
    replay_args = ["replay", "-c", str(EDGES / "config.yaml"), str(EDGES / "events.csv")]
    assert main([*replay_args, "--db", str(db)]) == 0
    capsys.readouterr()
    out = tmp_path / "out.csv"
    code = main(
        [
            "export",
            "--db",
            str(db),
            "--format",
            fmt,
            "--value",
            value,
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-01",
            "--out",
            str(out),
        ]
    )
    assert (code, capsys.readouterr().err) == (0, "")
    assert out.read_bytes() == expected.encode()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-03-02", "--to", "2026-03-01"], "not after"),
        (["--from", "yesterday", "--to", "2026-03-01"], "cannot read 'yesterday'"),
        (
            ["--from", "2026-03-01", "--to", "2026-03-01", "--channels", "gas"],
            "unknown channel gas",
        ),
        (["--from", "2026-03-01", "--to", "2026-03-01", "--time-format", "MM/dd/yyyy tt"], "tt"),
    ],
)
def test_a_bad_export_request_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Bad ranges, channels or pictures are refused before anything is written."""
    db = tmp_path / "edges.db"
    assert (
        main(
            ["replay", "-c", str(EDGES / "config.yaml"), str(EDGES / "events.csv"), "--db", str(db)]
        )
        == 0
    )
    capsys.readouterr()
    code = main(["export", "--db", str(db), "--format", "energycap3", *args])
    out = capsys.readouterr()
    assert (code, out.out) == (2, "")
    assert out.err.count("\n") == 1 and message in out.err
