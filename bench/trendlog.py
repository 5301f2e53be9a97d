"""Trend-log benchmark: ReadRange answered from the interval records in SQLite, p50/p99.

Builds a real state database (``Store.open``: every migration, the sequence numbers of
migration 6) and fills it with 15-minute records by SQL alone (a recursive CTE, in C: a few
seconds for millions of rows, the indexes built afterwards as SQLite does fastest), then times
what the gateway's ReadRange handler does for one request: the read transaction, the window,
the rows, the 22-octet records with their local timestamps, the ACK's bytes
(``TrendLogs.read_range``, which ``GatewayApplication.do_ReadRangeRequest`` calls). Requests
go to random channels and random places in their logs, the demand log and the consumption log
in turn, the capacity of a client taking 1476-octet segments:

    by sequence number, 10 records (a Niagara-style import)
    by sequence number, 100 records
    by time, 100 records (from a random interval end)

Two sites: 2,000 channels with 30 days each (5.76 M records) and 100 channels with a year each
(3.5 M records). Target: under 10 ms for a ReadRange of 100 records. Figures, not assertions:
the machine is shared; run it three times and quote the median and the worst.
``python bench/trendlog.py --help`` for the sizes.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.bacnet.points import Measure
from gateway.bacnet.segmentation import capacity
from gateway.bacnet.trendlog import TrendLogs
from gateway.store import Store
from gateway.store_intervals import IntervalSequence

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00Z
INTERVAL_US = 15 * 60 * 1_000_000
CAPACITY = capacity(1476, 32)  # a client taking 1476-octet APDUs, segments unspecified


def build(folder: Path, channels: int, days: int) -> tuple[Path, float]:
    """A state database with ``days`` of records for ``channels`` channels; its path and the
    seconds it took."""
    started = time.perf_counter()
    store = Store.open(folder)
    store.close()
    path = folder / "gateway.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('timezone', 'Europe/Berlin')"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    # faster without the secondary indexes; the same ones are built afterwards
    conn.execute("DROP INDEX intervals_by_channel")
    conn.execute("DROP INDEX intervals_by_seq")
    per_channel = days * 96
    conn.execute(
        """WITH RECURSIVE
            step(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM step WHERE n < :steps),
            chan(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM chan WHERE k < :channels)
        INSERT INTO intervals (channel, end_us, start_us, pulses, consumption, average_demand,
            estimated, pulses_total, consumption_total, seq)
        SELECT 'ch' || k, :start + n * :interval, :start + (n - 1) * :interval, 7, 0.7,
            2.8 + (k % 5) * 0.25, (n % 97 = 0), 7 * n, 1000.0 + 0.7 * n, n
        FROM step, chan ORDER BY n, k""",
        {
            "steps": per_channel,
            "channels": channels,
            "start": START_US,
            "interval": INTERVAL_US,
        },
    )
    conn.execute(
        "INSERT INTO interval_seq (channel, last)"
        " SELECT 'ch' || k, :last FROM (WITH RECURSIVE chan(k) AS (SELECT 1 UNION ALL"
        " SELECT k + 1 FROM chan WHERE k < :channels) SELECT k FROM chan)",
        {"last": per_channel, "channels": channels},
    )
    conn.execute("CREATE INDEX intervals_by_channel ON intervals (channel, end_us)")
    conn.execute("CREATE UNIQUE INDEX intervals_by_seq ON intervals (channel, seq)")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return path, time.perf_counter() - started


def local(instant: int) -> datetime:
    """A by-time reference: the UTC wall time of ``instant`` (the zone's offset shifts it by an
    hour or two, which makes no difference to the cost)."""
    return datetime.fromtimestamp(instant / 1e6, UTC).replace(tzinfo=None)


def measure(path: Path, channels: int, days: int, requests: int, seed: int) -> dict[str, list]:
    """Milliseconds per request, per kind of request."""
    logs = TrendLogs(IntervalSequence(path))
    rng = random.Random(seed)
    per_channel = days * 96
    kinds = {
        "by sequence, 10": ("sequence", 10),
        "by sequence, 100": ("sequence", 100),
        "by time, 100": ("time", 100),
    }
    timings: dict[str, list] = {name: [] for name in kinds}
    for k in range(requests):
        for name, (form, count) in kinds.items():
            channel = f"ch{rng.randint(1, channels)}"
            measure_ = Measure.CONSUMPTION if k % 2 else Measure.DEMAND
            step = rng.randint(1, per_channel - count)
            reference = step if form == "sequence" else local(START_US + step * INTERVAL_US)
            started = time.perf_counter()
            data = logs.read_range(channel, measure_, 101, form, reference, count, CAPACITY)
            timings[name].append((time.perf_counter() - started) * 1e3)
            assert len(data) > 22 * count, (name, len(data))
    logs.close()
    return timings


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per kind (default 2000)")
    parser.add_argument("--small", action="store_true", help="200 channels x 3 days, quickly")
    args = parser.parse_args()
    sites = [(2000, 30), (100, 365)] if not args.small else [(200, 3)]
    for channels, days in sites:
        with tempfile.TemporaryDirectory(prefix="trendlog-bench-") as folder:
            path, seconds = build(Path(folder), channels, days)
            records = channels * days * 96
            size = path.stat().st_size / 2**20
            print(
                f"{channels} channels x {days} days = {records:,} records:"
                f" built in {seconds:.1f} s, {size:.0f} MiB"
            )
            measure(path, channels, days, 100, seed=1)  # warm the page cache
            timings = measure(path, channels, days, args.requests, seed=2)
            for name, values in timings.items():
                print(
                    f"  ReadRange {name:<18} p50 {statistics.median(values):6.3f} ms"
                    f"  p99 {quantile(values, 0.99):6.3f} ms  ({len(values)} requests)"
                )


if __name__ == "__main__":
    main()
