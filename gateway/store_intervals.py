"""The interval records of the state store: saving them, streaming them out, pruning them.

Records are written with each checkpoint and read by the export as a stream (a year of 100
channels is millions of rows), so the readers here are tuned for speed: rows handed on in C,
the channel filter shaped so SQLite walks the primary key. Separate from the ``Store`` because
these queries and their tuning are the export's concern, not the state's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Literal

from gateway.core import Instant, IntervalMark, IntervalRecord
from gateway.store_connection import StoreConnection
from gateway.store_rows import _float


class IntervalLog(StoreConnection):
    """The store's interval records and the marks where each channel's next one starts."""

    @staticmethod
    def _save_intervals(conn: sqlite3.Connection, records: Sequence[IntervalRecord]) -> None:
        if records:
            conn.executemany(
                "INSERT OR REPLACE INTO intervals (channel, end_us, start_us, pulses,"
                " consumption, average_demand, estimated, pulses_total, consumption_total)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.channel,
                        r.end,
                        r.start,
                        r.pulses,
                        float(r.consumption),
                        _float("average_demand", r.average_demand),
                        int(r.estimated),
                        r.pulses_total,
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
