"""Interval data out of the gateway: EnergyCAP import files and the daily drop.

The formats are described in docs/reference/export-formats.md.

``write_export`` formats interval records (``energycap.py``; ``write_values`` the plain tuples
``Store.interval_values`` reads, for a faster export), ``parse_picture`` reads EnergyCAP
timestamp pictures (``pictures.py``), ``localtime.py`` holds the daylight-saving rule and
``drop_file`` writes the dated drop files atomically (``drop.py``). Nothing here reads the
store, a clock or the config file: callers hand records and settings in.
"""

from gateway.export.drop import drop_file
from gateway.export.energycap import (
    DEFAULT_TIME_FORMAT,
    FORMATS,
    UNIT_CODES,
    VALUE_FIELDS,
    VALUES,
    ExportChannel,
    ExportWarning,
    IntervalRecord,
    IntervalValue,
    format_number,
    unit_code,
    write_export,
    write_values,
)
from gateway.export.localtime import day_span, local_time, local_to_instant
from gateway.export.pictures import parse_picture

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
    "local_time",
    "local_to_instant",
    "parse_picture",
    "unit_code",
    "write_export",
    "write_values",
]
