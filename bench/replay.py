"""Replay benchmark: events/s and peak RSS of `pulse-gateway replay` on a generated year.

Generates an event log (default: 10 channels, one pulse event per channel per minute for 365
days, a daily 5-minute outage with catch-up on one channel, a monthly reset_all), then runs the
real command end to end in a child process (CSV parsing and output included) and prints:

    events, output rows, seconds, events/s, peak RSS of the replay process

Target: >= 200,000 events/s on the project's 2-core machine. Figures, not assertions:
the machine is shared and noisy. Run `python bench/replay.py --help` for sizes; `--every 1` gives
per-second pulses (use fewer --days: RSS stays flat because replay streams). ``--virtual N``
adds N virtual channels after the physical ones, the k-th with the k-th unit of the cycle and
every physical channel of that unit as an added term (c0, c4, c8 for the first at 10
channels): the same events then also reach the virtual channels, and each boundary writes
N more rows. Run it beside a plain run to read the cost of the virtual channels.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

UNITS = ("kWh", "cubic_feet", "us_gallons", "lbs")


def write_config(path: Path, channels: int, virtual: int = 0) -> None:
    lines = ["channels:"]
    for k in range(channels):
        lines.append(
            f"  - {{id: c{k}, unit: {UNITS[k % len(UNITS)]}, scale_factor: 0.5, "
            "demand_window: 15min, demand_slide: 5min, reset_lockout: 1d}"
        )
    units = min(channels, len(UNITS))  # a virtual channel's terms share its unit
    for k in range(virtual):
        terms = ", ".join(f"c{i}" for i in range(k % units, channels, len(UNITS)))
        lines.append(
            f"  - {{id: v{k}, unit: {UNITS[k % units]}, virtual: {{add: [{terms}]}}, "
            "demand_window: 15min, demand_slide: 5min, reset_lockout: 1d}"
        )
    path.write_text("\n".join(lines) + "\n")


def write_events(path: Path, days: int, channels: int, every: int) -> int:
    """Write the log; returns the number of event rows."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    steps = days * 86400 // every
    rows = 0
    with path.open("w", buffering=1 << 20) as out:
        out.write("time,channel,event,value\n")
        ids = [f"c{k}" for k in range(channels)]
        for step in range(steps):
            moment = start + timedelta(seconds=step * every)
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
            second_of_day = (step * every) % 86400
            if second_of_day == 0 and moment.day == 1:
                out.write(f"{stamp},,reset_all,\n")
                rows += 1
            if second_of_day == 3 * 3600:
                out.write(f"{stamp},c0,offline,\n")
                rows += 1
            elif second_of_day == 3 * 3600 + 300:
                out.write(f"{stamp},c0,online,42\n")
                rows += 1
            out.writelines(
                f"{stamp},{cid},pulses,{1 + (step + k) % 9}\n" for k, cid in enumerate(ids)
            )
            rows += channels
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--every", type=int, default=60, help="seconds between pulse events")
    parser.add_argument(
        "--virtual", type=int, default=0, metavar="N", help="virtual channels over them (0)"
    )
    args = parser.parse_args()
    if args.channels < 1 or args.virtual < 0:
        parser.error("need --channels >= 1 and --virtual >= 0")

    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        folder = Path(tmp)
        config, events, output = folder / "bench.yaml", folder / "events.csv", folder / "out.csv"
        write_config(config, args.channels, args.virtual)
        began = time.perf_counter()
        rows = write_events(events, args.days, args.channels, args.every)
        print(
            f"generated {rows:,} events ({events.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - began:.1f} s"
        )

        command = [sys.executable, "-m", "gateway.cli", "replay", "-c", str(config), str(events)]
        with output.open("w") as sink:
            began = time.perf_counter()
            child = subprocess.Popen(command, stdout=sink)
            _, status, usage = os.wait4(child.pid, 0)
            elapsed = time.perf_counter() - began
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit("replay failed")
        with output.open() as produced:
            out_rows = sum(1 for _ in produced) - 1
        print(
            f"replay: {rows:,} events -> {out_rows:,} rows in {elapsed:.2f} s"
            f" ({args.channels} channels, {args.virtual} virtual)"
        )
        print(f"  {rows / elapsed:,.0f} events/s end to end (target >= 200,000)")
        print(f"  peak RSS {usage.ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
