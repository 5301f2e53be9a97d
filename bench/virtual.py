"""Virtual channels in the engine: the CPU they add per pulse event and per boundary.

Engine level, no I/O and no clock: ``gateway.core.Engine`` over ``--physical`` kWh channels
(2,000 by default; 0.01 kWh per pulse, demand window 15 min sliding every 1 min, as in
``bench/scale.py``), with and without ``--virtual`` virtual channels (200) of ``--terms`` added
terms each (10). The terms are spread over the physical channels: virtual channel j takes
physical channels j, j + P/T, j + 2P/T, ... (P physical, T terms), so at the defaults every
physical channel is a term of exactly one virtual channel and each virtual channel's terms
come from ten different Modbus modules of the scale bench's site.

Each run builds a fresh engine, passes the first window without pulses (untimed, so every
boundary timed computes a valid demand), then feeds ``--minutes`` simulated minutes (30): every
second, a pulse event of 5 pulses on every physical channel, as a 1 s Modbus poll at 5 pulses/s
delivers them, and at each 1-minute boundary ``Engine.advance`` closes every channel. The CPU
time (``time.process_time``) of the pulse events and of the boundaries is summed apart:

- per pulse event through ``Engine.pulses``, the service's path (``gateway/feed.py``): every
  event goes through the engine, which passes a term's pulses on to its virtual channels;
- per pulse event through ``Engine.feeds``, replay's path: straight to the channel when it is
  no term, through ``Engine.pulses`` when it is one;
- per boundary: one ``Engine.advance`` closing every channel (2,000 or 2,200 closes).

Runs alternate without and with the virtual channels, ``--runs`` pairs (3); printed: each
run, then the median and the worst of the runs, and the extra cost the virtual channels add
(with minus without, pair by pair). A run fails (exit 1) unless each virtual channel's last
demand is the sum of its terms' (they share window and slide). Figures, not assertions: the
machine's load average is printed so they can be read against it.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/virtual.py` from anywhere
    sys.path.insert(0, str(ROOT))

from gateway.core import UNITS, ChannelRules, Engine, Instant  # noqa: E402
from gateway.core.timeline import MICROS_PER_SECOND  # noqa: E402

START: Instant = 1_767_225_600 * MICROS_PER_SECOND  # 2026-01-01T00:00:00Z, on every boundary
WINDOW = 15 * 60 * MICROS_PER_SECOND
SLIDE = 60 * MICROS_PER_SECOND
PULSES = 5  # per event: 5 pulses/s read by a 1 s poll
PATHS = ("pulses", "feeds")


def site(physical: int, virtual: int, terms: int) -> dict[str, ChannelRules]:
    """The physical channels, then the virtual ones, in config order."""
    kwh = UNITS["kWh"]
    rules = {
        f"p{k}": ChannelRules(unit=kwh, scale_factor=0.01, window=WINDOW, slide=SLIDE)
        for k in range(physical)
    }
    step = physical // terms  # terms n * step apart: distinct, and spread over the site
    for j in range(virtual):
        members = tuple((f"p{(j + n * step) % physical}", 1) for n in range(terms))
        rules[f"v{j}"] = ChannelRules(
            unit=kwh, scale_factor=1.0, window=WINDOW, slide=SLIDE, terms=members
        )
    return rules


@dataclass
class Run:
    """One run's CPU seconds and counts."""

    pulse_s: float = 0.0
    events: int = 0
    boundary_s: float = 0.0
    boundaries: int = 0
    closes: int = 0

    @property
    def per_event_us(self) -> float:
        return 1e6 * self.pulse_s / max(1, self.events)

    @property
    def per_boundary_ms(self) -> float:
        return 1e3 * self.boundary_s / max(1, self.boundaries)


def run(physical: int, virtual: int, terms: int, minutes: int, path: str) -> Run:
    """Feed one engine ``minutes`` simulated minutes after its first window; time the parts."""
    rules = site(physical, virtual, terms)
    engine = Engine(rules, START)
    engine.advance(START + WINDOW)  # the first window passes: every boundary timed is valid
    ids = [channel_id for channel_id, r in rules.items() if not r.terms]
    feeds: list[Callable[[Instant, int], None]] = [engine.feeds[c] for c in ids]
    clock = time.process_time
    result = Run()
    gc.collect()
    first = START + WINDOW + 1  # just after the boundary closed above
    if path == "pulses":  # the loop the service runs: Engine.pulses(channel, t, count)
        send = engine.pulses

        def deliver(t: Instant) -> None:
            for channel_id in ids:
                send(channel_id, t, PULSES)

    else:

        def deliver(t: Instant) -> None:
            for feed in feeds:
                feed(t, PULSES)

    for second in range(minutes * 60):
        t = first + second * MICROS_PER_SECOND
        if t >= engine.next_due:
            began = clock()
            readings = engine.advance(t)
            result.boundary_s += clock() - began
            result.boundaries += 1
            result.closes += len(readings)
        began = clock()
        deliver(t)
        result.pulse_s += clock() - began
        result.events += len(ids)
    check(engine, rules)
    return result


def check(engine: Engine, rules: dict[str, ChannelRules]) -> None:
    """Each virtual channel's last demand is the sum of its terms' (same window and slide)."""
    for channel_id, channel_rules in rules.items():
        if not channel_rules.terms:
            continue
        demand = engine.channels[channel_id].demand
        parts = [engine.channels[term].demand for term, _ in channel_rules.terms]
        if demand is None or None in parts:
            sys.exit(f"{channel_id}: no valid demand after the run")
        if not math.isclose(demand, sum(p for p in parts if p is not None), rel_tol=1e-9):
            sys.exit(f"{channel_id}: demand {demand} is not the sum of its terms' ({parts})")


def spread(values: list[float]) -> tuple[float, float]:
    """(median, worst): the worst is the largest, the most CPU."""
    return statistics.median(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--physical", type=int, default=2000, help="physical channels (2000)")
    parser.add_argument("--virtual", type=int, default=200, help="virtual channels (200)")
    parser.add_argument("--terms", type=int, default=10, help="terms per virtual channel (10)")
    parser.add_argument("--minutes", type=int, default=30, help="simulated minutes per run (30)")
    parser.add_argument("--runs", type=int, default=3, help="runs without and with (3)")
    args = parser.parse_args()
    if not 1 <= args.terms <= args.physical or args.virtual < 1 or args.minutes < 1:
        parser.error("need 1 <= --terms <= --physical, --virtual >= 1, --minutes >= 1")
    print(
        f"bench/virtual.py: {args.physical:,} physical kWh channels (15 min window, 1 min"
        f" slide), without and with {args.virtual} virtual channels of {args.terms} terms;"
        f" a pulse event per physical channel per simulated second, {args.minutes} minutes"
        f" per run ({args.physical * args.minutes * 60:,} pulse events, {args.minutes}"
        f" boundaries), {args.runs} runs; {os.cpu_count()} CPUs, load average"
        f" {os.getloadavg()[0]:.2f}, Python {sys.version.split()[0]}",
        flush=True,
    )
    runs: dict[tuple[str, int], list[Run]] = {}
    for n in range(1, args.runs + 1):
        for path in PATHS:
            for virtual in (0, args.virtual):
                result = run(args.physical, virtual, args.terms, args.minutes, path)
                runs.setdefault((path, virtual), []).append(result)
                print(
                    f"run {n}, Engine.{path:<6}, {virtual:>4} virtual:"
                    f" {result.per_event_us:.3f} µs per pulse event,"
                    f" {result.per_boundary_ms:.2f} ms per boundary"
                    f" ({result.closes // max(1, result.boundaries):,} closes)",
                    flush=True,
                )
    v = args.virtual
    print()
    print(f"median / worst of {args.runs} runs    without virtual    with {v} virtual    extra")
    rows = [(f"pulse event, Engine.{path} (µs)", "per_event_us", path, 3) for path in PATHS] + [
        ("boundary, all channels (ms)", "per_boundary_ms", "pulses", 2)
    ]
    for label, figure, path, places in rows:
        without = [getattr(r, figure) for r in runs[(path, 0)]]
        with_ = [getattr(r, figure) for r in runs[(path, v)]]
        extra = [b - a for a, b in zip(without, with_, strict=True)]
        cells = []
        for values in (without, with_, extra):
            median, worst = spread(values)
            cells.append(f"{median:.{places}f} / {worst:.{places}f}")
        print(f"{label:<34} {cells[0]:<18} {cells[1]:<19} {cells[2]}")
    without = [r.per_boundary_ms for r in runs[("pulses", 0)]]
    with_ = [r.per_boundary_ms for r in runs[("pulses", v)]]
    extra_ms = statistics.median(b - a for a, b in zip(without, with_, strict=True))
    print(
        f"\na boundary closes {args.physical:,} + {v} channels: a physical close"
        f" {1e3 * statistics.median(without) / args.physical:.2f} µs, the extra per virtual"
        f" channel {1e3 * extra_ms / v:.2f} µs ({args.terms} terms); extra per boundary"
        f" {100 * extra_ms / statistics.median(without):.0f} % of the plain one"
    )
    for path in PATHS:
        plain = statistics.median(r.per_event_us for r in runs[(path, 0)])
        more = statistics.median(r.per_event_us for r in runs[(path, v)])
        print(f"pulse event, Engine.{path}: +{100 * (more - plain) / plain:.0f} % with them")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
