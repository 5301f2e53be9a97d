"""The simulated source: meters that pulse at a configured mean rate, for demos and tests.

Per channel, ``rate`` is the mean number of pulses per second. ``constant`` pulses evenly (the
fractional part is carried, so the long-run count is exact); ``poisson`` draws exponential gaps
between pulses, like a real meter's irregular flow, from a seeded generator so a run can be
reproduced. Elapsed time is read from the event loop's monotonic clock; the service stamps the
counts with its timeline when the sink receives them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.sources import PulseSink

TICK_SECONDS = 0.2  # how often counts are reported: well inside the 1 s checkpoint


@dataclass(frozen=True, slots=True)
class SimulatedMeter:
    """One simulated channel."""

    rate: float  # mean pulses per second
    mode: str = "poisson"  # or "constant"


class _Meter:
    """Pulses due on one channel as simulated time goes on."""

    def __init__(self, meter: SimulatedMeter, rng: random.Random) -> None:
        self._meter = meter
        self._rng = rng
        self._carry = 0.0  # constant mode: fraction of a pulse not yet emitted
        self._next = rng.expovariate(meter.rate) if meter.mode == "poisson" else 0.0
        self._elapsed = 0.0

    def advance(self, seconds: float) -> int:
        """Pulses in the next ``seconds`` of simulated time."""
        if self._meter.mode == "constant":
            self._carry += self._meter.rate * seconds
            whole = int(self._carry)
            self._carry -= whole
            return whole
        self._elapsed += seconds
        count = 0
        while self._next <= self._elapsed:
            count += 1
            self._next += self._rng.expovariate(self._meter.rate)
        return count


class Simulator:
    """The simulated meters of one source id (config: gateway.config.SimulatedSource)."""

    def __init__(
        self, source_id: str, meters: Mapping[str, SimulatedMeter], seed: int | None = None
    ) -> None:
        self.id = source_id
        rng = random.Random(seed)
        # one generator per channel, seeded from the source's, so adding a channel does not
        # change the pulse train of the others
        self._meters = {
            channel: _Meter(meter, random.Random(rng.getrandbits(64)))
            for channel, meter in meters.items()
        }

    def advance(self, seconds: float) -> dict[str, int]:
        """Pulses per channel in the next ``seconds`` (the deterministic core of ``run``)."""
        return {channel: meter.advance(seconds) for channel, meter in self._meters.items()}

    def baselines(self) -> dict[str, int]:
        """A simulation has no device counter to resume from."""
        return {}

    def counters(self) -> dict[str, dict[str, int]]:
        """A simulation has no glitches and loses no edges."""
        return {}

    async def run(self, sink: PulseSink) -> None:
        loop = asyncio.get_running_loop()
        sink.source_up(self.id, {})
        last = loop.time()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = loop.time()
            for channel, count in self.advance(now - last).items():
                if count:
                    sink.pulses(channel, count)
            last = now
