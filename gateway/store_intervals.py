"""The interval records of the state store: saving them, streaming them out, pruning them.

Records are written with each checkpoint and read by the export as a stream (a year of 100
channels is millions of rows), so the readers here are tuned for speed: rows handed on in C,
the channel filter shaped so SQLite walks the primary key. Separate from the ``Store`` because
these queries and their tuning are the export's concern, not the state's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Literal, NamedTuple

from gateway.core import Instant, IntervalMark, IntervalRecord
from gateway.store_connection import StoreConnection
from gateway.store_rows import _float
from gateway.store_schema import StoreError


class IntervalLog(StoreConnection):
    """The store's interval records and the marks where each channel's next one starts."""

    @staticmethod
    def _save_intervals(conn: sqlite3.Connection, records: Sequence[IntervalRecord]) -> None:
        if records:
            conn.executemany(
                # a record written again (same channel and end) keeps its sequence number: an
                # upsert, where INSERT OR REPLACE would delete it and number it anew
                "INSERT INTO intervals (channel, end_us, start_us, pulses,"
                " consumption, average_demand, estimated, pulses_total, consumption_total)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (end_us, channel) DO UPDATE SET"
                " start_us = excluded.start_us, pulses = excluded.pulses,"
                " consumption = excluded.consumption, average_demand = excluded.average_demand,"
                " estimated = excluded.estimated, pulses_total = excluded.pulses_total,"
                " consumption_total = excluded.consumption_total",
                [
                    (
                        r.channel,
                        r.end,
                        r.start,
                        r.pulses or 0,  # a virtual channel counts no pulses of its own
                        float(r.consumption),
                        _float("average_demand", r.average_demand),
                        int(r.estimated),
                        r.pulses_total or 0,
                        float(r.consumption_total),
                    )
                    for r in records
                ],
            )

    def interval_marks(self) -> dict[str, IntervalMark]:
        """Per channel, where its next interval record starts (saved with the checkpoint)."""
        (rows,) = self._query(
            "SELECT channel, end_us, pulses_total, consumption_total FROM interval_mark"
        )
        return {channel: IntervalMark(end, pulses, total) for channel, end, pulses, total in rows}

    def intervals(
        self, since: Instant, until: Instant, channels: Sequence[str] | None = None
    ) -> Iterator[IntervalRecord]:
        """Records with since < end <= until, by end then channel id, read as a stream."""
        rows = self._interval_rows(
            "channel, end_us, start_us, pulses, consumption, average_demand, estimated,"
            " pulses_total, consumption_total",
            since,
            until,
            channels,
        )
        make = IntervalRecord._make  # a tuple built in C
        for row in rows:
            yield make((*row[:6], row[6] == 1, row[7], row[8]))

    def interval_values(
        self,
        since: Instant,
        until: Instant,
        column: Literal["consumption", "average_demand"],
        channels: Sequence[str] | None = None,
    ) -> Iterator[tuple[str, Instant, float, int]]:
        """``(channel, end, column, estimated)`` of the records ``intervals`` reads, a stream.

        ``column`` is ``consumption`` or ``average_demand``; ``estimated`` is 0 or 1. The export's
        reader: a year of 100 channels is 3.5 M records, and four columns straight from SQLite
        cost half of what nine columns made into an ``IntervalRecord`` each do.
        """
        if column not in ("consumption", "average_demand"):
            raise ValueError(f"interval_values reads consumption or average_demand: {column!r}")
        return self._interval_rows(f"channel, end_us, {column}, estimated", since, until, channels)

    def _interval_rows(
        self, columns: str, since: Instant, until: Instant, channels: Sequence[str] | None
    ) -> Iterator[tuple]:
        """The ``columns`` of the records with since < end <= until, by end then channel id."""
        query = f"SELECT {columns} FROM intervals WHERE end_us > :since AND end_us <= :until"
        args: dict[str, object] = {"since": since, "until": until}
        if channels is not None:
            names = [f":c{k}" for k in range(len(channels))]
            args |= zip((name[1:] for name in names), channels, strict=True)
            query += _CHANNEL_FILTER.format(channels=", ".join(names))
        # chain: rows are handed on in C, no Python frame per row; the query runs on first read
        return chain.from_iterable(self._batches(query + " ORDER BY end_us, channel", args))

    def _batches(self, query: str, args: Mapping[str, object]) -> Iterator[list[tuple]]:
        cursor = self._connection().execute(query, args)
        try:
            while rows := cursor.fetchmany(1000):
                yield rows
        finally:
            cursor.close()

    def prune_intervals(self, before: Instant, limit: int = 5000) -> int:
        """Delete up to ``limit`` records that ended before ``before``; the number deleted.

        Small batches, so a year of expired records never holds the write lock for long.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM intervals WHERE (end_us, channel) IN (SELECT end_us, channel"
                " FROM intervals WHERE end_us < ? ORDER BY end_us LIMIT ?)",
                (before, limit),
            )
            return cursor.rowcount


# The channel filter of the interval readers. "+channel": filter, but walk the primary key
# (end_us, channel), already in the order asked for; the per-channel index would make SQLite sort
# the whole range. The filter costs a lookup per row (0.4 s of a year x 100 channels), so it is
# skipped when no other channel has records in the range, which is the usual export of every
# channel: the NOT EXISTS is computed once per query, by walking the channels of
# intervals_by_channel (a min() seek per channel) and seeking each unwanted one's range; being
# in the same statement, it sees the same snapshot as the rows.
_CHANNEL_FILTER = """ AND (NOT EXISTS (
    WITH RECURSIVE recorded (channel) AS (
        SELECT min(channel) FROM intervals
        UNION ALL
        SELECT (SELECT min(channel) FROM intervals WHERE channel > recorded.channel)
        FROM recorded WHERE recorded.channel IS NOT NULL)
    SELECT 1 FROM recorded WHERE recorded.channel NOT IN ({channels}) AND EXISTS (
        SELECT 1 FROM intervals AS other WHERE other.channel = recorded.channel
        AND other.end_us > :since AND other.end_us <= :until))
    OR +channel IN ({channels}))"""


class LogExtent(NamedTuple):
    """What one channel's interval log holds: sequence numbers ``first..last`` (a contiguous
    range: records are numbered in end order and pruned oldest first), and ``total``, the
    newest number ever given (0: never a record). ``first`` > ``last`` when nothing is held."""

    first: int
    last: int
    total: int

    @property
    def held(self) -> int:
        """How many records are held (the trend log's record-count)."""
        return max(0, self.last - self.first + 1)


class LogRecordRow(NamedTuple):
    """One interval record as a trend log shows it: its number, end, value and quality."""

    seq: int
    end: Instant
    value: float
    estimated: int  # 0 or 1


_LOG_COLUMNS = {"consumption": "consumption_total", "demand": "average_demand"}


class IntervalSequence:
    """Interval records by sequence number, for the BACnet trend logs, read on request.

    Read-only, on a connection of its own (``mode=ro``: WAL lets it read while the gateway's
    store writes; it never waits for a checkpoint, nor makes one wait). Each ReadRange is a few
    index seeks: ``(channel, seq)`` for the numbers, ``(channel, end_us)`` for times. Nothing is
    kept in memory. Used from the event loop's thread only; a query takes well under a
    millisecond (docs/performance.md).
    """

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            try:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 1000")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read {self.path}: {exc}") from None
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def read[T](self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(conn)`` inside one read transaction: the extent and the records it reads
        are of the same moment, whatever the gateway commits meanwhile."""
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:
                return work(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from None

    @staticmethod
    def extent(conn: sqlite3.Connection, channel: str) -> LogExtent:
        first, last, total = conn.execute(
            "SELECT (SELECT min(seq) FROM intervals WHERE channel = ?1),"
            " (SELECT max(seq) FROM intervals WHERE channel = ?1),"
            " (SELECT last FROM interval_seq WHERE channel = ?1)",
            (channel,),
        ).fetchone()
        if first is None:
            total = total or 0
            return LogExtent(total + 1, total, total)
        return LogExtent(first, last, max(total or 0, last))

    @staticmethod
    def records(
        conn: sqlite3.Connection, channel: str, first: int, last: int, log: str
    ) -> list[LogRecordRow]:
        """Records ``first..last`` by sequence number of the ``consumption`` log (the reading at
        each end) or the ``demand`` log (the average demand of each interval)."""
        column = _LOG_COLUMNS[log]
        rows = conn.execute(
            f"SELECT seq, end_us, {column}, estimated FROM intervals"
            " WHERE channel = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (channel, first, last),
        ).fetchall()
        return list(map(LogRecordRow._make, rows))

    @staticmethod
    def first_after(conn: sqlite3.Connection, channel: str, instant: Instant) -> int | None:
        """The number of the oldest record that ended after ``instant``; None if none did."""
        row = conn.execute(
            "SELECT seq FROM intervals WHERE channel = ? AND end_us > ? ORDER BY end_us LIMIT 1",
            (channel, instant),
        ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def last_before(conn: sqlite3.Connection, channel: str, instant: Instant) -> int | None:
        """The number of the newest record that ended before ``instant``; None if none did."""
        row = conn.execute(
            "SELECT seq FROM intervals WHERE channel = ? AND end_us < ?"
            " ORDER BY end_us DESC LIMIT 1",
            (channel, instant),
        ).fetchone()
        return None if row is None else int(row[0])

    def timezone(self) -> str | None:
        """The gateway's timezone as the database records it (None: not recorded)."""
        rows = self.read(
            lambda conn: conn.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchall()
        )
        return str(rows[0][0]) if rows else None
