"""Reset benchmark: one ``reset_all`` and the checksum verdict at 2,000 channels, 2 years of audit.

Builds, in a temporary directory, a gateway config (one simulated source at a negligible rate,
every channel on it, no metrics section; the bacnet section that ``run`` requires is dropped
from the loaded config, so nothing listens) and fills its state database the way the product
does: a ``gateway.service.Gateway`` is started on injected clocks (``gateway.clock.Timeline``)
and, once a month for ``--months`` months, the wall clock jumps to the first of the month (a
forward step: an outage, no invented windows), every channel counts pulses for a few minutes
(so each has a peak, a different one per channel and month) and ``reset_all("bench")`` runs.
Default: 2,000 channels x 24 months = 48,000 accepted audit rows.

Then ``--runs`` times (7 by default), each from a copy of that same filled database, so every
run times the same audit: the gateway is started (timed too, as "start"), counts one more
month, and is measured:

- **reset_all**: the wall time of one ``gateway.reset_all("bench")`` call, which includes the
  durable write (one transaction, fsync) and whatever the gateway does to keep the checksum
  verdict current;
- **verdict**: the time of the checksum verdict alone, as the gateway computes it:
  ``Gateway._check_sums()`` where it exists (the verdict read from the whole reset audit after
  every reset), else ``Gateway.checksum_ok()`` (a verdict kept as resets happen, so only the
  reading of it is left to time); the path measured is printed;
- **audit verdict**: ``Store.verdict()`` on the gateway's store, the verdict from the whole
  audit that the gateway still computes at start (and hourly) and ``pulse-gateway resets``
  prints; left out if the store has no such method.

Median and worst are printed, never the best. Log lines go to /dev/null as JSON: rendered, as
the daemon renders them for the journal, but not printed.

The bench fails (exit 1) unless, after every run, every channel's checksum is ok both as the
gateway reports it (``checksum_ok()``) and as recounted here from the database with SQL
(cumulative demand equals the sum of the logged previous peaks, reset count equals the
accepted resets), and every reset was accepted: it cannot pass on a broken verdict.

Figures, not assertions: on a shared 2-core machine other processes compete; the load average
is printed so the figures can be read against it. About 3 minutes at the defaults on a gateway
that reads the whole audit after every reset, 1-2 on one that does not.
``python bench/resets.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/resets.py` from anywhere
    sys.path.insert(0, str(ROOT))

import gateway as gateway_module  # noqa: E402
from gateway.clock import Timeline  # noqa: E402
from gateway.config import Config, load_config  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.service import Gateway  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=UTC)
MINUTE_US = 60_000_000
COUNTING_MINUTES = 5  # pulses before each reset: a 2-minute window, sliding every minute
ORIGIN = "bench"
SETTLE_TIMEOUT_S = 30.0


class Clocks:
    """A wall clock and a monotonic clock moved by hand (the gateway's Timeline reads them)."""

    def __init__(self) -> None:
        self.wall_us = _instant(START)
        self.mono_us = 1_000_000

    def wall(self) -> int:
        return self.wall_us

    def mono(self) -> int:
        return self.mono_us

    def elapse(self, us: int) -> None:
        self.wall_us += us
        self.mono_us += us

    def jump_to(self, wall_us: int) -> None:
        """The wall clock set forward with no monotonic time passing: a clock step."""
        self.wall_us = wall_us
        self.mono_us += 1000


def _instant(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000


def month_start(index: int) -> int:
    """The first of the ``index``-th month after START, 00:00 UTC."""
    year, month = divmod(START.month - 1 + index, 12)
    return _instant(START.replace(year=START.year + year, month=month + 1))


def channel_ids(count: int) -> list[str]:
    return [f"m{k:05d}" for k in range(count)]


def write_config(folder: Path, channels: int) -> Path:
    """A run config: one simulated source, ``channels`` kWh channels on it, nothing listening."""
    lines = [
        "schema: 1",
        "gateway: {name: bench-resets, state_dir: state, timezone: UTC}",
        # required by `run`; dropped after loading (bench), so never bound
        "bacnet: {address: 127.0.0.1/8, port: 47808, device_instance: 607099}",
        "sources:",
        "  - {id: sim, type: simulated, seed: 1}",
        "channels:",
    ]
    for cid in channel_ids(channels):
        # rate 0.001 pulses/s: the source runs (so the channels are online) but adds ~nothing;
        # the bench's own pulses make the peaks
        lines.append(
            f"  - {{id: {cid}, unit: kWh, scale_factor: 0.01, demand_window: 2min,"
            " demand_slide: 1min, source: {id: sim, rate: 0.001, mode: constant}}"
        )
    path = folder / "gateway.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def settle() -> None:
    """Wait until the gateway is idle (its background checkpoint write or interval pruning
    done), so no timed call shares the store or the CPU with them.

    Judged by this process's CPU time (all threads), not by the gateway's tasks, whose names
    and lifetimes differ between versions.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(0.05)
        busy = (time.process_time() - cpu) / (time.perf_counter() - wall)
        quiet = quiet + 1 if busy < 0.1 else 0
    if quiet < 3:
        print(f"warning: the gateway was still busy after {SETTLE_TIMEOUT_S} s", file=sys.stderr)


async def wait_sources_up(gateway: Gateway) -> None:
    for _ in range(200):  # the source task reports itself up on its first run
        if gateway.sources_up() and all(gateway.sources_up().values()):
            return
        await asyncio.sleep(0.01)
    raise SystemExit("error: the simulated source did not come up")


def count_month(gateway: Gateway, clocks: Clocks, ids: list[str], month: int) -> None:
    """Jump to the first of ``month`` and count a few minutes of pulses on every channel."""
    clocks.jump_to(month_start(month))
    for minute in range(COUNTING_MINUTES):
        clocks.elapse(MINUTE_US)
        for k, cid in enumerate(ids):
            gateway.pulses(cid, 1 + (k * 7 + month * 13 + minute * 3) % 50)


def reset_month(gateway: Gateway, expected: int) -> None:
    outcomes = gateway.reset_all(ORIGIN)
    refused = [cid for cid, outcome in outcomes.items() if not outcome.accepted]
    if len(outcomes) != expected or refused:
        raise SystemExit(
            f"error: reset_all returned {len(outcomes)} outcomes, {len(refused)} refused"
            f" (expected {expected} accepted)"
        )


# Which verdict this version of the gateway has: today's reads the whole audit on each call
RESCANS = callable(getattr(Gateway, "_check_sums", None))
VERDICT_PATH = (
    "Gateway._check_sums() (the verdict read from the reset audit)"
    if RESCANS
    else "Gateway.checksum_ok() (the verdict kept as resets happen)"
)


def verdict(gateway: Gateway) -> None:
    """The checksum verdict of every channel, as the gateway computes it (VERDICT_PATH)."""
    if RESCANS:
        gateway._check_sums()
    else:
        dict(gateway.checksum_ok())


def audit_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM resets").fetchone()[0])


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def sql_checksums(db: Path) -> dict[str, list[str]]:
    """Per channel, what is wrong with its checksum, recomputed from the tables with SQL alone.

    Independent of the gateway's verdict code: the saved cumulative demand must equal the sum
    of the accepted resets' previous peaks (in log order, as the channel added them), and the
    saved reset count the number of accepted resets, both within this life of the channel.
    """
    problems: dict[str, list[str]] = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        saved = conn.execute(
            "SELECT c.id, c.audit_from, s.cumulative_demand, s.reset_count"
            " FROM channels c JOIN channel_state s ON s.channel = c.id"
        ).fetchall()
        logged: dict[str, tuple[float, int]] = {}
        for channel, audit_from, *_ in saved:
            total, count = 0.0, 0
            for (previous_peak,) in conn.execute(
                "SELECT previous_peak_after FROM resets"
                " WHERE channel = ? AND accepted = 1 AND id > ? ORDER BY id",
                (channel, audit_from),
            ):
                total += previous_peak
                count += 1
            logged[channel] = (total, count)
    for channel, _, cumulative, reset_count in saved:
        total, count = logged[channel]
        found = []
        if not math.isclose(cumulative, total, rel_tol=1e-9, abs_tol=1e-9):
            found.append(f"cumulative_demand {cumulative!r} != sum of previous peaks {total!r}")
        if reset_count != count:
            found.append(f"reset_count {reset_count} != accepted resets {count}")
        if found:
            problems[channel] = found
    return problems


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "gateway"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (gateway/ modified)" if dirty else "")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.{1 if seconds >= 0.01 else 3}f} ms"


async def started(config: Config, clocks: Clocks) -> Gateway:
    gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    try:
        await wait_sources_up(gateway)
    except BaseException:
        await gateway.stop()
        raise
    # as `pulse-gateway run` does after start: the long-lived objects out of the collector's
    # way, so a timed call does not pay for walking them
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gateway


async def fill(config: Config, clocks: Clocks, ids: list[str], months: int) -> float:
    """``months`` monthly reset_alls through the gateway; the seconds it took."""
    began = time.perf_counter()
    gateway = await started(config, clocks)
    try:
        for month in range(months):
            count_month(gateway, clocks, ids, month)
            reset_month(gateway, len(ids))
            await settle()
            print(
                f"\rfilling the audit: month {month + 1}/{months}"
                f" ({time.perf_counter() - began:.0f} s)",
                end="",
                file=sys.stderr,
                flush=True,
            )
        print(file=sys.stderr)
    finally:
        await gateway.stop()
    return time.perf_counter() - began


@dataclass
class Run:
    start: float
    reset_all: float
    verdict: float
    audit_verdict: float | None
    broken: list[str]  # channels not ok (or missing) in checksum_ok(), or recounted broken


async def timed_run(config: Config, clocks: Clocks, ids: list[str], month: int) -> Run:
    """Start on the filled database, count a month, time reset_all and the verdict, stop."""
    t0 = time.perf_counter()
    gateway = await started(config, clocks)
    start = time.perf_counter() - t0
    try:
        count_month(gateway, clocks, ids, month)
        await settle()
        t0 = time.perf_counter()
        outcomes = gateway.reset_all(ORIGIN)
        reset_all = time.perf_counter() - t0
        if len(outcomes) != len(ids) or not all(o.accepted for o in outcomes.values()):
            raise SystemExit("error: a timed reset_all did not accept every channel")
        await settle()
        t0 = time.perf_counter()
        verdict(gateway)
        verdict_s = time.perf_counter() - t0
        audit_verdict = None
        store_verdict = getattr(getattr(gateway, "store", None), "verdict", None)
        if callable(store_verdict):
            await settle()
            t0 = time.perf_counter()
            store_verdict()
            audit_verdict = time.perf_counter() - t0
        await settle()
        reported = dict(gateway.checksum_ok())
    finally:
        await gateway.stop()
    broken = {cid for cid in ids if not reported.get(cid, False)}
    broken |= sql_checksums(state_db(config)).keys()
    return Run(start, reset_all, verdict_s, audit_verdict, sorted(broken))


def state_db(config: Config) -> Path:
    assert config.gateway is not None
    return Path(config.gateway.state_dir) / "gateway.db"


async def bench(args: argparse.Namespace, folder: Path) -> int:
    ids = channel_ids(args.channels)
    # no BACnet server: reset_all never touches it, and 14,000 objects would only slow start-up
    config = replace(load_config(write_config(folder, args.channels), purpose="run"), bacnet=None)
    state = state_db(config).parent
    filled = folder / "filled"
    clocks = Clocks()
    fill_s = await fill(config, clocks, ids, args.months)
    shutil.copytree(state, filled)
    rows = audit_rows(state_db(config))
    size = db_bytes(state_db(config))
    after_fill = (clocks.wall_us, clocks.mono_us)

    runs: list[Run] = []
    for run in range(args.runs):
        # every run starts from the same filled database, so each times the same audit
        shutil.rmtree(state)
        shutil.copytree(filled, state)
        clocks.wall_us, clocks.mono_us = after_fill
        runs.append(await timed_run(config, clocks, ids, args.months))
        last = runs[-1]
        audit = "n/a" if last.audit_verdict is None else ms(last.audit_verdict)
        print(
            f"run {run + 1}: start {ms(last.start)}, reset_all {ms(last.reset_all)},"
            f" verdict {ms(last.verdict)}, audit verdict {audit}",
            file=sys.stderr,
        )

    load = os.getloadavg()
    print(f"commit measured:   {commit()}")
    print(f"gateway package:   {Path(gateway_module.__file__).parent}")
    print(
        f"machine:           {os.cpu_count()} CPUs, shared with other agents; load average"
        f" {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (figures, not assertions)"
    )
    print(
        f"gateway:           {len(ids)} channels, {args.months} monthly reset_alls filled in"
        f" {fill_s:.0f} s through Gateway.reset_all"
    )
    print(
        f"audit rows:        {rows} before each timed reset_all"
        f" (each run restarts from the same database), {rows + len(ids)} after it"
    )
    print(f"database size:     {size / 1e6:.1f} MB (gateway.db with its WAL, after the fill)")
    print(f"verdict path:      {VERDICT_PATH}")
    print("audit path:        Store.verdict() (the whole audit read: at start, hourly, `resets`)")
    audits = [r.audit_verdict for r in runs if r.audit_verdict is not None]
    for label, times in (
        ("reset_all", [r.reset_all for r in runs]),
        ("verdict", [r.verdict for r in runs]),
        ("audit verdict", audits),
        ("start", [r.start for r in runs]),
    ):
        if not times:
            print(f"{label + ':':<18} not measured (Store.verdict() not found)")
            continue
        print(
            f"{label + ':':<18} median {ms(statistics.median(times))},"
            f" worst {ms(max(times))} over {len(times)} runs"
        )
    broken = sorted({cid for r in runs for cid in r.broken})
    if broken:
        print(
            f"error: the checksum is not ok for {len(broken)} channels (in checksum_ok() or"
            f" recounted from the database): {', '.join(broken[:5])}",
            file=sys.stderr,
        )
        return 1
    print(
        f"checksums:         ok for all {len(ids)} channels after every run"
        " (checksum_ok() and a recount from the database)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=2000, help="channels (default 2000)")
    parser.add_argument(
        "--months", type=int, default=24, help="monthly reset_alls before timing (default 24)"
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs (default 7)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (config and database)"
    )
    args = parser.parse_args(argv)
    if args.channels < 1 or args.months < 0 or args.runs < 1:
        parser.error("--channels and --runs must be at least 1, --months at least 0")
    configure(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    if args.keep:
        folder = tempfile.mkdtemp(prefix="bench-resets-")
        print(f"kept:              {folder}")
        return asyncio.run(bench(args, Path(folder)))
    with tempfile.TemporaryDirectory(prefix="bench-resets-") as folder:
        return asyncio.run(bench(args, Path(folder)))


if __name__ == "__main__":
    sys.exit(main())
