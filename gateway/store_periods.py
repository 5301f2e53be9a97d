"""Billing periods in the state store: reading them back and printing them.

Each accepted reset closes its channel's billing period, which is kept in the reset's own audit
row (gateway/store_schema.py, gateway/store_resets.py): as durable and as lasting as the audit. This
module reads them for ``pulse-gateway periods``, the status page and the API, and prints the
two forms the command offers: a table for people (local times, ImportIDs, units) and CSV for
scripts (UTC, fixed header). Separate from the audit because periods are read by what they
bill, not by what reset them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TextIO

from gateway.core import Instant
from gateway.store_connection import StoreConnection

CSV_HEADER = ("channel", "start", "end", "consumption", "peak_demand", "peak_time", "source")
# an accepted reset's audit row holds the period it closed (gateway/store_schema.py)
_QUERY = (
    "SELECT id, channel, period_start, time_us, period_consumption, period_peak,"
    " period_peak_time, source FROM resets WHERE period_start IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class PeriodRecord:
    """One closed billing period as kept; ``peak_*`` None when it had no valid demand."""

    reset_id: int  # the audit row of the reset that closed it
    channel: str
    start: Instant
    end: Instant
    consumption: float
    peak_demand: float | None
    peak_time: Instant | None
    source: str


class BillingPeriods(StoreConnection):
    """The store's billing periods (written by the reset audit, read here)."""

    def periods(
        self, channel: str | None = None, *, newest: int | None = None
    ) -> list[PeriodRecord]:
        """Closed periods oldest first, of one channel or all; ``newest``: only the last N."""
        sql, args = periods_query(channel, newest)
        with self._mutex:
            rows = self._connection().execute(sql, args).fetchall()
        return [PeriodRecord(*row) for row in rows]


def periods_query(channel: str | None, newest: int | None) -> tuple[str, tuple[object, ...]]:
    """The SQL (and its arguments) that reads periods as ``PeriodRecord`` rows, oldest first;
    for readers with a connection of their own (the web side reads on one)."""
    where = "" if channel is None else " AND channel = ?"
    args: tuple[object, ...] = () if channel is None else (channel,)
    if newest is None:
        return f"{_QUERY}{where} ORDER BY id", args
    sql = f"SELECT * FROM ({_QUERY}{where} ORDER BY id DESC LIMIT ?) ORDER BY id"
    return sql, (*args, newest)


def write_periods_csv(periods: Sequence[PeriodRecord], out: TextIO) -> None:
    """The CSV for scripts: channel ids, times ISO 8601 UTC with ``Z``, exact numbers."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for p in periods:
        writer.writerow(
            (
                p.channel,
                utc_text(p.start),
                utc_text(p.end),
                repr(p.consumption),
                "" if p.peak_demand is None else repr(p.peak_demand),
                "" if p.peak_time is None else utc_text(p.peak_time),
                p.source,
            )
        )


def format_periods(
    periods: Sequence[PeriodRecord],
    *,
    import_ids: Mapping[str, str],
    units: Mapping[str, tuple[str, str]],
    zone: tzinfo | None,
) -> str:
    """The table for people: ImportIDs, local times with their offset, units, rounded values.

    ``units``: per channel, its (consumption, demand) unit names, when known.
    """
    if not periods:
        return "no billing periods closed yet\n"
    header = ("channel", "import_id", "start", "end", "consumption", "peak_demand", "peak_time")
    rows: list[tuple[str, ...]] = [(*header, "source")]
    for p in periods:
        consumption_unit, demand_unit = units.get(p.channel, ("", ""))
        peak = "" if p.peak_demand is None else _with_unit(f"{p.peak_demand:.3f}", demand_unit)
        rows.append(
            (
                p.channel,
                import_ids.get(p.channel, p.channel),
                local_text(p.start, zone),
                local_text(p.end, zone),
                _with_unit(f"{p.consumption:.3f}", consumption_unit),
                peak,
                "" if p.peak_time is None else local_text(p.peak_time, zone),
                p.source,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines) + "\n"


def _with_unit(number: str, unit: str) -> str:
    return f"{number} {unit}" if unit else number


def _moment(instant: Instant) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=instant)


def utc_text(instant: Instant) -> str:
    """ISO 8601 UTC with ``Z``; a fraction of a second only when there is one."""
    spec = "seconds" if not instant % 10**6 else "auto"
    return _moment(instant).isoformat(timespec=spec).replace("+00:00", "Z")


def local_text(instant: Instant, zone: tzinfo | None) -> str:
    """The instant on the gateway's wall clock, with its UTC offset (unambiguous in DST)."""
    moment = _moment(instant).astimezone(zone or UTC)
    text = moment.isoformat(timespec="seconds" if not instant % 10**6 else "auto")
    return text.replace("+00:00", "Z") if zone is None else text
