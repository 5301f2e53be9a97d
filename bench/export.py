"""Export benchmark: seconds and peak RSS of `write_export` on a year of 15-minute data.

Generates the interval records lazily (default: 100 channels x 365 days x 96 intervals =
3,504,000 records, channels in pairs sharing an ImportID, some intervals estimated) and streams
them through `gateway.export.write_export` into a file, in a child process per run so that each
peak RSS is its own. Prints, per format:

    records, rows, seconds (and the part spent only generating the records), peak RSS

and the same for a 30-day export, to show the memory does not grow with the number of rows.

That is the formatter alone. `--sqlite` times the whole path instead: it fills a real state
database with the same records, then runs the real `pulse-gateway export --db` on it (which
streams the rows out of SQLite with `Store.interval_values` into `write_values`), for a year
and for 30 days (its imports alone take ~35 MiB). A child's peak RSS includes its parent's at
the moment it was started (Linux counts the memory the child shared with it until exec), so the
parent stays small: the database is built in a child of its own.

Target: < 10 s and memory flat in the number of rows. Figures, not assertions: the
machine is shared and noisy. `python bench/export.py --help` for sizes and formats.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core import UNITS, parse_instant
from gateway.export import FORMATS, ExportChannel, IntervalRecord, write_export

START = parse_instant("2026-01-01T05:00:00Z")  # local midnight in New York
INTERVAL = 15 * 60 * 1_000_000
CYCLE = ("kWh", "us_gallons", "cubic_feet", "lbs")


def channels(count: int) -> list[ExportChannel]:
    """``count`` channels; channels 2k and 2k+1 share an ImportID (a site with two meters)."""
    return [
        ExportChannel(f"c{k}", f"SITE{k // 2:04d}", UNITS[CYCLE[k % len(CYCLE)]])
        for k in range(count)
    ]


def records(days: int, count: int) -> Iterator[IntervalRecord]:
    """The records of ``days`` days, ordered by end then channel, made one at a time."""
    ids = [f"c{k}" for k in range(count)]
    for step in range(days * 96):
        end = START + (step + 1) * INTERVAL
        begin = end - INTERVAL
        for k, channel in enumerate(ids):
            pulses = (step * 7 + k * 13) % 97
            consumption = pulses * 0.5
            yield IntervalRecord(
                channel, end, begin, pulses, consumption, consumption * 4.0, step % 500 == k, 0, 0.0
            )


def child(kind: str, days: int, count: int, target: str) -> None:
    """Run one measurement and print it as JSON (the parent adds the RSS)."""
    began = time.perf_counter()
    if kind == "generate":
        rows = sum(1 for _ in records(days, count))
    else:
        with open(target, "w", encoding="utf-8", newline="", buffering=1 << 20) as out:
            rows = write_export(
                records(days, count),
                channels(count),
                out,
                format=kind,
                value="demand",
                zone=ZoneInfo("America/New_York"),
            )
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - began}))


def measure(kind: str, days: int, count: int, target: Path) -> tuple[dict[str, float], float]:
    """Run ``child`` in its own process; its JSON result and its peak RSS in MiB."""
    command = [sys.executable, __file__, "--child", kind, str(days), str(count), str(target)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{kind} failed")
    return json.loads(output), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--format", choices=FORMATS, action="append", help="default: all three")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--build", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="end to end instead: fill a real state database, then time `pulse-gateway export`",
    )
    args = parser.parse_args()
    if args.build:
        build(int(args.build[0]), int(args.build[1]), Path(args.build[2]))
        return
    if args.sqlite:
        from_sqlite(args.days, args.channels, args.format or FORMATS)
        return
    if args.child:
        kind, days, count, target = args.child
        child(kind, int(days), int(count), target)
        return

    records_total = args.days * 96 * args.channels
    print(f"{args.channels} channels x {args.days} days x 96 intervals = {records_total:,} records")
    generated, rss = measure("generate", args.days, args.channels, Path(os.devnull))
    print(f"  generating the records alone: {generated['seconds']:.2f} s, peak RSS {rss:.1f} MiB")
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        for kind in args.format or FORMATS:
            target = Path(tmp) / f"{kind}.csv"
            result, rss = measure(kind, args.days, args.channels, target)
            size = target.stat().st_size / 2**20
            print(
                f"{kind}: {result['rows']:,.0f} rows ({size:.0f} MiB) in {result['seconds']:.2f} s "
                f"(target < 10 s; {result['seconds'] - generated['seconds']:.2f} s formatting), "
                f"peak RSS {rss:.1f} MiB"
            )
            small, small_rss = measure(kind, 30, args.channels, target)
            print(f"  30 days: {small['rows']:,.0f} rows, peak RSS {small_rss:.1f} MiB (flat?)")


def build(days: int, count: int, folder: Path) -> None:
    """Fill ``folder``/gateway.db with the records, as the gateway's checkpoints would."""
    from gateway.core import Channel, ChannelRules
    from gateway.store import Store

    rules = ChannelRules(UNITS["kWh"], 0.5, INTERVAL, INTERVAL)
    with Store.open(folder) as store:
        store.checkpoint(
            {c.id: (rules, Channel(rules, START).state()) for c in channels(count)}, START
        )
        batch: list[IntervalRecord] = []
        for record in records(days, count):
            batch.append(record)
            if len(batch) >= 200_000:
                store.checkpoint({}, record.end, intervals=batch)
                batch = []
        store.checkpoint({}, START + days * 96 * INTERVAL, intervals=batch)


def from_sqlite(days: int, count: int, formats: Sequence[str]) -> None:
    """Fill a real gateway.db with the records, then run the real command on it."""
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        # in a child: building takes ~80 MiB, which the export children would seem to take
        subprocess.run(
            [sys.executable, __file__, "--build", str(days), str(count), tmp], check=True
        )
        db = folder / "gateway.db"
        print(
            f"database with {days * 96 * count:,} records ({db.stat().st_size / 2**20:.0f} MiB)"
            f" built in {time.perf_counter() - began:.1f} s"
        )
        for kind in formats:
            out = folder / f"{kind}.csv"
            seconds, rss = export_command(db, kind, days, out)
            print(
                f"{kind} from SQLite: {seconds:.1f} s (target < 10 s), "
                f"peak RSS {rss:.0f} MiB, {out.stat().st_size / 2**20:.0f} MiB"
            )
            if days > 30:
                _, small_rss = export_command(db, kind, 30, out)
                print(f"  30 days: peak RSS {small_rss:.0f} MiB (flat?)")


def export_command(db: Path, kind: str, days: int, out: Path) -> tuple[float, float]:
    """Run `pulse-gateway export` of the first ``days`` days; its seconds and peak RSS (MiB)."""
    last = (datetime(2026, 1, 1) + timedelta(days=days - 1)).date().isoformat()
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "export",
        "--db",
        str(db),
        "--format",
        kind,
        "--from",
        "2026-01-01",
        "--to",
        last,
        "--out",
        str(out),
    ]
    began = time.perf_counter()
    child_process = subprocess.Popen(command)
    _, status, usage = os.wait4(child_process.pid, 0)
    seconds = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"export {kind} failed")
    return seconds, usage.ru_maxrss / 1024


if __name__ == "__main__":
    main()
