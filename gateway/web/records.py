"""The reset audit and interval records as the API serves them, read on a connection of our own.

The gateway's ``Store`` serialises its calls on one connection that the checkpoint writer also
uses; a page that reads 24 hours of records must not wait for a checkpoint, nor make one wait.
So the web side opens the database read-only (WAL lets it read while the gateway writes), and
reads it from a worker thread, one query at a time. It never writes.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from gateway.core import Instant, Totals
from gateway.store_periods import PeriodRecord, periods_query
from gateway.web.snapshot import Json, iso, number, totals

# the columns of the append-only audit (gateway/store_schema.py), in this order
_RESET_COLUMNS = (
    "id, channel, time_us, source, accepted, reason,"
    " peak_before, previous_peak_before, cumulative_before, reset_count_before,"
    " peak_after, previous_peak_after, cumulative_after, reset_count_after"
)
LAST_EXPORT_DAY = "last_export_day"  # the meta key gateway/schedule.py keeps


class RecordsError(Exception):
    """The database cannot be read; the message says why (never shown with a stack trace)."""


class Records:
    """Read-only queries on one gateway database; call them from a worker thread."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                if self._conn is None:
                    uri = self.path.resolve().as_uri() + "?mode=ro"
                    self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                    self._conn.execute("PRAGMA busy_timeout = 2000")
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise RecordsError(f"cannot read {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def resets(self, limit: int, channel: str | None = None) -> list[Json]:
        """The last ``limit`` reset attempts, accepted and refused, newest first."""
        where, args = ("WHERE channel = ?", (channel,)) if channel is not None else ("", ())
        rows = self._query(
            f"SELECT {_RESET_COLUMNS} FROM resets {where} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [
            {
                "id": row[0],
                "channel": row[1],
                "time": iso(row[2]),
                "source": row[3],
                "accepted": bool(row[4]),
                "reason": row[5],
                "before": totals(Totals(*row[6:10])),
                "after": totals(Totals(*row[10:14])),
            }
            for row in rows
        ]

    def intervals(self, channel: str, since: Instant, until: Instant) -> list[Json]:
        """One channel's interval records with since < end <= until, oldest first."""
        rows = self._query(
            "SELECT end_us, pulses, consumption, average_demand, estimated FROM intervals"
            " WHERE channel = ? AND end_us > ? AND end_us <= ? ORDER BY end_us",
            (channel, since, until),
        )
        return [
            {
                "end": iso(end),
                "pulses": pulses,
                "consumption": number(consumption),
                "demand": number(demand),
                "quality": "E" if estimated else "A",
            }
            for end, pulses, consumption, demand, estimated in rows
        ]

    def demand_points(
        self, channel: str, since: Instant, until: Instant
    ) -> list[tuple[Instant, Instant, float, bool]]:
        """(start, end, average demand, estimated) of one channel's records, for the chart."""
        rows = self._query(
            "SELECT start_us, end_us, average_demand, estimated FROM intervals"
            " WHERE channel = ? AND end_us > ? AND end_us <= ? ORDER BY end_us",
            (channel, since, until),
        )
        return [(start, end, demand, bool(estimated)) for start, end, demand, estimated in rows]

    def periods(self, channel: str, newest: int) -> list[Json]:
        """The channel's last ``newest`` closed billing periods, newest first."""
        rows = [PeriodRecord(*row) for row in self._query(*periods_query(channel, newest))]
        return [
            {
                "start": iso(p.start),
                "end": iso(p.end),
                "consumption": number(p.consumption),
                "peak_demand": number(p.peak_demand),
                "peak_time": iso(p.peak_time),
                "closed_by": p.source,
            }
            for p in reversed(rows)
        ]

    def last_file_drop(self) -> str | None:
        """The last day whose EnergyCAP file was dropped (YYYY-MM-DD), if any."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (LAST_EXPORT_DAY,))
        return rows[0][0] if rows else None
