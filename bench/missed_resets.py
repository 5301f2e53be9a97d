"""Start-up after a year down: 2,000 channels with a daily billing reset, 730,000 missed.

Target: the whole ``Gateway.start()`` (open the store, restore every channel, apply and write
every missed scheduled reset with its billing period, judge every checksum from the whole
audit, start the sources) in under 10 s, median and worst of ``--runs`` runs (3 by default).

How: in a temporary directory, a config of ``--channels`` kWh channels on one simulated source
at a negligible rate, ``gateway.reset_schedule: {every: day, at: "00:00"}``; the ``bacnet``
section ``run`` requires is dropped after loading, so nothing listens, unless ``--with-bacnet``
(then the BACnet server with its 18,000 objects starts too, on 127.0.0.1). A gateway is
started on injected clocks on 2025-01-01 at 01:00 UTC, counts a few pulses per channel and
stops: its database holds every channel with its next
reset due the next midnight. Each run starts, from a copy of that database, a gateway whose
clock reads ``--days`` days later, so every channel has ``--days`` missed resets to apply
(each at its own midnight) before anything else happens.

Printed: the start-up time, and the parts of it: restoring the engine with the missed resets
(``Engine.resume``), writing them (``ResetDesk.record_missed``: one transaction, the audit and
periods rows) and the checksum verdict from the whole audit (``ResetDesk.check``). The bench
fails (exit 1) unless the audit and the periods tables hold exactly channels x days rows, each
channel's reset count is ``days`` and every checksum is ok. Figures, not assertions: the load
average is printed so they can be read against a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/missed_resets.py` from anywhere
    sys.path.insert(0, str(ROOT))

from gateway import reset_desk  # noqa: E402
from gateway.clock import Timeline  # noqa: E402
from gateway.config import RunConfig, load_config  # noqa: E402
from gateway.core import Engine  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.service import Gateway  # noqa: E402

START_US = 1_735_693_200_000_000  # 2025-01-01T01:00:00Z
DAY_US = 86_400_000_000


class Clocks:
    def __init__(self, wall_us: int) -> None:
        self.wall_us = wall_us
        self.mono_us = 1_000_000

    def wall(self) -> int:
        return self.wall_us

    def mono(self) -> int:
        return self.mono_us


def write_config(folder: Path, channels: int) -> Path:
    lines = [
        "gateway: {name: bench-missed, state_dir: state, timezone: UTC,"
        ' reset_schedule: {every: day, at: "00:00"}}',
        f"bacnet: {{address: 127.0.0.1/8, port: {_free_port()}, device_instance: 607098}}",
        "sources:",
        "  - {id: sim, type: simulated, seed: 1}",
        "channels:",
    ]
    for k in range(channels):
        lines.append(
            f"  - {{id: m{k:05d}, unit: kWh, scale_factor: 0.01, demand_window: 15min,"
            " demand_slide: 5min, source: {id: sim, rate: 0.001, mode: constant}}"
        )
    path = folder / "gateway.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


WITH_BACNET = False  # --with-bacnet: the BACnet server starts too, on 127.0.0.1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loaded(path: Path) -> RunConfig:
    config = load_config(path, purpose="run")
    if WITH_BACNET:
        return config
    return replace(config, bacnet=None)  # type: ignore[arg-type]


async def fill(path: Path) -> None:
    gateway = Gateway(loaded(path), timeline=Timeline(*_clock_pair(Clocks(START_US))))
    await gateway.start()
    try:
        for k, cid in enumerate(gateway.engine.channels):
            gateway.pulses(cid, 1 + k % 7)
    finally:
        await gateway.stop()


def _clock_pair(clocks: Clocks) -> tuple[Callable[[], int], Callable[[], int]]:
    return clocks.wall, clocks.mono


class Timed:
    """Wall time spent in a few functions during one start-up (wrapped, then put back)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - began

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def undo(self) -> None:
        for step in reversed(self._undo):
            step()


async def one_run(path: Path, days: int) -> dict[str, float]:
    timed = Timed()
    timed.wrap(Engine, "resume", "restore + apply (Engine.resume)")
    timed.wrap(reset_desk.ResetDesk, "record_missed", "write (record_missed)")
    timed.wrap(reset_desk.ResetDesk, "check", "checksum from the audit (check)")
    clocks = Clocks(START_US + days * DAY_US)
    gateway = Gateway(loaded(path), timeline=Timeline(*_clock_pair(clocks)))
    began = time.perf_counter()
    try:
        await gateway.start()
        timed.spent["whole start()"] = time.perf_counter() - began
        if WITH_BACNET and gateway.bacnet is None:
            raise SystemExit("error: the BACnet server did not start")
        counts = {channel.reset_count for channel in gateway.engine.channels.values()}
        ok = all(gateway.checksum_ok().values())
    finally:
        await gateway.stop()
        timed.undo()
    if counts != {days} or not ok:
        raise SystemExit(f"error: reset counts {sorted(counts)[:5]}, checksums ok: {ok}")
    return timed.spent


def rows(db: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        resets = conn.execute("SELECT count(*) FROM resets WHERE source = 'schedule'").fetchone()
        periods = conn.execute(
            "SELECT count(*) FROM resets WHERE source = 'schedule' AND period_start IS NOT NULL"
        ).fetchone()
    return int(resets[0]), int(periods[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--with-bacnet", action="store_true", help="start the BACnet server too (127.0.0.1)"
    )
    args = parser.parse_args()
    global WITH_BACNET
    WITH_BACNET = args.with_bacnet
    with open(os.devnull, "w") as devnull:
        configure(devnull)  # rendered as for the journal, not printed
        with tempfile.TemporaryDirectory() as folder:
            base = Path(folder) / "base"
            base.mkdir()
            path = write_config(base, args.channels)
            asyncio.run(fill(path))
            results = []
            for run in range(args.runs):
                work = Path(folder) / f"run{run}"
                shutil.copytree(base, work)
                spent = asyncio.run(one_run(work / "gateway.yaml", args.days))
                expected = args.channels * args.days
                found = rows(work / "state" / "gateway.db")
                if found != (expected, expected):
                    raise SystemExit(f"error: {found} audit/period rows, expected {expected}")
                results.append(spent)
                shutil.rmtree(work)
    print(
        f"{args.channels} channels, {args.days} missed daily resets each "
        f"({args.channels * args.days:,} audit rows and periods); {args.runs} runs"
    )
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores)")
    for label in results[0]:
        figures = [r[label] for r in results]
        print(
            f"  {label:34} median {statistics.median(figures):6.2f} s   worst {max(figures):6.2f} s"
        )
    worst = max(r["whole start()"] for r in results)
    print(f"target: start-up under 10 s: {'met' if worst < 10 else 'NOT met'} (worst run)")


if __name__ == "__main__":
    main()
